"""Seconds per DC/DSA outer iteration at MNIST shapes (IPC 10), float32 eager vs the speed options.

    python benchmarks/gm_iteration_speed.py --dataset ../shared/data/mnist \
        --out benchmarks/results/gm_iteration_speed.json

One trainer iteration of gradient matching is `outer_loop` pixel updates (10 at IPC 10), each a matching pass
over all classes (real gradient, synthetic gradient with create_graph, backward to the pixels) followed, except
after the last, by `inner_loop` (50) epochs of network training on the synthetic set. Running whole iterations
for every setting takes minutes on a small CPU, so this times the two parts separately over the first updates
of an iteration (`--warmup` updates first, where compilation happens) and reports

    iteration = outer_loop * matching + (outer_loop - 1) * inner_loop_training

beside the measured parts. Settings: float32 eager; bf16 autocast + channels-last (eager); bf16 or float32 with the
real pass and the inner-loop training compiled (`torch_compile`; the synthetic pass is always eager: no double
backward through compiled graphs).
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

from hf_distill.methods.gradient_matching import DifferentiableSiameseAugmentationConfig, GradientMatchingConfig
from hf_distill.trainer import DistillTrainer

SETTINGS = {
    "float32 eager": dict(mixed_precision="no", torch_compile=False),
    "float32 compiled": dict(mixed_precision="no", torch_compile=True),
    "bf16 eager": dict(mixed_precision="bf16", torch_compile=False),
    "bf16 compiled": dict(mixed_precision="bf16", torch_compile=True),
}
METHODS = {"dc": GradientMatchingConfig, "dsa": DifferentiableSiameseAugmentationConfig}


def time_updates(trainer: DistillTrainer, warmup: int, updates: int) -> tuple[float, float]:
    """Mean seconds of the matching part and of the inner-loop training over `updates` timed updates."""
    method, classes = trainer.method, list(range(trainer.train_data.num_classes))
    inner_seconds: list[float] = []
    after_update = method.after_update

    def timed_after_update(*args):
        started = time.perf_counter()
        after_update(*args)
        inner_seconds.append(time.perf_counter() - started)

    method.after_update = timed_after_update
    totals = []
    for update in range(warmup + updates):
        started = time.perf_counter()
        trainer._update(classes, update)
        totals.append(time.perf_counter() - started)
    inner = inner_seconds[warmup:]
    matching = [total - seconds for total, seconds in zip(totals[warmup:], inner)]
    return sum(matching) / len(matching), sum(inner) / len(inner)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="../shared/data/mnist")
    parser.add_argument("--out", default="benchmarks/results/gm_iteration_speed.json")
    parser.add_argument("--method", choices=sorted(METHODS), default="dsa")
    parser.add_argument("--batch-real", nargs="*", type=int, default=[256, 64])
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--updates", type=int, default=2)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: torch's). On a CPU shared with another job, 1 thread avoids the "
        "oversubscription that makes two spinning threads many times slower.",
    )
    parser.add_argument("--note", default="", help="Free text recorded with the results (e.g. CPU contention).")
    args = parser.parse_args()
    if args.warmup + args.updates >= 10:
        parser.error("--warmup + --updates must stay below outer_loop (10 at IPC 10): the last update trains nothing.")

    if args.threads:
        torch.set_num_threads(args.threads)
    splits = load_dataset(args.dataset)
    results = {
        "command": " ".join(["python", *sys.argv]),
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "settings": f"MNIST, method {args.method}, images_per_class 10 (outer_loop 10, inner_loop 50), "
        "ConvNet-3 width 128 instance norm, one process",
        "note": args.note,
        "seconds": {},
    }
    train_data = None
    for batch_real in args.batch_real:
        for name in args.settings:
            config = METHODS[args.method](
                images_per_class=10, num_iterations=0, save_steps=0, batch_real=batch_real, **SETTINGS[name]
            )
            trainer = DistillTrainer(config, train_data or splits["train"])
            train_data = trainer.train_data  # decode the images once
            matching, inner = time_updates(trainer, args.warmup, args.updates)
            outer, inner_loop = config.outer_loop, config.inner_loop
            iteration = outer * matching + (outer - 1) * inner
            results["seconds"][f"batch_real {batch_real}, {name}"] = {
                "matching_per_update": round(matching, 3),
                "inner_loop_per_update": round(inner, 3),
                "per_outer_iteration": round(iteration, 2),
            }
            print(
                f"batch_real {batch_real:4d}  {name:28s} matching {matching:6.2f} s  inner ({inner_loop} epochs) "
                f"{inner:6.2f} s  -> {iteration:7.1f} s/iteration",
                flush=True,
            )
            with open(args.out, "w") as handle:  # after every setting: a partial run still leaves its numbers
                json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
