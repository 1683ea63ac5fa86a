"""The parity benchmark's results files: one entry per variant and seed, written atomically, and the markdown
tables `python benchmarks/parity.py --report` prints (seconds per iteration per machine, each judge's mean over
seeds, accuracy against wall time)."""

import json
from pathlib import Path
from statistics import mean, stdev

#: What paired runs share with the authors' side (`parity.py --same-start`, `--experts ours`), as report titles say it.
PAIRINGS = {
    "same_start": "ours start from the authors' initial set of each seed",
    "our_experts": "both sides match our experts",
}


def results_path(results_dir: Path, dataset: str, method: str, ipc: int, pairing: list[str] = ()) -> Path:
    """Paired runs (`pairing`: keys of `PAIRINGS`) have a file of their own: they do not average with runs whose
    sides drew their own initial sets or trained their own experts."""
    suffix = "".join(f"_{shared}" for shared in pairing)
    return Path(results_dir) / f"{dataset}_{method}_ipc{ipc}{suffix}.json"


def record(path: Path, key: str, entry: dict, header: dict) -> None:
    """Adds one (variant, seed) entry to the results file, keeping the others (atomic replace)."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(header)
    data.setdefault("runs", {})[key] = entry
    write_results(path, data)


def mark_timing_disturbed(path: Path, key: str, why: str) -> None:
    """Keeps a run's sets and accuracies but takes its timings out of every table (`timing_disturbed`: why).

    For a run that shared the cores with another job: its accuracy is what it is, its seconds are not comparable.
    """
    data = json.loads(path.read_text())
    if key not in data.get("runs", {}):
        raise SystemExit(f"{path} has no run {key!r}; it has: {', '.join(data.get('runs', {}))}.")
    data["runs"][key]["timing_disturbed"] = why
    write_results(path, data)


def _timing_disturbed(run: dict) -> bool:
    """Whether `run` was marked by [`mark_timing_disturbed`]."""
    return "timing_disturbed" in run


def _timed(runs: list[dict]) -> list[dict]:
    """The runs whose timings count (not marked `timing_disturbed`)."""
    return [run for run in runs if not _timing_disturbed(run)]


def write_results(path: Path, data: dict) -> None:
    """Writes a results file atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    temporary.replace(path)


def _speed_lines(speed: dict) -> list[str]:
    variants = list(speed["rounds"][0])
    per_variant = {v: [timings[v] for timings in speed["rounds"]] for v in variants}
    authors = mean(per_variant["authors"]) if "authors" in per_variant else None
    lines = [
        f"Interleaved speed ({len(speed['rounds'])} rounds of {speed['iterations_per_turn']} iterations each, "
        f"batch_real {speed['batch_real']}; {speed['machine']['cpu']}; commit {speed['commit'][:7]})",
        "",
        "| set | s / iteration (mean ± std over rounds) | authors' time / ours |",
        "|---|---|---|",
    ]
    for variant, values in per_variant.items():
        ratio = f"{authors / mean(values):.2f}" if authors and variant != "authors" else ""
        spread = f"{mean(values):.3f} ± {stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"
        lines.append(f"| {variant} | {spread} | {ratio} |")
    return [*lines, ""]


def _summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{mean(values):.2f} ± {stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def report(results_dir: Path) -> str:
    """One markdown table per results file: per variant, seconds per iteration and each judge's mean over seeds."""
    lines = []
    for path in sorted(Path(results_dir).glob("*.json")):
        data = json.loads(path.read_text())
        if "runs" not in data:  # speed only
            lines += [f"**{data['dataset']} {data['method']} IPC {data['ipc']}**", ""]
            lines += [line for speed in data["speed"] for line in _speed_lines(speed)]
            continue
        runs = data["runs"].values()
        variants = sorted({run["variant"] for run in runs}, key=lambda v: (v != "authors", v))
        start = "".join(f"; {PAIRINGS[shared]}" for shared in data.get("pairing", []))
        lines += [
            f"**{data['dataset']} {data['method']} IPC {data['ipc']}** ({json.dumps(data['settings'])}{start})",
            "",
            "| set | seeds | iterations | s / iteration | project judge | second judge |",
            "|---|---|---|---|---|---|",
        ]
        for variant in variants:
            mine = [run for run in runs if run["variant"] == variant]
            seeds = ", ".join(str(run["seed"]) for run in sorted(mine, key=lambda r: r["seed"]))
            per_machine = _mean_by_machine(_timed(mine), lambda run: run["seconds_per_iteration"])
            speed = "; ".join(f"{seconds:.3f} ({cpu})" for cpu, seconds in per_machine.items()) or "-"
            disturbed = [run for run in mine if _timing_disturbed(run)]
            if disturbed:
                speed += " (not timed: seed " + ", ".join(str(run["seed"]) for run in disturbed) + ")"
            judged = [_summary([mean(run["judges"][j]["accuracies"]) for run in mine]) for j in ("project", "second")]
            iterations = sorted({run["iterations"] for run in mine})
            lines.append(f"| {variant} | {seeds} | {iterations} | {speed} | {judged[0]} | {judged[1]} |")
        lines.append("")
        lines += [
            f"Seed {run['seed']} of {run['variant']}: timing left out ({run['timing_disturbed']})."
            for run in runs
            if _timing_disturbed(run)
        ]
        lines += _wall_time_table(list(runs))
        lines += [line for speed in data.get("speed", []) for line in _speed_lines(speed)]
    return "\n".join(lines)


def _mean_by_machine(runs: list[dict], value) -> dict[str, float]:
    """`value(run)` averaged over the runs of each machine (timings of two machines never mix), by CPU name."""
    cpus = sorted({run["machine"]["cpu"] for run in runs})
    return {cpu: mean(value(run) for run in runs if run["machine"]["cpu"] == cpu) for cpu in cpus}


def _seconds(run: dict) -> float:
    return run.get("seconds", run["seconds_per_iteration"] * run["iterations"])


def _wall_time_table(runs: list[dict]) -> list[str]:
    """Accuracy against distillation seconds for the runs judged on their way (`--curve`), beside the authors'.

    "Time to the authors' accuracy" is the first point of the curve whose judged mean reaches the authors' final
    mean over seeds (every machine) less one standard deviation (the targets' "within one standard deviation");
    the ratio is the authors' mean seconds **on the same machine** over that point's seconds (above 1: less wall
    time than the authors' code). The authors' own curve (MTT's, kept on their way) is listed without one.
    """
    authors = [run for run in runs if run["variant"] == "authors"]
    curved = [run for run in runs if run.get("curve")]
    if not authors or not curved:
        return []
    bar = {}
    for name in ("project", "second"):
        finals = [mean(run["judges"][name]["accuracies"]) for run in authors]
        bar[name] = mean(finals) - (stdev(finals) if len(finals) > 1 else 0.0)
    authors_seconds = _mean_by_machine(_timed(authors), _seconds)
    timings = "; ".join(f"{seconds:.0f} s on {cpu}" for cpu, seconds in authors_seconds.items())
    lines = [
        f"Accuracy against wall time (authors, {authors[0]['iterations']} iterations: {timings}; "
        f"their accuracy less one std: project {bar['project']:.2f}, second {bar['second']:.2f})",
        "",
        "| set | seed | machine | iteration | seconds | project judge | second judge |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in sorted(_timed(curved), key=lambda r: (r["variant"], r["machine"]["cpu"], r["seed"])):
        cpu = run["machine"]["cpu"]
        points = [*run["curve"], {"iteration": run["iterations"], "seconds": _seconds(run), "judges": run["judges"]}]
        reached = {}
        for point in points:
            judged = {name: mean(point["judges"][name]["accuracies"]) for name in bar}
            for name, value in judged.items():
                if value >= bar[name] and name not in reached:
                    reached[name] = point["seconds"]
            cells = " | ".join(f"{judged[name]:.2f}" for name in bar)
            where = f"{run['variant']} | {run['seed']} | {cpu} | {point['iteration']}"
            lines.append(f"| {where} | {point['seconds']:.0f} | {cells} |")
        for name in bar if run["variant"] != "authors" else ():  # the authors' own curve is the reference's
            label = f"| time to the authors' accuracy, {name} judge | {run['seed']} | {cpu} |"
            if name not in reached:
                lines.append(f"{label} | not reached | | |")
            elif cpu not in authors_seconds:
                lines.append(f"{label} | {reached[name]:.0f} | no authors' run on this machine | |")
            else:
                ratio = authors_seconds[cpu] / reached[name]
                lines.append(f"{label} | {reached[name]:.0f} | ratio {ratio:.2f} | |")
    lines.append("")
    return lines
