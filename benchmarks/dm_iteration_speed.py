"""Seconds per DM iteration at identical settings (MNIST, IPC 10, DSA), float32 eager vs the speed options.

    python benchmarks/dm_iteration_speed.py --dataset ../shared/data/mnist \
        --out benchmarks/results/dm_iteration_speed.json

Each setting builds a trainer, runs `--warmup` iterations (compilation happens there) and times `--iterations`
more. The reference implementation's figure on this machine (3.1-3.5 s at batch_real 256, 0.89 s at 64) is in
../shared/reference/published.md ("Measured on this kind of machine").
"""

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from datasets import load_dataset
from machine import cpu_model  # benchmarks/machine.py: scripts here run with this folder on sys.path

from hf_distill import DistributionMatchingConfig
from hf_distill.trainer import DistillTrainer

SETTINGS = {
    "float32 eager": dict(mixed_precision="no", torch_compile=False),
    "float32 compiled": dict(mixed_precision="no", torch_compile=True),
    "bf16 compiled": dict(mixed_precision="bf16", torch_compile=True),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="../shared/data/mnist")
    parser.add_argument("--out", default="benchmarks/results/dm_iteration_speed.json")
    parser.add_argument("--batch-real", nargs="*", type=int, default=[256, 64])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()

    splits = load_dataset(args.dataset)
    results = {
        "command": " ".join(["python", *sys.argv]),
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__},
        "settings": "MNIST, images_per_class 10, DSA (auto), ConvNet-3 width 128, one process",
        "seconds_per_iteration": {},
    }
    train_data = None
    for batch_real in args.batch_real:
        for name, options in SETTINGS.items():
            config = DistributionMatchingConfig(
                images_per_class=10, num_iterations=0, save_steps=0, batch_real=batch_real, **options
            )
            trainer = DistillTrainer(config, train_data or splits["train"])
            train_data = trainer.train_data  # decode the images once
            classes = list(range(train_data.num_classes))
            for _ in range(args.warmup):
                trainer._step(classes)
            started = time.perf_counter()
            for _ in range(args.iterations):
                trainer._step(classes)
            seconds = (time.perf_counter() - started) / args.iterations
            results["seconds_per_iteration"][f"batch_real {batch_real}, {name}"] = round(seconds, 4)
            print(f"batch_real {batch_real:4d}  {name:18s} {seconds:.3f} s/iteration", flush=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
