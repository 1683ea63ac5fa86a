"""Evaluations that do not depend on the distilled set, kept on disk under a digest of their inputs.

A table of methods at one size evaluates the same random real subset once per method: the same rows, network,
protocol and seed give the same figures (every model's generator is derived from them), and at 50 images per class
its three models take ~18 minutes on a 2-core CPU (MNIST). With `eval_cache_dir` set, the first run keeps
the result under a digest of everything it depends on and later runs read it instead of training the models again;
a change to any input (the data, the network, the protocol, the seed) gives another digest, so a stale figure is
never read back.
"""

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from .checkpointing import write_json_atomic


def tensor_digest(*tensors: torch.Tensor, extra: list | None = None) -> str:
    """A short digest of the bytes of `tensors` and of `extra`'s JSON (put shapes and dtypes there when they matter:
    the bytes alone do not tell them apart)."""
    digest = hashlib.sha256(json.dumps(extra or [], sort_keys=True, default=str).encode())
    for tensor in tensors:
        # Through uint8: numpy has no bfloat16. The same bytes as `tensor.numpy().tobytes()` where numpy has the dtype,
        # so digests written before this helper existed (NAS reports) still match.
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def cached_evaluation(
    folder: str | os.PathLike | None,
    key: str,
    digest: str,
    compute: Callable[[], dict],
    is_main_process: bool = True,
) -> dict:
    """`compute()`'s result, read from `folder/<key>-<digest>.json` when an earlier run left it there.

    Args:
        folder (`str` or `os.PathLike`, *optional*): The cache folder; `None` computes every time.
        key (`str`): What is evaluated (`"random"`, `"full"`), the start of the file name.
        digest (`str`): A digest of every input of the evaluation (see [`tensor_digest`]).
        compute (`Callable[[], dict]`): Runs the evaluation (on every process: it may gather across them).
        is_main_process (`bool`, *optional*, defaults to `True`): Only the main process writes the file.

    Returns:
        `dict`: the result; one read from the cache also has `reused_from`, the file's name, so the results that
        carry it say where the figure came from.
    """
    if folder is None:
        return compute()
    path = Path(folder) / f"{key}-{digest}.json"
    if path.is_file():
        return {**json.loads(path.read_text()), "reused_from": path.name}
    result = compute()
    if is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, result)
    return result
