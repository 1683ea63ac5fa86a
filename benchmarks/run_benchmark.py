"""Reproduce the accuracy / speed table: distill with each recipe, measure it, evaluate it, write the reports.

```bash
python benchmarks/run_benchmark.py                                   # every recipe of the three datasets
python benchmarks/run_benchmark.py --datasets mnist --methods dm random --ipc 10 --curve
python benchmarks/run_benchmark.py --report-only                     # rebuild table + plot from the JSON files
```

For each `(dataset, method, IPC)` whose recipe `recipes/<dataset>/<method>_ipc<N>.yaml` exists, the script runs
`python -m hf_distill.cli distill --config <recipe>` in a child process (from the repository root, where the
recipes' relative paths point), and records:

- wall seconds of the child and its peak resident memory (`ru_maxrss` from `os.wait4`);
- `distill_seconds` and `iterations_completed` from the run's `distill_config.json` (the distillation loop
  only: no data loading, checkpoint writing or evaluation);
- the run's `eval_results.json` (the standard protocol on the final set, and the random real baseline);
- with `--curve`: the protocol (with fewer models/epochs) applied to the initial set and to every kept
  `checkpoint-*`, giving accuracy against distillation seconds.

Each combination is written to `<results-dir>/<dataset>_<method>_ipc<N>.json`; then `summary.json`, the
markdown table in the README (between `<!-- results:start -->` and `<!-- results:end -->`) and
`accuracy_vs_time.png` are rebuilt from *all* JSON files present, so partial runs accumulate.

The parent process deliberately never imports torch: a child's `ru_maxrss` starts from the memory high-water
mark of the process that spawned it (Linux copies it at `exec`), so a heavy parent would inflate every figure.
The checkpoint evaluation therefore runs in a child process too (`run_benchmark.py _curve RUN_DIR ...`).
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_README = REPO_ROOT / "benchmarks" / "README.md"
# Checkpoints kept in the repository so that a run too long for one machine's session can go on on the next one.
KEPT_SETS_DIR = REPO_ROOT / "benchmarks" / "sets"
KEPT_SET_MAX_BYTES = 5 * 2**20
CARRIED_DIR = REPO_ROOT / "benchmarks" / "checkpoints"
DEFAULT_DATASETS = ["mnist", "fashion_mnist", "cifar10"]
DEFAULT_METHODS = ["dm", "random"]
DEFAULT_IPC = [1, 10, 50]
MARKER_START = "<!-- results:start -->"
MARKER_END = "<!-- results:end -->"
SUMMARY_NAME = "summary.json"
PLOT_NAME = "accuracy_vs_time.png"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
SCHEMA_VERSION = 1

DATASET_ORDER = {"mnist": 0, "fashion_mnist": 1, "cifar10": 2, "sst2": 3}
METHOD_ORDER = {
    "random": 0,
    "herding": 1,
    "k_center": 2,
    "forgetting": 3,
    "el2n": 4,
    "grand": 5,
    "dm": 6,
    "dc": 7,
    "dsa": 8,
    "mtt": 9,
    "rfad": 10,
    "frepo": 11,
    "dd": 12,
}
DATASET_NAMES = {
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "sst2": "SST-2",
    "digits": "digits",
}

# ---------------------------------------------------------------------------------------------------------------
# Published figures, transcribed from shared/reference/published.md (ConvNet-3, test accuracy %, mean ± std).
# Keys are registry names (methods not registered yet use the names they are expected to get).
# `checked: False` marks figures that file says were not re-checked against the original paper (+/- 2-3 points).

SOURCES = {
    "DC21": 'Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021, Table 1',
    "DSA21": 'Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021, Table 1',
    "DM23": 'Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023, Table 1',
    "MTT22": 'Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022, Table 1',
    "later": "as reproduced in later papers' tables (collected in shared/reference/published.md)",
    "RFAD22": 'Loo et al., "Efficient Dataset Distillation using Random Feature Approximation", NeurIPS 2022 (learned '
    "labels; CIFAR-10 with ZCA)",
    "FRePo22": 'Zhou et al., "Dataset Distillation using Neural Feature Regression", NeurIPS 2022 (learned labels; '
    "CIFAR-10 with ZCA and a batch-norm ConvNet)",
}


def _row(source: str, checked: bool, *cells):
    """`{ipc: {"mean", "std", "source", "checked"}}` for IPC 1, 10, 50 (`None` cells are skipped)."""
    return {
        ipc: {"mean": cell[0], "std": cell[1], "source": source, "checked": checked}
        for ipc, cell in zip((1, 10, 50), cells)
        if cell is not None
    }


PUBLISHED = {
    "mnist": {
        "random": _row("DC21", False, (64.9, 3.5), (95.1, 0.9), (97.9, 0.2)),
        "herding": _row("DC21", False, (89.2, 1.6), (93.7, 0.3), (94.8, 0.2)),
        "k_center": _row("DC21", False, (89.3, 1.5), (84.4, 1.7), (97.4, 0.3)),
        "forgetting": _row("DC21", False, (35.5, 5.6), (68.1, 3.3), (88.2, 1.2)),
        "dd": _row("DC21", False, None, (79.5, 8.1), None),
        "dc": _row("DC21", True, (91.7, 0.5), (97.4, 0.2), (98.8, 0.2)),
        "dsa": _row("DSA21", True, (88.7, 0.6), (97.8, 0.1), (99.2, 0.1)),
        "dm": _row("DM23", False, (89.7, 0.6), (97.5, 0.1), (98.6, 0.1)),
        "rfad": _row("RFAD22", False, (94.4, 1.5), (98.5, 0.1), (98.8, 0.1)),
        "frepo": _row("FRePo22", False, (93.0, 0.4), (98.6, 0.1), (99.2, 0.0)),
    },
    "fashion_mnist": {
        "random": _row("DC21", False, (51.4, 3.8), (73.8, 0.7), (82.5, 0.7)),
        "herding": _row("DC21", False, (67.0, 1.9), (71.1, 0.7), (71.9, 0.8)),
        "k_center": _row("DC21", False, (66.9, 1.8), (54.7, 1.5), (68.3, 0.8)),
        "forgetting": _row("DC21", False, (42.0, 5.5), (53.9, 2.0), (55.0, 1.1)),
        "dc": _row("DC21", True, (70.5, 0.6), (82.3, 0.4), (83.6, 0.4)),
        "dsa": _row("DSA21", True, (70.6, 0.6), (84.6, 0.3), (88.7, 0.2)),
        "dm": _row("later", False, (70.7, 0.6), (83.5, 0.3), (88.1, 0.6)),
        "mtt": _row("later", False, (75.1, 0.9), (87.2, 0.3), (88.3, 0.1)),
        "frepo": _row("FRePo22", False, (75.6, 0.3), (86.2, 0.2), (89.6, 0.1)),
    },
    "cifar10": {
        "random": _row("DC21", True, (14.4, 2.0), (26.0, 1.2), (43.4, 1.0)),
        "herding": _row("DC21", True, (21.5, 1.2), (31.6, 0.7), (40.4, 0.6)),
        "k_center": _row("DC21", True, (21.5, 1.3), (14.7, 0.9), (27.0, 1.4)),
        "forgetting": _row("DC21", True, (13.5, 1.2), (23.3, 1.0), (23.3, 1.1)),
        "dd": _row("DC21", True, None, (36.8, 1.2), None),
        "dc": _row("DC21", True, (28.3, 0.5), (44.9, 0.5), (53.9, 0.5)),
        "dsa": _row("DSA21", True, (28.8, 0.7), (52.1, 0.5), (60.6, 0.5)),
        "dm": _row("DM23", True, (26.0, 0.8), (48.9, 0.6), (63.0, 0.4)),
        "mtt": _row("MTT22", True, (46.3, 0.8), (65.3, 0.7), (71.6, 0.2)),
        "rfad": _row("RFAD22", False, (53.6, 1.2), (66.3, 0.5), (71.1, 0.4)),
        "frepo": _row("FRePo22", True, (46.8, 0.7), (65.5, 0.4), (71.7, 0.2)),
    },
}

# ---------------------------------------------------------------------------------------------------------------
# Pure helpers (tested in tests/test_recipes.py; no torch, no subprocess)


def result_filename(dataset: str, method: str, ipc: int) -> str:
    """`<dataset>_<method>_ipc<N>.json`."""
    return f"{dataset}_{method}_ipc{ipc}.json"


def parse_overrides(items: list[str]) -> dict[str | None, dict[str, str]]:
    """Parses `--set` items: `key=value` (every method) or `method:key=value` (that method only).

    Returns:
        `dict`: `{None: {key: value}, "dm": {key: value}, ...}`.
    """
    overrides: dict[str | None, dict[str, str]] = {None: {}}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value or method:key=value, got {item!r}.")
        method, _, name = key.rpartition(":")
        overrides.setdefault(method or None, {})[name.replace("-", "_")] = value
    return overrides


def overrides_for(overrides: dict[str | None, dict[str, str]], method: str) -> dict[str, str]:
    """The `--set` values that apply to `method` (method-specific ones win)."""
    return {**overrides.get(None, {}), **overrides.get(method, {})}


def format_accuracy(result: dict | None) -> str:
    """`'97.12 ± 0.10 (n=3, 300 ep)'` from an `eval_results.json` entry, or `'—'`."""
    if not result or result.get("mean") is None:
        return "—"
    if result.get("protocol") == "linear_probe":  # text protocol (a): one convex fit, no models or epochs
        return f"{result['mean']:.2f} (linear probe)"
    return f"{result['mean']:.2f} ± {result['std']:.2f} (n={result['num_models']}, {result['epochs']} ep)"


def format_published(dataset: str, method: str, ipc: int) -> str:
    """`'97.5 ± 0.1 [DM23]*'` (`*`: not re-checked against the paper), or `'—'` when no figure is on file."""
    entry = PUBLISHED.get(dataset, {}).get(method, {}).get(int(ipc))
    if entry is None:
        return "—"
    return f"{entry['mean']:.1f} ± {entry['std']:.1f} [{entry['source']}]" + ("" if entry["checked"] else "*")


def _sort_key(record: dict):
    return (
        DATASET_ORDER.get(record.get("dataset"), len(DATASET_ORDER)),
        record.get("dataset", ""),
        int(record.get("ipc", 0)),
        METHOD_ORDER.get(record.get("method"), len(METHOD_ORDER)),
        record.get("method", ""),
    )


def load_results(results_dir: str | os.PathLike) -> list[dict]:
    """Every result JSON in `results_dir` (not `summary.json`), sorted by dataset, IPC, method."""
    records = []
    for path in sorted(Path(results_dir).glob("*.json")):
        if path.name == SUMMARY_NAME:
            continue
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            print(f"skipping {path}: not valid JSON ({error})", file=sys.stderr)
            continue
        if isinstance(record, dict) and {"dataset", "method", "ipc"} <= record.keys():
            records.append(record)
    return sorted(records, key=_sort_key)


def _format_seconds(seconds) -> str:
    return "—" if seconds is None else f"{seconds:,.0f}" if seconds >= 100 else f"{seconds:.1f}"


def gain_over_random(record: dict) -> tuple[str, bool]:
    """`improvement_over_random` of a record (`"+2.19"`, with `" †"` when the set's labels are learned), and whether
    they are; `"—"` without a random real subset."""
    results = record.get("eval_results") or {}
    distilled = (results.get("distilled") or {}).get("mean")
    random_real = (results.get("random_real") or {}).get("mean")
    if distilled is None or random_real is None or distilled != distilled:
        return "—", False
    config = record.get("config") or {}
    learned = bool(config.get("learn_soft_labels") or config.get("learn_regression_targets"))
    return f"{distilled - random_real:+.2f}" + (" †" if learned else ""), learned


def render_table(records: list[dict]) -> str:
    """The markdown results table (plus the sources of the published figures) for `records`."""
    lines = [
        "| dataset | IPC | method | ours: test acc. % mean ± std (n, epochs) | random real, same size and protocol "
        "| gain over random | published | iterations | distill s | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    learned_labels = False
    used_sources, used_entries = set(), []
    for record in records:
        dataset, method, ipc = record["dataset"], record["method"], int(record["ipc"])
        entry = PUBLISHED.get(dataset, {}).get(method, {}).get(ipc)
        if entry:
            used_sources.add(entry["source"])
            used_entries.append(entry)
        status = record.get("status", "ok")
        ours = format_accuracy((record.get("eval_results") or {}).get("distilled"))
        random_real = format_accuracy((record.get("eval_results") or {}).get("random_real"))
        gain, learned = gain_over_random(record)
        learned_labels |= learned
        if status != "ok":
            ours, gain = f"{status} (exit code {record.get('returncode')})", "—"
        peak = record.get("peak_rss_mib")
        lines.append(
            f"| {DATASET_NAMES.get(dataset, dataset)} | {ipc} | {method} | {ours} | {random_real} | {gain} "
            f"| {format_published(dataset, method, ipc)} | {record.get('iterations', '—')} "
            f"| {_format_seconds(record.get('distill_seconds'))} | {'—' if peak is None else f'{peak:,.0f}'} |"
        )
    if not records:
        lines.append("| — | — | — | no results yet | — | — | — | — | — | — |")
    notes = [f"[{key}] {SOURCES[key]}." for key in SOURCES if key in used_sources]
    notes += [note for note in map(_expert_note, records) if note]
    notes += [note for note in map(_resume_note, records) if note]
    if learned_labels:
        notes.append(
            "† the set's labels are learned (soft labels or regression targets) while the random subset keeps hard "
            "labels: the gain flatters the set (DD-Ranking, 2025)."
        )
    if any(not entry["checked"] for entry in used_entries):
        notes.append(
            "\\* not re-checked against the original paper (shared/reference/published.md): treat as +/- 2-3 points."
        )
    machines = sorted({_machine_label(record.get("machine") or {}) for record in records} - {""})
    if machines:
        notes.append("Measured on: " + "; ".join(machines) + ".")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"


def expert_summary(expert_dir: str | os.PathLike) -> dict | None:
    """What MTT's experts cost (paid once, shared by every IPC): read from the folder's `experts.json`."""
    index_path = Path(expert_dir) / "experts.json"
    if not index_path.is_file():
        return None
    index = json.loads(index_path.read_text())
    experts = index.get("experts") or []
    accuracies = [e["test_accuracy"] for e in experts if e.get("test_accuracy") is not None]
    return {
        "path": str(expert_dir),
        "num_experts": len(experts),
        "num_epochs": index.get("num_epochs"),
        "train_seconds": round(sum(e.get("train_seconds") or 0.0 for e in experts), 1),
        "mean_test_accuracy": round(sum(accuracies) / len(accuracies), 2) if accuracies else None,
        "training": index.get("training"),
    }


def _run_label(record: dict) -> str:
    """`'Fashion-MNIST mtt IPC 1'`: how the table's notes name a run."""
    return f"{DATASET_NAMES.get(record['dataset'], record['dataset'])} {record['method']} IPC {record['ipc']}"


def _resume_note(record: dict) -> str | None:
    if record.get("resumed_from_iteration") is None:
        return None
    return (
        f"{_run_label(record)}: resumed from its iteration-{record['resumed_from_iteration']} checkpoint "
        "(`--resume`); *distill s* covers the whole run, *peak MiB* only the resumed part."
    )


def _expert_note(record: dict) -> str | None:
    experts = record.get("experts")
    if not experts:
        return None
    name = _run_label(record)
    accuracy = experts.get("mean_test_accuracy")
    return (
        f"{name}: experts paid once and not in *distill s*: {experts['num_experts']} x {experts['num_epochs']} "
        f"epochs, {_format_seconds(experts['train_seconds'])} s of training"
        + (f" (final test accuracy {accuracy:.2f}%)" if accuracy is not None else "")
        + "."
    )


def _machine_label(machine: dict) -> str:
    if not machine:
        return ""
    return (
        f"{machine.get('nproc', '?')} CPU cores ({machine.get('cpu_model', '?')}), torch {machine.get('torch', '?')}"
    )


def replace_between_markers(text: str, block: str, start: str = MARKER_START, end: str = MARKER_END) -> str:
    """`text` with whatever lies between the `start` and `end` markers replaced by `block`.

    Without the markers, they are appended (with `block`) at the end of `text`.
    """
    body = f"{start}\n{block.rstrip()}\n{end}"
    i, j = text.find(start), text.find(end)
    if i == -1 or j == -1 or j < i:
        return text.rstrip() + ("\n\n" if text.strip() else "") + body + "\n"
    return text[:i] + body + text[j + len(end) :]


def build_summary(records: list[dict]) -> dict:
    """`summary.json`: one compact row per result (the full records stay in their own files)."""
    rows = []
    for record in records:
        results = record.get("eval_results") or {}
        distilled, random_real = results.get("distilled") or {}, results.get("random_real") or {}
        curve = record.get("curve") or {}
        rows.append(
            {
                "dataset": record["dataset"],
                "method": record["method"],
                "ipc": int(record["ipc"]),
                "status": record.get("status", "ok"),
                "accuracy_mean": distilled.get("mean"),
                "accuracy_std": distilled.get("std"),
                "eval_num_models": distilled.get("num_models"),
                "eval_epochs": distilled.get("epochs"),
                "random_real_mean": random_real.get("mean"),
                "random_real_std": random_real.get("std"),
                "published": PUBLISHED.get(record["dataset"], {}).get(record["method"], {}).get(int(record["ipc"])),
                "iterations": record.get("iterations"),
                "distill_seconds": record.get("distill_seconds"),
                "wall_seconds": record.get("wall_seconds"),
                "peak_rss_mib": record.get("peak_rss_mib"),
                "curve_points": len(curve.get("points") or []),
                "git_commit": record.get("git_commit"),
                "finished_at": record.get("finished_at"),
            }
        )
    return {"schema_version": SCHEMA_VERSION, "sources": SOURCES, "results": rows}


def baseline_accuracy(records: list[dict], dataset: str, ipc: int) -> float | None:
    """The random-real baseline for `(dataset, ipc)`: the `random` run if present, else a run's `random_real`."""
    candidates = [r for r in records if r["dataset"] == dataset and int(r["ipc"]) == ipc]
    for record in candidates:
        if record["method"] == "random" and record.get("status", "ok") == "ok":
            mean = ((record.get("eval_results") or {}).get("distilled") or {}).get("mean")
            if mean is not None:
                return mean
    for record in candidates:
        mean = ((record.get("eval_results") or {}).get("random_real") or {}).get("mean")
        if mean is not None:
            return mean
    return None


def plot_accuracy_vs_time(records: list[dict], path: str | os.PathLike) -> Path | None:
    """Accuracy against distillation seconds, one panel per dataset, one line per run with a curve.

    Every method has its own colour and every IPC its own line style; random real baselines are grey horizontal
    lines in the style of their IPC. Returns `None` (and writes nothing) when no record has a curve.
    """
    with_curve = [r for r in records if (r.get("curve") or {}).get("points")]
    if not with_curve:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on benchmark machines
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in with_curve}, key=lambda d: (DATASET_ORDER.get(d, 9), d))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    methods = sorted({r["method"] for r in with_curve})
    styles = ["-", "--", ":", "-."]
    for ax, dataset in zip(axes[0], datasets):
        runs = [r for r in with_curve if r["dataset"] == dataset]
        ipcs = sorted({int(r["ipc"]) for r in runs})
        for record in runs:
            ipc = int(record["ipc"])
            color = colors[methods.index(record["method"]) % len(colors)]
            style = styles[ipcs.index(ipc) % len(styles)]
            points = sorted(record["curve"]["points"], key=lambda p: p["distill_seconds"])
            xs = [p["distill_seconds"] for p in points]
            ys = [p["mean"] for p in points]
            stds = [p.get("std", 0.0) for p in points]
            protocol = record["curve"].get("protocol", {})
            label = (
                f"{record['method']} IPC {ipc} ({protocol.get('num_models', '?')}x{protocol.get('epochs', '?')} ep)"
            )
            ax.plot(xs, ys, marker="o", markersize=3, color=color, linestyle=style, label=label)
            ax.fill_between(
                xs, [y - s for y, s in zip(ys, stds)], [y + s for y, s in zip(ys, stds)], color=color, alpha=0.15
            )
            final = (record.get("eval_results") or {}).get("distilled") or {}
            if final.get("mean") is not None and record.get("distill_seconds") is not None:
                # The run's own final evaluation (more models/epochs than the curve's points).
                ax.errorbar(
                    [record["distill_seconds"]],
                    [final["mean"]],
                    yerr=[final.get("std", 0.0)],
                    fmt="*",
                    markersize=9,
                    color=color,
                    label=f"final, {final.get('num_models')}x{final.get('epochs')} ep",
                )
        for ipc in ipcs:
            baseline = baseline_accuracy(records, dataset, ipc)
            if baseline is not None:
                style = styles[ipcs.index(ipc) % len(styles)]
                ax.axhline(baseline, linestyle=style, linewidth=1, color="0.45", label=f"random real IPC {ipc}")
        ax.set_title(DATASET_NAMES.get(dataset, dataset))
        ax.set_xlabel("distillation seconds")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def regenerate_reports(results_dir: str | os.PathLike, readme: str | os.PathLike | None, plot: bool = True) -> dict:
    """Rebuilds `summary.json`, the README table and the plot from every result JSON in `results_dir`."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    records = load_results(results_dir)
    summary = build_summary(records)
    _write_json(results_dir / SUMMARY_NAME, summary)
    written = {"summary": results_dir / SUMMARY_NAME, "readme": None, "plot": None}
    if readme is not None:
        readme = Path(readme)
        text = readme.read_text() if readme.exists() else "# Benchmarks\n"
        readme.parent.mkdir(parents=True, exist_ok=True)
        readme.write_text(replace_between_markers(text, render_table(records)))
        written["readme"] = readme
    if plot:
        written["plot"] = plot_accuracy_vs_time(records, results_dir / PLOT_NAME)
    return written


# ---------------------------------------------------------------------------------------------------------------
# Provenance


def git_commit(root: Path = REPO_ROOT) -> str | None:
    """The checked-out commit, read from the `.git` files (no `git` process; `None` when unavailable).

    The working tree may differ from it: the result records the command line as well.
    """
    git_dir = root / ".git"
    try:
        if git_dir.is_file():  # a worktree or submodule: "gitdir: <path>"
            git_dir = (root / git_dir.read_text().split(":", 1)[1].strip()).resolve()
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        # Linked worktrees keep their refs in the main repository's folder, named by `commondir`.
        common = (
            (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
            if (git_dir / "commondir").is_file()
            else git_dir
        )
        for base in dict.fromkeys((git_dir, common)):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
    except OSError:
        return None
    return None


def machine_info() -> dict:
    """Cores, CPU model and library versions (torch's version is read from metadata: no import)."""
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model or platform.processor() or None,
        "torch": version("torch"),
        "hf_distill": version("hf_distill"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


# ---------------------------------------------------------------------------------------------------------------
# Running


def _write_json(path: Path, payload) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def run_measured(command: list[str], cwd: Path) -> dict:
    """Runs `command` (output streamed to this terminal) and returns its exit code, wall seconds and peak RSS."""
    # This process's high-water mark is the floor of the child's ru_maxrss (see the module docstring).
    launcher_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd)
    try:
        _, status, usage = os.wait4(process.pid, 0)
    except KeyboardInterrupt:
        process.kill()
        process.wait()
        raise
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: keep Popen from waiting again
    return {
        "returncode": process.returncode,
        "wall_seconds": round(wall, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is in KiB on Linux
        "launcher_rss_mib": round(launcher_kib / 1024, 1),
    }


def _read_yaml_output_dir(recipe: Path) -> str | None:
    import yaml  # light; the recipe is re-read by the CLI anyway

    values = yaml.safe_load(recipe.read_text()) or {}
    return values.get("output_dir")


def _clear_run_dir(run_dir: Path) -> None:
    """Removes a previous run's folder so that stale checkpoints never end up on the curve."""
    if not run_dir.exists():
        return
    looks_like_run = (run_dir / "distill_config.json").exists() or any(
        CHECKPOINT_PATTERN.match(p.name) for p in run_dir.iterdir()
    )
    if not looks_like_run and any(run_dir.iterdir()):
        raise RuntimeError(f"{run_dir} is not empty and does not look like a hf_distill run: not deleting it.")
    print(f"Removing the previous run in {run_dir}")
    shutil.rmtree(run_dir)


def list_checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """`(iteration, folder)` of the complete checkpoints in `run_dir`, oldest first."""
    found = []
    if run_dir.is_dir():
        for path in run_dir.iterdir():
            match = CHECKPOINT_PATTERN.match(path.name)
            if match and (path / "trainer_state.json").is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


def carried_checkpoint_dir(dataset: str, method: str, ipc: int, root: Path = CARRIED_DIR) -> Path:
    """Where `--carry` keeps a run's newest checkpoint (committed, unlike the git-ignored runs folder)."""
    return root / dataset / f"{method}_ipc{ipc}"


def carry_checkpoint(run_dir: Path, carried_dir: Path) -> Path | None:
    """Copies the newest complete checkpoint of `run_dir` into `carried_dir`, replacing the one carried before.

    The copy is made under a temporary name and renamed into place, so an interrupted copy never replaces a good
    carried checkpoint with a partial one.
    """
    checkpoints = list_checkpoint_dirs(run_dir)
    if not checkpoints:
        return None
    _, newest = checkpoints[-1]
    carried_dir.mkdir(parents=True, exist_ok=True)
    tmp = carried_dir / f".{newest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(newest, tmp)
    target = carried_dir / newest.name
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    # Only the run's own newest checkpoint stays, even where a previously carried one had more iterations.
    for _, other in list_checkpoint_dirs(carried_dir):
        if other != target:
            shutil.rmtree(other)
    return target


def keep_set(run_dir: Path, kept_dir: Path) -> Path | None:
    """Copies a finished run's outputs (the set, its config, results, transform; no checkpoints) to `kept_dir`, under
    a temporary name renamed into place, so later sessions evaluate the set (other architectures, NAS) without
    distilling it again."""
    if not (run_dir / "distill_config.json").is_file():
        return None
    skip = shutil.ignore_patterns("checkpoint-*", ".save.tmp", "nas")
    size = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file() and "checkpoint-" not in str(p))
    if size > KEPT_SET_MAX_BYTES:
        # A CIFAR-10 ZCA transform alone is 36 MiB: such sets stay out of git (refit the run to evaluate them).
        print(f"Not keeping {_relative(run_dir)}: {size / 2**20:.1f} MiB is too large to commit")
        return None
    kept_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = kept_dir.parent / f".{kept_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run_dir, tmp, ignore=skip)
    shutil.rmtree(kept_dir, ignore_errors=True)
    tmp.rename(kept_dir)
    return kept_dir


def restore_carried_checkpoint(carried_dir: Path, run_dir: Path) -> int | None:
    """Copies the checkpoint `--carry` kept into an empty run folder (a fresh machine); returns its iteration."""
    carried = list_checkpoint_dirs(carried_dir)
    if not carried:
        return None
    iteration, source = carried[-1]
    _clear_run_dir(run_dir)
    run_dir.mkdir(parents=True)
    shutil.copytree(source, run_dir / source.name)
    print(f"Restored the carried checkpoint {_relative(source)} into {run_dir}")
    return iteration


def run_curve(run_dir: Path, args, python: str) -> dict | None:
    """Evaluates the initial set and every kept checkpoint of `run_dir` in a child process."""
    if not list_checkpoint_dirs(run_dir):
        print(f"No checkpoint-* in {run_dir}: no curve (selection methods have none).")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "curve.json"
        command = [python, str(Path(__file__).resolve()), "_curve", str(run_dir), "--output", str(out)]
        command += ["--models", str(args.curve_models)]
        if args.curve_epochs:
            command += ["--epochs", str(args.curve_epochs)]
        if args.curve_every:
            command += ["--every", str(args.curve_every)]
        print("+", shlex.join(command), flush=True)
        measured = run_measured(command, REPO_ROOT)
        if measured["returncode"] != 0 or not out.exists():
            print(f"Curve evaluation failed (exit code {measured['returncode']}).", file=sys.stderr)
            return {"status": "failed", **measured, "points": []}
        curve = json.loads(out.read_text())
    return {
        "status": "ok",
        **curve,
        "wall_seconds": measured["wall_seconds"],
        "peak_rss_mib": measured["peak_rss_mib"],
    }


def benchmark_one(dataset: str, method: str, ipc: int, recipe: Path, args, overrides: dict, machine: dict) -> dict:
    """Distills with one recipe (unless reusing a previous result), optionally adds the curve, writes the JSON."""
    results_dir = Path(args.results_dir)
    result_path = results_dir / result_filename(dataset, method, ipc)
    previous = json.loads(result_path.read_text()) if result_path.exists() else None
    reuse = args.skip_existing and previous is not None and previous.get("status") == "ok"

    extra = dict(overrides)
    if args.runs_dir:
        extra["output_dir"] = str(Path(args.runs_dir).resolve() / dataset / f"{method}_ipc{ipc}")
    if reuse:
        record = previous
        print(f"== {dataset} {method} IPC {ipc}: reusing {result_path}")
    else:
        output_dir = extra.get("output_dir") or _read_yaml_output_dir(recipe)
        if not output_dir:
            raise ValueError(f"{recipe} has no output_dir: the benchmark needs to know where the run is written.")
        run_dir = (REPO_ROOT / output_dir).resolve()
        carried_dir = carried_checkpoint_dir(dataset, method, ipc, args.carry_dir)
        # A run stopped part-way (a killed session) goes on from its newest complete checkpoint: the trainer keeps
        # counting distill_seconds from the checkpoint, so the figure still covers the whole distillation.
        checkpoints = list_checkpoint_dirs(run_dir) if args.resume else []
        resumed_from = checkpoints[-1][0] if checkpoints else None
        if args.resume and resumed_from is None:
            resumed_from = restore_carried_checkpoint(carried_dir, run_dir)
        if resumed_from is None:
            _clear_run_dir(run_dir)
        else:
            extra["resume_from_checkpoint"] = "latest"
            print(f"Resuming the run in {run_dir} from iteration {resumed_from}")
        command = [args.python, "-m", "hf_distill.cli", "distill", "--config", str(recipe.resolve())]
        for key, value in extra.items():
            # A value with spaces is several arguments: `--set "feature_layers=0 1 2"` for a list field.
            command += [f"--{key}", *shlex.split(value)]
        print(f"== {dataset} {method} IPC {ipc}\n+ {shlex.join(command)}", flush=True)
        started_at = _now()
        measured = run_measured(command, REPO_ROOT)
        record = {
            "schema_version": SCHEMA_VERSION,
            "dataset": dataset,
            "method": method,
            "ipc": ipc,
            "status": "ok" if measured["returncode"] == 0 else "failed",
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "distill_command": shlex.join(command),
            "recipe": _relative(recipe),
            "overrides": extra,
            "run_dir": _relative(run_dir),
            "git_commit": git_commit(),
            "machine": machine,
            "started_at": started_at,
            "finished_at": _now(),
            **measured,
        }
        if resumed_from is not None:
            # wall_seconds and peak_rss_mib then cover only this part; distill_seconds covers the whole run.
            record["resumed_from_iteration"] = resumed_from
        config_path, results_path = run_dir / "distill_config.json", run_dir / "eval_results.json"
        if config_path.exists():
            config = json.loads(config_path.read_text())
            record["distill_seconds"] = config.get("distill_seconds")
            record["iterations"] = config.get("iterations_completed")
            record["num_processes"] = config.get("num_processes")
            record["config"] = {
                k: v for k, v in config.items() if k not in ("architecture", "selected_rows", "class_names")
            }
            if config.get("expert_path"):
                record["experts"] = expert_summary(REPO_ROOT / config["expert_path"])
                if record["experts"]:
                    record["experts"]["path"] = config["expert_path"]  # as the recipe gives it, not this machine's
        if results_path.exists():
            record["eval_results"] = json.loads(results_path.read_text())
        if record["status"] == "ok" and "eval_results" not in record:
            record["status"] = "incomplete"
        if args.keep_sets and record["status"] == "ok":
            kept = keep_set(run_dir, args.keep_sets_dir / dataset / f"{method}_ipc{ipc}")
            if kept is not None:
                record["kept_set"] = _relative(kept)
                print(f"Kept {_relative(kept)}: commit it to evaluate the set elsewhere (hf-distill evaluate, nas)")
        if args.carry:
            carried = carry_checkpoint(run_dir, carried_dir)
            if carried is not None:
                record["carried_checkpoint"] = _relative(carried)
                print(f"Carried {_relative(carried)}: commit it to go on from it on another machine (--resume)")

    if args.curve and record.get("status") == "ok" and not (reuse and (record.get("curve") or {}).get("points")):
        run_dir = REPO_ROOT / record["run_dir"]
        record["curve"] = run_curve(run_dir, args, args.python)
    results_dir.mkdir(parents=True, exist_ok=True)
    _write_json(result_path, record)
    print(f"Wrote {result_path}")
    return record


def _relative(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------------------
# The `_curve` child: evaluates checkpoints (imports torch and hf_distill; never the benchmark parent)


def curve_main(argv: list[str]) -> int:
    """`run_benchmark.py _curve RUN_DIR --output FILE [--models N] [--epochs E] [--every K] [--iterations I ...]`."""
    parser = argparse.ArgumentParser(prog="run_benchmark.py _curve")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--models", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="Default: the run's eval_epochs.")
    parser.add_argument("--every", type=int, default=None, help="Only checkpoints whose iteration is a multiple.")
    parser.add_argument(
        "--iterations", type=int, nargs="+", default=None, help="Only these iterations (0: the initial set)."
    )
    args = parser.parse_args(argv)
    wanted = set(args.iterations) if args.iterations else None

    from hf_distill.constants import CONFIG_NAME, SYNTHETIC_NAME
    from hf_distill.trainer import DistillTrainer

    metadata = json.loads((args.run_dir / CONFIG_NAME).read_text())
    # Same config and data as the run: the initial synthetic set is rebuilt exactly (all draws are seeded).
    trainer = DistillTrainer.from_output_dir(args.run_dir, load_distilled=False)
    epochs = args.epochs or trainer.config.eval_epochs

    def evaluate(iteration: int, seconds: float, name: str) -> dict:
        result = trainer.evaluate(num_models=args.models, epochs=epochs, random_baseline=False, full_data=False)
        point = {"iteration": iteration, "distill_seconds": round(seconds, 2), "checkpoint": name}
        point.update({k: result["distilled"][k] for k in ("mean", "std", "accuracies")})
        print(f"  {name}: iteration {iteration}, {seconds:.1f} s -> {point['mean']:.2f} ± {point['std']:.2f}")
        return point

    points = [evaluate(0, 0.0, "initial")] if wanted is None or 0 in wanted else []
    checkpoints = list_checkpoint_dirs(args.run_dir)
    final_iteration = metadata.get("iterations_completed", 0)
    for iteration, path in checkpoints:
        if iteration > final_iteration:  # left over from a longer earlier run in the same folder
            continue
        if args.every and iteration % args.every and iteration != final_iteration:
            continue
        if wanted is not None and iteration not in wanted:
            continue
        state = json.loads((path / "trainer_state.json").read_text())
        trainer.synthetic.load_state(path / SYNTHETIC_NAME)
        points.append(evaluate(iteration, state.get("distill_seconds", 0.0), path.name))
    final_wanted = wanted is None or final_iteration in wanted
    if final_wanted and final_iteration > 0 and all(p["iteration"] != final_iteration for p in points):
        # The final set is only in dataset/ when num_iterations is not a multiple of save_steps.
        trainer.load_distilled(args.run_dir)
        points.append(evaluate(final_iteration, metadata.get("distill_seconds", 0.0), "final"))
    protocol = trainer.evaluation_protocol(num_models=args.models, epochs=epochs).to_dict()
    _write_json(args.output, {"protocol": protocol, "points": points})
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run_benchmark.py",
        description="Distill with each recipe, measure time/memory/accuracy, and rebuild the results table and plot.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--datasets", nargs="+", default=DEFAULT_DATASETS, help="Recipe folders under --recipes-dir.")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    parser.add_argument("--ipc", nargs="+", type=int, default=DEFAULT_IPC, help="Images per class.")
    parser.add_argument("--recipes-dir", default=str(REPO_ROOT / "recipes"))
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",  # `--set a=1 --set b=2` keeps both (plain nargs would keep only the last --set)
        default=[],
        metavar="KEY=VALUE",
        help="Flags passed to every run (`method:key=value` for one method only), e.g. num_iterations=200; a "
        "value with spaces becomes several arguments (a list field: 'feature_layers=0 1 2'). Repeatable.",
    )
    parser.add_argument("--curve", action="store_true", help="Also evaluate every kept checkpoint (accuracy vs time).")
    parser.add_argument("--curve-models", type=int, default=2, help="Evaluation models per curve point.")
    parser.add_argument(
        "--curve-epochs", type=int, default=None, help="Epochs per curve model (default: eval_epochs)."
    )
    parser.add_argument("--curve-every", type=int, default=None, help="Only checkpoints at multiples of N iterations.")
    parser.add_argument("--results-dir", default=str(DEFAULT_RESULTS_DIR))
    parser.add_argument(
        "--readme",
        default=None,
        help="Markdown file whose table is rebuilt (default: benchmarks/README.md with the default --results-dir, "
        "else RESULTS_DIR/README.md, so a trial run never touches the real table).",
    )
    parser.add_argument(
        "--runs-dir",
        default=None,
        help="Write runs to DIR/<dataset>/<method>_ipc<N> (default: the recipe's output_dir with the default "
        "--results-dir, else RESULTS_DIR/runs).",
    )
    parser.add_argument(
        "--skip-existing", action="store_true", help="Reuse results whose JSON exists (still adds a missing --curve)."
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="Go on from the newest complete checkpoint in a run's folder instead of starting it again (the JSON "
        "records resumed_from_iteration; wall_seconds and peak_rss_mib then cover only the resumed part).",
    )
    parser.add_argument(
        "--carry",
        action="store_true",
        help="After a run, copy its newest checkpoint to CARRY_DIR/<dataset>/<method>_ipc<N> (committed to git, "
        "unlike the runs folder); --resume on a fresh clone goes on from it when the run folder has none.",
    )
    parser.add_argument("--carry-dir", type=Path, default=CARRIED_DIR, help="Where --carry keeps checkpoints.")
    parser.add_argument(
        "--keep-sets",
        action="store_true",
        help="After a run, copy the finished set (no checkpoints) to KEEP_SETS_DIR/<dataset>/<method>_ipc<N>, "
        "committed to git so other sessions can evaluate it (cross-architecture, NAS) without distilling again.",
    )
    parser.add_argument("--keep-sets-dir", type=Path, default=KEPT_SETS_DIR, help="Where --keep-sets copies sets.")
    parser.add_argument("--report-only", action="store_true", help="Only rebuild summary, table and plot.")
    parser.add_argument("--python", default=sys.executable, help="Interpreter that runs hf_distill.")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_curve":
        return curve_main(argv[1:])
    args = build_parser().parse_args(argv)
    if Path(args.results_dir).resolve() != DEFAULT_RESULTS_DIR:
        # A trial results folder keeps everything of that trial (table, runs) unless told otherwise.
        args.readme = args.readme or str(Path(args.results_dir) / "README.md")
        args.runs_dir = args.runs_dir or str(Path(args.results_dir) / "runs")
    args.readme = args.readme or str(DEFAULT_README)
    overrides = parse_overrides(args.overrides)
    failures = []
    if not args.report_only:
        machine = machine_info()
        recipes_dir = Path(args.recipes_dir)
        for dataset in args.datasets:
            for ipc in args.ipc:
                for method in args.methods:
                    recipe = recipes_dir / dataset / f"{method}_ipc{ipc}.yaml"
                    if not recipe.exists():
                        print(f"-- no recipe {recipe}: skipped")
                        continue
                    record = benchmark_one(
                        dataset, method, ipc, recipe, args, overrides_for(overrides, method), machine
                    )
                    if record.get("status") != "ok" or (record.get("curve") or {}).get("status") == "failed":
                        failures.append(f"{dataset}/{method}_ipc{ipc}")
    written = regenerate_reports(args.results_dir, args.readme)
    for name, path in written.items():
        if path is not None:
            print(f"Wrote {path} ({name})")
    if failures:
        print(f"Failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
