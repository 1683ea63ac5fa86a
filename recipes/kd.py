"""Train a student on a distilled set with knowledge distillation, on one process or several (`accelerate launch`).

Usage:

```bash
# one process: train a teacher on the full real train split, then the student on the distilled set
python recipes/kd.py --distilled outputs/mnist-dm-ipc10 --train_teacher --output_dir outputs/mnist-dm-ipc10-student

# an existing teacher, a YAML recipe for the defaults, flags on top (same flags as `hf-distill kd --help`)
python recipes/kd.py --config my_kd.yaml --teacher outputs/mnist-dm-ipc10-student/teacher --alpha 0.5

# several processes (the Trainer shards the batches; only the main process trains a --train_teacher teacher)
accelerate launch --config_file recipes/accelerate_configs/cpu_2proc.yaml \\
    recipes/kd.py --distilled outputs/mnist-dm-ipc10 --train_teacher
```

The parser is the CLI's (`hf_distill.cli.parse_kd_args`): YAML keys give the defaults, flags override them.
"""

from hf_distill.cli import kd_main


def main(argv: list[str] | None = None):
    """Parses the recipe and flags, trains, evaluates and saves the student (see `hf_distill.cli.run_kd`)."""
    return kd_main(argv)


if __name__ == "__main__":
    main()
