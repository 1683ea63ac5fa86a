"""Runs one of the authors' scripts from a local checkout, unchanged, with this repository's import shims.

`benchmarks/parity.py` calls it in a child process; by hand:

```bash
python benchmarks/parity_reference.py --repo /path/to/DatasetCondensation --data-dir ../shared/data \
    --workdir /tmp/ref --seed 0 -- main_DM.py --dataset MNIST --ipc 10 --Iteration 20 --num_exp 1
```

What it does, and nothing else: puts `benchmarks/reference_shims` (a stand-in for torchvision, which does not load
beside the CPU torch wheel; it reads `--data-dir`) and the checkout on `sys.path`, stubs the modules a script imports
but the compared path never calls (`wandb`; `scipy.ndimage.interpolation` where SciPy dropped that name), seeds
`random`, NumPy and torch with `--seed` (the scripts seed nothing themselves, and their siamese augmentation draws
its seed from the clock), changes into `--workdir` and runs the script as `__main__` with the arguments after `--`.

One compatibility shim touches the authors' classes: their networks flatten with `.view`, which current torch refuses
when a convolution's input had the strides of DiffAugment's `rand_crop` output for one-channel images (its
`permute` leaves an `(N, 1, H, W)` tensor that `contiguous()` keeps, whose strides make the convolution pick the
channels-last layout). The `forward` and `embed` of every network class in `networks.py` therefore receive their
input copied to the standard layout when it is not in it already: the same values, so the same results.
Its output goes to this process's stdout, unbuffered, so the caller can time the `iter = ` lines it prints.
"""

import argparse
import os
import random
import runpy
import sys
import types
from pathlib import Path

SHIMS = Path(__file__).resolve().parent / "reference_shims"


def _stub_missing_modules() -> None:
    try:
        import scipy.ndimage.interpolation  # noqa: F401
    except ImportError:
        # DC's non-differentiable `augment` (DC evaluation on MNIST) rotates with it; DM, DSA and MTT never do.
        try:
            from scipy.ndimage import rotate
        except ImportError:  # no SciPy at all: a stub that says so if it is ever called

            def rotate(*args, **kwargs):
                raise ImportError("scipy is needed for this path of the reference code: pip install scipy")

        sys.modules["scipy.ndimage.interpolation"] = types.SimpleNamespace(rotate=rotate)
        sys.modules.setdefault("scipy", types.ModuleType("scipy"))
        sys.modules.setdefault("scipy.ndimage", types.SimpleNamespace(rotate=rotate))
    if "wandb" not in sys.modules:
        try:
            import wandb  # noqa: F401
        except ImportError:
            sys.modules["wandb"] = types.SimpleNamespace(init=lambda **_: None, log=lambda *_, **__: None)


def _standard_layout_inputs() -> None:
    import networks
    import torch

    def standard_strides(shape) -> tuple[int, ...]:
        strides, step = [], 1
        for size in reversed(shape):
            strides.insert(0, step)
            step *= size
        return tuple(strides)

    def restrided(method):
        def call(self, x, *args, **kwargs):
            if x.dim() == 4 and x.stride() != standard_strides(x.shape):
                x = x.clone(memory_format=torch.contiguous_format)
            return method(self, x, *args, **kwargs)

        return call

    for value in vars(networks).values():
        if isinstance(value, type) and issubclass(value, torch.nn.Module) and value.__module__ == "networks":
            for name in ("forward", "embed"):
                if name in vars(value):
                    setattr(value, name, restrided(vars(value)[name]))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True, help="A checkout of the authors' repository.")
    parser.add_argument("--data-dir", required=True, help="The folder holding mnist/, fashion_mnist/, cifar10/.")
    parser.add_argument("--workdir", required=True, help="Where the script runs (it writes its results there).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    args = parser.parse_args(argv[:split])
    script, *script_args = argv[split + 1 :]
    repo = Path(args.repo).resolve()
    if not (repo / script).is_file():
        raise SystemExit(f"parity_reference: {repo / script} does not exist: is --repo a checkout of the right code?")

    os.environ["PARITY_DATA_DIR"] = str(Path(args.data_dir).resolve())
    sys.path[:0] = [str(SHIMS), str(repo)]
    _stub_missing_modules()
    _standard_layout_inputs()

    import numpy as np
    import torch

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)
    sys.argv = [str(repo / script), *script_args]
    runpy.run_path(str(repo / script), run_name="__main__")


if __name__ == "__main__":
    main()
