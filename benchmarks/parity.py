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
# MTT, paired: ours start from the authors' initial set of each seed (their iteration 0, judged too with --curve 0)
# and their distill.py matches our experts (converted to their buffer format): only the two loops differ
python benchmarks/parity.py --reference-repo /tmp/mtt-distillation --dataset mnist --method mtt --ipc 10 \
    --iterations 30 --seeds 0 1 2 --variants authors auto-full-unroll --same-start --experts ours --curve 0
# ... and ours matching the very expert segments (expert, start epoch) the authors' run of the seed matched
python benchmarks/parity.py --reference-repo /tmp/mtt-distillation --dataset mnist --method mtt --ipc 10 \
    --iterations 30 --seeds 0 --variants authors auto-full-unroll-authors-draws --same-start --experts ours
python benchmarks/parity.py --report   # the markdown table of every result file
# a run that shared the cores: keep its accuracies, leave its timings out of the tables
python benchmarks/parity.py --mark-timing-disturbed mnist_dsa_ipc10 authors/1 "why"
```

For each seed this runs

* **authors**: the authors' script (`main_DM.py`; `main.py --method DSA` for `dsa`; `distill.py` for `mtt`, after
  their `buffer.py` trained its experts), unchanged, through `benchmarks/parity_reference.py` (shims only: a
  torchvision stand-in reading `../shared/data`, and what its docstring lists), with the recipe's settings
  (`recipes/<dataset>/<method>_ipc<N>.yaml`: batch_real, learning rates, augmentation strategy, real-image
  initialisation; MTT's syn_steps, expert_epochs, max_start_epoch, step-size initialisation) and `--iterations`
  updates of the set (their `--Iteration N` makes N + 1: see `parity_authors.iteration_argument`);
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
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from authors_mtt_draws import CLASS_SIZES, replayed_segments
from parity_authors import (
    AUTHORS_DATASETS,
    AUTHORS_SCRIPTS,
    RUNS_DIR,
    authors_buffer_from_our_experts,
    authors_experts,
    experts_folder,
    git_commit,
    run_authors,
    this_machine,
)
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

VARIANTS = {
    "float32": {"mixed_precision": "no", "torch_compile": False},
    "float32-compiled": {"mixed_precision": "no", "torch_compile": True},
    "auto": {},
    # MTT only: bf16 where native and the whole unroll kept in memory (the authors' way), no recomputation.
    "auto-full-unroll": {"mixed_precision": "auto", "unroll_memory": "full"},
    # The same with independent expert draws (MTT's --load_all; before session 33 our only way, now an option).
    "auto-full-unroll-uniform": {"mixed_precision": "auto", "unroll_memory": "full", "expert_sampling": "uniform"},
    # auto-full-unroll on the very experts and start epochs the authors' run of the seed drew (see DRAWS_PAIRED).
    "auto-full-unroll-authors-draws": {"mixed_precision": "auto", "unroll_memory": "full"},
}
#: Variants whose settings only one method has.
METHOD_VARIANTS = {
    "auto-full-unroll": "mtt",
    "auto-full-unroll-uniform": "mtt",
    "auto-full-unroll-authors-draws": "mtt",
}
#: MTT variants that visit the expert segments the authors' run of the seed visited (their entry's `experts` and
#: `start_epochs`), from the same start (`--same-start`): the two sides then differ only in minibatch order,
#: augmentation draws and the code, so a gap between them is not the luck of which segments were matched.
DRAWS_PAIRED = {"auto-full-unroll-authors-draws"}


def recipe_config(dataset: str, method: str, ipc: int, iterations: int, seed: int, overrides: dict):
    """The recipe's config with the parity run's iterations and seed, no checkpoints and no evaluation; the loss of
    every iteration logged."""
    recipe = ROOT / "recipes" / dataset / f"{method}_ipc{ipc}.yaml"
    argv = ["--config", str(recipe), "--num_iterations", str(iterations), "--seed", str(seed), "--save_steps", "0"]
    argv += ["--logging_steps", "1"]  # every iteration's loss goes in the results, to set beside the authors' log
    for key, value in overrides.items():
        argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    _, config = parse_distill_args(argv)
    config.output_dir = None
    return config


def run_ours(
    config,
    prepared,
    snapshots: list[int] = (),
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
    segments: list[tuple[int, int]] | None = None,
) -> dict:
    """`hf_distill` on `config` and the prepared splits; the final set and the loop's seconds per iteration.

    With `snapshots`, the run stops at each of those iterations on its way (the loop resumes where it stopped, so
    the set is the same) and keeps the set and the distillation seconds spent so far: accuracy against wall time
    (iteration 0 is the initial set). With `start` (images in our normalisation, labels), the run starts from
    those images instead of its own initial draw: `--same-start` gives it the authors' initial set. With `segments`
    (MTT: `(expert, start_epoch)` of every iteration), the run matches those instead of drawing its own.
    """
    trainer = DistillTrainer(config, prepared.train_data, prepared.test_data)
    if segments is not None:
        if len(segments) < config.num_iterations:
            raise ValueError(f"{len(segments)} expert segments given for {config.num_iterations} iterations.")
        trainer.method.draw_segment = lambda iteration: tuple(segments[iteration])
    if start is not None:
        images, labels = start
        if not torch.equal(labels.long().cpu(), trainer.synthetic.labels.cpu()):
            raise ValueError("the starting set's labels are not ordered class by class as ours are.")
        with torch.no_grad():  # in place: the optimiser holds this very parameter
            trainer.synthetic.images.copy_(images.to(trainer.synthetic.images.device))
    total, kept = config.num_iterations, []
    for stop in sorted(i for i in set(snapshots) if 0 <= i < total):
        if stop:
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
        "losses": [record["loss"] for record in trainer.log_history if "loss" in record],
        "grad_norms": [record["grad_norm"] for record in trainer.log_history if "grad_norm" in record],
        **({"step_size": step_size.detach().cpu().tolist()} if step_size is not None else {}),
        **(our_segments(trainer) if hasattr(config, "expert_sampling") else {}),
    }


def our_segments(trainer: DistillTrainer) -> dict:
    """MTT: how experts were visited, and the expert and start epoch each iteration matched (spikes of `grad_norms`
    come from late segments; the authors' entries log theirs)."""
    draws = [trainer.method.draw_segment(iteration) for iteration in range(trainer.config.num_iterations)]
    return {
        "expert_sampling": trainer.config.expert_sampling,
        "experts": [expert for expert, _ in draws],
        "start_epochs": [start for _, start in draws],
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


def run_overrides(args) -> dict:
    """Recipe settings the parity run replaces: `--batch-real`, and for MTT the experts' folder (ours, trained here
    with the same size as the authors')."""
    overrides = {"batch_real": args.batch_real} if args.batch_real else {}
    if args.method == "mtt":
        overrides["expert_path"] = args.our_experts or str(experts_folder(args, "experts"))
    return overrides


def our_settings(args) -> dict:
    """`--set KEY=VALUE` items: recipe settings for our variants only (e.g. a guard the authors' code lacks)."""
    return dict(item.split("=", 1) for item in args.our_settings)


def variant_settings(args, run_settings: dict, variant: str) -> dict:
    """The recipe settings one variant runs with: the run's, the variant's own, and `--set` for ours."""
    return {**run_settings, **VARIANTS.get(variant, {}), **(our_settings(args) if variant != "authors" else {})}


def variant_config(args, run_settings: dict, variant: str, seed: int):
    """The recipe's config for one variant and seed of the run."""
    settings = variant_settings(args, run_settings, variant)
    return recipe_config(args.dataset, args.method, args.ipc, args.iterations, seed, settings)


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
    if "authors" in args.variants and args.experts == "ours":
        experts["authors_experts"] = authors_buffer_from_our_experts(args, config.expert_path)
    elif "authors" in args.variants:
        experts["authors_experts"] = authors_experts(args, prepared)
    return experts


def pairing(args) -> list[str]:
    """What the two sides share beyond the settings (`--same-start`, `--experts ours`): such runs are paired, and
    their results file is their own."""
    shared = ["same_start"] if args.same_start else []
    return shared + (["our_experts"] if args.experts == "ours" else [])


def authors_start(run: dict, judged: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`--same-start`: the authors' initial set (their iteration-0 snapshot: images in our normalisation, labels),
    where our variants of the same seed start; left in their curve only when it is to be `judged` (`--curve 0`)."""
    initial = next((kept for kept in run["snapshots"] if kept["iteration"] == 0), None)
    if initial is None:
        raise RuntimeError("--same-start: the authors' run kept no initial set (is the real wandb installed?).")
    if not judged:
        run["snapshots"].remove(initial)
    return initial["images"], run["labels"]


def authors_segments(run: dict) -> list[tuple[int, int]] | None:
    """The `(expert, start_epoch)` of each iteration of an authors' MTT entry, or `None` if it was not logged (runs
    before session 34, or an expert not among ours)."""
    experts, starts = run.get("experts"), run.get("start_epochs")
    if not experts or None in experts:
        return None
    return list(zip(experts, starts))


def stored_segments(
    results_file: Path, seed: int, replay: Callable[[], list[tuple[int, int]]] | None = None
) -> tuple[list[tuple[int, int]], str]:
    """The segments of the authors' run of `seed` kept in `results_file`, for variants in `DRAWS_PAIRED`, and where
    they come from (the `draws` of our entry). An entry from before they were logged (session 34) gets them from
    `replay`, which replays the authors' seeded streams (`authors_mtt_draws.py`), when given."""
    runs = json.loads(results_file.read_text())["runs"] if results_file.is_file() else {}
    run = runs.get(f"authors/{seed}")
    segments = authors_segments(run or {})
    if segments is not None:
        return segments, f"authors/{seed}"
    if run is not None and replay is not None:
        return replay(), f"authors/{seed}, replayed by authors_mtt_draws.py"
    raise SystemExit(
        f"{results_file} has no expert segments of the authors' run of seed {seed} (they are logged since "
        "session 34): run the seed with 'authors' among --variants."
    )


def replayable_segments(args: argparse.Namespace, config, seed: int) -> Callable[[], list[tuple[int, int]]] | None:
    """The authors' segments of `seed` replayed from their seeded streams, for their runs made before the logging;
    `None` where the replay does not hold: their own experts (a buffer position is not our index) or a dataset whose
    class sizes `authors_mtt_draws.py` does not know."""
    if args.experts != "ours" or args.dataset not in CLASS_SIZES:
        return None
    return lambda: replayed_segments(
        seed, CLASS_SIZES[args.dataset], config.num_iterations, args.num_experts, config.max_start_epoch
    )


def stored_start(results_file: Path, seed: int) -> Path:
    """Where `--same-start` keeps the authors' initial set of a seed (our normalisation), so that our variants can
    start from it again later without the authors' run (e.g. another precision on a seed where the two differ)."""
    return RUNS_DIR / f"{results_file.stem}_authors_{seed}_initial.pt"


def keep_start(results_file: Path, seed: int, start: tuple[torch.Tensor, torch.Tensor]) -> None:
    target = stored_start(results_file, seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    torch.save({"images": start[0], "labels": start[1]}, partial)
    partial.replace(target)  # atomic: a stopped run leaves no half-written start behind


def load_start(results_file: Path, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    source = stored_start(results_file, seed)
    if not source.is_file():
        raise SystemExit(
            f"--same-start without 'authors' among --variants: no initial set of seed {seed} at {source}; run the "
            "seed once with 'authors' first."
        )
    kept = torch.load(source)
    return kept["images"], kept["labels"]


def distill_and_judge(args) -> None:
    shared = pairing(args)
    path = results_path(args.results_dir, args.dataset, args.method, args.ipc, shared)
    run_settings = run_overrides(args)
    config, prepared = prepare_recipe(args, args.seeds[0], run_settings)  # for every variant and seed
    judge_set = judges(prepared, args.judge_epochs, args.judge_models)
    settings = {name: getattr(config, name) for name in RECORDED_SETTINGS[args.method]}
    header = {
        "dataset": args.dataset,
        "method": args.method,
        "ipc": args.ipc,
        "settings": {**settings, "dsa_strategy": prepared.dsa_strategy},
        **({"pairing": shared} if shared else {}),
    }
    if args.method == "mtt":
        header.update(prepare_experts(args, config, prepared))
        if args.experts_only:
            print(json.dumps(header, indent=2))
            return
    machine, commit = this_machine(), git_commit()  # the code that runs: read now, not when an entry is written
    # --same-start: the authors' run of each seed goes first, and its initial set is where ours start.
    variants = sorted(args.variants, key=lambda v: v != "authors") if args.same_start else args.variants
    for seed in args.seeds:
        # Without the authors' run, ours start from the initial set a previous paired run kept.
        start = load_start(path, seed) if args.same_start and "authors" not in variants else None
        segments, draws = None, f"authors/{seed}"  # the authors' segments of the seed, for DRAWS_PAIRED variants
        for variant in variants:
            config = variant_config(args, run_settings, variant, seed)
            print(f"== {args.dataset} {args.method} ipc {args.ipc}: {variant}, seed {seed}", flush=True)
            if variant == "authors":
                run = run_authors(args, config, seed, prepared, [*args.curve, *([0] if args.same_start else [])])
                start = authors_start(run, judged=0 in args.curve) if args.same_start else None
                if start is not None:
                    keep_start(path, seed, start)
                segments = authors_segments(run)
            else:
                if variant in DRAWS_PAIRED and segments is None:
                    segments, draws = stored_segments(path, seed, replayable_segments(args, config, seed))
                # Started from the authors' set, our iteration 0 is theirs: judged once, on their side.
                snapshots = [i for i in args.curve if i or start is None]
                run = run_ours(config, prepared, snapshots, start, segments if variant in DRAWS_PAIRED else None)
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
                **({"start": f"authors/{seed}"} if start is not None and variant != "authors" else {}),
                **({"draws": draws} if variant in DRAWS_PAIRED else {}),
                **({"our_settings": our_settings(args)} if args.our_settings and variant != "authors" else {}),
                "machine": machine,  # per entry: seeds of one file may come from different machines
                "command": " ".join(["python", *sys.argv]),
                "commit": commit,
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
            config = variant_config(args, run_settings, variant, seed)
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
        "--experts",
        choices=["own", "ours"],
        default="own",
        help="MTT: each side matches its own experts (`own`: theirs trained by their buffer.py), or both match ours "
        "(`ours`: converted to their buffer format), so that only the distillation loops differ.",
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
        "--same-start",
        action="store_true",
        help="MTT: our variants start from the authors' initial set of the same seed (their iteration 0), so each "
        "seed compares the two loops on one draw of real images; the authors' run of each seed goes first. Without "
        "'authors' among --variants, ours start from the initial set an earlier paired run of the seed kept.",
    )
    parser.add_argument(
        "--set",
        dest="our_settings",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="Recipe settings for our variants only (e.g. max_grad_norm=0.01), kept in each entry. Entries are "
        "keyed by variant and seed: give such runs a --results-dir of their own.",
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
    if args.same_start and args.method != "mtt":
        parser.error("--same-start is for --method mtt (the DC code keeps no sets).")
    if set(args.variants) & DRAWS_PAIRED and not args.same_start:
        parser.error(f"variants {sorted(DRAWS_PAIRED)} pair the draws of a paired run: add --same-start.")
    if any("=" not in item for item in args.our_settings):
        parser.error("--set takes KEY=VALUE items, e.g. --set max_grad_norm=0.01.")
    if args.experts == "ours" and args.method != "mtt":
        parser.error("--experts is for --method mtt (the other methods have no experts).")
    if "authors" in args.variants and not args.reference_repo:
        parser.error("--reference-repo is needed to run the authors' code (or leave 'authors' out of --variants).")
    if "authors" in args.variants and args.iterations < 11:
        # Their scripts print `iter = N` every 10 iterations, after the update of iteration N (0-based): that is
        # how they are timed, so two such lines are needed.
        parser.error("--iterations must be >= 11 with 'authors' (their scripts are timed by their every-10 log).")
    if args.speed_rounds:
        interleaved_speed(args)
    else:
        distill_and_judge(args)
    print(report(args.results_dir))


if __name__ == "__main__":
    main()
