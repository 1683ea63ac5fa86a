"""How a method's cost grows with the images per class: seconds per iteration and peak memory at IPC 1, 10, 50.

```bash
python benchmarks/ipc_scaling.py --recipe recipes/cifar10/rfad_ipc1.yaml --ipc 1 10 50 --iterations 20
```

For each IPC the recipe runs in a child process (`hf-distill distill --config RECIPE --images_per_class N
--num_iterations K`, no checkpoints, a one-epoch one-model evaluation so that the run ends quickly) and the script
records the distillation loop's seconds per iteration (`distill_seconds / iterations_completed` from the run's
`distill_config.json`: no data loading, no evaluation) and the child's peak resident memory (`ru_maxrss`: data
loading included, e.g. CIFAR-10's 614 MB of float32 images). The parent never imports torch (see
`run_benchmark.py`: a heavy parent would inflate the children's `ru_maxrss`). Results: one JSON (with the command
that made it) and one plot under `benchmarks/results/ipc_scaling/`.
"""

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

from run_benchmark import REPO_ROOT, machine_info, run_measured  # scripts here run with this folder on sys.path

DEFAULT_OUTPUT_DIR = REPO_ROOT / "benchmarks" / "results" / "ipc_scaling"


def measure(recipe: Path, ipc: int, iterations: int, extra: list[str]) -> dict:
    """One child run of `recipe` at `ipc` images per class for `iterations` iterations."""
    with tempfile.TemporaryDirectory(prefix="ipc-scaling-") as output_dir:
        command = [
            sys.executable, "-m", "hf_distill.cli", "distill", "--config", str(recipe),
            "--images_per_class", str(ipc), "--num_iterations", str(iterations), "--output_dir", output_dir,
            "--save_steps", "0", "--eval_num_models", "1", "--eval_epochs", "1", "--eval_random_baseline", "false",
            *extra,
        ]  # fmt: skip
        measured = run_measured(command, REPO_ROOT)
        if measured["returncode"] != 0:
            raise RuntimeError(f"IPC {ipc}: the run failed (exit {measured['returncode']}): {shlex.join(command)}")
        config = json.loads((Path(output_dir) / "distill_config.json").read_text())
    completed = config["iterations_completed"]
    return {
        "images_per_class": ipc,
        "iterations": completed,
        "seconds_per_iteration": round(config["distill_seconds"] / completed, 4),
        "peak_rss_mib": measured["peak_rss_mib"],
        "wall_seconds": measured["wall_seconds"],
    }


def plot(rows: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ipcs = [row["images_per_class"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(ipcs, [row["seconds_per_iteration"] for row in rows], marker="o")
    left.set(xscale="log", xlabel="images per class", ylabel="seconds / iteration")
    right.plot(ipcs, [row["peak_rss_mib"] / 1024 for row in rows], marker="o", color="tab:orange")
    right.set(xscale="log", xlabel="images per class", ylabel="peak RSS (GiB)")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", type=Path, required=True, help="A recipe YAML (its other settings are kept).")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50], help="Images per class to measure.")
    parser.add_argument("--iterations", type=int, default=20, help="Iterations per run (the mean is reported).")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR)
    parser.add_argument("extra", nargs="*", help="More `distill` flags after `--` (e.g. -- --zca true).")
    args = parser.parse_args(argv)
    recipe = args.recipe.resolve()
    rows = [measure(recipe, ipc, args.iterations, args.extra) for ipc in args.ipc]
    name = "_".join([recipe.parent.name, recipe.stem.split("_ipc")[0], *(flag.lstrip("-") for flag in args.extra)])
    args.output_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": shlex.join(["python", "benchmarks/ipc_scaling.py", *(argv or sys.argv[1:])]),
        "recipe": str(recipe.relative_to(REPO_ROOT)),
        "extra_flags": args.extra,
        "machine": machine_info(),
        "rows": rows,
    }
    (args.output_dir / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(rows, f"{name}: cost against images per class", args.output_dir / f"{name}.png")
    for row in rows:
        print(
            f"IPC {row['images_per_class']:>3}: {row['seconds_per_iteration']:.3f} s/iteration, "
            f"peak {row['peak_rss_mib'] / 1024:.2f} GiB"
        )
    print(f"Wrote {args.output_dir / name}.json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
