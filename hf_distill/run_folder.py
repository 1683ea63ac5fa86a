"""A run's output folder: whether it may be written, whether a checkpoint belongs to it, writing and reading it.

The folder holds the final outputs (`dataset/`, `distill_config.json`, `eval_results.json`, the grid image) beside
the checkpoints (`checkpoint-N/`). `distill_config.json` is written last by a save, so a folder without it is not a
complete run: an interrupted save, or a run still in its checkpoints.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from PIL import Image as PILImage
from safetensors.torch import load_file

from .checkpointing import (
    commit_folder,
    latest_checkpoint,
    list_checkpoints,
    load_optimizer,
    save_optimizer,
    save_tensors,
    write_json_atomic,
)
from .config import DistillConfig
from .constants import (
    CONFIG_NAME,
    DATASET_DIR,
    EVAL_RESULTS_NAME,
    GRID_NAME,
    METHOD_ARTIFACT_NAMES,
    METHOD_STATE_NAME,
    STATE_NAME,
    SYNTHETIC_NAME,
    ZCA_NAME,
)
from .modeling import describe_architecture

#: Keys of a run's fingerprint: a checkpoint can only be resumed by a run that agrees on all of them.
FINGERPRINT_KEYS = ("method", "seed", "images_per_class", "architecture", "dataset", "classes", "input_shape")


def holds_a_run(output_dir: str | os.PathLike) -> bool:
    """Whether `output_dir` holds another run's outputs or checkpoints."""
    path = Path(output_dir)
    if not path.is_dir():
        return False
    return (path / CONFIG_NAME).is_file() or (path / DATASET_DIR).exists() or bool(list_checkpoints(path))


def check_output_dir(output_dir: str | os.PathLike, *, resuming: bool, overwrite: bool) -> Path:
    """Makes sure `output_dir` can be written and is this run's to write, before any work starts.

    Raises:
        ValueError: The folder cannot be created or written (a file in the way, no permission), or it holds another
            run and neither `resuming` nor `overwrite` says what to do with it.
    """
    path = Path(output_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except (FileExistsError, NotADirectoryError) as error:
        raise ValueError(
            f"output_dir {str(path)!r} cannot be created: {error.filename or path} is a file, not a folder. Pass "
            "another --output_dir."
        ) from None
    except PermissionError:
        raise ValueError(f"output_dir {str(path)!r} is not writable. Pass a folder you can write to.") from None
    if holds_a_run(path) and not resuming and not overwrite:
        raise ValueError(
            f"output_dir {str(path)!r} already holds a run (its outputs or checkpoints). Continue it with "
            "--resume_from_checkpoint latest, replace it with --overwrite_output_dir, or pass another --output_dir."
        )
    return path


def fingerprint_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`"key: recorded (checkpoint) vs current (this run)"` for every fingerprint key both know and that differs."""
    return [
        f"{key}: {recorded[key]!r} (checkpoint) vs {current[key]!r} (this run)"
        for key in FINGERPRINT_KEYS
        if key in recorded and key in current and _comparable(recorded[key]) != _comparable(current[key])
    ]


def _comparable(value: Any) -> Any:
    # JSON turns tuples into lists.
    return list(value) if isinstance(value, tuple) else value


def checkpoint_fingerprint(checkpoint: Path) -> dict[str, Any]:
    """The fingerprint a checkpoint recorded; checkpoints written before fingerprints existed give their config's
    method, seed and images per class."""
    state = read_json(checkpoint / STATE_NAME, "checkpoint state")
    if "fingerprint" in state:
        return state["fingerprint"]
    config = read_json(checkpoint / CONFIG_NAME, "checkpoint config") if (checkpoint / CONFIG_NAME).is_file() else {}
    return {key: config[key] for key in ("method", "seed", "images_per_class") if key in config}


def settings_not_recorded(checkpoint: Path, config: DistillConfig) -> list[str]:
    """`"name=value"` for each setting of `config` that the checkpoint's config does not record: it was written by
    an earlier version, and the resumed run continues with these (possibly new) values, e.g. `siamese_pairing`."""
    if not (checkpoint / CONFIG_NAME).is_file():
        return []
    recorded = read_json(checkpoint / CONFIG_NAME, "checkpoint config")
    return [f"{key}={value!r}" for key, value in config.to_dict().items() if key not in recorded]


def read_json(path: Path, what: str) -> dict:
    """A JSON object from `path`, or a `ValueError` that names the file and says it is corrupt."""
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} ({what}) is not valid JSON ({error.msg} at line {error.lineno}): the file is corrupt or was cut "
            "short. Restore it, or distill again."
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} ({what}) must hold a JSON object.")
    return value


def read_run_metadata(output_dir: str | os.PathLike) -> dict:
    """`distill_config.json` of a complete run folder, after checking that the folder is one.

    Raises:
        ValueError: The folder is missing, is a checkpoint, holds an interrupted run or save, or its config and
            dataset disagree; the message says what to do (resume it, pass the run's folder).
    """
    path = Path(output_dir)
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a folder. Pass the output_dir of `hf-distill distill`.")
    if (path / STATE_NAME).is_file():
        raise ValueError(
            f"{str(path)!r} is a checkpoint, not a finished run. Finish the run with `hf-distill distill ... "
            f"--output_dir {path.parent} --resume_from_checkpoint {path}` (the same settings), then evaluate "
            f"{path.parent}."
        )
    if not (path / CONFIG_NAME).is_file():
        if list_checkpoints(path):
            raise ValueError(
                f"{str(path)!r} holds checkpoints but no {CONFIG_NAME}: the run (or its final save) was interrupted. "
                f"Finish it with `hf-distill distill ... --output_dir {path} --resume_from_checkpoint latest`."
            )
        raise ValueError(
            f"{str(path)!r} has no {CONFIG_NAME}: it is not a folder written by `hf-distill distill` "
            "(DistillTrainer.save)."
        )
    metadata = read_json(path / CONFIG_NAME, "the run's config")
    if not (path / DATASET_DIR).is_dir():
        raise ValueError(f"{str(path)!r} has {CONFIG_NAME} but no {DATASET_DIR}/ folder: the set itself is missing.")
    return metadata


def check_saved_set(output_dir: Path, metadata: dict, num_rows: int, class_names: list[str]) -> None:
    """The saved set agrees with its config: one row per class and image, the same classes."""
    recorded_classes = metadata.get("class_names")
    ipc = metadata.get("images_per_class")
    expected_rows = len(recorded_classes) * ipc if recorded_classes and ipc else None
    if (expected_rows is not None and num_rows != expected_rows) or (
        recorded_classes is not None and list(class_names) != list(recorded_classes)
    ):
        raise ValueError(
            f"{output_dir}: {DATASET_DIR}/ ({num_rows} rows, classes {class_names[:5]}...) does not match "
            f"{CONFIG_NAME} ({expected_rows} rows expected): the folder mixes two runs (an interrupted save?). "
            "Distill again into an empty --output_dir, or resume the run from its checkpoints."
        )


def write_run(
    output_dir: Path,
    dataset: Dataset,
    config: DistillConfig,
    metadata: dict,
    eval_results: dict,
    grid: PILImage.Image | None,
    zca=None,
    artifacts: Callable[[Path], None] | None = None,
) -> Path:
    """Writes a run's final outputs so that a reader never sees a mix of two runs.

    `zca` (a [`ZCAWhitening`], for sets distilled in a whitened space) is written as `zca.safetensors`; a run
    without one removes an older run's file. `artifacts(folder)` writes what the method made besides the set
    (`DistillationMethod.save_artifacts`: a teacher, selection scores); those of an older run that this one does not
    write ([`METHOD_ARTIFACT_NAMES`]) are removed, as the ZCA file is.

    Everything is written into a staging folder first; then the old `distill_config.json` is removed (the folder
    stops being a complete run), the new files are moved into place, and the new config comes last: a kill at any
    point leaves either the old run, or a folder without a config (which `evaluate`, `kd` and `push` refuse, and
    whose staging folder holds the complete new outputs).
    """
    staging = output_dir / ".save.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    dataset.save_to_disk(str(staging / DATASET_DIR))
    write_json_atomic(staging / EVAL_RESULTS_NAME, eval_results)
    if grid is not None:  # image sets only
        grid.save(staging / GRID_NAME)
    if zca is not None:
        zca.save(staging / ZCA_NAME)
    standard = {entry.name for entry in staging.iterdir()} | {CONFIG_NAME}
    if artifacts is not None:
        artifacts(staging)
    written_artifacts = sorted(entry.name for entry in staging.iterdir() if entry.name not in standard)
    config.save_pretrained(staging, extra=metadata)
    (output_dir / CONFIG_NAME).unlink(missing_ok=True)
    commit_folder(staging / DATASET_DIR, output_dir / DATASET_DIR)
    optional = {GRID_NAME: grid is not None, ZCA_NAME: zca is not None}
    optional |= {name: False for name in METHOD_ARTIFACT_NAMES if name not in written_artifacts}
    for name, written in optional.items():
        if not written:  # an older run's file would describe another set
            _remove(output_dir / name)
    for name in written_artifacts:
        if (staging / name).is_dir():
            commit_folder(staging / name, output_dir / name)
        else:
            os.replace(staging / name, output_dir / name)
    for name in (EVAL_RESULTS_NAME, *[name for name, written in optional.items() if written], CONFIG_NAME):
        os.replace(staging / name, output_dir / name)
    shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def _remove(path: Path) -> None:
    """Removes a file or a folder, if there is one."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def run_fingerprint(config: DistillConfig, model_config, train_data, source: dict) -> dict:
    """What identifies a run for resuming: method, seed, images per class, architecture, source and data shape."""
    values = {
        "method": config.method,
        "seed": config.seed,
        "images_per_class": config.images_per_class,
        "architecture": describe_architecture(model_config.to_dict()),
        "dataset": source.get("dataset"),
        "classes": list(train_data.class_names),
        "input_shape": list(train_data.example_shape),
    }
    return {key: value for key, value in values.items() if value is not None}


def remove_checkpoints(output_dir: str | os.PathLike) -> None:
    """Deletes every checkpoint of `output_dir` (another run's, replaced with `overwrite_output_dir`)."""
    for checkpoint in list_checkpoints(output_dir):
        shutil.rmtree(checkpoint)


def write_checkpoint(
    output_dir: Path,
    synthetic,
    optimizer: torch.optim.Optimizer,
    method_state: dict[str, torch.Tensor],
    config: DistillConfig,
    state: dict,
) -> Path:
    """Writes `output_dir/checkpoint-{state["iteration"]}` under a temporary name and renames it into place.

    It holds the synthetic set, the optimiser, the method's state (when it keeps any), the config and `state`
    (iteration, seconds, log, the run's fingerprint); the state file is written last, so a folder without it is
    never taken for a checkpoint.
    """
    path = output_dir / f"checkpoint-{state['iteration']}"
    tmp = output_dir / f".checkpoint-{state['iteration']}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    synthetic.save(tmp / SYNTHETIC_NAME)
    save_optimizer(optimizer, tmp)
    if method_state:
        save_tensors({k: v.detach().cpu().contiguous() for k, v in method_state.items()}, tmp / METHOD_STATE_NAME)
    config.save_pretrained(tmp)
    (tmp / STATE_NAME).write_text(json.dumps(state, indent=2))
    commit_folder(tmp, path)
    return path


def find_checkpoint(output_dir: str | os.PathLike | None, checkpoint: str) -> Path | None:
    """The checkpoint `resume_from_checkpoint` names: a folder, or `"latest"` (the newest complete one in
    `output_dir`; `None` when there is none yet).

    Raises:
        ValueError: The folder is no complete checkpoint, or `"latest"` finds only a finished run (nothing to resume).
    """
    if checkpoint in ("latest", "True", "true"):
        path = latest_checkpoint(output_dir) if output_dir else None
        if path is None and output_dir and (Path(output_dir) / CONFIG_NAME).is_file():
            raise ValueError(
                f"{output_dir} holds a finished run and no checkpoint to resume. Pass --overwrite_output_dir "
                "(without --resume_from_checkpoint) to replace it, or another --output_dir."
            )
        return path
    path = Path(checkpoint)
    if not (path / STATE_NAME).is_file():
        raise ValueError(f"{path} is not a complete checkpoint folder (no {STATE_NAME} in it).")
    return path


def read_checkpoint(path: Path, synthetic, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Restores the synthetic set and the optimiser from a checkpoint; returns `(method state, trainer state)`."""
    synthetic.load_state(path / SYNTHETIC_NAME)
    load_optimizer(optimizer, path)
    method_state = load_file(str(path / METHOD_STATE_NAME)) if (path / METHOD_STATE_NAME).is_file() else {}
    return method_state, read_json(path / STATE_NAME, "checkpoint state")
