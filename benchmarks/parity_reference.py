"""Runs one of the authors' scripts from a local checkout, unchanged, with this repository's import shims.

`benchmarks/parity.py` calls it in a child process; by hand:

```bash
python benchmarks/parity_reference.py --repo /path/to/DatasetCondensation --data-dir ../shared/data \
    --workdir /tmp/ref --seed 0 -- main_DM.py --dataset MNIST --ipc 10 --Iteration 20 --num_exp 1
```

What it does, and nothing else: puts `benchmarks/reference_shims` (a stand-in for torchvision, which does not load
beside the CPU torch wheel; it reads `--data-dir`) and the checkout on `sys.path`, stubs the modules a script imports
but the compared path never calls (`wandb`; `kornia`, MTT's ZCA only; `scipy.ndimage.interpolation` where SciPy
dropped that name), seeds `random`, NumPy and torch with `--seed` (the scripts seed nothing themselves, and their
siamese augmentation and `get_network` draw seeds from the clock), changes into `--workdir` and runs the script as
`__main__` with the arguments after `--`.

Every script's pixel steps are watched, not changed: before each SGD step of the optimiser holding the script's
`image_syn`, the norm of its gradient is appended to `grad_norms.txt` in `--workdir` (our trainer logs the same
figure as `grad_norm`).

For MTT's `distill.py` (mtt-distillation), three more shims, none in the compared path:

* the `wandb` stand-in answers what `distill.py` reads back from it (`wandb.config._items`: the script's arguments,
  `wandb.run.name`) and, at `wandb.finish()` (the last line of its `main`), saves the script's final synthetic set
  (`image_syn`, `label_syn`, `syn_lr` of the calling frame) to `final_set.pt` in `--workdir`: the script itself
  saves only the set of its best evaluation, and the parity compares final sets; with `--snapshots N ...`, its
  `log` also keeps the set of iteration N (to `snapshot_N.pt`) when `distill.py` logs `{"Progress": N}` at the top
  of that iteration, i.e. after N updates: the authors' accuracy on their way, as `parity.py --curve` judges ours;
* `Tensor.cuda()` returns the tensor itself when there is no GPU (`distill.py` calls `image_syn.cuda()` where it
  saves its images, even on CPU), and `Tensor.cpu()` copies a tensor already on the CPU, as it copies one off a GPU
  (`buffer.py` snapshots each epoch's parameters with `.cpu()`; without the copy every snapshot is the live
  parameters, so every epoch of an expert's trajectory would be its last);
* `--add-digit-datasets`: its `utils.get_dataset` knows CIFAR-10/100, Tiny and ImageNet only; MNIST and
  FashionMNIST are answered as the DC code's `get_dataset` answers them (one channel, 28 x 28, the same
  normalisation constants) through the torchvision stand-in, every other name goes to their function.

One compatibility shim touches the authors' classes: their networks flatten with `.view`, which current torch refuses
when a convolution's input had the strides of DiffAugment's `rand_crop` output for one-channel images (its
`permute` leaves an `(N, 1, H, W)` tensor that `contiguous()` keeps, whose strides make the convolution pick the
channels-last layout). The `forward` and `embed` of every network class in `networks.py` therefore receive their
input copied to the standard layout when it is not in it already: the same values, so the same results.
Its output goes to this process's stdout, unbuffered, so the caller can time the `iter = ` lines it prints.
"""

import argparse
import inspect
import os
import random
import runpy
import sys
import types
from pathlib import Path

SHIMS = Path(__file__).resolve().parent / "reference_shims"
#: Where the `wandb.finish()` stand-in keeps the script's final synthetic set (in `--workdir`), and what it keeps.
FINAL_SET_FILE = "final_set.pt"
FINAL_SET_NAMES = ("image_syn", "label_syn", "syn_lr")
#: Where it keeps the set of an iteration on the way (`--snapshots`).
SNAPSHOT_FILE = "snapshot_{}.pt"
#: The norm of `image_syn`'s gradient at each pixel step, one line per step (what our trainer logs as `grad_norm`).
GRAD_NORMS_FILE = "grad_norms.txt"
#: MTT: the expert segment behind each of those steps, one line per step: start epoch, expert fingerprint.
SEGMENTS_FILE = "segments.txt"


def expert_fingerprint(trajectory) -> float:
    """Names one of MTT's expert trajectories (a list of epochs, each a list of parameter tensors): the float64 sum
    of its initial parameters, which differs between experts and survives `distill.py`'s shuffles."""
    return float(sum(parameter.double().sum() for parameter in trajectory[0]))


def _stub_missing_modules(snapshots: tuple[int, ...]) -> None:
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
    try:
        import kornia  # noqa: F401
    except ImportError:
        sys.modules["kornia"] = _Unavailable("kornia", "MTT's ZCA whitening (--zca)")
    if "wandb" not in sys.modules:
        try:
            import wandb  # noqa: F401
        except ImportError:
            sys.modules["wandb"] = _wandb_stand_in(snapshots)


class _Unavailable(types.ModuleType):
    """A module a script imports but uses only on a path the parity runs never take; using it says so."""

    def __init__(self, name: str, used_for: str):
        super().__init__(name)
        self._used_for = used_for

    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise ImportError(f"{self.__name__} is not installed; the reference code needs it for {self._used_for}.")


def _keep_callers_set(caller: dict, path: str) -> None:
    """Save the synthetic set among a frame's locals (`FINAL_SET_NAMES`) to `path`, if it has one."""
    import torch

    kept = {name: caller[name].detach().cpu() for name in FINAL_SET_NAMES if name in caller}
    if kept:
        torch.save(kept, path)


def _wandb_stand_in(snapshots: tuple[int, ...] = ()) -> types.SimpleNamespace:
    """What the scripts call on `wandb`, logging nothing: `init(config=args)` keeps the arguments where
    `distill.py` reads them back (`wandb.config._items`), `finish()` keeps the final synthetic set, and `log`
    the set at each of `snapshots` (the iterations whose `Progress` it is told)."""
    stand_in = types.SimpleNamespace(
        config=types.SimpleNamespace(_items={}),
        run=types.SimpleNamespace(name="parity"),
        Histogram=lambda *_, **__: None,
        Image=lambda *_, **__: None,
    )

    def init(config=None, **_):
        stand_in.config._items = dict(vars(config)) if config is not None else {}
        return stand_in.run

    def log(data, step=None, **_):
        if data.get("Progress") in snapshots:
            _keep_callers_set(inspect.currentframe().f_back.f_locals, SNAPSHOT_FILE.format(data["Progress"]))

    def finish():
        _keep_callers_set(inspect.currentframe().f_back.f_locals, FINAL_SET_FILE)

    stand_in.init, stand_in.log, stand_in.finish = init, log, finish
    return stand_in


def _log_pixel_gradient_norms() -> None:
    """Before every SGD step of an optimiser that holds the calling script's `image_syn` (the pixel optimiser of
    `distill.py`, `main.py`, `main_DM.py`), append the norm of its gradient to `GRAD_NORMS_FILE`. Read-only: the step
    is theirs, unchanged; steps of other optimisers (experts, evaluation networks) are not logged."""
    import torch

    step = torch.optim.SGD.step

    def logged_step(self, *args, **kwargs):
        images, owner, frame = None, None, inspect.currentframe().f_back
        for _ in range(4):  # torch may wrap `step` (profiling hooks) between the script's frame and this one
            if frame is None or images is not None:
                break
            images, owner, frame = frame.f_locals.get("image_syn"), frame, frame.f_back
        held = images is not None and any(p is images for group in self.param_groups for p in group["params"])
        if held and images.grad is not None:
            with open(GRAD_NORMS_FILE, "a") as out:
                out.write(f"{torch.linalg.vector_norm(images.grad.float()).item()}\n")
            # MTT: the segment this step matched (late segments are where spikes come from): its start epoch and
            # which expert, named by a fingerprint since `distill.py` shuffles its buffer.
            start_epoch, trajectory = owner.f_locals.get("start_epoch"), owner.f_locals.get("expert_trajectory")
            if start_epoch is not None and trajectory is not None:
                with open(SEGMENTS_FILE, "a") as out:
                    out.write(f"{int(start_epoch)} {expert_fingerprint(trajectory)!r}\n")
        return step(self, *args, **kwargs)

    torch.optim.SGD.step = logged_step


def _cuda_calls_on_cpu() -> None:
    import torch

    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *_, **__: self
        # On a GPU, `.cpu()` always copies; on the CPU it returns the tensor itself. MTT's `buffer.py` keeps each
        # epoch's parameters as `p.detach().cpu()`: on the CPU every snapshot would alias the live parameters,
        # which SGD then updates in place, so every epoch of a trajectory would be the last one (and `distill.py`,
        # dividing by the distance between two of them, prints `loss = inf`, then `nan`: seen in session 30).
        copy_to_cpu = torch.Tensor.cpu
        torch.Tensor.cpu = lambda self, *a, **k: copy_to_cpu(self, *a, **k).clone()


#: The DC code's constants for the digit datasets MTT's `get_dataset` lacks: (mean, std) of the training pixels.
DIGIT_DATASETS = {"MNIST": ([0.1307], [0.3081]), "FashionMNIST": ([0.2861], [0.3530])}


def _add_digit_datasets() -> None:
    import torch
    import utils
    from torchvision import datasets, transforms

    theirs = utils.get_dataset

    def get_dataset(dataset, data_path, batch_size=1, subset="imagenette", args=None):
        if dataset not in DIGIT_DATASETS:
            return theirs(dataset, data_path, batch_size, subset, args=args)
        if args is not None and getattr(args, "zca", False):
            raise SystemExit(f"parity_reference: no ZCA for {dataset} (the MTT code has none for it either)")
        mean, std = DIGIT_DATASETS[dataset]
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=mean, std=std)])
        train = getattr(datasets, dataset)(data_path, train=True, download=True, transform=transform)
        test = getattr(datasets, dataset)(data_path, train=False, download=True, transform=transform)
        # Their CIFAR branch loads the test split with 2 worker processes; on 2 cores the main process does it.
        testloader = torch.utils.data.DataLoader(test, batch_size=128, shuffle=False, num_workers=0)
        class_map = {c: c for c in range(len(train.classes))}
        channel, im_size, num_classes = 1, (28, 28), len(train.classes)
        return channel, im_size, num_classes, train.classes, mean, std, train, test, testloader, None, class_map, None

    utils.get_dataset = get_dataset


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
    parser.add_argument(
        "--add-digit-datasets",
        action="store_true",
        help="Answer MNIST and FashionMNIST in the checkout's utils.get_dataset (MTT's knows neither).",
    )
    parser.add_argument(
        "--snapshots",
        type=int,
        nargs="*",
        default=[],
        help="MTT: iterations whose synthetic set the wandb stand-in keeps on the way (snapshot_N.pt).",
    )
    args = parser.parse_args(argv[:split])
    script, *script_args = argv[split + 1 :]
    repo = Path(args.repo).resolve()
    if not (repo / script).is_file():
        raise SystemExit(f"parity_reference: {repo / script} does not exist: is --repo a checkout of the right code?")

    os.environ["PARITY_DATA_DIR"] = str(Path(args.data_dir).resolve())
    sys.path[:0] = [str(SHIMS), str(repo)]
    _stub_missing_modules(tuple(args.snapshots))
    _standard_layout_inputs()
    _cuda_calls_on_cpu()
    _log_pixel_gradient_norms()
    if args.add_digit_datasets:
        _add_digit_datasets()

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
