"""Atomic, resumable checkpoints (safetensors + JSON only, no pickles).

A checkpoint is the folder `output_dir/checkpoint-{iteration}`. It is written under a temporary name and renamed
into place only once every file in it is complete and flushed, so a run killed mid-write never leaves a corrupt
latest checkpoint: the newest *complete* folder is always the one resumed from.
"""

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .constants import OPTIMIZER_META_NAME, OPTIMIZER_NAME, STATE_NAME

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def save_tensors(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """`safetensors.torch.save_file` with the permissions of any other file this process creates.

    safetensors creates its files with mode 0600 whatever the umask, so experts, checkpoints and synthetic sets written
    by one user (or a CI job) could not be read by a teammate or a web server sharing the folder. This applies the
    process umask to 0666, as `open(path, "w")` does.
    """
    save_file(tensors, str(path), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def save_tensors_atomic(tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """[`save_tensors`] under a temporary name beside `path` (its folder created), then renamed into place: a reader
    (or a run killed mid-write) finds the whole file or none, never half of one (caches read back by later runs). The
    temporary name is the process's own, so processes writing the same cache at once never write into one file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_tensors(tensors, tmp)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | os.PathLike, payload: Any, *, sort_keys: bool = False) -> Path:
    """Writes `payload` as indented JSON beside `path` under a temporary name, then renames it into place.

    A reader (or a run killed mid-write) sees the old file or the new one, never half of one. Values JSON cannot
    hold are written as their `str()`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=sort_keys, default=str) + "\n")
    os.replace(tmp, path)
    return path


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def commit_folder(tmp: Path, final: Path) -> None:
    """Moves a fully written folder `tmp` to `final` atomically (replacing an older `final`, if any)."""
    _fsync_tree(tmp)
    if final.exists():
        # Rename the old copy aside first: between the two renames a complete copy always exists.
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_dir() and (path / STATE_NAME).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in `output_dir`, or `None`."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def rotate_checkpoints(output_dir: str | os.PathLike, keep: int | None) -> None:
    """Deletes the oldest checkpoints so that at most `keep` remain (`None` keeps all)."""
    if keep is None:
        return
    for path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Writes an optimizer's state: tensors to safetensors, everything else to JSON."""
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{param_id}.{name}"] = value
    save_tensors(tensors, folder / OPTIMIZER_NAME)
    meta = {"param_groups": state_dict["param_groups"], "scalars": scalars}
    (folder / OPTIMIZER_META_NAME).write_text(json.dumps(meta, indent=2))


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Restores the state written by `save_optimizer` into `optimizer`."""
    meta = json.loads((folder / OPTIMIZER_META_NAME).read_text())
    state: dict[int, dict] = {}
    for key, value in {**load_file(str(folder / OPTIMIZER_NAME)), **meta["scalars"]}.items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
