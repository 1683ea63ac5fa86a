"""Knowledge distillation on a distilled set: does a teacher's soft target beat plain cross-entropy?

For each dataset (MNIST, Fashion-MNIST from `../shared/data`):

1. a teacher ConvNet-3 trained on the **full** real train split (`hf_distill.kd.train_teacher`), once;
2. the `dm` IPC 10 set of the main benchmark (`benchmarks/runs/<dataset>/dm_ipc10`, written by
   `python benchmarks/run_benchmark.py --datasets <dataset> --methods dm --ipc 10`);
3. a random real subset of the same size (the `random` method, same seed as the benchmark's baseline);
4. the same student (the protocol's ConvNet-3, width 128, 300 epochs, SGD 0.01, DSA) trained with `KDTrainer`
   under three conditions, each for several seeds: KD on the DM set (`alpha`, `temperature`), plain CE on it
   (`alpha=1`, no teacher) and plain CE on the random subset; optionally KD on the random subset.

Writes `benchmarks/results/kd_<dataset>.json` (every run's accuracy and seconds, the teacher, the command), the
table between the `kd:start`/`kd:end` markers of `benchmarks/README.md` and `benchmarks/results/kd.png`.

```bash
python benchmarks/kd_benchmark.py                                   # MNIST and Fashion-MNIST, 3 seeds
# a smoke test (a few minutes): tiny teacher, 2 student epochs, everything under /tmp
python benchmarks/kd_benchmark.py --datasets mnist --seeds 0 --epochs 2 --teacher-epochs 1 --teacher-width 8 \
    --runs-dir /tmp/kd_smoke/runs --results-dir /tmp/kd_smoke
python benchmarks/kd_benchmark.py --report-only                     # rebuild table and plot from the JSON
```
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_benchmark import DEFAULT_README, REPO_ROOT, git_commit, machine_info, replace_between_markers  # noqa: E402

DEFAULT_RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_RUNS_DIR = REPO_ROOT / "benchmarks" / "runs" / "kd"
MARKER_START, MARKER_END = "<!-- kd:start -->", "<!-- kd:end -->"
DATASETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
CONDITIONS = {
    "dm_kd": ("dm", True, "KD from the teacher on the DM set"),
    "dm_ce": ("dm", False, "plain CE on the DM set"),
    "random_ce": ("random", False, "plain CE on a random real subset"),
    "random_kd": ("random", True, "KD from the teacher on the random subset"),
}


def make_random_set(dataset_dir: Path, out_dir: Path, images_per_class: int, seed: int) -> Path:
    """The random real subset in the distilled-set folder format (selection only, no evaluation)."""
    from hf_distill import DistillTrainer, RandomSelectionConfig
    from hf_distill.data import load_source

    if (out_dir / "distill_config.json").is_file():
        return out_dir
    config = RandomSelectionConfig(images_per_class=images_per_class, seed=seed, output_dir=str(out_dir))
    train, test = load_source(str(dataset_dir), train_split="train", test_split="test")
    source = {"dataset": _relative(dataset_dir), "train_split": "train", "test_split": "test"}
    trainer = DistillTrainer(config, train, test, source=source)
    trainer.train()
    trainer.save(out_dir)
    return out_dir


def get_teacher(dataset_dir: Path, distilled_dir: Path, out_dir: Path, epochs: int, width: int) -> tuple[Path, dict]:
    """Trains (or reuses) the teacher on the full train split, normalised like the distilled set."""
    from hf_distill.data import load_source
    from hf_distill.kd import load_distilled_set, train_teacher

    record_path = out_dir / "teacher_record.json"
    if record_path.is_file():
        return out_dir, json.loads(record_path.read_text())
    distilled = load_distilled_set(distilled_dir)
    train, test = load_source(str(dataset_dir), train_split="train", test_split="test")
    started = time.perf_counter()
    teacher = train_teacher(
        train,
        test,
        epochs=epochs,
        net_width=width,
        image_mean=distilled.image_mean,
        image_std=distilled.image_std,
        image_size=distilled.image_shape[1:],
        num_channels=distilled.image_shape[0],
        seed=0,
        dataset_name=_relative(dataset_dir),
        output_dir=out_dir,
    )
    record = {
        "epochs": epochs,
        "net_width": width,
        "test_accuracy": teacher.config.hf_distill_teacher.get("test_accuracy"),
        "seconds_including_data_preparation": round(time.perf_counter() - started, 1),
    }
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return out_dir, record


def train_one(distilled_dir: Path, teacher_dir: Path | None, out_dir: Path, seed: int, args) -> dict:
    from hf_distill.kd import KDConfig, train_student

    config = KDConfig(
        output_dir=str(out_dir),
        distilled_dataset=str(distilled_dir),
        alpha=args.alpha if teacher_dir is not None else 1.0,
        temperature=args.temperature,
        num_train_epochs=args.epochs,
        seed=seed,
        disable_tqdm=True,
    )
    started = time.perf_counter()
    trainer = train_student(config, teacher=str(teacher_dir) if teacher_dir is not None else None)
    wall = time.perf_counter() - started
    return {
        "seed": seed,
        "accuracy": trainer.eval_results["accuracy"],
        "train_seconds": trainer.eval_results.get("seconds"),
        "wall_seconds": round(wall, 1),
        "output_dir": _relative(out_dir),
    }


def _relative(path: Path) -> str:
    """The path as recorded in results and cards: relative to the repository (`../shared/data/mnist`)."""
    return os.path.relpath(Path(path).resolve(), REPO_ROOT)


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["python", "benchmarks/kd_benchmark.py", *sys.argv[1:]])


def summarize(runs: list[dict]) -> dict:
    accuracies = [run["accuracy"] for run in runs]
    return {
        "mean": statistics.fmean(accuracies),
        "std": statistics.pstdev(accuracies) if len(accuracies) > 1 else 0.0,
        "n": len(accuracies),
        "mean_train_seconds": statistics.fmean(run["train_seconds"] or 0.0 for run in runs),
    }


def benchmark_dataset(name: str, args, machine: dict) -> dict:
    dataset_dir = (REPO_ROOT / args.data_root / name).resolve()
    distilled_dir = REPO_ROOT / "benchmarks" / "runs" / name / f"dm_ipc{args.ipc}"
    if args.distilled:
        distilled_dir = Path(args.distilled.replace("{dataset}", name)).resolve()
    if not (distilled_dir / "distill_config.json").is_file():
        raise SystemExit(
            f"No DM set at {distilled_dir}: run `python benchmarks/run_benchmark.py --datasets {name} --methods dm "
            f"--ipc {args.ipc}` first, or pass --distilled."
        )
    runs_dir = Path(args.runs_dir).resolve() / name
    random_dir = make_random_set(dataset_dir, runs_dir / f"random_ipc{args.ipc}", args.ipc, seed=0)
    teacher_dir, teacher = get_teacher(
        dataset_dir, distilled_dir, runs_dir / "teacher", args.teacher_epochs, args.teacher_width
    )
    sets = {"dm": distilled_dir, "random": random_dir}
    result_path = Path(args.results_dir) / f"kd_{name}.json"
    # Conditions not run this time keep their earlier figures (same teacher and sets), so runs can add conditions.
    previous = json.loads(result_path.read_text()) if result_path.is_file() else {}
    results: dict[str, dict] = dict(previous.get("results", {}))
    for condition in args.conditions:
        set_name, uses_teacher, description = CONDITIONS[condition]
        runs = []
        for seed in args.seeds:
            out_dir = runs_dir / f"{set_name}_ipc{args.ipc}-{'kd' if uses_teacher else 'ce'}-seed{seed}"
            runs.append(train_one(sets[set_name], teacher_dir if uses_teacher else None, out_dir, seed, args))
            print(f"{name} {condition} seed {seed}: {runs[-1]['accuracy']:.2f}% ({runs[-1]['wall_seconds']} s)")
        results[condition] = {"description": description, "runs": runs, **summarize(runs)}
    record = {
        "dataset": name,
        "commands": [
            *previous.get("commands", [previous["command"]] if "command" in previous else []),
            _command_line(),
        ],
        "git_commit": git_commit(),
        "machine": machine,
        "distilled_set": _relative(distilled_dir),
        "random_set": _relative(random_dir),
        "images_per_class": args.ipc,
        "student": "ConvNet-3 (width 128, instance norm), the evaluation protocol's architecture",
        "settings": {
            "alpha": args.alpha,
            "temperature": args.temperature,
            "epochs": args.epochs,
            "seeds": args.seeds,
            "lr": 0.01,
            "schedule": "SGD momentum 0.9, weight decay 5e-4, lr x0.1 at half, batch 256, DSA (the set's strategy)",
        },
        "teacher": {"architecture": f"ConvNet-3 width {args.teacher_width}", **teacher},
        "results": results,
    }
    if "dm_kd" in results and "dm_ce" in results:
        record["kd_gain_on_dm_set"] = results["dm_kd"]["mean"] - results["dm_ce"]["mean"]
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def load_records(results_dir: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(results_dir.glob("kd_*.json"))]


def render_table(records: list[dict]) -> str:
    header = ["dataset", "teacher (full data)", *(CONDITIONS[c][2] for c in CONDITIONS), "KD gain on the DM set"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in records:
        teacher = record["teacher"]
        cells = [
            DATASETS.get(record["dataset"], record["dataset"]),
            f"{teacher['test_accuracy']:.2f} ({teacher['architecture']}, {teacher['epochs']} ep, "
            f"{teacher['seconds_including_data_preparation']:.0f} s)",
        ]
        for condition in CONDITIONS:
            result = record["results"].get(condition)
            cells.append(
                f"{result['mean']:.2f} ± {result['std']:.2f} (n={result['n']}, {result['mean_train_seconds']:.0f} s)"
                if result
                else "—"
            )
        gain = record.get("kd_gain_on_dm_set")
        cells.append(f"{gain:+.2f} points" if gain is not None else "—")
        lines.append("| " + " | ".join(cells) + " |")
    settings = records[0]["settings"] if records else {}
    lines += [
        "",
        f"Student: the protocol's ConvNet-3 trained {settings.get('epochs')} epochs on the IPC 10 set; KD uses "
        f"alpha = {settings.get('alpha')} (weight of the hard-label CE) and T = {settings.get('temperature')}; "
        "mean ± population std over seeds; seconds = mean training time of one student (`train_runtime`).",
    ]
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(records), figsize=(5 * len(records), 4), squeeze=False)
    for ax, record in zip(axes[0], records):
        names = [c for c in CONDITIONS if c in record["results"]]
        means = [record["results"][c]["mean"] for c in names]
        stds = [record["results"][c]["std"] for c in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=4, color="tab:blue")
        ax.axhline(record["teacher"]["test_accuracy"], color="tab:red", linestyle="--", label="teacher (full data)")
        ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names])
        ax.set_ylim(min(means) - 5, 100)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{DATASETS.get(record['dataset'], record['dataset'])}, IPC {record['images_per_class']}")
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(records: list[dict], results_dir: Path, readme: Path) -> None:
    if not records:
        return
    text = readme.read_text() if readme.is_file() else ""
    readme.write_text(replace_between_markers(text, render_table(records), MARKER_START, MARKER_END))
    plot(records, results_dir / "kd.png")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--conditions", nargs="+", default=["dm_kd", "dm_ce", "random_ce"], choices=list(CONDITIONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=300, help="Student epochs (protocol: 300).")
    parser.add_argument("--alpha", type=float, default=0.1, help="Weight of the hard-label CE in the KD loss.")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--teacher-width", type=int, default=64)
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--distilled", default=None, help="DM set folder; '{dataset}' is replaced by the name.")
    parser.add_argument("--runs-dir", default=str(DEFAULT_RUNS_DIR), help="Teachers, random sets and students.")
    parser.add_argument("--results-dir", default=str(DEFAULT_RESULTS_DIR))
    parser.add_argument(
        "--readme", default=None, help="Table target (default: benchmarks/README.md, or RESULTS_DIR/README.md)."
    )
    parser.add_argument("--report-only", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.report_only:
        machine = machine_info()
        for name in args.datasets:
            benchmark_dataset(name, args, machine)
    results_dir = Path(args.results_dir).resolve()
    readme = args.readme or (DEFAULT_README if results_dir == DEFAULT_RESULTS_DIR else results_dir / "README.md")
    report(load_records(results_dir), results_dir, Path(readme))
    return 0


if __name__ == "__main__":
    sys.exit(main())
