"""A distillation killed at many points (between iterations, inside a checkpoint write, inside the final save) and
resumed each time ends with exactly the set of an uninterrupted run.

A kill is simulated in-process: every file operation a run makes (renames, deletions, safetensors and JSON writes)
and every iteration counts as one step, and the run dies at a chosen step with an exception no code of the package
catches (`BaseException`), leaving the folder as a `kill -9` would at that point. The steps are drawn from a seeded
generator, never the clock.
"""

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk

import hf_distill.checkpointing as checkpointing
import hf_distill.synthetic as synthetic
from hf_distill.cli import main
from hf_distill.trainer import DistillTrainer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

FLAGS = [
    "--dataset", "sklearn:digits", "--method", "dm", "--images_per_class", "2", "--net_width", "8", "--net_depth", "2",
    "--batch_real", "16", "--num_iterations", "8", "--save_steps", "2", "--save_total_limit", "2",
    "--eval_epochs", "1", "--eval_num_models", "1", "--no_eval_random_baseline", "--seed", "0",
]  # fmt: skip


class Killed(BaseException):
    """The simulated `kill -9`: not an `Exception`, so nothing on the way catches it."""


class Steps:
    """Counts a run's steps and kills it at step `kill_at` (never when `None`)."""

    def __init__(self, monkeypatch, kill_at: int | None):
        self.count, self.kill_at, self.killed_in = 0, kill_at, None
        for module, name in (
            (os, "replace"),
            (shutil, "rmtree"),
            (checkpointing, "save_file"),
            (synthetic, "save_tensors"),
            (Path, "write_text"),
            (DistillTrainer, "_step"),
        ):
            monkeypatch.setattr(module, name, self.wrap(getattr(module, name)))

    def wrap(self, function):
        def counted(*args, **kwargs):
            self.count += 1
            if self.count == self.kill_at:
                self.killed_in = function.__qualname__
                raise Killed(f"killed at step {self.count}, in {self.killed_in}")
            return function(*args, **kwargs)

        return counted


def distill(output_dir: Path, *flags: str) -> int:
    return main(["distill", *FLAGS, "--output_dir", str(output_dir), *flags])


def pixel_values(output_dir: Path) -> np.ndarray:
    return load_from_disk(str(output_dir / "dataset")).with_format("numpy")[:]["pixel_values"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        steps = Steps(monkeypatch, kill_at=None)
        assert distill(output_dir) == 0
    return pixel_values(output_dir), steps.count


@pytest.mark.parametrize("trial", range(10))
def test_a_run_killed_anywhere_and_resumed_gives_the_uninterrupted_set(uninterrupted, tmp_path, trial):
    expected, total_steps = uninterrupted
    rng = random.Random(trial)
    output_dir = tmp_path / "run"
    kills = 0
    # Up to three kills at random steps of the run and of its resumptions, then one run to the end.
    for attempt in range(4):
        kill_at = rng.randint(1, total_steps) if attempt < 3 else None
        resume = ["--resume_from_checkpoint", "latest"] if attempt else []
        with pytest.MonkeyPatch.context() as monkeypatch:
            Steps(monkeypatch, kill_at)
            try:
                status = distill(output_dir, *resume)
            except Killed:
                kills += 1
                continue
        assert status == 0
        if (output_dir / "distill_config.json").is_file():
            break
    assert kills >= 1
    np.testing.assert_array_equal(pixel_values(output_dir), expected)
