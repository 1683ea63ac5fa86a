"""The local Hub server (`tests/hub_server.py`) driven by the real `huggingface_hub`, `datasets` and `transformers`.

Every test uses the `hub` fixture (a reset server at `HF_ENDPOINT`) and its own repo names: on a Hub error,
`load_dataset` silently falls back to a cached copy of a same-named dataset, which could hide a failure.
"""

import time

import numpy as np
import pytest
import yaml
from datasets import load_dataset
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

# `huggingface_hub` PUTs LFS files with httpx's deprecated `data=<file object>`.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

SAFETENSORS_BYTES = b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + bytes(range(256))  # small, binary, `*.safetensors`


def _readme_metadata(content: bytes) -> dict:
    """The YAML front matter of a dataset card."""
    text = content.decode()
    assert text.startswith("---\n")
    return yaml.safe_load(text[4 : text.index("\n---", 4)])


def _assert_same_rows(loaded, expected) -> None:
    assert loaded.features == expected.features
    assert loaded.num_rows == expected.num_rows
    assert loaded["label"][:] == expected["label"][:]
    for got, want in zip(loaded, expected):
        np.testing.assert_array_equal(np.asarray(got["image"]), np.asarray(want["image"]))


def test_upload_list_and_download(hub):
    api = HfApi()
    repo_url = api.create_repo("org/files", repo_type="dataset")
    assert (repo_url.repo_id, repo_url.repo_type) == ("org/files", "dataset")
    assert api.whoami()["name"] == "hub-test-user"

    api.upload_file(
        path_or_fileobj=b"hello hub\n", path_in_repo="notes/hello.txt", repo_id="org/files", repo_type="dataset"
    )
    assert not any(path.endswith("/lfs/objects/batch") for _, path in hub.requests)  # small text: regular upload
    api.upload_file(
        path_or_fileobj=SAFETENSORS_BYTES, path_in_repo="weights.safetensors", repo_id="org/files", repo_type="dataset"
    )
    assert ("POST", "/datasets/org/files.git/info/lfs/objects/batch") in hub.requests  # `*.safetensors`: LFS
    assert any(method == "PUT" and path.startswith("/lfs-upload/") for method, path in hub.requests)

    files = hub.files("org/files")
    assert sorted(files) == [".gitattributes", "notes/hello.txt", "weights.safetensors"]
    assert files["notes/hello.txt"] == b"hello hub\n" and files["weights.safetensors"] == SAFETENSORS_BYTES
    assert sorted(api.list_repo_files("org/files", repo_type="dataset")) == [
        ".gitattributes",
        "notes/hello.txt",
        "weights.safetensors",
    ]
    for filename, content in [("notes/hello.txt", b"hello hub\n"), ("weights.safetensors", SAFETENSORS_BYTES)]:
        with open(hf_hub_download("org/files", filename, repo_type="dataset"), "rb") as f:
            assert f.read() == content

    info = api.repo_info("org/files", repo_type="dataset", files_metadata=True)
    assert info.id == "org/files" and info.private is False
    assert info.sha == hub.commits("org/files")[0]
    siblings = {sibling.rfilename: sibling for sibling in info.siblings}
    assert siblings["notes/hello.txt"].lfs is None and siblings["notes/hello.txt"].size == 10
    assert siblings["weights.safetensors"].lfs.size == len(SAFETENSORS_BYTES)
    assert api.file_exists("org/files", "weights.safetensors", repo_type="dataset")
    assert not api.file_exists("org/files", "missing.txt", repo_type="dataset")
    assert api.repo_exists("org/files", repo_type="dataset") and not api.repo_exists("org/files")  # not a model

    # Ranged reads through the fsspec file system.
    assert HfFileSystem().cat_file("datasets/org/files/notes/hello.txt", start=6, end=9) == b"hub"

    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo("org/files", repo_type="dataset")
    assert excinfo.value.response.status_code == 409
    api.create_repo("org/files", repo_type="dataset", exist_ok=True)

    api.delete_repo("org/files", repo_type="dataset")
    assert not api.repo_exists("org/files", repo_type="dataset")


def test_not_found_errors(hub):
    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info("org/nothing-here", repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/nothing-here", "README.md", repo_type="dataset")

    api.create_repo("org/sparse", repo_type="dataset")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/sparse", "missing.txt", repo_type="dataset")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/sparse", ".gitattributes", repo_type="dataset", revision="no-such-branch")


def test_revisions_and_parent_commit(hub):
    api = HfApi()
    api.create_repo("org/versions", repo_type="dataset")
    first = api.upload_file(
        path_or_fileobj=b"v1", path_in_repo="value.txt", repo_id="org/versions", repo_type="dataset"
    )
    api.upload_file(path_or_fileobj=b"v2", path_in_repo="value.txt", repo_id="org/versions", repo_type="dataset")
    assert hub.commits("org/versions")[1] == first.oid

    with open(hf_hub_download("org/versions", "value.txt", repo_type="dataset", revision=first.oid), "rb") as f:
        assert f.read() == b"v1"
    with open(hf_hub_download("org/versions", "value.txt", repo_type="dataset"), "rb") as f:
        assert f.read() == b"v2"

    # A commit on top of a parent that is no longer the head of the branch is refused (412 Precondition Failed).
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.upload_file(
            path_or_fileobj=b"v3",
            path_in_repo="value.txt",
            repo_id="org/versions",
            repo_type="dataset",
            parent_commit=first.oid,
        )
    assert excinfo.value.response.status_code == 412
    assert hub.files("org/versions")["value.txt"] == b"v2"


def test_push_to_hub_and_load_dataset(hub, tiny_image_dataset):
    train = tiny_image_dataset(num_classes=3, rows_per_class=2)["train"]
    train.push_to_hub("org/tiny-images")

    files = hub.files("org/tiny-images")
    assert sorted(files) == [".gitattributes", "README.md", "data/train-00000-of-00001.parquet"]
    metadata = _readme_metadata(files["README.md"])
    assert metadata["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}
    ]
    assert metadata["dataset_info"]["splits"] == [
        {"name": "train", "num_bytes": metadata["dataset_info"]["splits"][0]["num_bytes"], "num_examples": 6}
    ]
    features = {feature["name"]: feature for feature in metadata["dataset_info"]["features"]}
    assert features["image"]["dtype"] == "image"
    assert features["label"]["dtype"]["class_label"]["names"] == {"0": "class_0", "1": "class_1", "2": "class_2"}

    loaded = load_dataset("org/tiny-images", split="train")
    _assert_same_rows(loaded, train)


def test_push_dataset_dict_and_load(hub, tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=2, rows_per_class=2, mode="RGB")
    splits.push_to_hub("org/tiny-splits")

    files = hub.files("org/tiny-splits")
    assert {"data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet"} <= set(files)
    metadata = _readme_metadata(files["README.md"])
    assert sorted(entry["split"] for entry in metadata["configs"][0]["data_files"]) == ["test", "train"]

    loaded = load_dataset("org/tiny-splits")
    assert sorted(loaded) == ["test", "train"]
    for name in ("train", "test"):
        _assert_same_rows(loaded[name], splits[name])


def test_second_push_replaces_files_and_old_revision_still_loads(hub, tiny_image_dataset):
    first = tiny_image_dataset(num_classes=2, rows_per_class=3, seed=1)["train"]
    second = tiny_image_dataset(num_classes=2, rows_per_class=1, seed=2)["train"]

    first.push_to_hub("org/twice", num_shards=2)
    first_sha = hub.commits("org/twice")[0]
    assert {"data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"} <= set(hub.files("org/twice"))

    second.push_to_hub("org/twice")
    data_files = sorted(path for path in hub.files("org/twice") if path.startswith("data/"))
    assert data_files == ["data/train-00000-of-00001.parquet"]  # the stale shards were deleted
    assert _readme_metadata(hub.files("org/twice")["README.md"])["dataset_info"]["splits"][0]["num_examples"] == 2

    _assert_same_rows(load_dataset("org/twice", split="train"), second)
    _assert_same_rows(load_dataset("org/twice", split="train", revision=first_sha), first)


def test_failed_commit_raises_at_once_and_leaves_the_repo_unchanged(hub):
    api = HfApi()
    api.create_repo("org/flaky", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"kept", path_in_repo="kept.txt", repo_id="org/flaky", repo_type="dataset")
    files_before, commits_before = hub.files("org/flaky"), hub.commits("org/flaky")

    hub.fail_next_commits(1)
    start = time.monotonic()
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.upload_file(path_or_fileobj=b"lost", path_in_repo="lost.txt", repo_id="org/flaky", repo_type="dataset")
    assert excinfo.value.response.status_code == 500
    assert time.monotonic() - start < 5  # `create_commit` does not retry (a retry would sleep >= 1 s)
    assert hub.requests.count(("POST", "/api/datasets/org/flaky/commit/main")) == 2  # one success, one failure
    assert hub.files("org/flaky") == files_before
    assert hub.commits("org/flaky") == commits_before

    # The failure is consumed: the next commit goes through.
    api.upload_file(path_or_fileobj=b"later", path_in_repo="later.txt", repo_id="org/flaky", repo_type="dataset")
    assert hub.files("org/flaky")["later.txt"] == b"later"


def test_failed_lfs_upload_raises_and_commits_nothing(hub):
    api = HfApi()
    api.create_repo("org/lfs-flaky", repo_type="dataset")
    commits_before = hub.commits("org/lfs-flaky")

    hub.fail_next_lfs_uploads(1)
    with pytest.raises(RuntimeError, match="Error while uploading") as excinfo:
        api.upload_file(
            path_or_fileobj=SAFETENSORS_BYTES,
            path_in_repo="w.safetensors",
            repo_id="org/lfs-flaky",
            repo_type="dataset",
        )
    assert isinstance(excinfo.value.__cause__, HfHubHTTPError)
    assert excinfo.value.__cause__.response.status_code == 403
    assert hub.commits("org/lfs-flaky") == commits_before
    assert ("POST", "/api/datasets/org/lfs-flaky/commit/main") not in hub.requests


def test_transformers_push_to_hub_and_from_pretrained(hub):
    import torch
    from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        num_labels=3,
    )
    torch.manual_seed(0)
    model = ViTForImageClassification(config).eval()
    model.push_to_hub("org/tiny-vit")
    assert {"config.json", "model.safetensors", "README.md"} <= set(hub.files("org/tiny-vit", repo_type="model"))

    loaded = AutoModelForImageClassification.from_pretrained("org/tiny-vit").eval()
    assert isinstance(loaded, ViTForImageClassification)
    pixels = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixels).logits, model(pixel_values=pixels).logits)
