"""`hf-distill`: the command line.

```bash
hf-distill distill --dataset sklearn:digits --method dm --images_per_class 10 --num_iterations 200
hf-distill distill --config recipes/mnist/dm_ipc10.yaml --num_iterations 500     # flags override the YAML
hf-distill analyze sklearn:digits                                                   # balance, duplicates, outliers
hf-distill evaluate outputs/digits-dm-ipc10 --num_models 5
hf-distill kd --distilled outputs/digits-dm-ipc10 --train_teacher --output_dir outputs/digits-student
hf-distill push outputs/digits-dm-ipc10 me/digits-dm-ipc10                         # dataset + card
hf-distill train-experts --config recipes/mnist/mtt_ipc10.yaml --num_experts 5 --num_epochs 6  # MTT's experts
```

The `distill` parser is built from the method's config dataclass (`HfArgumentParser`), so every field of
[`DistributionMatchingConfig`] (or another method's config) is a flag; `--config recipe.yaml` supplies defaults.
"""

import argparse
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from accelerate import PartialState
from transformers import HfArgumentParser

from .analysis import ANALYSIS_NAME, ANALYSIS_PLOT_NAME, AnalysisConfig, analyze_dataset
from .api import distill_dataset
from .checkpointing import write_json_atomic
from .config import DistillConfig
from .constants import CONFIG_NAME, DIGITS_SOURCE, EVAL_RESULTS_NAME, EXPERTS_INDEX_NAME, KD_CONFIG_NAME
from .data import load_source
from .evaluation import format_result
from .experts import train_experts_for_config
from .hub import HubPushError, push_distilled_to_hub, push_experts_to_hub, push_student_to_hub
from .kd import KDConfig, train_student
from .models import ARCHITECTURE_NAMES
from .nas import NAS_NAME, NAS_PLOT_NAME, NASConfig, search_architectures
from .registry import METHODS, get_method_class
from .run_folder import read_json
from .trainer import DistillTrainer


@dataclass
class ScriptArguments:
    """Where the data comes from (recorded in `distill_config.json`, not part of the method's config)."""

    dataset: str = field(
        default=DIGITS_SOURCE,
        metadata={"help": "Hub id, local folder (parquet/imagefolder/save_to_disk) or 'sklearn:digits' (offline)."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub dataset revision."})


def _load_recipe(path: str | None) -> dict:
    if not path:
        return {}
    values = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a YAML mapping of option names to values.")
    return values


def build_distill_parser(method: str, defaults: dict | None = None) -> HfArgumentParser:
    """The `distill` parser for `method`, with `defaults` (e.g. from a YAML recipe) applied."""
    config_class = get_method_class(method).config_class
    parser = HfArgumentParser((ScriptArguments, config_class), prog="hf-distill distill", allow_abbrev=False)
    parser.add_argument("--config", default=None, help="A YAML recipe whose keys give defaults for the flags.")
    parser.add_argument("--method", default=method, choices=sorted(METHODS), help="Distillation method.")
    return _apply_recipe_defaults(parser, defaults, f"method {method!r}", "hf-distill distill")


def _apply_recipe_defaults(parser: HfArgumentParser, defaults: dict | None, what: str, command: str):
    """Sets a recipe's values as the parser's defaults; a key that is no flag is an error, not silently ignored."""
    defaults = dict(defaults or {})
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(defaults) - known)
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for {what}; see `{command} --help`.")
    parser.set_defaults(**defaults)
    return parser


def parse_distill_args(argv: list[str] | None = None) -> tuple[ScriptArguments, DistillConfig]:
    """Parses `distill` flags: YAML recipe (`--config`) first, then flags on top."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--method", default=None)
    known, _ = pre.parse_known_args(argv)
    recipe = _load_recipe(known.config)
    method = known.method or recipe.get("method") or "dm"
    parser = build_distill_parser(method, {k: v for k, v in recipe.items() if k != "method"})
    script_args, config, *_ = parser.parse_args_into_dataclasses(args=argv)
    if config.output_dir is None:
        name = Path(str(script_args.dataset).replace(":", "-")).name
        config.output_dir = f"outputs/{name}-{config.method}-ipc{config.images_per_class}"
    return script_args, config


def run_distill(script_args: ScriptArguments, config: DistillConfig):
    """Distills, evaluates (protocol + random real baseline), saves, and prints the comparison."""

    trainer = distill_dataset(
        script_args.dataset,
        config,
        dataset_config_name=script_args.dataset_config_name,
        revision=script_args.dataset_revision,
        evaluate=config.test_split is not None,
        return_trainer=True,
    )
    output_dir = trainer.save(config.output_dir)
    if trainer.accelerator.is_main_process:
        _print_summary(trainer.eval_results, config, trainer.iteration, trainer.distill_seconds, output_dir)
    return trainer


def _print_summary(
    results: dict,
    config: DistillConfig,
    iterations: int,
    seconds: float,
    output_dir,
    results_name: str = EVAL_RESULTS_NAME,
) -> None:
    has_grid = (Path(output_dir) / "synthetic_grid.png").is_file()  # image sets have one
    size = f"{config.images_per_class} {'images' if has_grid else 'examples'}/class"
    lines = [f"Distilled with {config.method} ({size}, {iterations} iterations, {seconds:.1f} s)"]
    if results:
        lines.append(f"  test accuracy, distilled set     : {format_result(results['distilled'])}")
        if "random_real" in results:
            lines.append(f"  test accuracy, random real subset: {format_result(results['random_real'])}")
            gain = results["distilled"]["mean"] - results["random_real"]["mean"]
            lines.append(f"  gain over the random real subset : {gain:+.2f} points (same size, same protocol)")
        if "full_data" in results:
            lines.append(f"  test accuracy, whole train split : {format_result(results['full_data'])}")
        for name, row in (results.get("cross_architecture") or {}).items():
            random_text = f", random real {format_result(row['random_real'])}" if "random_real" in row else ""
            lines.append(f"  {name:<33}: {format_result(row['distilled'])}{random_text}")
        if "kernel_regression" in results:
            kernel = results["kernel_regression"]
            lines.append(
                f"  kernel ridge regression (method's kernel, {kernel['num_models']} networks): {kernel['mean']:.2f}"
            )
    grid = ", synthetic_grid.png" if has_grid else ""
    lines.append(f"Wrote {output_dir}/ (dataset/, {CONFIG_NAME}, {results_name}{grid})")
    print("\n".join(lines))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def results_file_name(results: dict, previous: dict | None) -> str:
    """`eval_results.json` when it holds nothing yet or the same protocol; else a name of the new protocol, so an
    earlier evaluation is never replaced by a different one (a regression-target set evaluated before the protocol
    clipped its gradients is another protocol too)."""

    def settings(entry: dict) -> tuple:
        distilled = entry.get("distilled", {})
        return entry.get("protocol"), distilled.get("architecture"), distilled.get("max_grad_norm")

    if not previous or settings(previous) == settings(results):
        return EVAL_RESULTS_NAME
    protocol, architecture, clip = settings(results)
    clipped = f"_clip{clip:g}" if clip is not None else ""
    return f"eval_results_{protocol['num_models']}models_{protocol['epochs']}epochs_{architecture}{clipped}.json"


def run_evaluate(argv: list[str] | None = None) -> dict:
    """`hf-distill evaluate OUTPUT_DIR`: re-evaluates a saved distilled set. The results go to `eval_results.json`
    when the protocol is the recorded one; a different protocol's go beside it, named after the protocol."""

    parser = argparse.ArgumentParser(prog="hf-distill evaluate", description=run_evaluate.__doc__, allow_abbrev=False)
    parser.add_argument("output_dir", help="A folder written by `hf-distill distill` (or DistillTrainer.save).")
    parser.add_argument("--dataset", default=None, help="Source dataset (default: the one recorded at distillation).")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument(
        "--num_models", type=_positive_int, default=None, help="Evaluation models (default: the config's)."
    )
    parser.add_argument("--epochs", type=_positive_int, default=None, help="Epochs per model (default: the config's).")
    parser.add_argument("--eval_model_name_or_path", default=None, help="Evaluate with another architecture.")
    parser.add_argument(
        "--text_protocol",
        choices=("linear_probe", "fine_tune"),
        default=None,
        help="Text sets: protocol (a) 'linear_probe' or (b) 'fine_tune' (default: the recorded one).",
    )
    parser.add_argument("--full_data", action="store_true", help="Also train on the whole training split.")
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument(
        "--random_baseline",
        action="store_true",
        help="Also train the random real subset of the same size (default: as the run recorded).",
    )
    baseline.add_argument(
        "--no_random_baseline", action="store_true", help="Skip the random real subset of the same size."
    )
    parser.add_argument(
        "--architectures",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=None,
        help="Comma-separated architectures to train on the set (and on the random subset) instead of the "
        f"recorded protocol: {', '.join(ARCHITECTURE_NAMES)}, or Hub ids / paths. The table is added to "
        "eval_results.json as `cross_architecture` (the earlier figures are kept).",
    )
    parser.add_argument(
        "--eval_cache_dir",
        default=None,
        help="Keep the random subset's (and whole split's) figures here, and read back those an earlier evaluation "
        "with the same data, network, protocol and seed left (default: as the run recorded).",
    )
    parser.add_argument(
        "--results_name",
        default=None,
        help="File (in OUTPUT_DIR) to write the results to (default: eval_results.json for the recorded protocol, "
        "eval_results_<models>models_<epochs>epochs_<architecture>.json for another).",
    )
    args = parser.parse_args(argv)

    output_dir = Path(args.output_dir)
    overrides = {"eval_model_name_or_path": args.eval_model_name_or_path} if args.eval_model_name_or_path else {}
    if args.text_protocol:
        overrides["eval_text_protocol"] = args.text_protocol
    if args.eval_cache_dir:
        overrides["eval_cache_dir"] = args.eval_cache_dir
    trainer = DistillTrainer.from_output_dir(
        output_dir, dataset=args.dataset, dataset_config_name=args.dataset_config_name, **overrides
    )
    config = trainer.config
    if args.architectures:
        return _evaluate_architectures(trainer, args, output_dir)
    results = trainer.evaluate(
        num_models=args.num_models,
        epochs=args.epochs,
        random_baseline=True if args.random_baseline else False if args.no_random_baseline else None,
        full_data=args.full_data or None,
    )
    if trainer.accelerator.is_main_process:
        previous_path = output_dir / EVAL_RESULTS_NAME
        previous = read_json(previous_path, "earlier results") if previous_path.is_file() else None
        name = args.results_name or results_file_name(results, previous)
        write_json_atomic(output_dir / name, results)
        _print_summary(results, config, trainer.iteration, trainer.distill_seconds, output_dir, name)
    return results


def _evaluate_architectures(trainer: DistillTrainer, args: argparse.Namespace, output_dir: Path) -> dict:
    """`evaluate --architectures`: the cross-architecture table, merged into `eval_results.json`."""
    table = trainer.evaluate_architectures(
        args.architectures, args.num_models, args.epochs, random_baseline=not args.no_random_baseline
    )
    path = output_dir / (args.results_name or EVAL_RESULTS_NAME)
    results = read_json(path, "earlier results") if path.is_file() else {}
    results["cross_architecture"] = {**results.get("cross_architecture", {}), **table}
    if trainer.accelerator.is_main_process:
        write_json_atomic(path, results)
        summary = {"distilled": results.get("distilled", {}), "cross_architecture": table}
        _print_summary(summary, trainer.config, trainer.iteration, trainer.distill_seconds, output_dir, path.name)
    return results


def _parse_with_config(pre: argparse.ArgumentParser, config_class: type, argv: list[str] | None):
    """`(the arguments of pre, a config_class built from the other flags)`; `None` after printing both helps."""
    if argv and argv[0] in ("-h", "--help"):
        pre.print_help()
        HfArgumentParser(config_class, prog=pre.prog, allow_abbrev=False).print_help()
        return None
    known, rest = pre.parse_known_args(argv)
    (config,) = HfArgumentParser(config_class, allow_abbrev=False).parse_args_into_dataclasses(args=rest)
    return known, config


def run_analyze(argv: list[str] | None = None) -> dict:
    """`hf-distill analyze DATASET`: class balance, per-class pixel statistics, near-duplicates (across labels too)
    and outliers in the embedding of a network of the run's architecture; writes `analysis.json` and `analysis.png`
    to `--output_dir` (default `outputs/<dataset>-analysis`). Every data and network flag of `distill` applies."""

    pre = argparse.ArgumentParser(prog="hf-distill analyze", description=run_analyze.__doc__, allow_abbrev=False)
    pre.add_argument("dataset", help="A Hub dataset id, a local folder, or sklearn:digits (its train split).")
    pre.add_argument("--dataset_config_name", default=None)
    parsed = _parse_with_config(pre, AnalysisConfig, argv)
    if parsed is None:
        return {}
    known, config = parsed
    output_dir = Path(config.output_dir or f"outputs/{Path(known.dataset.replace(':', '-')).name}-analysis")
    report = analyze_dataset(
        known.dataset,
        config,
        output_dir,
        dataset_config_name=known.dataset_config_name,
        command=shlex.join(["hf-distill", "analyze", *(argv or [])]),
    )
    duplicates, outliers = report["near_duplicates"], report["outliers"]
    print(
        f"{report['num_rows']} rows, {report['num_classes']} classes (largest/smallest {report['imbalance_ratio']}x: "
        f"{report['largest_class']} / {report['smallest_class']})\n"
        f"  near-duplicate pairs (cosine >= {duplicates['threshold']}): {duplicates['pairs']}, of which "
        f"{duplicates['cross_class_pairs']} across two labels\n"
        f"  outliers (z > {outliers['z_threshold']}): {outliers['count']}; rows nearer another class's mean: "
        f"{report['nearer_to_another_class_mean']['count']}\n"
        f"  embedding: {report['embedding']['network']}, trained {report['embedding']['selection_epochs']} epochs; "
        f"{report['seconds']} s\nWrote {output_dir}/ ({ANALYSIS_NAME}, {ANALYSIS_PLOT_NAME})"
    )
    return report


def run_nas(argv: list[str] | None = None) -> dict:
    """`hf-distill nas OUTPUT_DIR`: architecture search on a distilled set (the DC paper's ConvNet space): sampled
    architectures trained on the set, on a random real subset of its size and on the whole real split; writes
    `nas_results.json` and `nas_ranks.png` (rank correlations, picks, seconds) to `OUTPUT_DIR/nas`. A stopped search
    started again with the same flags resumes."""

    pre = argparse.ArgumentParser(prog="hf-distill nas", description=run_nas.__doc__, allow_abbrev=False)
    pre.add_argument("output_dir", help="A folder written by `hf-distill distill` (a ConvNet run).")
    pre.add_argument("--dataset", default=None, help="Source dataset (default: the one recorded at distillation).")
    pre.add_argument("--results_dir", default=None, help="Where to write the results (default: OUTPUT_DIR/nas).")
    pre.add_argument(
        "--reuse_whole_real_from",
        default=None,
        help="An earlier nas_results.json (same real data, seed, space, real_epochs): reuse its whole-real trainings.",
    )
    parsed = _parse_with_config(pre, NASConfig, argv)
    if parsed is None:
        return {}
    known, config = parsed
    trainer = DistillTrainer.from_output_dir(known.output_dir, dataset=known.dataset)
    results_dir = Path(known.results_dir or Path(known.output_dir) / "nas")
    command = shlex.join(["hf-distill", "nas", *(argv or [])])
    report = search_architectures(
        trainer, config, results_dir, command=command, reuse_whole_real_from=known.reuse_whole_real_from
    )
    lines = [f"{config.num_architectures} of {report['search_space_size']} architectures"]
    for name, summary in report["summary"].items():
        rho = summary.get("spearman_with_whole_real")
        picked = f"{summary['picked_real_accuracy']:.2f}%"
        lines.append(
            f"  {name:<11}: {summary['seconds']:>9.1f} s, picks an architecture at {picked}"
            + (
                f" on real data, Spearman {rho:+.2f} with the real ranking, "
                f"{summary['times_faster_than_whole_real']}x faster than the whole split"
                if rho is not None
                else " (the best)"
            )
        )
    lines.append(f"Wrote {results_dir}/ ({NAS_NAME}, {NAS_PLOT_NAME})")
    print("\n".join(lines))
    return report


def run_push(argv: list[str] | None = None) -> str:
    """`hf-distill push OUTPUT_DIR REPO_ID`: pushes a distilled set (or a KD student folder) with its card."""

    parser = argparse.ArgumentParser(prog="hf-distill push", description=run_push.__doc__, allow_abbrev=False)
    parser.add_argument(
        "output_dir", help="A folder written by `hf-distill distill` (a dataset) or by `hf-distill kd` (a model)."
    )
    parser.add_argument("repo_id", help="The Hub repository to push to, e.g. me/mnist-dm-ipc10 (created if missing).")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--token", default=None, help="Hugging Face token (default: the logged-in one).")
    parser.add_argument("--commit_message", default=None, help="Commit message.")
    args = parser.parse_args(argv)

    kwargs = {"private": args.private or None, "token": args.token, "commit_message": args.commit_message}
    if (Path(args.output_dir) / EXPERTS_INDEX_NAME).is_file():
        url = push_experts_to_hub(args.output_dir, args.repo_id, **kwargs)
    elif (Path(args.output_dir) / KD_CONFIG_NAME).is_file():
        url = push_student_to_hub(args.output_dir, args.repo_id, **kwargs)
    else:
        url = push_distilled_to_hub(args.output_dir, args.repo_id, **kwargs)
    print(f"Pushed {args.output_dir} to {args.repo_id}: {url}")
    return url


def run_train_experts(argv: list[str] | None = None):
    """`hf-distill train-experts`: trains MTT's expert trajectories with a distillation config's data and network.

    Every `distill` flag (and `--config recipe.yaml`) is accepted, so the experts are trained on exactly the data,
    normalisation and architecture the distillation will use; they are written to `--expert_dir` (default: the
    config's `expert_path`). Experts already in the folder are kept: re-running resumes.
    """

    pre = argparse.ArgumentParser(prog="hf-distill train-experts", add_help=False, allow_abbrev=False)
    pre.add_argument("--num_experts", type=int, required=True, help="Expert trajectories to train.")
    pre.add_argument("--num_epochs", type=int, required=True, help="Epochs per expert (one snapshot per epoch).")
    pre.add_argument("--expert_dir", default=None, help="Output folder (default: the config's expert_path).")
    pre.add_argument("--expert_lr", type=float, default=0.01, help="Expert SGD learning rate (MTT: lr_teacher 0.01).")
    pre.add_argument("--expert_batch_size", type=int, default=256, help="Expert training batch (MTT: 256).")
    if argv and argv[0] in ("-h", "--help"):
        pre.print_help()
        print("\nAll `hf-distill distill` options are accepted as well (data, network, --config recipe.yaml).")
        return None
    known, rest = pre.parse_known_args(argv)
    if not any(arg == "--method" or arg.startswith("--method=") for arg in rest):
        rest = [*rest, "--method", "mtt"] if "--config" not in rest else rest
    script_args, config = parse_distill_args(rest)
    expert_dir = known.expert_dir or getattr(config, "expert_path", None)
    if not expert_dir:
        raise ValueError("Pass --expert_dir (or a recipe with expert_path) to say where the experts go.")
    train, test = load_source(
        script_args.dataset,
        train_split=config.train_split,
        test_split=config.test_split,
        name=script_args.dataset_config_name,
        revision=script_args.dataset_revision,
        streaming=config.streaming,
    )
    source = {"dataset": script_args.dataset, "config_name": script_args.dataset_config_name}
    path = train_experts_for_config(
        config,
        train,
        test,
        expert_dir,
        num_experts=known.num_experts,
        num_epochs=known.num_epochs,
        source=source,
        lr=known.expert_lr,
        batch_size=known.expert_batch_size,
    )
    print(f"Wrote {known.num_experts} expert trajectories x {known.num_epochs} epochs to {path}/")
    return path


def distill_main(argv: list[str] | None = None):
    """Entry point of `hf-distill distill` and `recipes/distill.py`."""
    script_args, config = parse_distill_args(argv)
    trainer = run_distill(script_args, config)
    leave_process_group()
    return trainer


def leave_process_group() -> None:
    """Under `accelerate launch`: waits for every process, then takes the process group down, so that no process
    exits with a live one.

    An entry point that leaves it alive can fail at exit: with two launches on one host (gloo), rank 0 was seen to
    hang for minutes after writing everything while rank 1 aborted in the group's destructor ("terminate called
    without an active exception"). A no-op in one process.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        state = PartialState()
        state.wait_for_everyone()
        state.destroy_process_group()


def build_kd_parser(defaults: dict | None = None) -> HfArgumentParser:
    """The `kd` parser: every [`KDConfig`] field (TrainingArguments included) is a flag; `defaults` from a recipe."""

    parser = HfArgumentParser(KDConfig, prog="hf-distill kd", allow_abbrev=False)
    parser.add_argument("--config", default=None, help="A YAML recipe whose keys give defaults for the flags.")
    return _apply_recipe_defaults(parser, defaults, "`hf-distill kd`", "hf-distill kd")


def parse_kd_args(argv: list[str] | None = None):
    """Parses `kd` flags: YAML recipe (`--config`) first, then flags on top. Returns a [`KDConfig`]."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    parser = build_kd_parser(_load_recipe(known.config))
    config, *_ = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    if not config.distilled_dataset:
        parser.error("--distilled (a folder written by `hf-distill distill`, or a Hub dataset id) is required.")
    return config


def run_kd(config):
    """Trains the student (see `hf_distill.kd.train_student`) and prints its test accuracy."""

    trainer = train_student(config)
    if trainer.args.should_save:
        _print_kd_summary(trainer)
    return trainer


def _print_kd_summary(trainer) -> None:
    args, results, teacher = trainer.args, trainer.eval_results, trainer.teacher_info
    student = trainer.accelerator.unwrap_model(trainer.model).config.model_type
    lines = [
        f"Trained a {student} student on {args.distilled_dataset} ({args.num_train_epochs:g} epochs, "
        f"alpha {args.alpha:g}, temperature {args.temperature:g})"
    ]
    if teacher:
        accuracy = teacher.get("test_accuracy")
        lines.append(
            f"  teacher: {teacher['description']}"
            + (f" (test accuracy {accuracy:.2f}%)" if accuracy is not None else "")
        )
    if results:
        lines.append(
            f"  student test accuracy: {results['accuracy']:.2f}% on {results['num_test_images']} "
            f"{results['test_split']} {'sentences' if trainer.modality.name == 'text' else 'images'} of "
            f"{results['dataset']}"
        )
    else:
        lines.append("  no real test split available: the student was not evaluated (pass --source_dataset)")
    processor = "tokenizer" if trainer.modality.name == "text" else "preprocessor_config.json"
    lines.append(f"Wrote {args.output_dir}/ (model, {processor}, kd_config.json, eval_results.json)")
    print("\n".join(lines))


def kd_main(argv: list[str] | None = None):
    """Entry point of `hf-distill kd` and `recipes/kd.py`."""
    trainer = run_kd(parse_kd_args(argv))
    leave_process_group()
    return trainer


#: Errors that mean the user must change something (exit status 2, argparse's convention for a usage error).
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError)
#: Errors of the environment (no network, a failed upload, a diverging run): exit status 1.
RUN_ERRORS = (RuntimeError, HubPushError, FloatingPointError, OSError)


def main(argv: list[str] | None = None) -> int:
    """`hf-distill`: runs a command; a user's mistake prints `hf-distill: error: <message>` (exit status 2), a failed
    run (network, upload) the same with status 1. `--debug` (or `HF_DISTILL_DEBUG=1`) shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HF_DISTILL_DEBUG", "").lower() in ("1", "true", "yes")
    argv = [arg for arg in argv if arg != "--debug"]
    commands = {
        "analyze": run_analyze,
        "distill": distill_main,
        "evaluate": run_evaluate,
        "kd": kd_main,
        "nas": run_nas,
        "push": run_push,
        "train-experts": run_train_experts,
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print(
            "usage: hf-distill {analyze,distill,evaluate,kd,nas,push,train-experts} [options]\n\n"
            "  analyze   class balance, duplicates and outliers of a dataset (hf-distill analyze --help)\n"
            "  distill   distill a dataset (hf-distill distill --help for every option)\n"
            "  evaluate  re-evaluate a saved distilled set (hf-distill evaluate --help)\n"
            "  kd        train a student on a distilled set with a teacher (hf-distill kd --help)\n"
            "  nas       architecture search on a distilled set (hf-distill nas --help)\n"
            "  push      push a distilled set, KD student or MTT experts with a card (hf-distill push --help)\n"
            "  train-experts  train MTT's expert trajectories (hf-distill train-experts --help)\n\n"
            "  --debug   show the full traceback of an error (or set HF_DISTILL_DEBUG=1)"
        )
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    try:
        commands[argv[0]](argv[1:])
    except (*USER_ERRORS, *RUN_ERRORS) as error:
        if debug:
            raise
        status = 2 if isinstance(error, USER_ERRORS) else 1
        print(f"hf-distill: error: {error}", file=sys.stderr)
        if status == 1:
            print("(run again with --debug for the full traceback)", file=sys.stderr)
        return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
