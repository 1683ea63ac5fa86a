"""The tiny runs whose synthetic sets `test_pinned_sets.py` compares with values recorded before the redesign.

Run as a script to record them again (only when a change of results is intended, and say so in the commit):
`python tests/pinned_runs.py` writes `tests/data/pinned_sets.safetensors`; `python tests/pinned_runs.py dm dsa`
records only those runs and keeps the other values.

History: everything was recorded at 78b34a9, before the redesign of issue 16. At issue 18, `dm` and `dsa` were
recorded again on purpose (siamese augmentation now gives every image of a class one transform, as the authors'
code does); the values `dm` had before are kept as `dm_image_pairing`, the run with `siamese_pairing="image"`.
"""

import sys
import tempfile
from pathlib import Path

import torch

PINNED_PATH = Path(__file__).parent / "data" / "pinned_sets.safetensors"

#: Shared by every pinned run: the offline digits set, IPC 2, a width-8 depth-2 ConvNet, a few iterations.
TINY = dict(
    dataset="sklearn:digits",
    images_per_class=2,
    net_width=8,
    net_depth=2,
    num_iterations=3,
    eval_epochs=2,
    eval_num_models=1,
    save_steps=0,
    seed=0,
)

MTT_SETTINGS = {"syn_steps": 3, "expert_epochs": 1, "max_start_epoch": 1, "batch_syn": 10}
#: Per-run settings on top of `TINY` (`batch_real` where the method has it); a run is named after its method
#: unless `method` says otherwise.
METHOD_SETTINGS = {
    "random": {},
    "dm": {"batch_real": 16},
    "dm_image_pairing": {"method": "dm", "batch_real": 16, "siamese_pairing": "image"},
    "dc": {"init": "real", "batch_real": 16, "outer_loop": 2, "inner_loop": 2, "num_iterations": 2},
    "dsa": {"batch_real": 16, "outer_loop": 2, "inner_loop": 2, "num_iterations": 2},
    "mtt": MTT_SETTINGS,
    "mtt_uniform_sampling": {"method": "mtt", **MTT_SETTINGS, "expert_sampling": "uniform"},
}
EXPERT_SETTINGS = {"num_experts": 2, "num_epochs": 3}


def load_digits():
    from hf_distill.data import load_source

    return load_source("sklearn:digits", train_split="train", test_split="test")


def train_tiny_experts(splits, output_dir: str) -> str:
    """Two 3-epoch expert trajectories of the tiny ConvNet on the digits set."""
    from hf_distill.experts import train_experts_for_config
    from hf_distill.methods import get_method_class

    config = get_method_class("mtt").config_class(**_fields("mtt"), expert_path=None)
    train_experts_for_config(config, splits[0], splits[1], output_dir, show_progress=False, **EXPERT_SETTINGS)
    return output_dir


def method_of(name: str) -> str:
    """The method a pinned run uses (its name unless its settings say `method`)."""
    return METHOD_SETTINGS[name].get("method", name)


def _fields(name: str) -> dict:
    fields = {**TINY, **METHOD_SETTINGS[name]}
    fields.pop("dataset")
    fields.pop("method", None)
    return fields


def run(name: str, splits, expert_dir: str | None = None) -> dict[str, torch.Tensor]:
    """Distills with method `name` and returns the tensors to pin (the set, its targets, the learned step size)."""
    from hf_distill.methods import get_method_class
    from hf_distill.trainer import DistillTrainer

    fields = _fields(name)
    if method_of(name) == "mtt":
        fields["expert_path"] = expert_dir
    config = get_method_class(method_of(name)).config_class(**fields)
    trainer = DistillTrainer(config, splits[0], splits[1])
    trainer.train()
    tensors = {
        f"{name}.images": trainer.synthetic.images.detach().cpu().contiguous(),
        f"{name}.targets": trainer.synthetic.targets().detach().cpu().float().contiguous(),
    }
    if trainer.synthetic.learned_lr is not None:
        tensors[f"{name}.learned_lr"] = torch.tensor([trainer.synthetic.learned_lr])
    return tensors


def evaluation_accuracy(splits) -> torch.Tensor:
    """Test accuracy of one model trained 2 epochs on the `dm` run's initial set (pins the training loop)."""
    from hf_distill.methods import get_method_class
    from hf_distill.trainer import DistillTrainer

    config = get_method_class("dm").config_class(**_fields("dm"))
    trainer = DistillTrainer(config, splits[0], splits[1])
    results = trainer.evaluate(random_baseline=True)
    return torch.tensor(results["distilled"]["accuracies"] + results["random_real"]["accuracies"])


def record_all() -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    splits = load_digits()
    tensors = {}
    with tempfile.TemporaryDirectory() as expert_dir:
        train_tiny_experts(splits, expert_dir)
        from hf_distill.experts import ExpertTrajectories

        experts = ExpertTrajectories.from_pretrained(expert_dir)
        tensors["experts.epoch_3"] = torch.stack([experts.epoch(e, 3) for e in range(experts.num_experts)])
        for name in METHOD_SETTINGS:
            tensors.update(run(name, splits, expert_dir))
    tensors["evaluation.accuracies"] = evaluation_accuracy(splits)
    return tensors


def record_runs(names: list[str]) -> dict[str, torch.Tensor]:
    """Records the runs in `names` over the values recorded before (MTT runs on freshly trained tiny experts, which
    the pinned `experts.epoch_3` checks)."""
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    splits = load_digits()
    recorded = load_file(str(PINNED_PATH))
    with tempfile.TemporaryDirectory() as expert_dir:
        if any(method_of(name) == "mtt" for name in names):
            train_tiny_experts(splits, expert_dir)
        for name in names:
            recorded.update(run(name, splits, expert_dir))
    return recorded


if __name__ == "__main__":
    from safetensors.torch import save_file

    recorded = record_runs(sys.argv[1:]) if sys.argv[1:] else record_all()
    PINNED_PATH.parent.mkdir(parents=True, exist_ok=True)
    save_file(recorded, str(PINNED_PATH))
    for key, value in recorded.items():
        print(key, tuple(value.shape), float(value.double().sum()), file=sys.stderr)
