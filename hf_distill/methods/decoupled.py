"""Teacher-based ("decoupled") distillation: the set is built from a trained teacher's view of real images in one
pass, with no matching loss and no pixel optimisation over iterations, and carries the teacher's soft labels. The
natural evaluation is a student trained on it with that teacher (`hf-distill kd --teacher OUTPUT/teacher`); the fair
baseline is random real images with the same teacher.

- `rded` (Sun, Shi, Yu & Lin, CVPR 2024): random resized crops of real images, scored by the teacher's
  cross-entropy on their class; the most confident crops, `factor x factor` of them stitched into each image.
- `sre2l` (Yin, Xing & Shen, NeurIPS 2023): images optimised from noise to match the teacher's batch-norm statistics
  and classes, then relabelled by the teacher.
"""

import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpointing import commit_folder
from ..config import SyntheticOptimizationConfig
from ..constants import TEACHER_DIR
from ..modeling import load_teacher
from ..registry import register_method
from ..seeding import derive_generator
from ..training import autocast_context, predictions_accuracy
from .base import DistillationMethod, SelectionContext, TrainedNetworkConfig

logger = logging.getLogger(__name__)


@dataclass
class TeacherConfig(TrainedNetworkConfig):
    """Where a teacher-based method's teacher comes from."""

    num_iterations: int = field(default=0, metadata={"help": "Unused: the set is built in one pass."})
    teacher_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "The teacher: an image classifier (Hub id or folder, e.g. the teacher/ folder `hf-distill kd "
            "--train_teacher` writes) that takes inputs prepared like this run's (pass it as model_name_or_path too "
            "when it has its own image processor). Unset: the run's architecture is trained here on the whole real "
            "split for teacher_epochs epochs (the evaluation protocol's schedule) and saved with the set."
        },
    )
    teacher_epochs: int = field(
        default=30,
        metadata={"help": "Epochs of the teacher trained here (when teacher_name_or_path is unset)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.teacher_epochs < 1:
            raise ValueError(f"teacher_epochs must be >= 1, got {self.teacher_epochs}.")


class TeacherMethod(DistillationMethod):
    """A method that builds its set with a frozen teacher (`self.teacher`, made in [`setup`]); a teacher it trained
    (or read from a local folder) is saved with the set as `teacher/`, so the KD step can use it."""

    teacher: nn.Module | None = None
    teacher_test_accuracy: float | None = None  # percent, on the run's test split (set by `setup` when there is one)

    def setup(self, context: SelectionContext) -> None:
        """The configured teacher, or the run's architecture trained `teacher_epochs` epochs on the real split; its
        accuracy on the test split, when the run has one, is recorded in `distill_config.json` (what its labels are
        worth)."""
        if self.config.teacher_name_or_path:
            self.teacher = load_teacher(
                self.config.teacher_name_or_path, device=context.device, modality=self.modality
            )
        else:
            self.teacher = context.network(epochs=self.config.teacher_epochs, key="teacher").requires_grad_(False)
        test_data = context.prepared.test_data
        if test_data is not None:
            predicted = self.teacher_logits(test_data.inputs).argmax(dim=-1).cpu()
            self.teacher_test_accuracy = round(100 * predictions_accuracy(predicted, test_data.labels.cpu()), 2)

    def run_metadata(self) -> dict:
        if self.config.teacher_name_or_path:
            teacher = {"name_or_path": self.config.teacher_name_or_path}
        else:
            teacher = {"name_or_path": TEACHER_DIR, "trained_here": True, "epochs": self.config.teacher_epochs}
        if self.teacher_test_accuracy is not None:
            teacher["test_accuracy"] = self.teacher_test_accuracy
        return {"teacher": teacher}

    def save_artifacts(self, output_dir: Path) -> None:
        """A teacher trained here goes to `output_dir/teacher` with an image processor for the run's data, so
        `hf-distill kd --teacher OUTPUT/teacher` (or `AutoModelForImageClassification`) loads it. A teacher read from a
        local folder is copied there as it is (the set then holds its labeller, and a run saved over the folder its
        teacher came from keeps it); a Hub teacher is only named in `distill_config.json`."""
        source = self.config.teacher_name_or_path
        if source is None:
            staging = output_dir / f".{TEACHER_DIR}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            self.teacher.save_pretrained(staging)
            self.modality.processor(self.modality.settings_of(self.train_data)).save_pretrained(staging)
            commit_folder(staging, output_dir / TEACHER_DIR)
        elif Path(source).is_dir():
            shutil.copytree(source, output_dir / TEACHER_DIR, dirs_exist_ok=True)

    def load_artifacts(self, output_dir: Path) -> None:
        """The teacher of a saved set: the one saved with it (`teacher/`), else the configured one; none when neither
        is at hand (then the fair baseline keeps hard labels, with a warning)."""
        saved = output_dir / TEACHER_DIR
        source = saved if saved.is_dir() else self.config.teacher_name_or_path
        problem = f"{output_dir} has no {TEACHER_DIR}/ folder"
        if source is not None:
            try:
                self.teacher = load_teacher(source, device=self.train_data.inputs.device, modality=self.modality)
                return
            except (OSError, RuntimeError, ValueError) as error:  # e.g. a Hub teacher, offline: the set still loads
                problem = f"its teacher {str(source)!r} could not be loaded ({error})"
        logger.warning(
            f"{problem}: the random real subset of the fair baseline keeps hard labels instead of the teacher's "
            f"(put the teacher in {output_dir / TEACHER_DIR} to compare like with like)."
        )

    def baseline_label_logits(self, inputs: torch.Tensor) -> torch.Tensor | None:
        """The teacher's logits: the fair baseline is random real images with the same teacher's soft labels."""
        return None if self.teacher is None else self.teacher_logits(inputs)

    @torch.no_grad()
    def teacher_logits(self, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The teacher's float32 logits on `inputs`, a batch at a time (in the run's precision)."""
        device = next(self.teacher.parameters()).device
        logits = []
        for batch in inputs.split(batch_size):
            with autocast_context(self.config.mixed_precision, device):
                logits.append(self.modality.logits(self.teacher, batch.to(device)).float())
        return torch.cat(logits)


@dataclass
class RDEDConfig(TeacherConfig):
    """RDED's settings; defaults are the authors' CIFAR-10 script (`cifar10_10ipc_conv3_to_conv3_cr5.sh`)."""

    method: str = field(default="rded", init=False, metadata={"help": "RDED (Sun et al., CVPR 2024)."})
    candidates_per_class: int = field(
        default=300, metadata={"help": "Real images drawn per class, each cropped and scored (RDED's mipc: 300)."}
    )
    crops_per_image: int = field(
        default=5, metadata={"help": "Random resized crops per candidate; the teacher keeps its best (num_crop: 5)."}
    )
    factor: int = field(
        default=1,
        metadata={
            "help": "Patches per side of each synthetic image: factor x factor crops (each at 1/factor of the side) "
            "stitched into one (RDED: 1 for CIFAR-10, 2 for ImageNet)."
        },
    )
    min_crop_scale: float = field(
        default=0.08,
        metadata={"help": "Smallest crop area, as a fraction of the image (RandomResizedCrop's default, 0.08)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.candidates_per_class < 1 or self.crops_per_image < 1 or self.factor < 1:
            raise ValueError(
                "candidates_per_class, crops_per_image and factor must be >= 1, got "
                f"{self.candidates_per_class}, {self.crops_per_image} and {self.factor}."
            )
        if not 0 < self.min_crop_scale <= 1:
            raise ValueError(f"min_crop_scale must be in (0, 1], got {self.min_crop_scale}.")
        if self.candidates_per_class < self.images_per_class * self.factor**2:
            raise ValueError(
                f"RDED keeps images_per_class x factor^2 = {self.images_per_class * self.factor**2} crops per class "
                f"from candidates_per_class={self.candidates_per_class} candidates: raise candidates_per_class."
            )


def random_resized_crops(
    images: torch.Tensor, crops: int, size: tuple[int, int], min_scale: float, generator: torch.Generator
) -> torch.Tensor:
    """`crops` square random crops of every image (area uniform in `[min_scale, 1]` of the image, position uniform),
    each resized to `size` (bilinear, antialiased): `(N, crops, C, *size)`."""
    count, _, height, width = images.shape
    area = torch.empty(count * crops).uniform_(min_scale, 1.0, generator=generator) * height * width
    sides = area.sqrt().round().long().clamp(1, min(height, width))
    out = torch.empty(count * crops, images.shape[1], *size, dtype=images.dtype)
    for index, side in enumerate(sides.tolist()):
        top = int(torch.randint(height - side + 1, (1,), generator=generator))
        left = int(torch.randint(width - side + 1, (1,), generator=generator))
        patch = images[index // crops, :, top : top + side, left : left + side].unsqueeze(0)
        out[index] = F.interpolate(patch, size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.view(count, crops, images.shape[1], *size)


def stitch(patches: torch.Tensor, factor: int, count: int, size: tuple[int, int]) -> torch.Tensor:
    """`count` images of `size` from `count * factor**2` patches: patch block `k` (rows `k*count .. (k+1)*count`)
    fills grid cell `k` (row-major) of every image; cells split the side as evenly as integers allow."""
    images = torch.zeros(count, patches.shape[1], *size, dtype=patches.dtype)
    rows = [size[0] // factor + (i < size[0] % factor) for i in range(factor)]
    cols = [size[1] // factor + (j < size[1] % factor) for j in range(factor)]
    block, top = 0, 0
    for cell_height in rows:
        left = 0
        for cell_width in cols:
            cell = patches[block * count : (block + 1) * count]
            if cell.shape[-2:] != (cell_height, cell_width):
                cell = F.interpolate(cell, size=(cell_height, cell_width), mode="bilinear", align_corners=False)
            images[:, :, top : top + cell_height, left : left + cell_width] = cell
            left, block = left + cell_width, block + 1
        top += cell_height
    return images


@register_method("rded")
class RDED(TeacherMethod):
    """Realistic and diverse images from a teacher's most confident crops (RDED).

    For each class: `candidates_per_class` real images, `crops_per_image` random resized crops of each (at
    `1/factor` of the side), each scored by the teacher's cross-entropy on the class (a small crop padded to the full
    size); the best crop of each image, then the `images_per_class * factor**2` best of those, stitched `factor x
    factor` into `images_per_class` images. Labels: the teacher's logits on each final image (soft labels).
    """

    config_class = RDEDConfig
    synthesizes_once = True
    paper = {
        "title": "On the Diversity and Realism of Distilled Dataset: An Efficient Dataset Distillation Paradigm",
        "authors": "Peng Sun, Bei Shi, Daiwei Yu, Tao Lin",
        "year": "2024",
        "url": "https://arxiv.org/abs/2312.03526",
        "bibtex": (
            "@inproceedings{sun2024diversity,\n"
            "  title={On the Diversity and Realism of Distilled Dataset: An Efficient Dataset Distillation "
            "Paradigm},\n"
            "  author={Sun, Peng and Shi, Bei and Yu, Daiwei and Lin, Tao},\n"
            "  booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},\n"
            "  year={2024}\n}"
        ),
    }

    def synthesize(self, context: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
        config, data = self.config, self.train_data
        height, width = data.image_size
        patch_size = (max(1, height // config.factor), max(1, width // config.factor))
        keep = config.images_per_class * config.factor**2
        images = []
        for label in range(data.num_classes):
            rows = self.sample_real([label], config.candidates_per_class, "rded-candidates")
            crops = random_resized_crops(
                data.images[rows].float().cpu(),
                config.crops_per_image,
                patch_size,
                config.min_crop_scale,
                derive_generator(config.seed, "rded-crops", label),
            )
            flat = crops.flatten(0, 1)
            scored = flat if config.factor == 1 else pad_to(flat, (height, width))
            losses = F.cross_entropy(
                self.teacher_logits(scored),
                torch.full((flat.shape[0],), label, device=context.device),
                reduction="none",
            ).view(crops.shape[:2])
            best_loss, best_crop = losses.min(dim=1)
            chosen = best_loss.argsort()[:keep].cpu()
            best = crops[torch.arange(crops.shape[0]), best_crop.cpu()][chosen]
            images.append(stitch(best, config.factor, config.images_per_class, (height, width)))
        images = torch.cat(images)
        return images, self.teacher_logits(images).cpu()


def pad_to(patches: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-pad (the data's mean, in normalised units) small patches to `size`, centred, as RDED scores them."""
    top, left = (size[0] - patches.shape[-2]) // 2, (size[1] - patches.shape[-1]) // 2
    bottom, right = size[0] - patches.shape[-2] - top, size[1] - patches.shape[-1] - left
    return F.pad(patches, (left, right, top, bottom))


@dataclass
class SRe2LConfig(TeacherConfig, SyntheticOptimizationConfig):
    """SRe2L's recovery settings; defaults are the authors' CIFAR script (`recover_cifar.sh`: Adam lr 0.25, betas
    (0.5, 0.9), 1,000 iterations with a cosine decay, r_bn 0.01, jitter 4)."""

    method: str = field(default="sre2l", init=False, metadata={"help": "SRe2L (Yin, Xing & Shen, NeurIPS 2023)."})
    num_iterations: int = field(default=1000, metadata={"help": "Recovery iterations (SRe2L: 1,000)."})
    init: str = field(default="noise", metadata={"help": "SRe2L starts from Gaussian noise."})
    optimizer: str = field(default="adam", metadata={"help": "SRe2L: Adam, betas (adam_beta1, adam_beta2)."})
    lr_images: float = field(
        default=0.25, metadata={"help": "Pixel learning rate (SRe2L CIFAR: 0.25), cosine-decayed."}
    )
    adam_beta1: float = field(default=0.5, metadata={"help": "Adam's beta1 (SRe2L: 0.5)."})
    adam_beta2: float = field(default=0.9, metadata={"help": "Adam's beta2 (SRe2L: 0.9)."})
    bn_weight: float = field(
        default=0.01,
        metadata={
            "help": "Weight of the batch-norm statistics term: the distance of each BN layer's batch mean and "
            "variance from the teacher's running ones (SRe2L's r_bn: 0.01 on CIFAR, 0.01-0.05 on ImageNet)."
        },
    )
    first_bn_multiplier: float = field(
        default=10.0, metadata={"help": "Extra weight of the first BN layer's term (SRe2L: 10)."}
    )
    jitter: int = field(
        default=4, metadata={"help": "Random shift (pixels, both axes, wrapping) of the images at every step."}
    )
    net_norm: str = field(
        default="batchnorm",
        metadata={"help": "The teacher trained here needs batch norm: its running statistics are what is matched."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.optimizer != "adam":
            raise ValueError(f"sre2l recovers images with Adam (optimizer='adam'), got optimizer={self.optimizer!r}.")
        if self.bn_weight < 0 or self.first_bn_multiplier < 0 or self.jitter < 0:
            raise ValueError("bn_weight, first_bn_multiplier and jitter must be >= 0.")


class BatchNormStatistics:
    """While active (`with`), records for every `BatchNorm2d` of `network` how far the statistics of its input batch
    are from its running ones: `||mean - running_mean||_2 + ||var - running_var||_2` (biased variance), in order."""

    def __init__(self, network: nn.Module):
        self.layers = [module for module in network.modules() if isinstance(module, nn.BatchNorm2d)]
        self.distances: list[torch.Tensor] = []
        self._handles = []

    def _record(self, module: nn.BatchNorm2d, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0].float()
        mean = x.mean(dim=(0, 2, 3))
        var = x.transpose(0, 1).flatten(1).var(dim=1, unbiased=False)
        self.distances.append(torch.norm(module.running_mean - mean) + torch.norm(module.running_var - var))

    def __enter__(self) -> "BatchNormStatistics":
        self._handles = [layer.register_forward_hook(self._record) for layer in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def take(self) -> list[torch.Tensor]:
        """The distances recorded since the last call."""
        distances, self.distances = self.distances, []
        return distances


@register_method("sre2l")
class SRe2L(TeacherMethod):
    """Squeeze, recover, relabel (SRe2L): images recovered from a batch-norm teacher, then relabelled by it.

    Each iteration every batch of one image per class (the set has `images_per_class` of them) is shifted by a random
    jitter and scored by the teacher: cross-entropy on its classes plus `bn_weight` times the distance of every BN
    layer's batch statistics from the teacher's running ones (the first layer weighted `first_bn_multiplier`). Adam
    with a cosine-decayed learning rate; pixels are clipped to the valid range after each step. At the end the set's
    soft labels are the teacher's logits on it.
    """

    config_class = SRe2LConfig
    class_separable = False  # the BN statistics span every class of a batch
    paper = {
        "title": "Squeeze, Recover and Relabel: Dataset Condensation at ImageNet Scale From A New Perspective",
        "authors": "Zeyuan Yin, Eric Xing, Zhiqiang Shen",
        "year": "2023",
        "url": "https://arxiv.org/abs/2306.13092",
        "bibtex": (
            "@inproceedings{yin2023squeeze,\n"
            "  title={Squeeze, Recover and Relabel: Dataset Condensation at ImageNet Scale From A New Perspective},\n"
            "  author={Yin, Zeyuan and Xing, Eric and Shen, Zhiqiang},\n"
            "  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},\n"
            "  year={2023}\n}"
        ),
    }

    def setup(self, context: SelectionContext) -> None:
        super().setup(context)
        self.statistics = BatchNormStatistics(self.teacher)
        if not self.statistics.layers:
            raise ValueError(
                "sre2l matches the teacher's batch-norm statistics, but the teacher has no BatchNorm2d layer: use "
                "net_norm='batchnorm' (a teacher trained here) or a teacher with batch norm (e.g. a ResNet)."
            )

    def build_optimizer(self, groups: list[dict]) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            groups, lr=self.config.lr_images, betas=(self.config.adam_beta1, self.config.adam_beta2)
        )

    def lr_factor(self, iteration: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * iteration / max(1, self.config.num_iterations)))

    def loss(self, synthetic, classes: list[int], iteration: int, update: int) -> torch.Tensor:
        config = self.config
        shifts = torch.randint(
            config.jitter + 1, (2,), generator=derive_generator(config.seed, "sre2l-jitter", iteration)
        )
        images = torch.roll(synthetic.images, shifts=tuple(shifts.tolist()), dims=(2, 3))
        device = images.device
        weights = [config.first_bn_multiplier] + [1.0] * (len(self.statistics.layers) - 1)
        total = images.new_zeros(())
        with self.statistics:
            for index in range(synthetic.images_per_class):
                rows = torch.arange(synthetic.num_classes, device=device) * synthetic.images_per_class + index
                with autocast_context(config.mixed_precision, device):
                    logits = self.modality.logits(self.teacher, images[rows])
                distances = self.statistics.take()
                bn = sum(weight * distance for weight, distance in zip(weights, distances, strict=True))
                total = total + F.cross_entropy(logits.float(), synthetic.labels[rows]) + config.bn_weight * bn
        return total

    def after_update(self, synthetic, iteration: int, update: int) -> None:
        # Keep pixels displayable: SRe2L clips every channel to [0, 1] in pixel units (not in a whitened space).
        if getattr(self.train_data, "zca", None) is not None:
            return
        with torch.no_grad():
            for channel, (mean, std) in enumerate(zip(self.train_data.mean, self.train_data.std, strict=True)):
                synthetic.images[:, channel].clamp_(-mean / std, (1 - mean) / std)

    def final_label_logits(self, synthetic) -> torch.Tensor:
        return self.teacher_logits(synthetic.images.detach())
