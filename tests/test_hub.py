"""Hub side: dataset and model cards, pushes (round trips against the local Hub server), and Hub load errors."""

import json
import re
import socket
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG_DEFAULTS, TINY_KD_SETTINGS, make_image_dataset_dict
from datasets import load_dataset
from huggingface_hub import DatasetCard, HfApi, ModelCard
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import GatedRepoError
from huggingface_hub.utils import httpx
from transformers import AutoModelForImageClassification, ViTImageProcessor

import hf_distill.student_cards as student_cards_module
from hf_distill import ConvNetConfig, ConvNetForImageClassification, DistributionMatchingConfig, distill_dataset
from hf_distill.cards import merge_card, render_dataset_card
from hf_distill.cli import main as cli_main
from hf_distill.data import load_source
from hf_distill.hub import HubPushError, push_distilled_to_hub, push_student_to_hub
from hf_distill.hub_utils import check_hub_access, hub_error
from hf_distill.preparation import resolve_architecture
from hf_distill.student_cards import render_student_card

SOURCE_LICENSE = "cc-by-4.0"


def _tiny_config(**overrides) -> DistributionMatchingConfig:
    return DistributionMatchingConfig(**{**TINY_CONFIG_DEFAULTS, **overrides})


def _source_folder(path: Path) -> Path:
    """The tiny image dataset saved with `save_to_disk`, next to a dataset card that sets a license."""
    make_image_dataset_dict().save_to_disk(str(path))
    (path / "README.md").write_text(f"---\nlicense: {SOURCE_LICENSE}\n---\n# Tiny source\n")
    return path


@pytest.fixture(scope="module")
def distilled_run(tmp_path_factory) -> Path:
    """A folder written by `DistillTrainer.save` (evaluated), distilled from a local folder with a licensed card."""
    root = tmp_path_factory.mktemp("run")
    source = _source_folder(root / "source")
    trainer = distill_dataset(str(source), _tiny_config(), evaluate=True, return_trainer=True)
    return trainer.save(root / "out")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _python_block(card) -> str:
    return re.search(r"```python\n(.*?)```", card.text, re.S).group(1)


def _closed_port_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


# ---------------------------------------------------------------------------------------------------------------------
# Cards (no Hub)
# ---------------------------------------------------------------------------------------------------------------------


def test_dataset_card_yaml_and_body(distilled_run):
    results = json.loads((distilled_run / "eval_results.json").read_text())
    card = render_dataset_card(distilled_run, "org/tiny-dm")
    data = DatasetCard(str(card)).data  # the YAML parses back
    assert data.license == SOURCE_LICENSE  # inherited from the source folder's card
    assert data.task_categories == ["image-classification"]
    assert data.tags == ["hf-distill", "dataset-distillation", "dm"]
    assert data.size_categories == ["n<1K"]
    assert data.source_datasets is None  # a local source is no Hub dataset
    assert "dm" in data.pretty_name and "2 images per class" in data.pretty_name
    evaluated = data["hf_distill"]["eval_results"]
    assert evaluated["distilled"]["mean"] == pytest.approx(results["distilled"]["mean"], abs=1e-4)
    assert evaluated["random_real"]["mean"] == pytest.approx(results["random_real"]["mean"], abs=1e-4)
    assert data["hf_distill"]["images_per_class"] == 2 and data["hf_distill"]["num_classes"] == 3

    text = card.text
    assert "6 synthetic images" in text and "(2 per class, 3 classes)" in text
    assert "[Dataset Condensation with Distribution Matching](https://arxiv.org/abs/2110.04181)" in text
    assert "@inproceedings{zhao2023distribution" in text
    assert f"{results['distilled']['mean']:.2f} ± {results['distilled']['std']:.2f}" in text
    assert "Random real subset" in text and "Whole training split" not in text  # no full-data figure was run
    assert "![" in text and "(synthetic_grid.png)" in text
    assert "ConvNet-2 (width 8, instancenorm, relu, avgpooling)" in text
    assert 'load_dataset("org/tiny-dm", split="train")' in text
    for library in ("hf_distill", "PyTorch", "Datasets", "Transformers"):
        assert f"- {library} " in text
    assert "## Limitations" in text and "normalised" in text


def test_dataset_card_full_data_row_and_unknown_license(distilled_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("distill_config.json", "eval_results.json"):
        (run / name).write_bytes((distilled_run / name).read_bytes())
    metadata = json.loads((run / "distill_config.json").read_text())
    metadata["source"] = {"dataset": "sklearn:digits", "train_split": "train", "test_split": "test"}
    (run / "distill_config.json").write_text(json.dumps(metadata))
    results = json.loads((run / "eval_results.json").read_text())
    results["full_data"] = {**results["random_real"], "mean": 91.5, "std": 0.0, "num_images": 30, "epochs": 20}
    (run / "eval_results.json").write_text(json.dumps(results))

    card = render_dataset_card(run)
    assert card.data.license == "unknown"
    assert card.data["hf_distill"]["eval_results"]["full_data"]["mean"] == 91.5
    assert "| Whole training split | 30 | 91.50 ± 0.00 | 1 | 20 |" in card.text
    assert "sklearn:digits" in card.text


def test_dataset_card_of_an_unevaluated_set(distilled_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "distill_config.json").write_bytes((distilled_run / "distill_config.json").read_bytes())
    (run / "eval_results.json").write_text("{}")
    card = render_dataset_card(run)
    assert "has not been evaluated" in card.text and "| Training set |" not in card.text
    assert card.data["hf_distill"]["eval_results"] == {}
    assert '"<user>/<dataset-name>"' in card.text


def test_merge_card_keeps_metadata_and_replaces_body():
    existing = DatasetCard(
        "---\nlanguage: en\ntags:\n- mine\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
        "    path: data/train-*\ndataset_info:\n  features:\n  - name: label\n    dtype: int64\n---\n# Old body\n"
    )
    ours = DatasetCard("---\nlicense: mit\ntags:\n- hf-distill\n---\n# New body\n")
    merged = merge_card(ours, existing)
    data = DatasetCard(str(merged)).data
    assert data.license == "mit" and data.language == "en"
    assert data.tags == ["mine", "hf-distill"]
    assert data["configs"][0]["data_files"][0]["path"] == "data/train-*"
    assert data["dataset_info"]["features"][0]["name"] == "label"
    assert "# New body" in merged.text and "Old body" not in merged.text
    assert merge_card(ours, None) is ours


def _student_folder(path: Path, *, base_model: str | None = None) -> Path:
    """A folder laid out as `hf_distill.kd` writes it: model, image processor, kd_config.json, eval_results.json."""
    config = ConvNetConfig(
        num_channels=1,
        image_size=8,
        net_width=8,
        net_depth=2,
        num_labels=3,
        id2label={0: "class_0", 1: "class_1", 2: "class_2"},
        label2id={"class_0": 0, "class_1": 1, "class_2": 2},
    )
    torch.manual_seed(0)
    ConvNetForImageClassification(config).save_pretrained(path)
    processor = ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.5], image_std=[0.25])
    processor.save_pretrained(path)
    kd_config = {  # the keys `hf_distill.kd` writes (KDTrainer.kd_config_dict), a few of its settings
        "alpha": 0.7,
        "temperature": 4.0,
        "num_train_epochs": 5,
        "learning_rate": 0.01,
        "seed": 0,
        "teacher": {
            "name_or_path": "org/teacher",
            "description": "hf_distill_convnet from org/teacher",
            "model_type": "hf_distill_convnet",
            "test_accuracy": 97.5,
        },
        "distilled_dataset": "org/tiny-dm",
        "distilled_source": {"dataset": "org/source", "train_split": "train", "test_split": "test"},
        "distilled_method": "dm",
        "images_per_class": 2,
        "num_distilled_images": 6,
        "student_model_type": "hf_distill_convnet",
        "student_architecture": config.to_dict(),
        "base_model": base_model,
        "training_args": {"per_device_train_batch_size": 8, "num_train_epochs": 5},
    }
    (path / "kd_config.json").write_text(json.dumps(kd_config))
    results = {
        "accuracy": 87.5,
        "test_split": "test",
        "dataset": "org/source",
        "num_test_images": 15,
        "seconds": 1.2,
        "epochs": 5,
        "alpha": 0.7,
        "temperature": 4.0,
    }
    (path / "eval_results.json").write_text(json.dumps(results))
    return path


def test_student_card(tmp_path, monkeypatch):
    monkeypatch.setattr(student_cards_module, "source_license", lambda *args, **kwargs: "mit")  # no Hub lookup here
    card = render_student_card(_student_folder(tmp_path / "student"), "org/student")
    data = ModelCard(str(card)).data
    assert data.license == "mit"
    assert data.pipeline_tag == "image-classification" and data.library_name == "transformers"
    assert data.tags == ["hf-distill", "knowledge-distillation", "dataset-distillation"]
    assert data.datasets == ["org/tiny-dm", "org/source"]
    assert data.base_model is None  # trained from scratch
    assert data.model_name == "student"
    (result,) = data.eval_results
    assert result.task_type == "image-classification" and result.metric_type == "accuracy"
    assert result.dataset_type == "org/source" and result.dataset_split == "test"
    assert result.metric_value == pytest.approx(0.875)
    text = card.text
    assert "87.50%" in text and "[org/teacher](https://huggingface.co/org/teacher)" in text
    assert "97.50% test accuracy" in text and "(6 images, 2 per class)" in text
    assert "| Temperature T | 4.0 |" in text and "| alpha (weight of the hard-label cross-entropy) | 0.7 |" in text
    assert "| Epochs | 5 |" in text and "| Batch size (per device) | 8 |" in text
    assert 'AutoModelForImageClassification.from_pretrained("org/student")' in text
    assert "import hf_distill" in text  # a ConvNet student needs the registration

    pretrained = render_student_card(_student_folder(tmp_path / "finetuned", base_model="org/base"), "org/s2")
    assert ModelCard(str(pretrained)).data.base_model == "org/base"


# ---------------------------------------------------------------------------------------------------------------------
# Hub load errors
# ---------------------------------------------------------------------------------------------------------------------


def test_unknown_hub_dataset_and_revision_fail_fast(hub):
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"The dataset 'org/missing' was not found on the Hugging Face Hub.*token="):
        load_source("org/missing")
    make_image_dataset_dict().push_to_hub("org/source")
    with pytest.raises(ValueError, match=r"Revision 'no-such-branch' does not exist in the dataset 'org/source'"):
        load_source("org/source", revision="no-such-branch")
    with pytest.raises(ValueError, match=r"The model 'org/missing-model' was not found"):
        resolve_architecture("org/missing-model")
    with pytest.raises(ValueError, match="does not exist"):
        resolve_architecture("./no/such/folder")
    assert time.perf_counter() - started < 20


def test_unreachable_hub_fails_fast_with_one_message(monkeypatch):
    endpoint = _closed_port_endpoint()
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", endpoint)
    monkeypatch.setattr(hub_constants, "ENDPOINT", endpoint)
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"Could not reach the Hugging Face Hub at .* 'org/name'.*HF_HUB_OFFLINE=1"):
        load_source("org/name")
    with pytest.raises(RuntimeError, match=r"Could not reach the Hugging Face Hub .*model 'org/model'"):
        resolve_architecture("org/model")
    assert time.perf_counter() - started < 5  # no retries (load_dataset alone retries for ~25 s)


def test_offline_mode_names_the_cache(monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    check_hub_access("org/anything")  # offline: no request, the cache decides
    with pytest.raises(RuntimeError, match=r"Offline mode is on .* 'org/not-cached' is not in the local cache"):
        load_source("org/not-cached")


def test_gated_and_refused_errors_are_mapped():
    request = httpx.Request("GET", "http://hub/api/datasets/org/gated")
    gated = GatedRepoError("Access restricted", response=httpx.Response(401, request=request))
    error = hub_error(gated, "org/gated", repo_type="dataset", endpoint="http://hub")
    assert isinstance(error, ValueError)
    assert "gated" in str(error) and "http://hub/datasets/org/gated" in str(error) and "token=" in str(error)
    from datasets.exceptions import DatasetNotFoundError

    from_datasets = DatasetNotFoundError("Dataset 'org/gated' is a gated dataset on the Hub.")
    assert "is gated" in str(hub_error(from_datasets, "org/gated"))
    assert hub_error(KeyError("unrelated"), "org/x") is None


# ---------------------------------------------------------------------------------------------------------------------
# Round trips through the local Hub
# ---------------------------------------------------------------------------------------------------------------------


def _card_data(hub, repo_id: str, repo_type: str = "dataset"):
    card_class = DatasetCard if repo_type == "dataset" else ModelCard
    return card_class(hub.files(repo_id, repo_type=repo_type)["README.md"].decode()).data


def test_distill_from_hub_and_push_round_trip(hub):
    source = make_image_dataset_dict()
    source.push_to_hub("org/source")
    card = DatasetCard(hub.files("org/source")["README.md"].decode())
    card.data.license = SOURCE_LICENSE
    card.push_to_hub("org/source", repo_type="dataset")
    # The distillation architecture from the Hub too.
    ConvNetConfig(num_channels=1, image_size=8, net_width=8, net_depth=2, num_labels=3).push_to_hub("org/convnet")
    revision = HfApi().dataset_info("org/source").sha

    trainer = distill_dataset(
        "org/source", _tiny_config(), model="org/convnet", revision=revision, evaluate=True, return_trainer=True
    )
    assert trainer.model_config.net_width == 8 and trainer.source["revision"] == revision
    url = trainer.push_to_hub("org/tiny-dm")  # no output_dir anywhere: saved to a temporary folder
    assert url == f"{hub.endpoint}/datasets/org/tiny-dm/commit/{hub.commits('org/tiny-dm')[0]}"

    files = hub.files("org/tiny-dm")
    assert {"README.md", "distill_config.json", "eval_results.json", "synthetic_grid.png"} <= set(files)
    assert json.loads(files["eval_results.json"]) == json.loads(json.dumps(trainer.eval_results))
    pushed = load_dataset("org/tiny-dm", split="train").with_format("numpy")
    expected = trainer.to_dataset().with_format("numpy")
    np.testing.assert_array_equal(pushed["pixel_values"][:], expected["pixel_values"][:])
    np.testing.assert_array_equal(pushed["label"][:], expected["label"][:])
    assert pushed.features["label"].names == ["class_0", "class_1", "class_2"]

    data = _card_data(hub, "org/tiny-dm")
    assert data["configs"][0]["data_files"][0]["path"] == "data/train-*"  # written by `datasets`, kept
    assert data["dataset_info"]["splits"][0]["num_examples"] == 6
    assert data.tags == ["hf-distill", "dataset-distillation", "dm"]
    assert data.license == SOURCE_LICENSE and data.source_datasets == ["org/source"]
    mean = data["hf_distill"]["eval_results"]["distilled"]["mean"]
    assert mean == pytest.approx(trainer.eval_results["distilled"]["mean"], abs=1e-4)


def test_repush_replaces_files_and_keeps_card_metadata(hub, distilled_run, tmp_path):
    run = tmp_path / "run"
    for name, content in _snapshot(distilled_run).items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(content)
    push_distilled_to_hub(run, "org/tiny-dm")
    # Someone adds metadata on the Hub; the next push must keep it.
    card = DatasetCard(hub.files("org/tiny-dm")["README.md"].decode())
    card.data.language = "en"
    card.data.tags = [*card.data.tags, "my-tag"]
    card.push_to_hub("org/tiny-dm", repo_type="dataset")

    results = json.loads((run / "eval_results.json").read_text())
    results["distilled"]["mean"] = 12.5
    (run / "eval_results.json").write_text(json.dumps(results))
    url = push_distilled_to_hub(run, "org/tiny-dm", commit_message="Re-evaluate")

    assert url.endswith(hub.commits("org/tiny-dm")[0])
    files = hub.files("org/tiny-dm")
    assert [path for path in files if path.endswith(".parquet")] == ["data/train-00000-of-00001.parquet"]
    assert json.loads(files["eval_results.json"])["distilled"]["mean"] == 12.5
    data = _card_data(hub, "org/tiny-dm")
    assert data.language == "en" and data.tags == ["hf-distill", "dataset-distillation", "dm", "my-tag"]
    assert data["hf_distill"]["eval_results"]["distilled"]["mean"] == 12.5
    assert "configs" in data and "dataset_info" in data
    assert "12.50 ±" in DatasetCard(files["README.md"].decode()).text


def test_failed_commit_raises_clear_error_and_leaves_folder_intact(hub, distilled_run):
    before = _snapshot(distilled_run)
    hub.fail_next_commits()  # the data commit
    with pytest.raises(HubPushError, match=r"HTTP 500.*dataset commit was not made.*re-running the push is safe"):
        push_distilled_to_hub(distilled_run, "org/tiny-dm")
    assert _snapshot(distilled_run) == before
    assert not hub.repo_exists("org/tiny-dm") or "distill_config.json" not in hub.files("org/tiny-dm")

    # The second commit (card and metadata) failing: the message says the data went up and what did not.
    original = datasets.Dataset.push_to_hub

    def push_then_fail(self, *args, **kwargs):
        commit = original(self, *args, **kwargs)
        hub.fail_next_commits()
        return commit

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.Dataset, "push_to_hub", push_then_fail)
        with pytest.raises(HubPushError, match=r"data was committed .*Not pushed: distill_config.json"):
            push_distilled_to_hub(distilled_run, "org/tiny-dm")
    assert _snapshot(distilled_run) == before
    assert "distill_config.json" not in hub.files("org/tiny-dm")
    push_distilled_to_hub(distilled_run, "org/tiny-dm")  # re-running completes the push
    assert "distill_config.json" in hub.files("org/tiny-dm")


def test_dataset_card_usage_snippet_runs(hub, distilled_run):
    push_distilled_to_hub(distilled_run, "org/tiny-dm")
    card = DatasetCard(hub.files("org/tiny-dm")["README.md"].decode())
    namespace: dict = {}
    exec(_python_block(card), namespace)  # exactly the card's code
    expected = datasets.load_from_disk(str(distilled_run / "dataset")).with_format("torch")
    assert torch.equal(namespace["pixel_values"], expected["pixel_values"][:])
    assert torch.equal(namespace["labels"], expected["label"][:])
    assert namespace["pixel_values"].dtype == torch.float32 and namespace["pixel_values"].shape == (6, 1, 8, 8)


def test_student_push_round_trip(hub, distilled_run, tmp_path):
    """A student trained by `hf_distill.kd` (tiny, with a teacher trained on the source), pushed and reloaded."""
    from hf_distill.kd import KDConfig, train_student

    config = KDConfig(
        distilled_dataset=str(distilled_run),
        output_dir=str(tmp_path / "student"),
        **TINY_KD_SETTINGS,
    )
    train_student(config)
    student = Path(config.output_dir)
    url = push_student_to_hub(student, "org/student", private=True)
    assert url.endswith(hub.commits("org/student", repo_type="model")[0])
    files = hub.files("org/student", repo_type="model")
    expected_files = {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "kd_config.json"}
    assert expected_files | {"eval_results.json"} <= set(files)
    assert not any(path.startswith("teacher/") for path in files)  # only the student is published

    loaded = AutoModelForImageClassification.from_pretrained("org/student").eval()
    local = AutoModelForImageClassification.from_pretrained(student).eval()
    pixel_values = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixel_values).logits, local(pixel_values=pixel_values).logits)
    accuracy = json.loads((student / "eval_results.json").read_text())["accuracy"]
    card = ModelCard(files["README.md"].decode())
    assert card.data.eval_results[0].metric_value == pytest.approx(accuracy / 100, abs=1e-4)
    assert card.data.license == SOURCE_LICENSE  # the source folder's license, through the distilled set
    assert card.data.pipeline_tag == "image-classification" and "knowledge-distillation" in card.data.tags
    assert card.data.base_model is None and "ConvNet trained on the full" in card.text


def test_failed_student_push_raises_clear_error(hub, tmp_path):
    student = _student_folder(tmp_path / "student")
    before = _snapshot(student)
    hub.fail_next_commits()
    with pytest.raises(HubPushError, match=r"HTTP 500.*No commit was made.*model.safetensors.*re-running the push"):
        push_student_to_hub(student, "org/student")
    assert _snapshot(student) == before
    assert "model.safetensors" not in hub.files("org/student", repo_type="model")


def test_cli_push(hub, distilled_run, capsys):
    assert cli_main(["push", str(distilled_run), "org/cli-dm"]) == 0
    assert "Pushed" in capsys.readouterr().out
    assert "distill_config.json" in hub.files("org/cli-dm")
    assert load_dataset("org/cli-dm", split="train").num_rows == 6


def test_a_whitened_set_is_pushed_with_its_transform_and_loads_back_with_it(hub, tmp_path):
    from hf_distill.constants import ZCA_NAME
    from hf_distill.kd.data import load_distilled_set

    source = _source_folder(tmp_path / "source")
    trainer = distill_dataset(str(source), _tiny_config(zca=True), evaluate=False, return_trainer=True)
    run = trainer.save(tmp_path / "out")
    push_distilled_to_hub(run, "org/tiny-zca")
    assert hub.files("org/tiny-zca")[ZCA_NAME] == (run / ZCA_NAME).read_bytes()
    loaded = load_distilled_set("org/tiny-zca")
    images = trainer.train_data.zca.inverse(trainer.train_data.images[:4])  # normalised, not whitened
    torch.testing.assert_close(loaded.zca(images), trainer.train_data.images[:4])
    # The card's whitening snippet, exactly as written, whitens real images like the run did.
    card = DatasetCard(hub.files("org/tiny-zca")["README.md"].decode())
    snippet = re.findall(r"```python\n(.*?)```", card.text, re.S)[1]
    namespace = {"normalised_test_images": images}
    exec(snippet, namespace)
    torch.testing.assert_close(namespace["test_pixel_values"], trainer.train_data.images[:4])
