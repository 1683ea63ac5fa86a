"""The authors' side of `benchmarks/parity.py`: their scripts run unchanged from a checkout the user provides
(through `benchmarks/parity_reference.py`, which adds only shims), their experts for MTT, and their sets brought
back in this project's normalisation; plus what both sides record about a run (machine, commits)."""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_model  # benchmarks/machine.py: scripts here run with this folder on sys.path
from parity_reference import FINAL_SET_FILE, GRAD_NORMS_FILE, SEGMENTS_FILE, SNAPSHOT_FILE, expert_fingerprint
from parity_results import write_results
from safetensors import safe_open

from hf_distill.trajectories import epoch_key

ROOT = Path(__file__).resolve().parent.parent
#: Where final sets and both sides' MTT experts are kept (git-ignored).
RUNS_DIR = ROOT / "benchmarks" / "runs" / "parity"
REFERENCE_RUNNER = ROOT / "benchmarks" / "parity_reference.py"

#: The authors' dataset names, and the normalisation constants their `get_dataset` uses.
AUTHORS_DATASETS = {
    "mnist": ("MNIST", [0.1307], [0.3081]),
    "fashion_mnist": ("FashionMNIST", [0.2861], [0.3530]),
    "cifar10": ("CIFAR10", [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]),
}
#: Our method -> (the authors' script, its extra arguments, the name in its result file); `mtt` runs
#: GeorgeCazenavette/mtt-distillation's `distill.py` (its experts first, by its `buffer.py`), the others
#: VICO-UoE/DatasetCondensation.
AUTHORS_SCRIPTS = {
    "dm": ("main_DM.py", [], "DM"),
    "dsa": ("main.py", ["--method", "DSA"], "DSA"),
    "mtt": ("distill.py", [], None),
}

ITERATION_LINE = re.compile(r"iter = (\d+)")


def iteration_argument(num_iterations: int) -> str:
    """The scripts' `--Iteration` for `num_iterations` updates of the set: their loops run `range(Iteration + 1)`
    and update the set in every pass, the last included (`main_DM.py` and `main.py` keep the set after it,
    `distill.py` ends with it), so `--Iteration N` makes N + 1 updates. Before session 34 the parity passed N."""
    return str(num_iterations - 1)


def run_reference(
    args, workdir: Path, seed: int, script_and_arguments: list[str], snapshots: list[int] = ()
) -> dict[int, float]:
    """One of the authors' scripts through `parity_reference.py` in `workdir` (its output in `workdir/log.txt`);
    returns when each `iter = N` line arrived (monotonic seconds), which is how their runs are timed. MTT's
    `distill.py` also leaves its set of each of `snapshots` there (`SNAPSHOT_FILE`)."""
    runner = [sys.executable, "-u", str(REFERENCE_RUNNER), "--repo", args.reference_repo, "--data-dir", args.data_dir]
    if args.method == "mtt" and args.dataset in ("mnist", "fashion_mnist"):
        runner.append("--add-digit-datasets")  # their get_dataset knows neither (see parity_reference.py)
    if snapshots:  # MTT only (run_authors passes none for the DC code, which keeps no set on its way)
        runner += ["--snapshots", *map(str, snapshots)]
    command = [*runner, "--workdir", str(workdir), "--seed", str(seed), "--", *script_and_arguments]
    print("authors:", " ".join(command), flush=True)
    arrivals = {}
    log_path = workdir / "log.txt"
    workdir.mkdir(parents=True, exist_ok=True)
    with (
        open(log_path, "w", buffering=1) as log,  # line-buffered: the log can be followed while it runs
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as process,
    ):
        for line in process.stdout:
            log.write(line)
            match = ITERATION_LINE.search(line)
            if match:
                arrivals[int(match.group(1))] = time.monotonic()
    if process.returncode != 0:
        raise RuntimeError(
            f"the authors' {script_and_arguments[0]} failed (exit {process.returncode}); see {log_path}"
        )
    return arrivals


def dc_arguments(args, config, prepared) -> list[str]:
    """`main_DM.py` / `main.py` with the recipe's settings (no evaluation of their own beyond one 1-epoch model)."""
    script, extra, _ = AUTHORS_SCRIPTS[args.method]
    return [
        script, *extra, "--dataset", AUTHORS_DATASETS[args.dataset][0], "--model", "ConvNet",
        "--ipc", str(config.images_per_class), "--Iteration", iteration_argument(config.num_iterations),
        "--num_exp", "1", "--num_eval", "1", "--epoch_eval_train", "1", "--batch_real", str(config.batch_real),
        "--lr_img", str(config.lr_images), "--init", config.init, "--dsa_strategy", prepared.dsa_strategy or "none",
        "--save_path", "result", "--data_path", "data",
    ]  # fmt: skip


def dc_final_set(workdir: Path, args, config) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, result_name = AUTHORS_SCRIPTS[args.method]
    authors_name = AUTHORS_DATASETS[args.dataset][0]
    result_file = workdir / "result" / f"res_{result_name}_{authors_name}_ConvNet_{config.images_per_class}ipc.pt"
    saved = torch.load(result_file, weights_only=False)  # written by their run
    return saved["data"][-1]


def experts_folder(args, side: str) -> Path:
    """Where one side's MTT experts for this dataset and size are kept (`side`: "buffers", theirs; "experts", ours;
    "buffers_from_ours", ours in their format)."""
    return RUNS_DIR / side / f"{args.dataset}_{args.num_experts}x{args.expert_train_epochs}"


def authors_buffers(args) -> Path:
    """The experts the authors' `distill.py` reads: their own (`--experts own`) or ours converted (`ours`)."""
    return experts_folder(args, "buffers_from_ours" if args.experts == "ours" else "buffers")


def buffer_file(args, buffers: Path) -> Path:
    """The first (here: only) file of experts `buffer.py` writes under `buffers`, where `distill.py` looks for it."""
    return buffers / AUTHORS_DATASETS[args.dataset][0] / "ConvNet" / "replay_buffer_0.pt"


def authors_buffer_from_our_experts(args, our_path: str) -> dict:
    """`--experts ours`: our experts written as the authors' `buffer.py` writes its own, so that their `distill.py`
    matches the very trajectories ours does: a list of trajectories, each a list of epochs (0 = the
    initialisation), each a list of parameter tensors, which `distill.py` flattens and concatenates. Here each
    epoch holds one tensor, our flat vector: our ConvNet's parameters come in the order and shapes of theirs
    (conv, norm per block, then the classifier; checked against their ConvNet when this was written).
    Converted again whenever our experts' index changed."""
    index_text = (Path(our_path) / "experts.json").read_text()
    index = json.loads(index_text)
    buffers = authors_buffers(args)
    target = buffer_file(args, buffers)
    record_file = buffers / "converted_from.json"
    recorded = {"converted_from": str(our_path), "index_sha256": hashlib.sha256(index_text.encode()).hexdigest()}
    if target.is_file() and record_file.is_file() and json.loads(record_file.read_text()) == recorded:
        return {"path": str(buffers), **recorded}
    trajectories = []
    for expert in index["experts"]:
        with safe_open(str(Path(our_path) / expert["file"]), framework="pt") as handle:
            epochs = range(index["num_epochs"] + 1)
            trajectories.append([[handle.get_tensor(epoch_key(epoch)).clone()] for epoch in epochs])
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    torch.save(trajectories, partial)
    os.replace(partial, target)  # atomic: a stopped conversion leaves no buffer that looks whole
    write_results(record_file, recorded)
    return {"path": str(buffers), **recorded}


def authors_experts(args, prepared) -> dict:
    """MTT's experts trained by their `buffer.py` (once per dataset and size; kept under `benchmarks/runs/parity`)
    with the settings our experts use: `--num-experts` x `--expert-train-epochs`, SGD lr 0.01, batch 256, the
    recipe's DSA strategy, the first of `--seeds`. Returns where they are and what training them cost (recorded in
    `training.json` beside them, and read back from it when they were there already)."""
    buffers = experts_folder(args, "buffers")
    authors_name = AUTHORS_DATASETS[args.dataset][0]
    record_file = buffers / "training.json"
    if buffer_file(args, buffers).is_file():
        recorded = json.loads(record_file.read_text()) if record_file.is_file() else {}
        return {"path": str(buffers), **recorded}
    command = [
        "buffer.py", "--dataset", authors_name, "--model", "ConvNet", "--num_experts", str(args.num_experts),
        "--train_epochs", str(args.expert_train_epochs), "--lr_teacher", "0.01", "--batch_train", "256",
        "--dsa", "True", "--dsa_strategy", prepared.dsa_strategy or "none", "--save_interval", str(args.num_experts),
        "--buffer_path", str(buffers.resolve()), "--data_path", "data",
    ]  # fmt: skip
    started = time.monotonic()
    run_reference(args, buffers.with_name(buffers.name + "_work"), args.seeds[0], command)
    recorded = {
        "train_seconds": round(time.monotonic() - started, 1),
        "seed": args.seeds[0],
        "command": [REFERENCE_RUNNER.name, *command],
        "machine": this_machine(),
        "reference_commit": git_commit(Path(args.reference_repo)),
    }
    write_results(record_file, recorded)
    return {"path": str(buffers), **recorded}


def mtt_arguments(args, config, prepared, buffers: Path) -> list[str]:
    """`distill.py` with the recipe's settings; its own evaluation only at iteration 0 (one model, one epoch)."""
    arguments = [
        "distill.py", "--dataset", AUTHORS_DATASETS[args.dataset][0], "--model", "ConvNet",
        "--ipc", str(config.images_per_class), "--Iteration", iteration_argument(config.num_iterations),
        "--eval_it", str(config.num_iterations), "--num_eval", "1", "--epoch_eval_train", "1",
        "--syn_steps", str(config.syn_steps), "--expert_epochs", str(config.expert_epochs),
        "--max_start_epoch", str(config.max_start_epoch), "--lr_img", str(config.lr_images),
        "--lr_lr", str(config.lr_lr), "--lr_teacher", str(config.syn_lr_init), "--pix_init", config.init,
        "--dsa", "True", "--dsa_strategy", prepared.dsa_strategy or "none", "--buffer_path", str(buffers.resolve()),
        "--data_path", "data",
    ]  # fmt: skip
    if config.batch_syn:
        arguments += ["--batch_syn", str(config.batch_syn)]
    return arguments


def mtt_final_set(workdir: Path, file: str = FINAL_SET_FILE) -> tuple[torch.Tensor, torch.Tensor]:
    saved = torch.load(workdir / file)  # kept by parity_reference's wandb stand-in (finish(), or log() on the way)
    return saved["image_syn"], saved["label_syn"]


def mtt_step_size(workdir: Path) -> float | None:
    """The step size `distill.py` learned (its `syn_lr` at the end), beside its final set."""
    step_size = torch.load(workdir / FINAL_SET_FILE).get("syn_lr")
    return None if step_size is None else float(step_size)


def pixel_gradient_norms(workdir: Path) -> list[float]:
    """The norm of the pixels' gradient at each of the script's pixel steps (parity_reference.py logs them)."""
    path = workdir / GRAD_NORMS_FILE
    return [float(line) for line in path.read_text().split()] if path.is_file() else []


def logged_segments(workdir: Path, buffer: Path) -> dict:
    """The expert (its position in `buffer`, the file `distill.py` read: ours in our order with `--experts ours`)
    and start epoch each of `distill.py`'s iterations matched, as parity_reference.py logged them; `{}` if it did
    not."""
    path = workdir / SEGMENTS_FILE
    if not path.is_file():
        return {}
    position = {expert_fingerprint(trajectory): i for i, trajectory in enumerate(torch.load(buffer))}
    segments = [line.split() for line in path.read_text().splitlines()]
    return {
        "experts": [position.get(float(fingerprint)) for _, fingerprint in segments],
        "start_epochs": [int(start) for start, _ in segments],
    }


def to_our_normalisation(images: torch.Tensor, args, prepared) -> torch.Tensor:
    """The authors' normalisation -> pixels in [0, 1] -> ours (the training split's own statistics)."""
    _, mean_a, std_a = AUTHORS_DATASETS[args.dataset]
    train_data = prepared.train_data
    mean_a, std_a = torch.tensor(mean_a).view(1, -1, 1, 1), torch.tensor(std_a).view(1, -1, 1, 1)
    mean_o, std_o = torch.tensor(train_data.mean).view(1, -1, 1, 1), torch.tensor(train_data.std).view(1, -1, 1, 1)
    return (images.float() * std_a + mean_a - mean_o) / std_o


def authors_snapshots(workdir: Path, args, prepared, snapshots: list[int], per_iteration: float) -> list[dict]:
    """MTT: the authors' sets kept on their way (`--curve`), with the seconds of their iterations up to each (the
    measured seconds per iteration times the iteration, as their final set's seconds are counted)."""
    kept = []
    for iteration in sorted(snapshots):
        if not (workdir / SNAPSHOT_FILE.format(iteration)).is_file():
            print(f"  no authors' set at iteration {iteration} (is the real wandb installed?)", flush=True)
            continue
        images, _ = mtt_final_set(workdir, SNAPSHOT_FILE.format(iteration))
        images = to_our_normalisation(images, args, prepared)
        kept.append({"iteration": iteration, "seconds": per_iteration * iteration, "images": images})
    return kept


def run_authors(args, config, seed: int, prepared, snapshots: list[int] = ()) -> dict:
    """The authors' script with `config`'s settings; its final set in our normalisation, and its timing; for MTT,
    its sets at `snapshots` iterations too (the DC code keeps none on its way)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"parity_{args.method}_{seed}_"))
    if args.method == "mtt":  # their experts: trained beforehand by `prepare_experts`
        script_and_arguments = mtt_arguments(args, config, prepared, authors_buffers(args))
    else:
        script_and_arguments = dc_arguments(args, config, prepared)
    snapshots = sorted({i for i in snapshots if 0 <= i < config.num_iterations}) if args.method == "mtt" else []
    arrivals = run_reference(args, workdir, seed, script_and_arguments, snapshots)
    first, last = min(arrivals), max(arrivals)
    per_iteration = (arrivals[last] - arrivals[first]) / (last - first)
    images, labels = mtt_final_set(workdir) if args.method == "mtt" else dc_final_set(workdir, args, config)
    if not torch.isfinite(images).all():
        # A diverged run (`loss = nan` in its log) would be judged at chance as if it were a set: stop instead.
        raise RuntimeError(f"the authors' final set has non-finite pixels (the run diverged); see {workdir}/log.txt")
    return {
        "images": to_our_normalisation(images, args, prepared),
        "labels": labels.long(),
        "seconds_per_iteration": per_iteration,
        "seconds": per_iteration * config.num_iterations,
        "timed_iterations": [first, last],
        "command": [REFERENCE_RUNNER.name, *script_and_arguments],
        "log": str(workdir / "log.txt"),
        "snapshots": authors_snapshots(workdir, args, prepared, snapshots, per_iteration),
        "grad_norms": pixel_gradient_norms(workdir),
        **(
            {"step_size": mtt_step_size(workdir), **logged_segments(workdir, buffer_file(args, authors_buffers(args)))}
            if args.method == "mtt"
            else {}
        ),
    }


def git_commit(folder: Path = ROOT) -> str:
    """The commit checked out in `folder`, or "unknown" (e.g. an exported tree without `.git`)."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def this_machine() -> dict:
    return {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__}
