"""`DistillConfig`: the hyper-parameters every method shares, saved as `distill_config.json`.

Each method subclasses it with its own fields and paper defaults (see `hf_distill/methods/`). The JSON file
records the method name and the package version, so `DistillConfig.from_pretrained(path)` rebuilds the right
subclass, PEFT-style.
"""

import dataclasses
import json
import logging
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpointing import write_json_atomic
from .constants import CONFIG_NAME, MIXED_PRECISIONS, __version__
from .hub_utils import check_hub_access, hub_download
from .registry import get_method_class

#: Values of `siamese_pairing`: one shared transform per class (the authors' code), or one per image index.
SIAMESE_PAIRINGS = ("class", "image")

logger = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    """Settings shared by all distillation methods.

    Method-specific settings (learning rates on pixels, real batch sizes, ...) live on the subclass each method
    registers. Defaults follow the papers; the help text of each field says where a value comes from.
    """

    method: str = field(default="", init=False, metadata={"help": "Name of the method (set by the subclass)."})

    images_per_class: int = field(default=10, metadata={"help": "Synthetic (or selected) images per class (IPC)."})
    num_iterations: int = field(default=1000, metadata={"help": "Number of distillation iterations."})
    seed: int = field(default=0, metadata={"help": "Seed from which every random draw of the run is derived."})
    init: str = field(
        default="real",
        metadata={"help": "How synthetic images start: 'real' (random real images of the class) or 'noise'."},
    )

    # Data
    modality: str = field(
        default="auto",
        metadata={
            "help": "The kind of input: 'image', 'text', or 'auto' (found from the dataset's columns: an image "
            "column makes it 'image', else a string column 'text'; see hf_distill.modalities)."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Split to distill."})
    test_split: str | None = field(default="test", metadata={"help": "Split used to evaluate the distilled set."})
    image_column: str | None = field(default=None, metadata={"help": "Image column (found automatically if unset)."})
    text_column: str | None = field(default=None, metadata={"help": "Text column (found automatically if unset)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (found automatically if unset)."})
    max_length: int | None = field(
        default=None,
        metadata={"help": "Text: tokens per example, padded or truncated (default 64: all of SST-2's sentences)."},
    )
    feature_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Text: a folder where the frozen encoder's sentence embeddings of the training split are cached, "
            "named by a digest of the encoder and the tokens (SST-2's 67,349 sentences take ~10 minutes to encode "
            "on 2 CPU cores; every later run with the same data and encoder reads them back)."
        },
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Resize images to this square size (needed when sizes differ)."}
    )
    data_on_disk: bool = field(
        default=False,
        metadata={
            "help": "Images: keep the splits on disk instead of in memory. Each split is decoded once into a file of "
            "fixed-size rows (uint8 pixels where exact) under data_cache_dir, and every step reads only the rows it "
            "samples, so memory does not grow with the split (for splits larger than memory: CIFAR-10 in memory is "
            "614 MB of floats, ImageNet-1k at 64x64 63 GB). Results are the same as in memory. Not with zca."
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Images: read the dataset (data files or a Hub id) as a stream (load_dataset(..., "
            "streaming=True)) instead of converting it to Arrow first: it is read once, written to a row store (so "
            "it implies data_on_disk), and removed when the run ends. An IterableDataset passed directly is read the "
            "same way."
        },
    )
    data_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "With data_on_disk: where the decoded splits are kept, named by the dataset's fingerprint and "
            "the image settings, so later runs on the same data reuse them (default: HF_DATASETS_CACHE/"
            "hf_distill_rows)."
        },
    )

    # Network used to distill (and, unless eval_model_name_or_path is set, to evaluate)
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Images: a transformers vision classifier (Hub id or local path); unset = the papers' ConvNet. "
            "Text: the pretrained text encoder with its tokenizer (required), e.g. "
            "sentence-transformers/all-MiniLM-L6-v2."
        },
    )
    net_width: int = field(default=128, metadata={"help": "ConvNet width (DC/DSA/DM papers: 128)."})
    net_depth: int = field(default=3, metadata={"help": "ConvNet depth (papers: 3)."})
    net_norm: str = field(default="instancenorm", metadata={"help": "ConvNet normalisation (papers: instancenorm)."})
    net_act: str = field(default="relu", metadata={"help": "ConvNet activation."})
    net_pooling: str = field(default="avgpooling", metadata={"help": "ConvNet pooling (papers: avgpooling)."})

    # Speed (no effect on what is computed beyond floating-point rounding)
    mixed_precision: str = field(
        default="no",
        metadata={
            "help": "'bf16' runs the networks' forward/backward in bfloat16 autocast with channels-last tensors "
            "(several times faster on CPUs with AMX and on GPUs, several times slower where bfloat16 is emulated, "
            "e.g. AVX2-only CPUs); the synthetic pixels stay float32. 'no': float32. 'auto': bf16 where the device "
            "computes it natively, else float32 (the run records which it used)."
        },
    )
    torch_compile: bool = field(
        default=False,
        metadata={"help": "Compile the feature extractor with torch.compile (one-off cost of 10-30 s)."},
    )

    zca: bool = field(
        default=False,
        metadata={
            "help": "ZCA-whiten the images after the normalisation (KIP, FRePo, RFAD and MTT do on CIFAR): fitted on "
            "the training split, saved with the run (zca.safetensors) and applied to every real split that "
            "evaluates, trains or is compared beside the set; previews are un-whitened."
        },
    )
    zca_regularization: float = field(
        default=0.1,
        metadata={"help": "ZCA regulariser, relative to the covariance's mean eigenvalue (KIP and FRePo: 0.1)."},
    )

    # Augmentation
    dsa_strategy: str = field(
        default="auto",
        metadata={
            "help": "Differentiable siamese augmentation: 'auto' (color_crop_cutout_flip_scale_rotate, without flip "
            "for digit datasets as the DSA code does), 'none', or an explicit '_'-joined strategy."
        },
    )

    # Evaluation (the standard protocol; see hf_distill/evaluation.py)
    eval_num_models: int = field(default=3, metadata={"help": "Fresh models trained on the distilled set at the end."})
    eval_epochs: int = field(
        default=300,
        metadata={
            "help": "Epochs per evaluation model (300 here for every method; the authors' code: 1000 for DSA, DM, "
            "MTT and DC on MNIST, 300 for DC on Fashion-MNIST)."
        },
    )
    eval_lr: float = field(default=0.01, metadata={"help": "Evaluation SGD learning rate (papers: 0.01)."})
    eval_batch_size: int = field(default=256, metadata={"help": "Evaluation training batch size (papers: 256)."})
    eval_dsa_strategy: str = field(
        default="auto",
        metadata={
            "help": "Augmentation while training evaluation models (the protocol: 'auto' = DSA's "
            "color_crop_cutout_flip_scale_rotate, no flip for digits), 'none', or an explicit strategy. Independent "
            "of `dsa_strategy`, which only concerns distillation (DC distills without augmentation)."
        },
    )
    eval_use_learned_lr: bool = field(
        default=True,
        metadata={
            "help": "Train evaluation models with the step size a method learned (MTT's syn_lr), as the MTT paper "
            "does, when the set has one; otherwise `eval_lr`."
        },
    )
    eval_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Architecture to evaluate with (default: the distillation network)."}
    )
    eval_steps: int = field(
        default=0, metadata={"help": "Evaluate every N iterations during distillation (0: only at the end)."}
    )
    eval_steps_num_models: int = field(default=1, metadata={"help": "Models per evaluation during distillation."})
    eval_steps_epochs: int | None = field(
        default=None, metadata={"help": "Epochs per evaluation during distillation (default: eval_epochs)."}
    )
    eval_text_protocol: str = field(
        default="linear_probe",
        metadata={
            "help": "Text: 'linear_probe' (protocol (a): a logistic regression on the frozen encoder's sentence "
            "embeddings) or 'fine_tune' (protocol (b): eval_num_models copies of the encoder with a fresh linear "
            "head, every parameter trained with the eval_* SGD settings)."
        },
    )
    eval_random_baseline: bool = field(
        default=True, metadata={"help": "Also evaluate a random real subset of the same size."}
    )
    eval_full_data: bool = field(default=False, metadata={"help": "Also train on the whole training split."})
    eval_full_data_epochs: int = field(default=20, metadata={"help": "Epochs for the whole-data figure."})
    eval_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Keep the random real subset's and the whole split's figures here, under a digest of the data, "
            "network, protocol and seed, and read them back in later runs with the same inputs (a table of methods "
            "at one size trains each baseline once)."
        },
    )
    eval_architectures: list[str] | None = field(
        default=None,
        metadata={
            "help": "Also train these architectures on the set and on the random real subset (cross-architecture "
            "table): convnet, convnet_bn, convnet_nonorm, convnet_depth2, convnet_depth4, convnet_width64, "
            "convnet_width256, mlp, resnet, vit, or a Hub id / local path of an image classifier."
        },
    )

    # Run management
    output_dir: str | None = field(default=None, metadata={"help": "Where checkpoints and results are written."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace another run held by output_dir (its checkpoints are deleted when this run starts); "
            "without it such a folder is refused unless the run resumes it."
        },
    )
    save_steps: int = field(default=500, metadata={"help": "Checkpoint every N iterations (0: never)."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (oldest deleted first)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder, or 'latest' for the newest one in output_dir."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every N iterations."})
    report_to: str = field(
        default="none", metadata={"help": "Accelerate trackers, comma separated ('tensorboard', 'wandb', 'all')."}
    )

    def _check_integer_fields(self) -> None:
        """Fields declared `int` hold integers: `2.0` (a YAML float) becomes 2, `2.5`, `True` or `"2"` is an error."""
        hints = typing.get_type_hints(type(self))
        for spec in dataclasses.fields(self):
            if hints.get(spec.name) not in (int, int | None):
                continue
            value = getattr(self, spec.name)
            if value is None and hints[spec.name] == int | None:
                continue
            if isinstance(value, float) and value.is_integer():
                setattr(self, spec.name, int(value))
            elif isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{spec.name} must be a whole number, got {value!r}.")

    def __post_init__(self):
        self._check_integer_fields()
        if self.images_per_class < 1:
            raise ValueError(f"images_per_class must be >= 1, got {self.images_per_class}.")
        if self.num_iterations < 0:
            raise ValueError(f"num_iterations must be >= 0, got {self.num_iterations}.")
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {list(MIXED_PRECISIONS)}, got {self.mixed_precision!r}.")
        if self.init not in ("real", "noise"):
            raise ValueError(f"init must be 'real' or 'noise', got {self.init!r}.")
        if self.eval_text_protocol not in ("linear_probe", "fine_tune"):
            raise ValueError(
                f"eval_text_protocol must be 'linear_probe' or 'fine_tune', got {self.eval_text_protocol!r}."
            )
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be at least 2 tokens (with [CLS] and [SEP]), got {self.max_length}.")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {self.image_size}.")
        if not self.zca_regularization > 0:
            raise ValueError(f"zca_regularization must be > 0 (KIP and FRePo: 0.1), got {self.zca_regularization}.")
        for name in ("eval_num_models", "eval_epochs", "eval_batch_size", "eval_steps_num_models"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("eval_steps", "save_steps", "logging_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 turns it off), got {getattr(self, name)}.")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1 or None, got {self.save_total_limit}.")
        if self.streaming and not self.data_on_disk:
            logger.info("streaming=True: the images are kept on disk (data_on_disk=True).")
            self.data_on_disk = True
        if isinstance(self.resume_from_checkpoint, bool):  # `resume_from_checkpoint: true` in a YAML recipe
            self.resume_from_checkpoint = "latest" if self.resume_from_checkpoint else None

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """All fields, the method name included, as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Writes `distill_config.json` (with the package version and `extra`, e.g. the source dataset).

        Args:
            save_directory (`str` or `os.PathLike`): Folder to write into (created if missing).
            extra (`dict`, *optional*): More top-level keys to record (source dataset, image statistics, ...).

        Returns:
            `Path`: The written file.
        """
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        payload = {**self.to_dict(), "hf_distill_version": __version__, **(extra or {})}
        return write_json_atomic(save_directory / CONFIG_NAME, payload, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DistillConfig":
        """Builds the config of the method named in `values["method"]` (or `cls` when it has no method name).

        Unknown keys (the package version, the source dataset, keys of a newer version) are ignored.
        """
        method = values.get("method") or cls.method_name()
        config_class = get_method_class(method).config_class if method else cls
        names = {f.name for f in dataclasses.fields(config_class) if f.init}
        return config_class(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, **hub_kwargs) -> "DistillConfig":
        """Loads `distill_config.json` from a folder, a file or a Hub repository (any repo type).

        Args:
            path_or_repo_id (`str` or `os.PathLike`): Folder or file path, or a Hub repo id.
            **hub_kwargs: `repo_type` (default `"dataset"`), `revision`, `token`.
        """
        path = Path(path_or_repo_id)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            hub_kwargs.setdefault("repo_type", "dataset")
            check_hub_access(str(path_or_repo_id), **hub_kwargs)
            path = hub_download(str(path_or_repo_id), CONFIG_NAME, **hub_kwargs)
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def method_name(cls) -> str:
        return next(f.default for f in dataclasses.fields(cls) if f.name == "method")


@dataclass
class SyntheticOptimizationConfig(DistillConfig):
    """Settings of the methods that learn synthetic pixels (everything but coresets)."""

    lr_images: float = field(default=1.0, metadata={"help": "Learning rate on the synthetic pixels."})
    momentum_images: float = field(default=0.5, metadata={"help": "Momentum of the pixel optimiser (SGD)."})
    optimizer: str = field(default="sgd", metadata={"help": "Pixel optimiser: 'sgd' or 'adam'."})
    max_grad_norm: float | None = field(
        default=None,
        metadata={
            "help": "Clip the synthetic inputs' gradient to this norm before each step (None: no clipping, as the "
            "papers). The trainer logs the norm as `grad_norm`: a rare spike far above its usual size, times a "
            "large lr_images (MTT's 1000), can undo a run in one step (benchmarks/README.md, MTT parity)."
        },
    )
    batch_real: int = field(default=256, metadata={"help": "Real images sampled per class per iteration."})
    learn_soft_labels: bool = field(
        default=False,
        metadata={
            "help": "Learn a soft label (logits) per synthetic image beside the pixels; they start at 0.9 on the "
            "true class. Exported as the `soft_label` column and used by evaluation and KD."
        },
    )
    learn_regression_targets: bool = field(
        default=False,
        metadata={
            "help": "Learn a real-valued target vector per synthetic example (KIP/RFAD/FRePo style), starting at "
            "the centred one-hot label; evaluation models then train on them with the squared loss. Exported as "
            "the `regression_target` column. Not with learn_soft_labels."
        },
    )
    siamese_pairing: str = field(
        default="class",
        metadata={
            "help": "How differentiable siamese augmentation pairs real and synthetic images (methods that augment "
            "both: dm, dsa). 'class' (the authors' code): every real and synthetic image of a class gets one and "
            "the same transform, its family drawn per class. 'image': image j of a class's real batch and image j "
            "of its synthetic batch share a transform, one family for all classes (this project's dm before the "
            "parity review of issue 18)."
        },
    )
    forward_chunk: int = field(
        default=32,
        metadata={
            "help": "Images per forward pass of the methods that embed large batches (dm, rfad, frepo). Results do "
            "not depend on it (networks with batch norm take each batch in one pass, so the statistics span the "
            "batch). Small passes are faster in float32 on a CPU: activations under glibc's 32 MB mmap ceiling reuse "
            "heap memory instead of being mapped, zeroed and unmapped again each iteration (measured in "
            "benchmarks/README.md, 'Parity with the authors' code')."
        },
    )
    lr_labels: float = field(
        default=1.0,
        metadata={"help": "Learning rate of learned targets (soft-label logits or regression targets)."},
    )
    lr_lr: float = field(
        default=1e-5,
        metadata={"help": "Learning rate of a learnable step size, for methods that learn one (MTT: 1e-5 / 1e-7)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.learn_soft_labels and self.learn_regression_targets:
            raise ValueError(
                "learn_soft_labels and learn_regression_targets are exclusive: a set learns probabilities (trained "
                "with cross-entropy) or real-valued targets (trained with the squared loss), not both."
            )
        if self.lr_labels <= 0 or self.lr_lr < 0:
            raise ValueError(f"lr_labels must be > 0 and lr_lr >= 0, got {self.lr_labels} and {self.lr_lr}.")
        if self.siamese_pairing not in SIAMESE_PAIRINGS:
            raise ValueError(
                f"siamese_pairing={self.siamese_pairing!r}: expected one of {list(SIAMESE_PAIRINGS)} ('class': one "
                "transform per class, as the authors' code; 'image': one per image index)."
            )
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}.")
        if self.lr_images <= 0:
            raise ValueError(f"lr_images must be > 0, got {self.lr_images}.")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be > 0 or None (no clipping), got {self.max_grad_norm}.")
        if self.batch_real < 1:
            raise ValueError(f"batch_real must be >= 1, got {self.batch_real}.")
        if self.forward_chunk < 1:
            raise ValueError(f"forward_chunk={self.forward_chunk}: it must be at least 1 image per forward pass.")
