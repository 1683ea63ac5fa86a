"""Teacher-based (decoupled) methods, judged as their papers judge them, beside the fair baseline.

```bash
python benchmarks/teacher_methods.py --dataset cifar10 --ipc 10 --methods rded sre2l --seeds 0 1 2
```

1. **Sets**: each method's recipe (`recipes/<dataset>/<method>_ipc<N>.yaml`, seed 0) in a child process. The first run
   trains the teacher (the recipe's `teacher_epochs`, kept in `benchmarks/runs/selection_cache`, so every method
   shares one teacher) and saves it as `<run>/teacher`; the run's `distill_seconds` excludes the teacher. Beside them,
   the random real subset of the same size (`--method random`, seed 0).
2. **Students**: on every set, the protocol's ConvNet-3 trained by `hf-distill kd` with that one teacher relabelling
   every augmented batch and the KL alone (`--alpha 0 --use_soft_labels no`: the sets' own soft labels are not used,
   so every set gets the same supervision; RDED's and SRe2L's evaluation), `--seeds` students each. The random
   subset with the teacher is the fair baseline (DD-Ranking, 2025): what the teacher alone gives.
   With `--student-recipe recipes/kd/<dataset>_<method>_ipc<N>.yaml`, every student is trained with that recipe's
   settings instead (the authors' student: optimiser, schedule, batch, augmentation, CutMix, temperature); results
   then go to `<dataset>_ipc<N>_<recipe name>.json`.
3. Also recorded: each set's protocol accuracy without the teacher (`eval_results.json`: trained on its soft labels),
   the teacher's own test accuracy, peak RSS and wall time of every child.

Results: `benchmarks/results/teacher_methods/<dataset>_ipc<N>.json` (with this command).
"""

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

import yaml
from run_benchmark import (
    REPO_ROOT,
    git_commit,
    machine_info,
    run_measured,
)  # scripts here run with this folder on path

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results" / "teacher_methods"
RUNS_DIR = REPO_ROOT / "benchmarks" / "runs" / "teacher_methods"
#: `--dataset` -> the data; the recipes are `recipes/<dataset>/` (cifar10_64px: CIFAR-10 resized, a ResNet-18 teacher).
DATASETS = {
    "cifar10": "../shared/data/cifar10",
    "cifar10_64px": "../shared/data/cifar10",
    "mnist": "../shared/data/mnist",
}
#: Recipe keys the random subset takes from the first method's recipe, so it is prepared (and judged) alike.
SHARED_WITH_RANDOM = ("image_size", "model_name_or_path", "eval_num_models", "eval_epochs")


def recipe(args, method: str) -> Path:
    return REPO_ROOT / "recipes" / args.dataset / f"{method}_ipc{args.ipc}.yaml"


def child(command: list[str]) -> dict:
    """Runs one `hf-distill` command as a child process; its wall seconds and peak RSS."""
    print("$", shlex.join(command), flush=True)
    measured = run_measured(command, REPO_ROOT)
    if measured["returncode"] != 0:
        raise RuntimeError(f"exit {measured['returncode']}: {shlex.join(command)}")
    return measured


def distill(args, method: str) -> dict:
    """One set (the method's recipe, or the random subset); its folder, cost and protocol accuracy."""
    out = RUNS_DIR / f"{args.dataset}_{method}_ipc{args.ipc}"
    hf_distill = [sys.executable, "-m", "hf_distill.cli", "distill"]
    if method == "random":
        command = [*hf_distill, "--dataset", DATASETS[args.dataset], "--method", "random"]
        command += ["--images_per_class", str(args.ipc), "--seed", "0"]
        first = yaml.safe_load(recipe(args, args.methods[0]).read_text())
        for key in SHARED_WITH_RANDOM:
            if key in first:
                command += [f"--{key}", str(first[key])]
    else:
        command = [*hf_distill, "--config", str(recipe(args, method))]
    command += ["--output_dir", str(out), "--overwrite_output_dir", "true", "--eval_random_baseline", "false"]
    measured = child(command)
    config = json.loads((out / "distill_config.json").read_text())
    results = json.loads((out / "eval_results.json").read_text())
    return {
        "folder": str(out.relative_to(REPO_ROOT)),
        "distill_seconds": config.get("distill_seconds"),
        "teacher": config.get("teacher"),
        "protocol_accuracy": results.get("distilled", {}).get("mean"),
        "protocol_std": results.get("distilled", {}).get("std"),
        **measured,
    }


def student(args, set_folder: str, teacher: Path, seed: int) -> dict:
    """A KD student on one set with the shared teacher (the `--student-recipe`'s settings when given); its accuracy."""
    settings = ["--config", str(args.student_recipe)] if args.student_recipe else []
    settings += ["--student_config", str(args.student_config)] if args.student_config else []
    out = RUNS_DIR / "students" / f"{Path(set_folder).name}{variant_suffix(args)}_seed{seed}"
    command = [
        sys.executable, "-m", "hf_distill.cli", "kd", *settings, "--distilled", str(REPO_ROOT / set_folder),
        "--teacher", str(teacher), "--alpha", "0", "--use_soft_labels", "no", "--seed", str(seed),
        "--output_dir", str(out), "--num_train_epochs", str(args.student_epochs),
    ]  # fmt: skip
    measured = child(command)
    results = json.loads((out / "eval_results.json").read_text())
    teacher_info = json.loads((out / "kd_config.json").read_text()).get("teacher") or {}
    return {
        "seed": seed,
        "accuracy": results["accuracy"],
        "teacher_accuracy": teacher_info.get("test_accuracy"),
        **measured,
    }


def variant_suffix(args) -> str:
    """`_<recipe name>` for students trained by a `--student-recipe`, so their folders and results stand apart."""
    return f"_{Path(args.student_recipe).stem}" if args.student_recipe else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10", choices=sorted(DATASETS))
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=["rded", "sre2l"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Students per set.")
    parser.add_argument("--student-epochs", type=int, default=300)
    parser.add_argument(
        "--student-config",
        type=Path,
        help="The students' architecture (`hf-distill kd --student_config`), e.g. recipes/cifar10_64px/resnet18.",
    )
    parser.add_argument(
        "--student-recipe",
        type=Path,
        help="An `hf-distill kd` recipe whose student settings every student uses (e.g. recipes/kd/"
        "cifar10_rded_ipc10.yaml, the RDED authors' student); the set, teacher, alpha 0 and seed are set here.",
    )
    args = parser.parse_args()

    sets = {method: distill(args, method) for method in [*args.methods, "random"]}
    teacher = REPO_ROOT / sets[args.methods[0]]["folder"] / "teacher"  # trained by the first method's run
    rows = {}
    for name, made in sets.items():
        students = [student(args, made["folder"], teacher, seed) for seed in args.seeds]
        accuracies = [s["accuracy"] for s in students]
        rows[name] = {
            **made,
            "students": students,
            "kd_accuracy": round(statistics.mean(accuracies), 2),
            "kd_std": round(statistics.stdev(accuracies), 2) if len(accuracies) > 1 else 0.0,
        }
        print(f"{name}: KD student {rows[name]['kd_accuracy']} ± {rows[name]['kd_std']}", flush=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{args.dataset}_ipc{args.ipc}{variant_suffix(args)}.json"
    payload = {
        "command": "python benchmarks/teacher_methods.py " + shlex.join(sys.argv[1:]),
        "commit": git_commit(),
        "machine": machine_info(),
        "student_recipe": str(args.student_recipe) if args.student_recipe else None,
        "student_config": str(args.student_config) if args.student_config else None,
        "teacher": str(teacher.relative_to(REPO_ROOT)),
        "teacher_accuracy": rows[args.methods[0]]["students"][0]["teacher_accuracy"],
        "sets": rows,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
