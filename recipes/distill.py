"""Distill a dataset from a YAML recipe, on one process or several (`accelerate launch`).

Usage:

```bash
# one process
python recipes/distill.py --config recipes/mnist/dm_ipc10.yaml

# two CPU processes on this machine (gloo); classes are shared out between the processes
accelerate launch --config_file recipes/accelerate_configs/cpu_2proc.yaml \
    recipes/distill.py --config recipes/mnist/dm_ipc10.yaml
accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
    recipes/distill.py --config recipes/mnist/dm_ipc10.yaml

# flags override the recipe (same flags as `hf-distill distill --help`)
python recipes/distill.py --config recipes/cifar10/dm_ipc10.yaml --num_iterations 200 --images_per_class 50
```

The parser is the CLI's (`hf_distill.cli.parse_distill_args`): YAML keys give the defaults, flags override them.
"""

from hf_distill.cli import distill_main


def main(argv: list[str] | None = None):
    """Parses the recipe and flags, distills, evaluates and saves (see `hf_distill.cli.run_distill`)."""
    return distill_main(argv)


if __name__ == "__main__":
    main()
