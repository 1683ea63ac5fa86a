"""Memory and speed of `data_on_disk` against the number of rows: CIFAR-10 repeated to 50k, 250k and 1M rows.

```bash
python benchmarks/scale_on_disk.py --rows 50000 250000 1000000 --iterations 50
python benchmarks/scale_on_disk.py --rows 50000 250000 1000000 --iterations 50 --runs streamed
python benchmarks/scale_on_disk.py --rows 1000000 --iterations 50 --runs processes --processes 2
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
3. `--runs streamed`: the same split written as parquet files (`cifar10_<rows>_parquet`, as the Hub serves data)
   and read with `--streaming true`: one pass over the stream into a row store of the run's own, removed at its end.
4. `--runs processes`: at the largest size, the store read by one process and then by `--processes` processes on
   this machine (`accelerate launch --config_file recipes/accelerate_configs/one_machine.yaml`), each process
   reading only its own classes' rows; the two distilled sets are compared value by value.

Each run is a child process; this script samples the `/proc/<pid>/status` of it and its descendants every 0.2 s
for the resident memory split into anonymous (`RssAnon`: tensors, Python objects) and file-backed pages (`RssFile`:
memory-mapped Arrow files and libraries, which the kernel can drop), summed over the processes, and takes the
child's peak RSS (`ru_maxrss`, both kinds; the largest single process of its tree) from `wait4`. Seconds per
iteration are the run's own (`distill_seconds / iterations_completed`: the distillation loop only). Results:
`benchmarks/results/scale_on_disk.json` (each row with the command and commit that measured it; a later command
replaces only the rows it measures) and `scale_on_disk.png`.
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
ACCELERATE_CONFIG = REPO_ROOT / "recipes" / "accelerate_configs" / "one_machine.yaml"
CIFAR10 = REPO_ROOT.parent / "shared" / "data" / "cifar10"
#: `--runs` choices and the name each run has in the results.
RUN_LABELS = {
    "built": "on disk, store built",
    "read": "on disk, store read",
    "memory": "in memory",
    "streamed": "streamed from parquet",
    "processes": "on disk, store read, {} processes",
}


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


def build_parquet(rows: int) -> None:
    """Writes the `rows`-row dataset's splits as parquet files named as on the Hub (`<split>-00000-of-00001`)."""
    from datasets import load_from_disk

    folder = parquet_folder(rows)
    folder.mkdir(parents=True, exist_ok=True)
    for split, ds in load_from_disk(str(RUNS_DIR / f"cifar10_{rows}")).items():
        ds.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))


def parquet_folder(rows: int) -> Path:
    return RUNS_DIR / f"cifar10_{rows}_parquet"


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (from `/proc/<pid>/task/*/children`)."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pending.extend(int(child) for child in task.read_text().split())
            except OSError:
                pass
    return tree


def run_sampled(command: list[str]) -> dict:
    """Runs `command`; its exit code, wall seconds, peak RSS (`ru_maxrss`) and the peaks of the anonymous,
    file-backed and total RSS summed over its process tree."""
    peaks = {"RssAnon": 0, "RssFile": 0, "total": 0}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT)
    done = threading.Event()

    def sample():
        while not done.is_set():
            now = {"RssAnon": 0, "RssFile": 0}
            for pid in process_tree(process.pid):
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        key, _, value = line.partition(":")
                        if key in now:
                            now[key] += int(value.split()[0])
                except (OSError, ValueError):
                    pass
            now["total"] = now["RssAnon"] + now["RssFile"]
            for key, value in now.items():
                peaks[key] = max(peaks[key], value)
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
        "peak_total_mib": round(peaks["total"] / 1024, 1),
    }


def measure(
    dataset: Path,
    iterations: int,
    store_dir: Path,
    *,
    on_disk: bool = True,
    streaming: bool = False,
    processes: int = 1,
    keep: Path | None = None,
) -> dict:
    """One child run of the DM recipe on `dataset` (on `processes` processes); its output is kept in `keep`."""
    with tempfile.TemporaryDirectory(prefix="scale-") as scratch:
        output_dir = keep or Path(scratch)
        launcher = [sys.executable, "-m", "hf_distill.cli", "distill"]
        if processes > 1:
            launcher = [
                sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIG),
                "--num_processes", str(processes), str(REPO_ROOT / "recipes" / "distill.py"),
            ]  # fmt: skip
        command = [
            *launcher, "--config", str(RECIPE), "--dataset", str(dataset),
            "--num_iterations", str(iterations), "--output_dir", str(output_dir), "--torch_compile", "false",
            "--save_steps", "0", "--eval_num_models", "1", "--eval_epochs", "1", "--eval_random_baseline", "false",
            "--data_on_disk", str(on_disk).lower(), "--streaming", str(streaming).lower(),
            "--data_cache_dir", str(store_dir),
        ]  # fmt: skip
        measured = run_sampled(command)
        if measured["returncode"] != 0:
            raise RuntimeError(f"The run failed (exit {measured['returncode']}): {shlex.join(command)}")
        config = json.loads((output_dir / "distill_config.json").read_text())
    completed = config["iterations_completed"]
    return {
        **measured,
        "iterations": completed,
        "seconds_per_iteration": round(config["distill_seconds"] / completed, 4),
        "mixed_precision": config.get("mixed_precision"),
    }


def largest_difference(first: Path, second: Path) -> float:
    """The largest absolute difference between the pixels of two runs' exported sets (and their labels must agree)."""
    import torch
    from datasets import load_from_disk

    sets = [load_from_disk(str(folder / "dataset")).with_format("torch") for folder in (first, second)]
    if not torch.equal(sets[0]["label"][:], sets[1]["label"][:]):
        raise RuntimeError(f"The sets of {first} and {second} hold different labels.")
    return (sets[0]["pixel_values"][:] - sets[1]["pixel_values"][:]).abs().max().item()


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    # The N-process run is left out: its memory is summed over processes that share their mapped pages.
    for run, marker in (("built", "o"), ("read", "s"), ("memory", "^"), ("streamed", "D")):
        label = RUN_LABELS[run]
        chosen = sorted((row for row in rows if row["run"] == label), key=lambda row: row["rows"])
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
    parser.add_argument(
        "--runs", nargs="+", choices=sorted(RUN_LABELS), default=["built", "read", "memory"],
        help="built and read: at every size; memory: at the smallest; streamed: at every size, from parquet; "
        "processes: at the largest, one process then --processes processes reading the same store.",
    )  # fmt: skip
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--build", type=int, help=argparse.SUPPRESS)  # the child that writes one dataset
    parser.add_argument("--build-parquet", type=int, help=argparse.SUPPRESS)  # the child that writes its parquet
    args = parser.parse_args()
    if args.build:
        build(args.build, RUNS_DIR / f"cifar10_{args.build}")
        return
    if args.build_parquet:
        build_parquet(args.build_parquet)
        return

    measured = []
    for rows in args.rows:
        folder, store_dir = RUNS_DIR / f"cifar10_{rows}", RUNS_DIR / f"rows_{rows}"
        if not (folder / "dataset_dict.json").is_file():
            subprocess.run([sys.executable, __file__, "--build", str(rows)], check=True, cwd=REPO_ROOT)
        if "streamed" in args.runs and not any(parquet_folder(rows).glob("train-*.parquet")):
            subprocess.run([sys.executable, __file__, "--build-parquet", str(rows)], check=True, cwd=REPO_ROOT)
        for run in args.runs:
            if (run == "memory" and rows != min(args.rows)) or (run == "processes" and rows != max(args.rows)):
                continue
            if run == "built":
                shutil.rmtree(store_dir, ignore_errors=True)  # this run decodes the split (timed and measured)
            if run == "processes":
                measured += compare_processes(folder, store_dir, rows, args)
            else:
                print(f"== {rows} rows: {RUN_LABELS[run]}", flush=True)
                dataset = parquet_folder(rows) if run == "streamed" else folder
                on_disk, streaming = run != "memory", run == "streamed"
                result = measure(dataset, args.iterations, store_dir, on_disk=on_disk, streaming=streaming)
                measured.append({"rows": rows, "run": RUN_LABELS[run], **result})
                print(json.dumps(measured[-1]), flush=True)
            write(measured)


def compare_processes(folder: Path, store_dir: Path, rows: int, args) -> list[dict]:
    """The store read by one process, then by `args.processes`: both rows, the second with the largest difference
    between its set and the first's."""
    with tempfile.TemporaryDirectory(prefix="scale-sets-") as sets:
        results = []
        for processes in (1, args.processes):
            label = RUN_LABELS["processes"].format(processes) if processes > 1 else RUN_LABELS["read"]
            print(f"== {rows} rows: {label}", flush=True)
            keep = Path(sets) / str(processes)
            result = measure(folder, args.iterations, store_dir, processes=processes, keep=keep)
            results.append({"rows": rows, "run": label, **result})
            print(json.dumps(results[-1]), flush=True)
        difference = largest_difference(Path(sets) / "1", Path(sets) / str(args.processes))
        results[-1]["largest_difference_from_one_process"] = difference
        print(f"largest difference from one process: {difference}", flush=True)
    return results


def write(measured: list[dict]) -> None:
    """Adds `measured` (with this command and commit) to the results file, replacing rows of the same size and run."""
    command, commit = "python benchmarks/scale_on_disk.py " + shlex.join(sys.argv[1:]), git_commit()
    measured = [{**row, "command": command, "commit": commit} for row in measured]
    results = []
    if RESULTS.is_file():
        previous = json.loads(RESULTS.read_text())
        new = {(row["rows"], row["run"]) for row in measured}
        for row in previous["results"]:
            row.setdefault("command", previous.get("command"))  # files written before rows carried their own
            row.setdefault("commit", previous.get("commit"))
            if (row["rows"], row["run"]) not in new:
                results.append(row)
    results = sorted(results + measured, key=lambda row: (row["rows"], row["run"]))
    payload = {
        "commands": sorted({row["command"] for row in results}),
        "machine": machine_info(),
        "recipe": str(RECIPE.relative_to(REPO_ROOT)),
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    plot(results, RESULTS.with_suffix(".png"))


if __name__ == "__main__":
    main()
