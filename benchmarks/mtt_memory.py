"""Peak memory and seconds per MTT iteration for each `unroll_memory` mode (full, checkpoint, tesla).

    python benchmarks/mtt_memory.py --out benchmarks/results/mtt_memory.json
    python benchmarks/mtt_memory.py --smoke --out /tmp/mtt_memory_smoke.json   # a minute-long check of the script
    # the fastest unroll beside the reference implementation's arithmetic (float32, autograd through the unroll)
    python benchmarks/mtt_memory.py --modes full checkpoint --precisions no bf16 \
        --out benchmarks/results/mtt_speed.json

Settings (MNIST-like): 1x28x28 images, 10 classes, IPC 10 (100 synthetic images, all of them in every student step,
as MTT's default batch_syn), ConvNet-3 width 128, syn_steps 30, DSA augmentation, one process. Memory and time do not
depend on the pixel values, so the training split is random tensors of MNIST's shape (`--dataset` loads a real one
instead, e.g. ../shared/data/mnist), and the expert trajectories (1 expert, 2 epochs, `hf_distill.experts`) are
trained on it first.

`--precisions no bf16` measures every mode twice: in float32 (key `full`, ...) and with the student's forward passes
in bfloat16 autocast (`mixed_precision="bf16"`; key `full_bf16`, ...).

Each mode runs in a fresh child process: it builds the trainer, runs `--warmup` iterations, then times
`--iterations` more. Reported per mode:

- `seconds_per_iteration`: one MTT iteration (loss, backward through the unroll, optimiser step);
- CPU: `peak_rss_mib` (the child's `ru_maxrss` from `os.wait4`; this process never imports torch, so the figure is
  the child's own) and `setup_rss_mib` (its high-water mark before the first, warm-up, iteration); the difference
  is what an iteration adds;
- GPU: `peak_allocated_mib` (`torch.cuda.max_memory_allocated` over the timed iterations) and `setup_allocated_mib`.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model  # benchmarks/machine.py: scripts here run with this folder on sys.path

MODES = ("full", "checkpoint", "tesla")
FULL = dict(image_size=28, num_classes=10, ipc=10, net_width=128, net_depth=3, syn_steps=30, train_images=2000)
SMOKE = dict(image_size=28, num_classes=10, ipc=2, net_width=8, net_depth=3, syn_steps=3, train_images=200)


# ---------------------------------------------------------------------------------------------------------------------
# Child processes (they import torch; the parent does not)
# ---------------------------------------------------------------------------------------------------------------------


def _train_data(settings: dict, dataset: str | None):
    import torch

    from hf_distill.modalities import ImageData

    if dataset:
        from datasets import load_dataset

        from hf_distill.methods.trajectory_matching import TrajectoryMatchingConfig
        from hf_distill.preparation import prepare_splits

        train, _ = prepare_splits(load_dataset(dataset)["train"], None, TrajectoryMatchingConfig())
        return train.subset(torch.arange(min(len(train), settings["train_images"])))
    generator = torch.Generator().manual_seed(0)
    n, side, classes = settings["train_images"], settings["image_size"], settings["num_classes"]
    images = torch.randn(n, 1, side, side, generator=generator)
    labels = torch.arange(n) % classes
    return ImageData(images, labels, [f"class_{c}" for c in range(classes)], [0.5], [0.25])


def _config(settings: dict, **overrides):
    from hf_distill.methods.trajectory_matching import TrajectoryMatchingConfig

    return TrajectoryMatchingConfig(
        images_per_class=settings["ipc"],
        net_width=settings["net_width"],
        net_depth=settings["net_depth"],
        syn_steps=settings["syn_steps"],
        max_start_epoch=1,
        expert_epochs=1,
        num_iterations=0,
        save_steps=0,
        dsa_strategy="color_crop_cutout_scale_rotate",
        **overrides,
    )


def child_prepare(settings: dict, dataset: str | None, expert_dir: str) -> None:
    from hf_distill.experts import train_experts
    from hf_distill.preparation import build_model_config

    train_data = _train_data(settings, dataset)
    model_config = build_model_config(None, train_data, _config(settings))
    train_experts(train_data, model_config, expert_dir, num_experts=1, num_epochs=2, show_progress=False)


def child_measure(
    settings: dict, dataset: str | None, expert_dir: str, mode: str, precision: str, args, out: str
) -> None:
    import resource

    import torch

    from hf_distill.trainer import DistillTrainer

    trainer = DistillTrainer(
        _config(settings, expert_path=expert_dir, unroll_memory=mode, mixed_precision=precision),
        _train_data(settings, dataset),
    )
    classes = trainer.local_classes
    cuda = trainer.accelerator.device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    # The high-water mark before any iteration: what loading torch, the data and the trainer cost.
    result = {"mode": mode, "mixed_precision": precision, "device": str(trainer.accelerator.device)}
    result["setup_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if cuda:
        result["setup_allocated_mib"] = round(torch.cuda.memory_allocated() / 2**20, 1)
    for _ in range(args.warmup):
        trainer._step(classes)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    losses = []
    started = time.perf_counter()
    for _ in range(args.iterations):
        losses.append(trainer._step(classes))
    sync()
    result["seconds_per_iteration"] = round((time.perf_counter() - started) / args.iterations, 4)
    result["losses"] = [round(loss, 6) for loss in losses]
    if cuda:
        result["peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["gpu"] = torch.cuda.get_device_name()
    Path(out).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------------------------------


def _run(command: list[str]) -> dict:
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: keep Popen from waiting again
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed with exit code {process.returncode}.")
    return {"wall_seconds": round(time.perf_counter() - started, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/mtt_memory.json")
    parser.add_argument("--dataset", default=None, help="A dataset folder or id (default: random MNIST-shaped data).")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument(
        "--precisions",
        nargs="*",
        default=["no"],
        choices=["no", "bf16"],
        help="mixed_precision values to measure each mode with (default: float32 only).",
    )
    parser.add_argument("--syn-steps", type=int, default=None, help="Override syn_steps (default 30; smoke: 3).")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the children.")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument(
        "--smoke", action="store_true", help="Tiny settings (width 8, IPC 2, 3 steps): checks the script."
    )
    parser.add_argument("--child", choices=["prepare", "measure"], help=argparse.SUPPRESS)
    parser.add_argument("--expert-dir", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = dict(SMOKE if args.smoke else FULL)
    if args.syn_steps:
        settings["syn_steps"] = args.syn_steps

    if args.child and args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.child == "prepare":
        return child_prepare(settings, args.dataset, args.expert_dir)
    if args.child == "measure":
        return child_measure(settings, args.dataset, args.expert_dir, args.mode, args.precision, args, args.child_out)

    # The children get the same settings explicitly.
    forwarded = ["--warmup", str(args.warmup), "--iterations", str(args.iterations)]
    forwarded += ["--smoke"] if args.smoke else []
    forwarded += ["--syn-steps", str(args.syn_steps)] if args.syn_steps else []
    forwarded += ["--dataset", args.dataset] if args.dataset else []
    forwarded += ["--threads", str(args.threads)] if args.threads else []
    results = {
        "command": " ".join(["python", *sys.argv]),
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "settings": {
            **settings,
            "batch_syn": "all",
            "dataset": args.dataset or "random MNIST-shaped tensors",
            "threads": args.threads or "torch default",
        },
        "modes": {},
    }
    with tempfile.TemporaryDirectory(prefix="mtt_memory_") as tmp:
        expert_dir = str(Path(tmp) / "experts")
        base = [sys.executable, __file__, *forwarded, "--expert-dir", expert_dir]
        results["prepare"] = _run([*base, "--child", "prepare"])
        for precision in args.precisions:
            for mode in args.modes:
                key = mode if precision == "no" else f"{mode}_{precision}"
                child_out = str(Path(tmp) / f"{key}.json")
                command = [*base, "--child", "measure", "--mode", mode, "--precision", precision]
                usage = _run([*command, "--child-out", child_out])
                measured = json.loads(Path(child_out).read_text())
                results["modes"][key] = {**measured, **usage}
                _print_measurement(key, measured, usage)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


def _print_measurement(key: str, measured: dict, usage: dict) -> None:
    line = f"{key:16s} {measured['seconds_per_iteration']:.3f} s/iteration, peak RSS {usage['peak_rss_mib']} MiB"
    if "peak_allocated_mib" in measured:
        line += f", peak GPU allocated {measured['peak_allocated_mib']} MiB"
    print(line, flush=True)


if __name__ == "__main__":
    main()
