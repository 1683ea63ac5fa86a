"""Parity with the authors' code, side by side: the same settings, several seeds, two judges.

```bash
# a checkout of the authors' code (here from the git mirror; any clone works)
git clone https://github.com/VICO-UoE/DatasetCondensation /tmp/DatasetCondensation
python benchmarks/parity.py --reference-repo /tmp/DatasetCondensation --dataset mnist --method dm --ipc 10 \
    --iterations 600 --seeds 0 1 2
# MTT: a checkout of GeorgeCazenavette/mtt-distillation; both sides train 3 experts x 6 epochs first (once;
# `--experts-only` trains them and stops)
python benchmarks/parity.py --reference-repo /tmp/mtt-distillation --dataset mnist --method mtt --ipc 10 \
    --iterations 30 --seeds 0 1 2 --num-experts 3 --expert-train-epochs 6  # [--our-experts benchmarks/experts/mnist]
python benchmarks/parity.py --report   # the markdown table of every result file
# a run that shared the cores: keep its accuracies, leave its timings out of the tables
python benchmarks/parity.py --mark-timing-disturbed mnist_dsa_ipc10 authors/1 "why"
```

For each seed this runs

* **authors**: the authors' script (`main_DM.py`; `main.py --method DSA` for `dsa`; `distill.py` for `mtt`, after
  their `buffer.py` trained its experts), unchanged, through `benchmarks/parity_reference.py` (shims only: a
  torchvision stand-in reading `../shared/data`, and what its docstring lists), with the recipe's settings
  (`recipes/<dataset>/<method>_ipc<N>.yaml`: batch_real, learning rates, augmentation strategy, real-image
  initialisation; MTT's syn_steps, expert_epochs, max_start_epoch, step-size initialisation) and `--iterations`;
  its seconds per iteration are timed from the `iter = ` lines it prints every 10 iterations, so its start-up and
  its own evaluation are not counted; with `--curve`, MTT's sets on their way too (the DC code keeps none);
* **ours**: `hf_distill` on the same recipe and iterations, in float32 (`--variants`: `float32` eager,
  `float32-compiled`, `auto`, the recipe's precision as the machine resolves it, or for MTT `auto-full-unroll`,
  bf16 where native with the whole unroll in memory as the authors' code keeps it); seconds per iteration are the
  run's `distill_seconds` (compilation included) over its iterations;

and judges every final set twice, with the same evaluation seeds for every set (paired comparison):

* **project**: this project's protocol, the ConvNet the set was distilled for (instance norm), DSA augmentation
  (`auto`), `--judge-epochs` epochs, `--judge-models` models;
* **second**: what a user could plausibly do instead: a ConvNet with batch norm, plain random shifts
  (DSA's `crop` op alone, up to 1/8 of the side, zero padding; `crop_flip` for colour data), same epochs and models.

Results accumulate in `benchmarks/results/parity/<dataset>_<method>_ipc<N>.json` (one entry per variant and seed,
each with the command that made it); the final sets are kept under `benchmarks/runs/parity/` (git-ignored).
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_model  # benchmarks/machine.py: scripts here run with this folder on sys.path
from parity_reference import FINAL_SET_FILE, SNAPSHOT_FILE
from parity_results import mark_timing_disturbed, record, report, results_path, write_results

from hf_distill.augment import resolve_strategy
from hf_distill.cli import parse_distill_args
from hf_distill.data import load_source
from hf_distill.evaluation import EvaluationProtocol, evaluate_images
from hf_distill.experts import train_experts_for_config
from hf_distill.preparation import convnet_config, prepare
from hf_distill.trainer import DistillTrainer

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results" / "parity"
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
VARIANTS = {
    "float32": {"mixed_precision": "no", "torch_compile": False},
    "float32-compiled": {"mixed_precision": "no", "torch_compile": True},
    "auto": {},
    # MTT only: bf16 where native and the whole unroll kept in memory (the authors' way), no recomputation.
    "auto-full-unroll": {"mixed_precision": "auto", "unroll_memory": "full"},
}
#: Variants whose settings only one method has.
METHOD_VARIANTS = {"auto-full-unroll": "mtt"}
ITERATION_LINE = re.compile(r"iter = (\d+)")


def recipe_config(dataset: str, method: str, ipc: int, iterations: int, seed: int, overrides: dict):
    """The recipe's config with the parity run's iterations and seed, no checkpoints and no evaluation."""
    recipe = ROOT / "recipes" / dataset / f"{method}_ipc{ipc}.yaml"
    argv = ["--config", str(recipe), "--num_iterations", str(iterations), "--seed", str(seed), "--save_steps", "0"]
    for key, value in overrides.items():
        argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    _, config = parse_distill_args(argv)
    config.output_dir = None
    return config


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
        "--ipc", str(config.images_per_class), "--Iteration", str(config.num_iterations), "--num_exp", "1",
        "--num_eval", "1", "--epoch_eval_train", "1", "--batch_real", str(config.batch_real),
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
    """Where one side's MTT experts for this dataset and size are kept (`side`: "buffers", theirs; "experts", ours)."""
    return RUNS_DIR / side / f"{args.dataset}_{args.num_experts}x{args.expert_train_epochs}"


def authors_experts(args, prepared) -> dict:
    """MTT's experts trained by their `buffer.py` (once per dataset and size; kept under `benchmarks/runs/parity`)
    with the settings our experts use: `--num-experts` x `--expert-train-epochs`, SGD lr 0.01, batch 256, the
    recipe's DSA strategy, the first of `--seeds`. Returns where they are and what training them cost (recorded in
    `training.json` beside them, and read back from it when they were there already)."""
    buffers = experts_folder(args, "buffers")
    authors_name = AUTHORS_DATASETS[args.dataset][0]
    record_file = buffers / "training.json"
    if (buffers / authors_name / "ConvNet" / "replay_buffer_0.pt").is_file():
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
        "--ipc", str(config.images_per_class), "--Iteration", str(config.num_iterations),
        "--eval_it", str(config.num_iterations + 1), "--num_eval", "1", "--epoch_eval_train", "1",
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
        script_and_arguments = mtt_arguments(args, config, prepared, experts_folder(args, "buffers"))
    else:
        script_and_arguments = dc_arguments(args, config, prepared)
    snapshots = [i for i in snapshots if 0 < i < config.num_iterations] if args.method == "mtt" else []
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
        **({"step_size": mtt_step_size(workdir)} if args.method == "mtt" else {}),
    }


def run_ours(config, prepared, snapshots: list[int] = ()) -> dict:
    """`hf_distill` on `config` and the prepared splits; the final set and the loop's seconds per iteration.

    With `snapshots`, the run stops at each of those iterations on its way (the loop resumes where it stopped, so
    the set is the same) and keeps the set and the distillation seconds spent so far: accuracy against wall time.
    """
    trainer = DistillTrainer(config, prepared.train_data, prepared.test_data)
    total, kept = config.num_iterations, []
    for stop in sorted(i for i in set(snapshots) if 0 < i < total):
        trainer.config.num_iterations = stop
        trainer.train()
        images = trainer.synthetic.images.detach().cpu().clone()  # the optimiser updates the live tensor in place
        kept.append({"iteration": stop, "seconds": trainer.distill_seconds, "images": images})
    trainer.config.num_iterations = total
    trainer.train()
    step_size = trainer.synthetic.step_size  # MTT and meta-learning learn it: compared with the authors' `syn_lr`
    return {
        "images": trainer.synthetic.images.detach().cpu(),
        "labels": trainer.synthetic.labels.cpu(),
        "seconds_per_iteration": trainer.distill_seconds / config.num_iterations,
        "seconds": trainer.distill_seconds,
        "mixed_precision": trainer.config.mixed_precision,
        "torch_compile": trainer.config.torch_compile,
        "snapshots": kept,
        **({"step_size": step_size.detach().cpu().tolist()} if step_size is not None else {}),
    }


def judges(prepared, epochs: int, models: int) -> dict:
    """The two judges: (model config, evaluation protocol) each."""
    train_data = prepared.train_data
    grey = train_data.images.shape[1] == 1
    second_net = convnet_config(
        train_data.images.shape[1], tuple(train_data.images.shape[-2:]), train_data.class_names, net_norm="batchnorm"
    )
    project = EvaluationProtocol(
        num_models=models, epochs=epochs, dsa_strategy=resolve_strategy("auto", train_data.class_names)
    )
    second = EvaluationProtocol(num_models=models, epochs=epochs, dsa_strategy="crop" if grey else "crop_flip")
    return {"project": (prepared.model_config, project), "second": (second_net, second)}


def judge(images, labels, prepared, judge_set: dict) -> dict:
    results = {}
    for name, (model_config, protocol) in judge_set.items():
        result = evaluate_images(images, labels, prepared.test_data, model_config, protocol, show_progress=False)
        results[name] = {
            "accuracies": result["accuracies"],
            "mean": result["mean"],
            "architecture": f"{result['architecture']} ({model_config.net_norm})",
            "augmentation": protocol.dsa_strategy,
            "epochs": protocol.epochs,
        }
        print(f"  judge {name}: {result['accuracies']}", flush=True)
    return results


def git_commit(folder: Path = ROOT) -> str:
    """The commit checked out in `folder`, or "unknown" (e.g. an exported tree without `.git`)."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def prepare_recipe(args, seed: int, overrides: dict):
    """The recipe's splits, prepared once: data, network and augmentation depend on the recipe only."""
    splits = load_source(f"{args.data_dir}/{args.dataset}", require_test_split=True)
    config = recipe_config(args.dataset, args.method, args.ipc, args.iterations, seed, overrides)
    return config, prepare(config, *splits)


#: The recipe settings each results file records, by method.
RECORDED_SETTINGS = {
    "dm": ("batch_real", "lr_images", "init", "siamese_pairing"),
    "dsa": ("batch_real", "lr_images", "init", "siamese_pairing"),
    "mtt": ("lr_images", "init", "syn_steps", "expert_epochs", "max_start_epoch", "lr_lr", "syn_lr_init"),
}


def this_machine() -> dict:
    return {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__}


def run_overrides(args) -> dict:
    """Recipe settings the parity run replaces: `--batch-real`, and for MTT the experts' folder (ours, trained here
    with the same size as the authors')."""
    overrides = {"batch_real": args.batch_real} if args.batch_real else {}
    if args.method == "mtt":
        overrides["expert_path"] = args.our_experts or str(experts_folder(args, "experts"))
    return overrides


def our_experts(args, config, prepared) -> dict:
    """Our experts for an MTT parity run, trained once (the recipe's precision, SGD lr 0.01, batch 256, its DSA
    strategy: the settings of the authors' `buffer.py` run) and reused; their training seconds."""
    needed = config.max_start_epoch - 1 + config.expert_epochs
    if args.expert_train_epochs < needed:
        raise SystemExit(f"--expert-train-epochs must be >= max_start_epoch - 1 + expert_epochs = {needed}.")
    index = Path(config.expert_path) / "experts.json"
    if not index.is_file():
        if args.our_experts:
            raise SystemExit(f"--our-experts {args.our_experts}: no experts.json there.")
        train_experts_for_config(
            config, prepared.train_data, prepared.test_data, config.expert_path,
            num_experts=args.num_experts, num_epochs=args.expert_train_epochs,
        )  # fmt: skip
    saved = json.loads(index.read_text())
    experts = saved["experts"]
    if (len(experts), saved["num_epochs"]) != (args.num_experts, args.expert_train_epochs):
        # Both sides must draw from experts of one size, or the comparison is of the experts.
        raise SystemExit(
            f"{config.expert_path} holds {len(experts)} experts x {saved['num_epochs']} epochs; the authors' side "
            f"trains --num-experts {args.num_experts} x --expert-train-epochs {args.expert_train_epochs}."
        )
    return {
        "path": config.expert_path,
        "num_experts": len(experts),
        "num_epochs": saved["num_epochs"],
        "training": saved.get("training", {}),
        "train_seconds": round(sum(e.get("train_seconds") or 0.0 for e in experts), 1),
    }


def prepare_experts(args, config, prepared) -> dict:
    """MTT: both sides' experts, trained once (or found) before any distillation; what each cost."""
    experts = {"experts": our_experts(args, config, prepared)}
    if "authors" in args.variants:
        experts["authors_experts"] = authors_experts(args, prepared)
    return experts


def distill_and_judge(args) -> None:
    path = results_path(args.results_dir, args.dataset, args.method, args.ipc)
    run_settings = run_overrides(args)
    config, prepared = prepare_recipe(args, args.seeds[0], run_settings)  # for every variant and seed
    judge_set = judges(prepared, args.judge_epochs, args.judge_models)
    settings = {name: getattr(config, name) for name in RECORDED_SETTINGS[args.method]}
    header = {
        "dataset": args.dataset,
        "method": args.method,
        "ipc": args.ipc,
        "settings": {**settings, "dsa_strategy": prepared.dsa_strategy},
    }
    if args.method == "mtt":
        header.update(prepare_experts(args, config, prepared))
        if args.experts_only:
            print(json.dumps(header, indent=2))
            return
    machine = this_machine()
    for seed in args.seeds:
        for variant in args.variants:
            overrides = {**run_settings, **VARIANTS.get(variant, {})}
            config = recipe_config(args.dataset, args.method, args.ipc, args.iterations, seed, overrides)
            print(f"== {args.dataset} {args.method} ipc {args.ipc}: {variant}, seed {seed}", flush=True)
            if variant == "authors":
                run = run_authors(args, config, seed, prepared, args.curve)
            else:
                run = run_ours(config, prepared, args.curve)
            RUNS_DIR.mkdir(parents=True, exist_ok=True)
            final_set = {"images": run.pop("images"), "labels": run.pop("labels")}
            torch.save(final_set, RUNS_DIR / f"{path.stem}_{variant}_{seed}.pt")
            print(f"  {run['seconds_per_iteration']:.3f} s per iteration", flush=True)
            curve = []
            for snapshot in run.pop("snapshots", []):
                print(f"  snapshot at iteration {snapshot['iteration']} ({snapshot['seconds']:.0f} s)", flush=True)
                judged = judge(snapshot.pop("images"), final_set["labels"], prepared, judge_set)
                curve.append({**snapshot, "judges": judged})
            entry = {
                "variant": variant,
                "seed": seed,
                "iterations": args.iterations,
                **run,
                "judges": judge(final_set["images"], final_set["labels"], prepared, judge_set),
                **({"curve": curve} if curve else {}),
                "machine": machine,  # per entry: seeds of one file may come from different machines
                "command": " ".join(["python", *sys.argv]),
                "commit": git_commit(),
            }
            if variant == "authors":
                entry["reference_commit"] = git_commit(Path(args.reference_repo))
            record(path, f"{variant}/{seed}", entry, header)


def interleaved_speed(args) -> None:
    """Seconds per iteration of the authors' script and ours, run in turn (`--speed-rounds` rounds of
    `--iterations` each), so that the machine's drift over time (~20% here) falls on both alike."""
    run_settings = run_overrides(args)
    seed = args.seeds[0]
    config, prepared = prepare_recipe(args, seed, run_settings)
    if args.method == "mtt":
        prepare_experts(args, config, prepared)
    rounds = []
    for round_index in range(args.speed_rounds):
        timings = {}
        for variant in args.variants:
            overrides = {**run_settings, **VARIANTS.get(variant, {})}
            config = recipe_config(args.dataset, args.method, args.ipc, args.iterations, seed, overrides)
            run = run_authors(args, config, seed, prepared) if variant == "authors" else run_ours(config, prepared)
            timings[variant] = run["seconds_per_iteration"]
        print(f"round {round_index}: " + ", ".join(f"{k} {v:.3f} s/it" for k, v in timings.items()), flush=True)
        rounds.append(timings)
    path = results_path(args.results_dir, args.dataset, args.method, args.ipc)
    data = json.loads(path.read_text()) if path.is_file() else {"dataset": args.dataset, "method": args.method}
    data.setdefault("ipc", args.ipc)
    data.setdefault("speed", []).append(
        {
            "iterations_per_turn": args.iterations,
            "batch_real": config.batch_real,
            "rounds": rounds,
            "machine": this_machine(),
            "command": " ".join(["python", *sys.argv]),
            "commit": git_commit(),
        }
    )
    write_results(path, data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--reference-repo",
        help="A checkout of VICO-UoE/DatasetCondensation (dm, dsa) or GeorgeCazenavette/mtt-distillation (mtt).",
    )
    parser.add_argument("--dataset", default="mnist", choices=sorted(AUTHORS_DATASETS))
    parser.add_argument("--method", default="dm", choices=sorted(AUTHORS_SCRIPTS))
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--batch-real", type=int, default=None, help="Default: the recipe's.")
    parser.add_argument("--num-experts", type=int, default=3, help="MTT: experts trained on each side.")
    parser.add_argument("--expert-train-epochs", type=int, default=6, help="MTT: epochs of every expert.")
    parser.add_argument(
        "--our-experts",
        default=None,
        help="MTT: our experts already trained (e.g. the recipe's `hf-distill train-experts` folder) instead of "
        "training them under benchmarks/runs/parity; they must be --num-experts x --expert-train-epochs.",
    )
    parser.add_argument(
        "--experts-only",
        action="store_true",
        help="MTT: train (or find) both sides' experts, print what they cost, and stop.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["authors", "float32"], choices=["authors", *VARIANTS])
    parser.add_argument(
        "--curve",
        type=int,
        nargs="*",
        default=[],
        help="Iterations at which our sets (and MTT's authors' sets) are also judged on their way (accuracy "
        "against wall time).",
    )
    parser.add_argument(
        "--speed-rounds",
        type=int,
        default=0,
        help="Only time: this many rounds of the variants in turn, --iterations each, the first seed (no judges).",
    )
    parser.add_argument("--judge-models", type=int, default=2)
    parser.add_argument("--judge-epochs", type=int, default=300)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--report", action="store_true", help="Print the tables of every results file and stop.")
    parser.add_argument(
        "--mark-timing-disturbed",
        nargs=3,
        metavar=("FILE", "RUN", "WHY"),
        help="Leave a run's timings out of the tables, keeping its accuracies, e.g. `mnist_dsa_ipc10 authors/1 "
        "'shared the cores with another job'`; then stop.",
    )
    args = parser.parse_args(argv)
    if args.mark_timing_disturbed:
        stem, key, why = args.mark_timing_disturbed
        mark_timing_disturbed(Path(args.results_dir) / f"{stem}.json", key, why)
        print(report(args.results_dir))
        return
    if args.report:
        print(report(args.results_dir))
        return
    for variant in args.variants:
        if METHOD_VARIANTS.get(variant, args.method) != args.method:
            parser.error(f"variant {variant!r} is for --method {METHOD_VARIANTS[variant]} only.")
    if args.experts_only and args.method != "mtt":
        parser.error("--experts-only is for --method mtt (the other methods have no experts).")
    if "authors" in args.variants and not args.reference_repo:
        parser.error("--reference-repo is needed to run the authors' code (or leave 'authors' out of --variants).")
    if args.speed_rounds:
        interleaved_speed(args)
    else:
        distill_and_judge(args)
    print(report(args.results_dir))


if __name__ == "__main__":
    main()
