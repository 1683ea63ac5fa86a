"""Nothing lost, every error clear (issue 17): reused output folders, late failures, interrupted saves, `evaluate`'s
checks and the command line's error messages, on the offline digits set with tiny settings."""

import json
import os
from pathlib import Path

import pytest

from hf_distill import DistillTrainer, DistributionMatchingConfig
from hf_distill.cli import main
from hf_distill.constants import CONFIG_NAME, EVAL_RESULTS_NAME
from hf_distill.data import load_source
from hf_distill.run_folder import read_run_metadata

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = [
    "--dataset", "sklearn:digits", "--method", "dm", "--images_per_class", "1", "--net_width", "8", "--net_depth", "2",
    "--batch_real", "8", "--eval_num_models", "1", "--eval_epochs", "1", "--no_eval_random_baseline",
]  # fmt: skip


def distill(output_dir, *flags) -> int:
    return main(["distill", *TINY, "--output_dir", str(output_dir), *flags])


def checkpoints(output_dir) -> list[str]:
    return sorted(p.name for p in output_dir.glob("checkpoint-*"))


# ---------------------------------------------------------------------------------------------------------------------
# 1. An output folder holding another run
# ---------------------------------------------------------------------------------------------------------------------


def test_a_folder_holding_another_run_is_refused_and_left_intact(tmp_path, capsys):
    output_dir = tmp_path / "x"
    assert distill(output_dir, "--num_iterations", "4", "--save_steps", "2", "--seed", "0") == 0
    config_before = (output_dir / CONFIG_NAME).read_text()

    assert distill(output_dir, "--num_iterations", "2", "--save_steps", "1", "--seed", "1") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (output_dir / CONFIG_NAME).read_text() == config_before
    assert checkpoints(output_dir) == ["checkpoint-2", "checkpoint-4"]

    # --overwrite_output_dir replaces it whole: none of the old run's checkpoints stay to mix with the new ones.
    assert (
        distill(output_dir, "--num_iterations", "2", "--save_steps", "1", "--seed", "1", "--overwrite_output_dir") == 0
    )
    assert checkpoints(output_dir) == ["checkpoint-1", "checkpoint-2"]
    assert json.loads((output_dir / CONFIG_NAME).read_text())["seed"] == 1


@pytest.mark.parametrize(
    ("flags", "difference"),
    [
        (["--seed", "1"], "seed: 0 (checkpoint) vs 1 (this run)"),
        (["--images_per_class", "2"], "images_per_class: 1 (checkpoint) vs 2 (this run)"),
        (["--method", "dc"], "method: 'dm' (checkpoint) vs 'dc' (this run)"),
        (["--net_width", "16"], "architecture: 'ConvNet-2 (width 8"),
    ],
)
def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path, capsys, flags, difference):
    output_dir = tmp_path / "x"
    assert distill(output_dir, "--num_iterations", "2", "--save_steps", "1", "--test_split", "test") == 0
    (output_dir / CONFIG_NAME).unlink()  # as if interrupted after its checkpoints
    assert distill(output_dir, "--num_iterations", "3", "--resume_from_checkpoint", "latest", *flags) == 2
    error = capsys.readouterr().err
    assert "belongs to another run" in error and difference in error


def test_resuming_a_checkpoint_of_an_earlier_version_names_the_settings_it_did_not_record(tmp_path, caplog):
    output_dir = tmp_path / "x"
    assert distill(output_dir, "--num_iterations", "2", "--save_steps", "1") == 0
    (output_dir / CONFIG_NAME).unlink()  # as if interrupted after its checkpoints
    checkpoint_config = output_dir / "checkpoint-2" / CONFIG_NAME
    recorded = json.loads(checkpoint_config.read_text())
    del recorded["siamese_pairing"]  # as an earlier version wrote it
    checkpoint_config.write_text(json.dumps(recorded))
    with caplog.at_level("WARNING"):
        assert distill(output_dir, "--num_iterations", "3", "--resume_from_checkpoint", "latest") == 0
    assert "did not record siamese_pairing='class'" in caplog.text


def test_resuming_a_finished_run_without_checkpoints_is_refused(tmp_path, capsys):
    output_dir = tmp_path / "x"
    assert distill(output_dir, "--num_iterations", "2", "--save_steps", "0") == 0
    assert distill(output_dir, "--num_iterations", "3", "--resume_from_checkpoint", "latest") == 2
    assert "holds a finished run and no checkpoint" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# 2. Checks before the work
# ---------------------------------------------------------------------------------------------------------------------


def test_an_output_folder_that_cannot_be_written_fails_before_distilling(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    splits = load_source("sklearn:digits")
    output_dir = str(tmp_path / "afile" / "sub")
    config = DistributionMatchingConfig(
        images_per_class=1, net_width=8, net_depth=2, batch_real=8, num_iterations=5, output_dir=output_dir
    )
    trainer = DistillTrainer(config, *splits)
    with pytest.raises(ValueError, match="is a file, not a folder"):
        trainer.train()
    assert trainer.iteration == 0


def test_a_missing_test_split_fails_before_distilling(tmp_path, capsys):
    assert distill(tmp_path / "x", "--num_iterations", "2", "--test_split", "tset") == 2
    error = capsys.readouterr().err
    assert "Split 'tset' not found" in error and "['train', 'test']" in error
    assert not (tmp_path / "x").exists()


def test_an_unreachable_evaluation_model_fails_before_distilling(tmp_path, capsys):
    assert distill(tmp_path / "x", "--num_iterations", "2", "--eval_model_name_or_path", "./no/such/model") == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------------------------------
# 3. The final save
# ---------------------------------------------------------------------------------------------------------------------


def test_an_interrupted_save_never_leaves_a_mixed_run(tmp_path, monkeypatch, capsys):
    output_dir = tmp_path / "x"
    assert distill(output_dir, "--num_iterations", "2", "--seed", "0") == 0

    # The new run dies while its files are moved into place (after the data, before the config).
    real_replace = os.replace

    def dying_replace(source, target):
        if Path(target) == output_dir / EVAL_RESULTS_NAME:
            raise KeyboardInterrupt("killed")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        distill(
            output_dir, "--num_iterations", "2", "--seed", "1", "--images_per_class", "2", "--overwrite_output_dir"
        )
    monkeypatch.undo()

    assert not (output_dir / CONFIG_NAME).exists()  # the old config went first: no old settings beside new rows
    assert main(["evaluate", str(output_dir)]) == 2
    assert "no distill_config.json" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# 4. hf-distill evaluate
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("run") / "x"
    assert distill(output_dir, "--num_iterations", "2", "--save_steps", "1") == 0
    return output_dir


@pytest.mark.parametrize("flags", [["--num_models", "-1"], ["--num_models", "0"], ["--epochs", "-5"]])
def test_evaluate_rejects_numbers_below_one(finished_run, capsys, flags):
    before = (finished_run / EVAL_RESULTS_NAME).read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(finished_run), *flags])
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
    assert (finished_run / EVAL_RESULTS_NAME).read_text() == before


def test_evaluate_explains_what_is_not_a_finished_run(finished_run, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "is not a folder written by `hf-distill distill`" in capsys.readouterr().err
    assert main(["evaluate", str(finished_run / "checkpoint-2")]) == 2
    assert "is a checkpoint, not a finished run" in capsys.readouterr().err

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / CONFIG_NAME).write_text((finished_run / CONFIG_NAME).read_text()[:40])
    assert main(["evaluate", str(broken)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def test_evaluate_against_other_data_is_a_clear_error(finished_run, tmp_path, tiny_image_dataset, capsys):
    other = tmp_path / "other"
    tiny_image_dataset(num_classes=3, rows_per_class=4).save_to_disk(str(other))
    assert main(["evaluate", str(finished_run), "--dataset", str(other)]) == 2
    assert "was distilled from data with classes" in capsys.readouterr().err


def test_read_run_metadata_checks_a_complete_run(finished_run):
    assert read_run_metadata(finished_run)["method"] == "dm"


# ---------------------------------------------------------------------------------------------------------------------
# 6. The command line's errors
# ---------------------------------------------------------------------------------------------------------------------


def test_a_users_mistake_is_one_line_and_the_traceback_needs_debug(tmp_path, capsys):
    assert main(["distill", *TINY, "--output_dir", str(tmp_path), "--dataset", "./no/such/data"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("hf-distill: error: Local dataset path './no/such/data' does not exist")
    assert "Traceback" not in error
    with pytest.raises(ValueError, match="does not exist"):
        main(["distill", *TINY, "--output_dir", str(tmp_path), "--dataset", "./no/such/data", "--debug"])


def test_flag_prefixes_are_not_accepted(tmp_path, capsys):
    assert distill(tmp_path / "x", "--num_iteration", "5") == 2  # not taken for --num_iterations
    assert "['--num_iteration', '5']" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("value", [2.5, True, "2"])
def test_images_per_class_must_be_a_whole_number(value):
    with pytest.raises(ValueError, match="images_per_class must be a whole number"):
        DistributionMatchingConfig(images_per_class=value)
    assert DistributionMatchingConfig(images_per_class=2.0).images_per_class == 2


# ---------------------------------------------------------------------------------------------------------------------
# 7. What is published names no local path
# ---------------------------------------------------------------------------------------------------------------------


def test_a_push_publishes_no_local_path(hub, tmp_path, tiny_image_dataset):
    from hf_distill.hub import push_distilled_to_hub

    source = tmp_path / "machine" / "layout" / "my-source"
    tiny_image_dataset(num_classes=3, rows_per_class=4).save_to_disk(str(source))
    output_dir = tmp_path / "machine" / "runs" / "x"
    flags = ["--dataset", str(source), "--num_iterations", "1", "--output_dir", str(output_dir)]
    assert main(["distill", *TINY[2:], *flags]) == 0
    assert str(tmp_path) in (output_dir / CONFIG_NAME).read_text()  # kept locally: `evaluate` reloads the source

    push_distilled_to_hub(output_dir, "org/published")
    files = hub.files("org/published")
    for name in (CONFIG_NAME, EVAL_RESULTS_NAME, "README.md"):
        assert str(tmp_path) not in files[name].decode(), name
    pushed = json.loads(files[CONFIG_NAME])
    assert pushed["source"]["dataset"] == "./my-source" and pushed["output_dir"] == "./x"
    assert "the local dataset `my-source`" in files["README.md"].decode()


def test_public_text_keeps_hub_ids_and_names_local_paths_by_their_folder():
    from hf_distill.hub_utils import public_text

    record = {
        "dataset": "/home/me/data/mnist",
        "teacher": "ConvNet trained on the full /home/me/data/mnist train split",
        "hub": "ylecun/mnist",
        "relative": "outputs/run",
        "url": "https://huggingface.co/datasets/ylecun/mnist",
        "nested": [{"path": "~/runs/x"}],
    }
    assert public_text(record) == {
        "dataset": "./mnist",
        "teacher": "ConvNet trained on the full mnist train split",
        "hub": "ylecun/mnist",
        "relative": "outputs/run",
        "url": "https://huggingface.co/datasets/ylecun/mnist",
        "nested": [{"path": "./x"}],
    }


# ---------------------------------------------------------------------------------------------------------------------
# 5. One fast, correct "cannot reach the Hub" for every lookup
# ---------------------------------------------------------------------------------------------------------------------


def _unreachable_hub(monkeypatch):
    import socket

    import datasets
    from huggingface_hub import constants as hub_constants

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there once the socket is closed
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", endpoint)
    monkeypatch.setattr(hub_constants, "ENDPOINT", endpoint)


@pytest.mark.parametrize("what", ["experts", "teacher", "distilled set", "config"])
def test_no_network_is_said_at_once_and_never_taken_for_a_missing_file(monkeypatch, what):
    import time

    from hf_distill.config import DistillConfig
    from hf_distill.kd import load_distilled_set, load_teacher
    from hf_distill.trajectories import ExpertTrajectories

    _unreachable_hub(monkeypatch)
    load = {
        "experts": ExpertTrajectories.from_pretrained,
        "teacher": load_teacher,
        "distilled set": load_distilled_set,
        "config": DistillConfig.from_pretrained,
    }[what]
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="Could not reach the Hugging Face Hub") as error:
        load("someorg/something")
    assert "has no" not in str(error.value)
    assert time.perf_counter() - started < 5  # one request, no retry loop


# ---------------------------------------------------------------------------------------------------------------------
# 6. The errors a user meets first: the data
# ---------------------------------------------------------------------------------------------------------------------


def _image_dataset(labels, names, rows=None):
    import io

    import numpy as np
    import PIL.Image
    from datasets import ClassLabel, Dataset, Features, Image

    buffer = io.BytesIO()
    PIL.Image.fromarray(np.full((8, 8), 100, np.uint8)).save(buffer, format="PNG")
    rows = rows or [{"bytes": buffer.getvalue(), "path": f"img_{i}.png"} for i in range(len(labels))]
    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    return Dataset.from_dict({"image": rows, "label": labels}, features=features), buffer.getvalue()


@pytest.mark.parametrize(
    ("labels", "names", "message"),
    [
        ([1, 2, 1, 2, 1, 2], [str(i) for i in range(10)], r"8 of the 10 classes .* have no rows.*shift the ids"),
        ([0, 0, 0, 0], ["only"], r"has 1 class\(es\).*at least 2"),
    ],
    ids=["labels-skip-ids", "one-class"],
)
def test_labels_that_skip_ids_or_hold_one_class_get_a_message_that_works(labels, names, message):
    dataset, _ = _image_dataset(labels, names)
    config = DistributionMatchingConfig(images_per_class=1, init="noise", net_width=8, net_depth=2, batch_real=2)
    with pytest.raises(ValueError, match=message):
        DistillTrainer(config, dataset)


def test_a_corrupt_image_names_its_row_and_file():
    dataset, good = _image_dataset([0, 1, 0, 1], ["a", "b"])
    rows = [{"bytes": good, "path": "ok.png"}] * 2 + [{"bytes": good[:30], "path": "broken.png"}, {"bytes": good}]
    dataset, _ = _image_dataset([0, 1, 0, 1], ["a", "b"], rows)
    config = DistributionMatchingConfig(images_per_class=1, net_width=8, net_depth=2, batch_real=2)
    with pytest.raises(ValueError, match=r"Row 2 of column 'image' \(broken.png\) is not a readable image"):
        DistillTrainer(config, dataset)


def test_an_empty_saved_dataset_is_a_clear_error(tmp_path, capsys):
    from datasets import DatasetDict

    empty = _image_dataset([], ["a", "b"])[0]
    DatasetDict({"train": empty, "test": empty}).save_to_disk(str(tmp_path / "empty"))
    assert distill(tmp_path / "x", "--dataset", str(tmp_path / "empty"), "--num_iterations", "1") == 2
    assert "a split in it has no rows" in capsys.readouterr().err


def test_a_text_dataset_without_a_text_model_is_told_to_name_one(tmp_path, capsys):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    split = Dataset.from_dict({"sentence": ["good", "bad"] * 3, "label": [1, 0] * 3}, features=features)
    DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "text"))
    assert distill(tmp_path / "x", "--dataset", str(tmp_path / "text"), "--num_iterations", "1") == 2
    assert "Text is distilled in the input-embedding space of a pretrained text model: set model_name_or_path" in (
        capsys.readouterr().err
    )


def test_a_coreset_run_is_refused_a_folder_holding_another_run_too(tmp_path, capsys):
    output_dir = tmp_path / "x"
    assert distill(output_dir, "--num_iterations", "2") == 0
    assert (
        main(["distill", *TINY[:2], "--method", "random", "--images_per_class", "1", "--output_dir", str(output_dir)])
        == 2
    )
    assert "already holds a run" in capsys.readouterr().err
    assert json.loads((output_dir / CONFIG_NAME).read_text())["method"] == "dm"
