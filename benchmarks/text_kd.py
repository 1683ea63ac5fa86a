"""Knowledge distillation on SST-2 sets (issue 21): a student trained on a distilled text set, with and without a
teacher, tested on the validation split.

1. The teacher: `all-MiniLM-L6-v2` fine-tuned on all 67,349 training sentences (`hf_distill.kd.train_text_teacher`:
   one epoch, AdamW 2e-5, batch 32, word embeddings frozen), trained once into `--teacher` (reused when present; its
   `config.json` records the settings, the accuracy and the seconds under `hf_distill_teacher`).
2. Each set (`benchmarks/runs/sst2/<set>`, written by `python benchmarks/run_benchmark.py --datasets sst2 ...`) trains
   a student with the settings of `--recipe` (default `recipes/kd/sst2_dm_ipc10.yaml`: the default text student, a
   copy of the set's encoder with a head on its mean-pooled embedding; AdamW 1e-5 for the encoder, 1e-2 for the head,
   300 epochs, token dropout, alpha 0.1, T 4) under each condition: `kd` (the teacher's soft targets) and `ce` (plain
   cross-entropy on the set's labels, alpha 1, no teacher; the same augmentation and schedule).

Writes `benchmarks/results/text/sst2_kd.json` (every run, the teacher, the command) and the table between the
`text-kd:start`/`text-kd:end` markers of `benchmarks/README.md`.

```bash
python benchmarks/text_kd.py --sets dm_ipc10 random_ipc10 dm_ipc1 --conditions kd ce --seeds 0
python benchmarks/text_kd.py --report-only
```
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kd_benchmark import _relative, summarize  # noqa: E402
from run_benchmark import DEFAULT_README, REPO_ROOT, git_commit, machine_info, replace_between_markers  # noqa: E402

MARKER_START, MARKER_END = "<!-- text-kd:start -->", "<!-- text-kd:end -->"
CONDITIONS = {"kd": "KD from the teacher", "ce": "plain CE on the set's labels"}


def get_text_teacher(teacher_dir: Path, dataset_dir: Path, encoder: str) -> dict:
    """Trains (or reuses) the fine-tuned encoder; returns its record."""
    from transformers import AutoConfig

    if not (teacher_dir / "config.json").is_file():
        from datasets import load_dataset

        from hf_distill.kd import train_text_teacher

        splits = load_dataset(str(dataset_dir))
        train_text_teacher(
            splits["train"],
            splits["validation"],
            encoder_name_or_path=encoder,
            max_length=64,
            dataset_name=_relative(dataset_dir),
            output_dir=teacher_dir,
        )
    return dict(AutoConfig.from_pretrained(teacher_dir).hf_distill_teacher)


def train_with_recipe(recipe: str, set_dir: Path, teacher_dir: Path | None, out_dir: Path, seed: int) -> dict:
    """One student: the recipe's settings on `set_dir`, with the teacher (`kd`) or without (`ce`, alpha 1)."""
    from hf_distill.cli import parse_kd_args
    from hf_distill.kd import train_student

    argv = ["--config", recipe, "--distilled", str(set_dir), "--output_dir", str(out_dir), "--seed", str(seed)]
    argv += ["--disable_tqdm", "true", "--train_teacher", "false"]
    argv += ["--teacher", str(teacher_dir)] if teacher_dir is not None else ["--alpha", "1.0"]
    started = time.perf_counter()
    trainer = train_student(parse_kd_args(argv))
    return {
        "seed": seed,
        "accuracy": trainer.eval_results["accuracy"],
        "train_seconds": trainer.eval_results.get("seconds"),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "output_dir": _relative(out_dir),
    }


def render_table(record: dict) -> str:
    teacher = record["teacher"]
    lines = [
        f"Teacher: {teacher['encoder']} fine-tuned on all {teacher['num_train_examples']:,} training sentences "
        f"({teacher['epochs']} epoch, {teacher['seconds']:.0f} s): **{teacher['test_accuracy']:.2f}** on validation.",
        "",
        "| set | " + " | ".join(CONDITIONS.values()) + " |",
        "|---|" + "---|" * len(CONDITIONS),
    ]
    for set_name, conditions in record["results"].items():
        cells = []
        for condition in CONDITIONS:
            result = conditions.get(condition)
            cells.append(
                f"{result['mean']:.2f} ± {result['std']:.2f} (n={result['n']}, {result['mean_train_seconds']:.0f} s)"
                if result
                else "—"
            )
        lines.append(f"| `{set_name}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Student and settings: `{record['recipe']}` (`ce`: alpha 1, no teacher); validation accuracy (872 "
        "sentences); mean ± population std over seeds; seconds = training time of one student.",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["dm_ipc10", "random_ipc10"])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--recipe", default="recipes/kd/sst2_dm_ipc10.yaml", help="The student's settings.")
    parser.add_argument("--dataset", default="../shared/data/sst2")
    parser.add_argument("--encoder", default="../shared/models/all-MiniLM-L6-v2")
    parser.add_argument("--sets-dir", default=str(REPO_ROOT / "benchmarks" / "runs" / "sst2"))
    parser.add_argument("--teacher", default=str(REPO_ROOT / "benchmarks" / "runs" / "sst2" / "teacher"))
    parser.add_argument("--runs-dir", default=str(REPO_ROOT / "benchmarks" / "runs" / "sst2_kd"))
    parser.add_argument("--results", default=str(REPO_ROOT / "benchmarks" / "results" / "text" / "sst2_kd.json"))
    parser.add_argument("--readme", default=str(DEFAULT_README))
    parser.add_argument("--report-only", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results_path = Path(args.results)
    previous = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if not args.report_only:
        teacher_dir = Path(args.teacher).resolve()
        teacher_record = get_text_teacher(teacher_dir, (REPO_ROOT / args.dataset).resolve(), args.encoder)
        results = dict(previous.get("results", {}))
        for set_name in args.sets:
            set_dir = Path(args.sets_dir) / set_name
            for condition in args.conditions:
                runs = []
                for seed in args.seeds:
                    out_dir = Path(args.runs_dir) / f"{set_name}-{condition}-seed{seed}"
                    teacher = teacher_dir if condition == "kd" else None
                    runs.append(train_with_recipe(args.recipe, set_dir, teacher, out_dir, seed))
                    run = runs[-1]
                    print(f"{set_name} {condition} seed {seed}: {run['accuracy']:.2f}% ({run['wall_seconds']} s)")
                results.setdefault(set_name, {})[condition] = {
                    "description": CONDITIONS[condition],
                    "runs": runs,
                    **summarize(runs),
                }
        command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/text_kd.py", *(argv or sys.argv[1:])])
        previous = {
            "commands": [*previous.get("commands", []), command],
            "git_commit": git_commit(),
            "machine": machine_info(),
            "teacher": {"path": _relative(teacher_dir), **teacher_record},
            "recipe": args.recipe,
            "results": results,
        }
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(previous, indent=2) + "\n")
    readme = Path(args.readme)
    readme.write_text(replace_between_markers(readme.read_text(), render_table(previous), MARKER_START, MARKER_END))
    print(render_table(previous))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
