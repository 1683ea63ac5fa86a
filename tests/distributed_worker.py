"""Runs a tiny distillation in 2 CPU processes with `accelerate.debug_launcher` (used by test_trainer.py).

It runs as its own Python process on purpose: `debug_launcher` forks, and a process that has already run
OpenMP-parallel torch kernels (as the pytest process has, in earlier tests) leaves the forked children's OpenMP
runtime unusable, so their first convolution hangs. Here nothing parallel runs before the fork.

Usage: python tests/distributed_worker.py OUT_FILE '<json config kwargs>'  (a "method" key picks the method; dm)
"""

import json
import sys
from pathlib import Path

from accelerate import debug_launcher

sys.path.insert(0, str(Path(__file__).resolve().parent))


def distill(config_kwargs: dict, out_file: str) -> None:
    from conftest import make_image_dataset_dict
    from safetensors.torch import save_file

    from hf_distill import DistillTrainer
    from hf_distill.methods import get_method_class

    config_kwargs = dict(config_kwargs)
    config_class = get_method_class(config_kwargs.pop("method", "dm")).config_class
    splits = make_image_dataset_dict(num_classes=3)
    trainer = DistillTrainer(config_class(**config_kwargs), splits["train"])
    if trainer.accelerator.num_processes != 2:
        raise RuntimeError(f"expected 2 processes, got {trainer.accelerator.num_processes}")
    trainer.train()
    if trainer.accelerator.is_main_process:
        save_file({name: t.detach().contiguous() for name, t in trainer.synthetic.state_dict().items()}, out_file)
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    debug_launcher(distill, args=(json.loads(sys.argv[2]), sys.argv[1]), num_processes=2)
