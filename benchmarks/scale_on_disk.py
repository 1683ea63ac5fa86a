"""Memory and speed of `data_on_disk` against the number of rows: CIFAR-10 repeated to 50k, 250k and 1M rows.

```bash
python benchmarks/scale_on_disk.py --rows 50000 250000 1000000 --iterations 50
```

1. **Data**: `benchmarks/runs/scale/cifar10_<rows>` (a `DatasetDict.save_to_disk` folder) holds CIFAR-10's
   training split repeated to `rows` rows, copy `c` (c >= 1) with a fixed per-copy pattern of -2..+2 added to every
   pixel (then PNG-encoded, as the Hub stores images), so no two rows are the same; the test split is CIFAR-10's.
   Built once, in a child process.
2. **Runs**: for each size, `hf-distill distill --config recipes/cifar10/dm_ipc10.yaml --dataset <folder>
   --data_on_disk true` for `--iterations` iterations (eager float32/bf16 as the recipe says, no compilation, so
   the seconds per iteration are not dominated by a one-off compile; no checkpoints; a one-model one-epoch
   evaluation) twice: the first run decodes the split into its row store, the second reads the store back. Beside
   them, the same recipe in memory at the smallest size (what every run did before `data_on_disk`).

Each run is a child process; this script samples its `/proc/<pid>/status` every 0.2 s for the resident memory
split into anonymous (`RssAnon`: tensors, Python objects) and file-backed pages (`RssFile`: memory-mapped Arrow
files and libraries, which the kernel can drop), and takes the child's peak RSS (`ru_maxrss`, both kinds) from
`wait4`. Seconds per iteration are the run's own (`distill_seconds / iterations_completed`: the distillation loop
only). Results: `benchmarks/results/scale_on_disk.json` (with this command) and `scale_on_disk.png`.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from run_benchmark import REPO_ROOT, git_commit, machine_info  # scripts here run with this folder on sys.path

RUNS_DIR = REPO_ROOT / "benchmarks" / "runs" / "scale"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "scale_on_disk.json"
RECIPE = REPO_ROOT / "recipes" / "cifar10" / "dm_ipc10.yaml"
CIFAR10 = REPO_ROOT.parent / "shared" / "data" / "cifar10"


def build(rows: int, folder: Path) -> None:
    """Writes CIFAR-10's training split repeated (and perturbed per copy) to `rows` rows, and its test split."""
    import numpy as np
    from datasets import DatasetDict, concatenate_datasets, load_dataset

    source = load_dataset(str(CIFAR10))
    train = source["train"]
    copies = []
    for copy in range(-(-rows // len(train))):
        part = train.select(range(min(len(train), rows - copy * len(train))))
        if copy:
            delta = np.random.default_rng(copy).integers(-2, 3, size=(32, 32, 3), dtype=np.int16)

            def perturb(batch, delta=delta):
                arrays = [
                    np.clip(np.asarray(image, dtype=np.int16) + delta, 0, 255).astype(np.uint8) for image in batch
                ]
                return {"img": arrays}

            part = part.map(perturb, input_columns="img", batched=True, desc=f"copy {copy}")
        copies.append(part)
    DatasetDict({"train": concatenate_datasets(copies), "test": source["test"]}).save_to_disk(str(folder))


def run_sampled(command: list[str]) -> dict:
    """Runs `command`; its exit code, wall seconds, peak RSS (`ru_maxrss`) and peak anonymous / file-backed RSS."""
    peaks = {"RssAnon": 0, "RssFile": 0}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT)
    done = threading.Event()

    def sample():
        status = Path(f"/proc/{process.pid}/status")
        while not done.is_set():
            try:
                for line in status.read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in peaks:
                        peaks[key] = max(peaks[key], int(value.split()[0]))
            except (OSError, ValueError):
                pass
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    done.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "returncode": process.returncode,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "peak_anonymous_mib": round(peaks["RssAnon"] / 1024, 1),
        "peak_file_backed_mib": round(peaks["RssFile"] / 1024, 1),
    }


def measure(folder: Path, iterations: int, on_disk: bool, store_dir: Path) -> dict:
    """One child run of the DM recipe on `folder`."""
    with tempfile.TemporaryDirectory(prefix="scale-") as output_dir:
        command = [
            sys.executable, "-m", "hf_distill.cli", "distill", "--config", str(RECIPE), "--dataset", str(folder),
            "--num_iterations", str(iterations), "--output_dir", output_dir, "--torch_compile", "false",
            "--save_steps", "0", "--eval_num_models", "1", "--eval_epochs", "1", "--eval_random_baseline", "false",
            "--data_on_disk", str(on_disk).lower(), "--data_cache_dir", str(store_dir),
        ]  # fmt: skip
        measured = run_sampled(command)
        if measured["returncode"] != 0:
            raise RuntimeError(f"The run failed (exit {measured['returncode']}): {shlex.join(command)}")
        config = json.loads((Path(output_dir) / "distill_config.json").read_text())
    completed = config["iterations_completed"]
    return {
        **measured,
        "iterations": completed,
        "seconds_per_iteration": round(config["distill_seconds"] / completed, 4),
        "mixed_precision": config.get("mixed_precision"),
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, marker in (("on disk, store built", "o"), ("on disk, store read", "s"), ("in memory", "^")):
        chosen = [row for row in rows if row["run"] == label]
        if not chosen:
            continue
        sizes = [row["rows"] for row in chosen]
        left.plot(sizes, [row["peak_rss_mib"] / 1024 for row in chosen], marker=marker, label=f"{label}: peak RSS")
        left.plot(
            sizes,
            [row["peak_anonymous_mib"] / 1024 for row in chosen],
            marker=marker,
            linestyle="--",
            label=f"{label}: anonymous",
        )
        right.plot(sizes, [row["seconds_per_iteration"] for row in chosen], marker=marker, label=label)
    left.set(xscale="log", xlabel="training rows", ylabel="GiB", title="peak resident memory")
    right.set(xscale="log", xlabel="training rows", ylabel="seconds / iteration", title="DM, CIFAR-10 IPC 10")
    right.set_ylim(bottom=0)
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[50_000, 250_000, 1_000_000])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--build", type=int, help=argparse.SUPPRESS)  # the child that writes one dataset
    args = parser.parse_args()
    if args.build:
        build(args.build, RUNS_DIR / f"cifar10_{args.build}")
        return

    results = []
    for rows in args.rows:
        folder, store_dir = RUNS_DIR / f"cifar10_{rows}", RUNS_DIR / f"rows_{rows}"
        if not (folder / "dataset_dict.json").is_file():
            subprocess.run([sys.executable, __file__, "--build", str(rows)], check=True, cwd=REPO_ROOT)
        shutil.rmtree(store_dir, ignore_errors=True)  # the first run decodes the split (timed and measured)
        runs = [("on disk, store built", True), ("on disk, store read", True)]
        if rows == min(args.rows):
            runs.append(("in memory", False))
        for label, on_disk in runs:
            print(f"== {rows} rows: {label}", flush=True)
            results.append({"rows": rows, "run": label, **measure(folder, args.iterations, on_disk, store_dir)})
            print(json.dumps(results[-1]), flush=True)
        write(results, args)
    write(results, args)


def write(results: list[dict], args) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": "python benchmarks/scale_on_disk.py " + shlex.join(sys.argv[1:]),
        "commit": git_commit(),
        "machine": machine_info(),
        "recipe": str(RECIPE.relative_to(REPO_ROOT)),
        "iterations": args.iterations,
        "results": results,
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    plot(results, RESULTS.with_suffix(".png"))


if __name__ == "__main__":
    main()
