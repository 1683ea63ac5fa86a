"""How `recipes/kd/sst2_dm_ipc10.yaml`'s settings were chosen: one student per setting, scored on 2,000 held-out
TRAINING sentences of SST-2 (a seeded draw), never on the validation split the benchmark reports.

Each call trains one student with the recipe plus the given flags (the teacher: `benchmarks/runs/sst2/teacher`, see
`text_kd.py`) and appends `{"name", "dev_acc", "teacher_dev", "secs", "extra", "command"}` to
`benchmarks/results/text/sst2_kd_sweep.json`. The teacher saw those sentences in its training, so its dev figure is
high; the students saw only the 20 distilled examples.

```bash
python benchmarks/text_kd_sweep.py base
python benchmarks/text_kd_sweep.py ep600 --num_train_epochs 600
python benchmarks/text_kd_sweep.py nodrop --augmentation none
```
"""

import json
import shlex
import sys
import time

from datasets import load_dataset
from run_benchmark import REPO_ROOT, git_commit  # scripts here run with this folder on sys.path

from hf_distill.cli import parse_kd_args
from hf_distill.kd import KDTrainer, load_distilled_set, prepare_test_split

RECIPE = "recipes/kd/sst2_dm_ipc10.yaml"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "text" / "sst2_kd_sweep.json"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name, extra = argv[0], argv[1:]
    config = parse_kd_args(
        ["--config", RECIPE, "--train_teacher", "false", "--teacher", "benchmarks/runs/sst2/teacher"]
        + ["--output_dir", f"/tmp/hf_distill_kd_sweep/{name}", "--disable_tqdm", "true", "--logging_steps", "1000"]
        + extra
    )
    distilled = load_distilled_set(config.distilled_dataset)
    dev = load_dataset("../shared/data/sst2", split="train").shuffle(seed=1234).select(range(2000))
    dev = prepare_test_split(distilled, dev)
    trainer = KDTrainer(args=config, teacher=config.teacher_name_or_path, distilled=distilled, eval_dataset=dev)
    started = time.perf_counter()
    trainer.train()
    row = {
        "name": name,
        "dev_acc": round(100 * trainer.evaluate()["eval_accuracy"], 2),
        "teacher_dev": round(trainer.teacher_accuracy(dev), 2),
        "secs": round(time.perf_counter() - started, 1),
        "extra": extra,
        "command": " ".join(shlex.quote(a) for a in ["python", "benchmarks/text_kd_sweep.py", *argv]),
        "git_commit": git_commit(),
    }
    rows = json.loads(RESULTS.read_text())["runs"] if RESULTS.is_file() else []
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"recipe": RECIPE, "dev": "2,000 training sentences, shuffle(seed=1234)", "runs": [*rows, row]}, indent=2
        )
        + "\n"
    )
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
