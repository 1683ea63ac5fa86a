"""Architecture search on a distilled set, the application the DC paper demonstrates (`hf-distill nas`,
[`search_architectures`]): sample ConvNets from the DC paper's 720-network space, train each briefly on the distilled
set, on a random real subset of the same size and on the whole real training split, and report how well the cheap
rankings agree with the expensive one (Spearman's rank correlation), which architecture each would pick, and the time
each took.

The report is rewritten after every architecture (`"complete": false` until the last), and a search started again with
the same set, data and [`NASConfig`] takes up where the earlier one stopped.
"""

import dataclasses
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PretrainedConfig

from .checkpointing import write_json_atomic
from .evaluation import EvaluationProtocol, evaluate_images, protocol_max_grad_norm, random_real_subset
from .evaluation_cache import tensor_digest
from .modeling import describe_architecture
from .models import ConvNetConfig
from .preparation import build_model_config
from .seeding import derive_generator
from .trainer import DistillTrainer

NAS_NAME = "nas_results.json"
NAS_PLOT_NAME = "nas_ranks.png"

#: The DC paper's search space (Zhao, Mopuri & Bilen, ICLR 2021, Sec. 4.3): 4 x 4 x 3 x 3 x 5 = 720 ConvNets.
SEARCH_SPACE = {
    "net_depth": (1, 2, 3, 4),
    "net_width": (32, 64, 128, 256),
    "net_act": ("sigmoid", "relu", "leakyrelu"),
    "net_pooling": ("none", "maxpooling", "avgpooling"),
    "net_norm": ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm"),
}


@dataclass
class NASConfig:
    """How many architectures, and how long each trains on each training set.

    Args:
        num_architectures (`int`): Architectures sampled (without replacement) from [`SEARCH_SPACE`].
        epochs (`int`): Epochs on the distilled set and on the random subset (the protocol's schedule).
        real_epochs (`int`): Epochs on the whole real training split (the ranking to recover).
        seed (`int`): Seed of the sample and of every model.
        random_baseline (`bool`): Also rank with a random real subset of the distilled set's size.
        net_depths (`list[int]`), net_widths (`list[int]`): The depths and widths of the space (default the DC
            paper's). Narrowing them keeps the search affordable on a CPU: a depth-3, width-256 ConvNet without pooling
            costs ~25x the protocol's ConvNet per image on MNIST.
    """

    num_architectures: int = field(default=20, metadata={"help": "Architectures sampled from the 720."})
    epochs: int = field(default=300, metadata={"help": "Epochs on the distilled set and the random subset."})
    real_epochs: int = field(default=2, metadata={"help": "Epochs on the whole real training split."})
    seed: int = field(default=0, metadata={"help": "Seed of the sample and of every model."})
    random_baseline: bool = field(default=True, metadata={"help": "Also rank with a random real subset."})
    net_depths: list[int] = field(
        default_factory=lambda: list(SEARCH_SPACE["net_depth"]), metadata={"help": "Depths of the space."}
    )
    net_widths: list[int] = field(
        default_factory=lambda: list(SEARCH_SPACE["net_width"]), metadata={"help": "Widths of the space."}
    )

    def __post_init__(self):
        if not self.net_depths or not self.net_widths or min(self.net_depths + self.net_widths) < 1:
            raise ValueError(
                f"net_depths and net_widths must be positive, got {self.net_depths} and {self.net_widths}."
            )
        space = sample_space_size(space=self.space())
        if not 2 <= self.num_architectures <= space:
            raise ValueError(f"num_architectures must be between 2 and {space}, got {self.num_architectures}.")
        if self.epochs < 1 or self.real_epochs < 1:
            raise ValueError(f"epochs and real_epochs must be >= 1, got {self.epochs} and {self.real_epochs}.")

    def space(self) -> dict:
        """[`SEARCH_SPACE`] with this config's depths and widths."""
        return {**SEARCH_SPACE, "net_depth": tuple(self.net_depths), "net_width": tuple(self.net_widths)}


def search_space(image_side: int | None = None, space: dict | None = None) -> list[dict]:
    """Every setting of `space` (default [`SEARCH_SPACE`], 720), less those whose pooling would shrink `image_side`
    pixels below one (e.g. depth 4 with pooling needs at least 16 pixels)."""
    space = space or SEARCH_SPACE
    grid = [dict(zip(space, values)) for values in itertools.product(*space.values())]
    if image_side is None:
        return grid
    return [s for s in grid if s["net_pooling"] == "none" or image_side // 2 ** s["net_depth"] >= 1]


def sample_space_size(image_side: int | None = None, space: dict | None = None) -> int:
    """The number of architectures in [`search_space`] (720 for images of 16 pixels or more)."""
    return len(search_space(image_side, space))


def sample_architectures(num: int, seed: int, image_side: int | None = None, space: dict | None = None) -> list[dict]:
    """`num` distinct settings of [`search_space`], drawn from a generator keyed by `seed`."""
    grid = search_space(image_side, space)
    if num > len(grid):
        raise ValueError(f"Only {len(grid)} architectures fit {image_side}-pixel images; asked for {num}.")
    order = torch.randperm(len(grid), generator=derive_generator(seed, "nas-sample"))
    return [grid[int(i)] for i in order[:num]]


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two score lists (ties get their average rank)."""

    def ranks(values):
        values = torch.tensor(values, dtype=torch.float64)
        order = torch.argsort(values)
        result = torch.empty_like(values)
        result[order] = torch.arange(len(values), dtype=torch.float64)
        for value in values.unique():  # average rank within ties
            tied = values == value
            result[tied] = result[tied].mean()
        return result

    x, y = ranks(a), ranks(b)
    x, y = x - x.mean(), y - y.mean()
    denominator = (x.norm() * y.norm()).item()
    return float((x @ y).item() / denominator) if denominator else float("nan")


def sampled_model_config(trainer: DistillTrainer, settings: dict) -> PretrainedConfig:
    """The config of a sampled architecture: the trainer's ConvNet with `settings` (depth, width, ...) over it, fitted
    to the trainer's data."""
    architecture = ConvNetConfig.from_dict({**trainer.model_config.to_dict(), **settings})
    return build_model_config(architecture, trainer.train_data, trainer.config)


def search_architectures(
    trainer: DistillTrainer,
    config: NASConfig,
    output_dir: str | os.PathLike | None = None,
    command: str | None = None,
    reuse_whole_real_from: str | os.PathLike | None = None,
) -> dict:
    """Ranks `config.num_architectures` sampled ConvNets by their accuracy after training on the trainer's set, on a
    random real subset of the same size and on the whole real split; see the module docstring.

    Args:
        trainer ([`DistillTrainer`]): Holds the distilled set and the real splits (e.g. `from_output_dir`).
        config ([`NASConfig`]): The sample and the budgets.
        output_dir (`str` or `os.PathLike`, *optional*): Where to write `nas_results.json` and `nas_ranks.png`.
        command (`str`, *optional*): The command that asked for the search, recorded in the report.
        reuse_whole_real_from (`str` or `os.PathLike`, *optional*): An earlier `nas_results.json` (another set's
            search on the same real data, seed, space and `real_epochs`): its whole-real trainings, the expensive
            half of a search, are taken over instead of being repeated (an error if they do not match).

    Returns:
        `dict`: per architecture its settings and accuracy/seconds on each training set; the Spearman correlation of
        each cheap ranking with the real one; the architecture each ranking picks and its real-data accuracy; the total
        seconds of each search.
    """
    if trainer.test_data is None:
        raise ValueError("Architecture search needs the real test split: pass eval_dataset (or --dataset).")
    data, test = trainer.train_data, trainer.test_data
    base = trainer.model_config if isinstance(trainer.model_config, ConvNetConfig) else None
    if base is None:
        raise ValueError("The search space is the DC paper's ConvNets: distill with the ConvNet to search on its set.")
    training_sets = {"distilled": (trainer.synthetic.images.detach(), trainer.synthetic.targets().detach())}
    if config.random_baseline:
        rows = random_real_subset(data, trainer.config.images_per_class, config.seed)
        training_sets["random_real"] = (data.images[rows], data.labels[rows])
    training_sets["whole_real"] = (data.images, data.labels)
    protocol = EvaluationProtocol(num_models=1, dsa_strategy=trainer.eval_dsa_strategy, seed=config.seed)
    side = min(data.image_shape[-2:])
    sample = sample_architectures(config.num_architectures, config.seed, side, config.space())
    # Regression targets train with the protocol's gradient clip: a report made before it (or with another clip) is
    # not resumed. Label sets keep the digest they always had.
    clip = protocol_max_grad_norm(trainer.synthetic.target_type)
    sets = (*training_sets["distilled"], *training_sets.get("random_real", ()))
    fingerprint = tensor_digest(*sets, extra=[clip] if clip is not None else None)
    real_key = tensor_digest(
        *training_sets["whole_real"], test.images, test.labels,
        extra=[protocol, base.to_dict(), config.real_epochs, config.seed, config.space()],
    )  # fmt: skip
    report_path = Path(output_dir) / NAS_NAME if output_dir is not None else None
    rows_out = _finished_rows(report_path, config, fingerprint, real_key, sample)
    reused = _whole_real_rows(reuse_whole_real_from, real_key, sample)

    def report(complete: bool) -> dict:
        keys = {"fingerprint": fingerprint, "whole_real_key": real_key, "complete": complete}
        if reused:
            keys["whole_real_reused_from"] = str(reuse_whole_real_from)
        summary = _summarise(rows_out, training_sets, config)
        space_size = sample_space_size(side, config.space())
        return {**({"command": command} if command else {}), **summary, "search_space_size": space_size, **keys}

    for index, settings in enumerate(sample[len(rows_out) :], start=len(rows_out)):
        model_config = sampled_model_config(trainer, settings)
        row = {"index": index, "settings": settings, "architecture": describe_architecture(model_config.to_dict())}
        for name, (inputs, targets) in training_sets.items():
            if name == "whole_real" and index in reused:
                row[name] = reused[index]
                continue
            epochs = config.real_epochs if name == "whole_real" else config.epochs
            target_type = trainer.synthetic.target_type if name == "distilled" else "hard"
            start = time.perf_counter()
            result = evaluate_images(
                inputs,
                targets,
                test,
                model_config,
                dataclasses.replace(protocol, epochs=epochs),
                key=f"nas-{index}-{name}",
                accelerator=trainer.accelerator,
                modality=trainer.modality,
                target_type=target_type,
            )
            seconds = round(time.perf_counter() - start, 2)
            row[name] = {"accuracy": result["mean"], "epochs": epochs, "seconds": seconds}
        rows_out.append(row)
        if report_path is not None and len(rows_out) < len(sample) and trainer.accelerator.is_main_process:
            _write(report_path, report(complete=False))
    final = report(complete=True)
    if report_path is not None and trainer.accelerator.is_main_process:
        _write(report_path, final)
        plot_ranks(final, report_path.parent / NAS_PLOT_NAME)
    return final


def _finished_rows(path: Path | None, config: "NASConfig", fingerprint: str, real_key: str, sample: list) -> list:
    """The rows of an earlier report at `path` for the same sets, real data and budgets (a stopped search resumes,
    a longer one extends it); else none."""
    if path is None or not path.is_file():
        return []
    earlier = json.loads(path.read_text())
    same = (
        _config_dict(config, "num_architectures") == _config_dict(earlier.get("config", {}), "num_architectures")
        and earlier.get("fingerprint") == fingerprint
        and earlier.get("whole_real_key") == real_key
    )
    rows = earlier.get("architectures", [])[: len(sample)] if same else []
    return rows if [row["settings"] for row in rows] == sample[: len(rows)] else []


def _whole_real_rows(path: str | os.PathLike | None, real_key: str, sample: list[dict]) -> dict:
    """`{index: whole-real entry}` of the report at `path` (which must match `real_key`) where its architecture is
    `sample`'s."""
    if path is None:
        return {}
    earlier = json.loads(Path(path).read_text())
    if earlier.get("whole_real_key") != real_key:
        raise ValueError(
            f"{path} trained its architectures on other real data, seed, space or real_epochs than this search: "
            "its whole-real figures cannot be reused (run without reuse_whole_real_from)."
        )
    rows = [row for row in earlier["architectures"] if row["index"] < len(sample)]
    return {row["index"]: row["whole_real"] for row in rows if row["settings"] == sample[row["index"]]}


def _write(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, report)


def _config_dict(config: "NASConfig | dict", *leave_out: str) -> dict:
    values = config if isinstance(config, dict) else json.loads(json.dumps(dataclasses.asdict(config)))
    return {key: value for key, value in values.items() if key not in leave_out}


def _summarise(rows: list[dict], training_sets: dict, config: NASConfig) -> dict:
    real = [row["whole_real"]["accuracy"] for row in rows]
    best_real = max(range(len(rows)), key=lambda i: real[i])
    real_seconds = round(sum(row["whole_real"]["seconds"] for row in rows), 2)
    summary = {}
    for name in training_sets:
        accuracies = [row[name]["accuracy"] for row in rows]
        picked = max(range(len(rows)), key=lambda i: accuracies[i])
        seconds = round(sum(row[name]["seconds"] for row in rows), 2)
        summary[name] = {"seconds": seconds, "picked": rows[picked]["settings"], "picked_real_accuracy": real[picked]}
        if name != "whole_real":
            summary[name]["spearman_with_whole_real"] = round(spearman(accuracies, real), 4)
            summary[name]["times_faster_than_whole_real"] = round(real_seconds / seconds, 2) if seconds else None
    return {
        "config": _config_dict(config),
        "best_real_accuracy": real[best_real],
        "summary": summary,
        "architectures": rows,
    }


def plot_ranks(report: dict, path: Path) -> None:
    """Rank on each cheap training set against the rank on the whole real split, one point per architecture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["architectures"]
    cheap = [name for name in report["summary"] if name != "whole_real"]
    figure, axes = plt.subplots(1, len(cheap), figsize=(4.2 * len(cheap), 4), squeeze=False)
    real_rank = torch.argsort(torch.argsort(torch.tensor([-row["whole_real"]["accuracy"] for row in rows])))
    for axis, name in zip(axes[0], cheap):
        rank = torch.argsort(torch.argsort(torch.tensor([-row[name]["accuracy"] for row in rows])))
        axis.scatter(real_rank + 1, rank + 1)
        rho = report["summary"][name]["spearman_with_whole_real"]
        axis.set(xlabel="rank trained on the whole real split", ylabel=f"rank trained on {name}")
        axis.set_title(f"{name}: Spearman {rho:.2f}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
