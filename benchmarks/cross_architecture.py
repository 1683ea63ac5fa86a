"""Cross-architecture table: every distilled set of a dataset and IPC trained by other networks (issue 20, part 2).

```bash
python benchmarks/cross_architecture.py --sets benchmarks/sets/mnist/*_ipc10 \
    --architectures convnet,convnet_bn,mlp,resnet,vit --num-models 2 --epochs 300
```

Each set folder (a finished run: `benchmarks/runs/...`, or one kept by `run_benchmark.py --keep-sets` under
`benchmarks/sets/`) is evaluated in a child process by `hf-distill evaluate SET --architectures ...
--results_name eval_results_cross_architecture.json` (the recorded results are untouched): every architecture is
trained on the set and on the random real subset of the same size with the protocol. The random subset's figures
do not depend on the set, so with `--random-baseline shared` (the default) every child keeps and reads them in
`--eval-cache-dir` (the library's `eval_cache_dir`, keyed by a digest of the data, network, protocol and seed): they
are trained once per distinct combination, in this table or an earlier one, and the entries that read them back say
so (`reused_from`); `each` trains them again for every set, `none` not at all. The rows are gathered into
`benchmarks/results/cross_architecture/<dataset>_ipc<N>.json` (with this command; rewritten after each set,
`"complete": false` until the last), drawn in `<dataset>_ipc<N>.png` and printed as a markdown table (distilled /
random real per architecture); `--replot` redraws both from the JSON. Run again with the same settings, the script
keeps the rows the JSON already has for unchanged sets (same folder, same `set_digest` of its data and config) and
evaluates only the others: a stopped table resumes at its next set, and a set added later costs only its own row.
"""

import argparse
import hashlib
import json
import shlex
import sys
from collections import Counter
from pathlib import Path

from run_benchmark import REPO_ROOT, machine_info, run_measured  # scripts here run with this folder on sys.path

from hf_distill.checkpointing import write_json_atomic
from hf_distill.constants import CROSS_ARCHITECTURE_RESULTS_NAME
from hf_distill.evaluation import protocol_max_grad_norm

RESULTS_NAME = CROSS_ARCHITECTURE_RESULTS_NAME
DEFAULT_OUTPUT_DIR = REPO_ROOT / "benchmarks" / "results" / "cross_architecture"
DEFAULT_EVAL_CACHE_DIR = REPO_ROOT / "benchmarks" / "runs" / "eval_cache"


def dataset_name(config: dict) -> str:
    """The dataset folder's name from a set's `distill_config.json` (`mnist` for `../shared/data/mnist`)."""
    return Path(str((config.get("source") or {}).get("dataset") or "")).name


def set_digest(set_dir: Path) -> str:
    """A digest of what a set folder holds (its `distill_config.json` and the files of its `dataset/`), not of the
    evaluations written beside them: a remade set gets another."""
    digest = hashlib.sha256()
    for path in [set_dir / "distill_config.json", *sorted((set_dir / "dataset").glob("**/*"))]:
        if path.is_file():
            digest.update(path.relative_to(set_dir).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def set_label(set_dir: Path) -> str:
    """The folder as a row names it: relative to the repository when inside it."""
    resolved = set_dir.resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(set_dir)


def evaluate_set(
    set_dir: Path,
    architectures: str,
    num_models: int,
    epochs: int,
    random_baseline: str,
    eval_cache_dir: Path = DEFAULT_EVAL_CACHE_DIR,
) -> dict:
    """One child `hf-distill evaluate --architectures` run; returns its table and cost. `random_baseline`: `"shared"`
    (kept in and read back from `eval_cache_dir`), `"each"` (trained for this set) or `"none"`."""
    command = [
        sys.executable, "-m", "hf_distill.cli", "evaluate", str(set_dir), "--architectures", architectures,
        "--num_models", str(num_models), "--epochs", str(epochs), "--results_name", RESULTS_NAME,
    ]  # fmt: skip
    if random_baseline == "none":
        command.append("--no_random_baseline")
    elif random_baseline == "shared":
        command += ["--eval_cache_dir", str(eval_cache_dir)]
    measured = run_measured(command, REPO_ROOT)
    if measured["returncode"] != 0:
        raise RuntimeError(f"{set_dir}: evaluation failed (exit {measured['returncode']}): {shlex.join(command)}")
    config = json.loads((set_dir / "distill_config.json").read_text())
    table = json.loads((set_dir / RESULTS_NAME).read_text())["cross_architecture"]
    return {
        "set": set_label(set_dir),
        "set_digest": set_digest(set_dir),
        "method": config["method"],
        "dataset": dataset_name(config),
        "images_per_class": config["images_per_class"],
        "target_type": config.get("target_type", "hard"),
        "table": table,
        "wall_seconds": measured["wall_seconds"],
        "peak_rss_mib": measured["peak_rss_mib"],
    }


def evaluate_sets(
    sets: list[Path],
    architectures: str,
    num_models: int,
    epochs: int,
    random_baseline: str,
    on_row=None,
    eval_cache_dir: Path = DEFAULT_EVAL_CACHE_DIR,
    finished: list[dict] = (),
) -> list:
    """Every set's row (see [`evaluate_set`]), in the order of `sets`. A row of `finished` (an earlier run's, with
    the same settings) is kept for its set while the set is unchanged (same `set_digest`). `on_row(rows)`, if given,
    is called after each set with the rows so far (the caller saves them: a long table is not lost)."""
    earlier = {(row["set"], row.get("set_digest")): row for row in finished}
    rows = []
    for path in sets:
        row = earlier.get((set_label(path), set_digest(path)))
        if row is None or not trained_as_now(row):
            row = evaluate_set(path, architectures, num_models, epochs, random_baseline, eval_cache_dir)
        else:
            print(f"{row['set']}: kept from the earlier table (set unchanged)")
        rows.append(row)
        if on_row is not None:
            on_row(rows)
    return rows


def trained_as_now(row: dict) -> bool:
    """Whether a row's networks trained on the set as the protocol trains such targets now (regression targets:
    with the gradient clip, since session 39)."""
    clip = protocol_max_grad_norm(row.get("target_type", "hard"))
    return all(entry["distilled"].get("max_grad_norm") == clip for entry in row["table"].values())


def finished_rows(path: Path, settings: dict) -> list[dict]:
    """The rows of the table at `path` when it was made with `settings` (architectures, models, epochs, random
    baseline); none otherwise."""
    if not path.is_file():
        return []
    recorded = json.loads(path.read_text())
    if any(recorded.get(key) != value for key, value in settings.items()):
        print(f"{path}: made with other settings, not resumed (it will be replaced)")
        return []
    return recorded["rows"]


def usual_networks(rows: list[dict], architectures: list[str]) -> dict[str, str]:
    """The network (its description) most rows of each column were trained on: `convnet` is each set's own ConvNet,
    so a set distilled with a variant (e.g. a batch-norm teacher's) is evaluated, with its subset, on that one."""
    usual = {}
    for name in architectures:
        entries = [row["table"].get(name, {}) for row in rows]
        described = [entry["architecture"] for entry in entries if "architecture" in entry]
        if described:
            usual[name] = Counter(described).most_common(1)[0][0]
    return usual


def markdown(rows: list[dict], architectures: list[str]) -> str:
    """`| method | arch 1 | arch 2 | ...` with `distilled (random real)` cells (random: shared or per set)."""
    lines = ["| set | " + " | ".join(architectures) + " |", "|---|" + "---|" * len(architectures)]
    usual = usual_networks(rows, architectures)
    variants = {}  # a cell's network -> the column's usual one
    for row in rows:
        cells = []
        for name in architectures:
            entry = row["table"].get(name, {})
            distilled, random_real = entry.get("distilled", {}), entry.get("random_real", {})
            cell = f"{distilled['mean']:.2f} ± {distilled['std']:.2f}" if "mean" in distilled else "—"
            if "mean" in random_real:
                cell += f" ({random_real['mean']:.2f}{'§' if random_real.get('labels') == 'soft' else ''})"
            if entry.get("architecture", usual.get(name)) != usual.get(name):
                cell += "¶"
                variants[entry["architecture"]] = usual[name]
            cells.append(cell)
        lines.append(f"| `{row['method']}` | " + " | ".join(cells) + " |")
    note = (
        "Cells: distilled set, mean ± std over the models (random real subset of the same size; §: with the soft "
        "labels of the set's teacher)."
    )
    for network, column in variants.items():
        note += f" ¶: on the set's own {network}, its subset too (the column's other rows: {column})."
    return "\n".join(lines) + "\n\n" + note


def plot_table(rows: list[dict], architectures: list[str], path: Path) -> None:
    """One group of bars per set (a bar per architecture, its std as an error bar), with the random real subset the
    set was compared with as a dashed tick on its bar: a set in another preprocessing (ZCA) has its own subset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(0.4 * len(rows) * len(architectures) + 2, 4.5))
    width = 0.8 / len(architectures)
    colors = plt.get_cmap("tab10").colors
    for offset, name in enumerate(architectures):
        xs, means, stds, baselines = [], [], [], []
        for position, row in enumerate(rows):
            cell = row["table"].get(name, {})
            distilled = cell.get("distilled", {})
            if "mean" in distilled:
                xs.append(position + (offset - (len(architectures) - 1) / 2) * width)
                means.append(distilled["mean"])
                stds.append(distilled.get("std", 0.0))
                baselines.append(cell.get("random_real", {}).get("mean"))
        color = colors[offset % len(colors)]
        axis.bar(xs, means, width, yerr=stds, label=name, color=color, capsize=2)
        ticks = [(x, value) for x, value in zip(xs, baselines) if value is not None]
        if ticks:
            axis.hlines(
                [value for _, value in ticks],
                [x - width / 2 for x, _ in ticks],
                [x + width / 2 for x, _ in ticks],
                colors="black",
                linestyles="--",
                linewidth=1,
            )
    axis.set_xticks(range(len(rows)), [row["method"] for row in rows])
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("Trained on each set (bars) and on a random real subset of its size (dashed ticks)")
    axis.legend(ncols=len(architectures), fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.08))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=Path, nargs="+", required=True, help="Run folders of one dataset and IPC.")
    parser.add_argument("--architectures", default="convnet,convnet_bn,mlp,resnet,vit")
    parser.add_argument("--num-models", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR)
    parser.add_argument(
        "--random-baseline",
        choices=("shared", "each", "none"),
        default="shared",
        help="Train the random real subset once per distinct data/protocol (shared), for every set, or never.",
    )
    parser.add_argument(
        "--eval-cache-dir",
        type=Path,
        default=DEFAULT_EVAL_CACHE_DIR,
        help="Where --random-baseline shared keeps the random subset's figures.",
    )
    parser.add_argument(
        "--replot", action="store_true", help="Only redraw the plot (and print the table) of the JSON the flags name."
    )
    args = parser.parse_args()

    names = args.architectures.split(",")
    output_path = table_path(args.sets, args.output_dir)
    if args.replot:
        recorded = json.loads(output_path.read_text())
        plot_table(recorded["rows"], recorded["architectures"], output_path.with_suffix(".png"))
        print(markdown(recorded["rows"], recorded["architectures"]))
        return
    command = shlex.join(["python", "benchmarks/cross_architecture.py", *sys.argv[1:]])
    settings = {
        "architectures": names,
        "num_models": args.num_models,
        "epochs": args.epochs,
        "random_baseline": args.random_baseline,
    }
    finished = finished_rows(output_path, settings)

    def save(rows: list[dict], complete: bool = False) -> None:
        result = {"command": command, "machine": machine_info(), **settings, "complete": complete, "rows": rows}
        args.output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output_path, result)

    rows = evaluate_sets(
        args.sets,
        args.architectures,
        args.num_models,
        args.epochs,
        args.random_baseline,
        save,
        args.eval_cache_dir,
        finished,
    )
    save(rows, complete=True)
    plot_table(rows, names, output_path.with_suffix(".png"))
    print(markdown(rows, names))
    print(f"Wrote {output_path} and {output_path.with_suffix('.png').name}")


def table_path(sets: list[Path], output_dir: Path) -> Path:
    """`<output_dir>/<dataset>_ipc<N>.json`; every set must share the dataset and the IPC (checked before any work)."""
    configs = [json.loads((path / "distill_config.json").read_text()) for path in sets]
    datasets = {dataset_name(c) for c in configs}
    ipcs = {c["images_per_class"] for c in configs}
    if len(datasets) != 1 or len(ipcs) != 1:
        raise SystemExit(f"One dataset and IPC per table, got {sorted(datasets)} and {sorted(ipcs)}.")
    return output_dir / f"{datasets.pop()}_ipc{ipcs.pop()}.json"


if __name__ == "__main__":
    main()
