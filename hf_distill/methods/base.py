"""The method interface: what the `DistillTrainer` asks of every method.

A method is a config dataclass (a `DistillConfig` subclass with the paper's defaults) and a `DistillationMethod`
subclass decorated with `@register_method("name")`. There are two kinds:

- *selection* methods (coresets) pick real rows once: they implement `select`;
- *optimising* methods learn the synthetic set: they implement `loss`, which the `DistillTrainer` minimises
  with the pixel optimiser the config describes.
"""

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from torch import nn
from transformers import PretrainedConfig

from ..checkpointing import save_tensors_atomic
from ..config import DistillConfig
from ..evaluation import EvaluationProtocol, train_with_protocol
from ..functional import ParameterSpec
from ..modeling import build_network, extract_features, fresh_model, reinitialize_
from ..models import EmbeddingClassifier
from ..preparation import Prepared
from ..seeding import derive_generator
from ..splits import ClassBalancedSampler
from ..synthetic import SyntheticSet
from ..training import TrainingCallback, autocast_context


@dataclass
class TrainedNetworkConfig(DistillConfig):
    """Settings of the methods that train a network on the whole real split first (coresets' selection networks,
    teacher-based methods' teachers)."""

    selection_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder where networks trained on the whole real split (selection networks, teachers) are kept "
            "and reused, named by a digest of the data, architecture, schedule and seed: herding, k-center, rded, "
            "sre2l and every IPC that need the same network train it once."
        },
    )


@dataclass
class SelectionContext:
    """What a selection method may use to pick real rows: the run's config, data, architecture and accelerator.

    Args:
        config ([`DistillConfig`]): The method's config (its seed keys every draw here).
        prepared ([`Prepared`]): The prepared data, architecture, modality and augmentation.
        accelerator (`accelerate.Accelerator`, *optional*): Where networks run (default: the CPU).
    """

    config: DistillConfig
    prepared: Prepared
    accelerator: Accelerator | None = None

    @property
    def device(self) -> torch.device:
        return self.accelerator.device if self.accelerator is not None else torch.device("cpu")

    @property
    def shows_progress(self) -> bool:
        """Whether this process draws progress bars (one per machine)."""
        return self.accelerator is None or self.accelerator.is_local_main_process

    def network(
        self,
        epochs: int = 0,
        callbacks: Sequence[TrainingCallback] = (),
        key: str = "selection",
        protocol: EvaluationProtocol | None = None,
    ) -> nn.Module:
        """A network of the run's architecture: freshly drawn (`epochs=0`), or trained `epochs` epochs on the whole
        real training split with the evaluation protocol's schedule (`protocol`, default the standard one) and the
        run's augmentation, through the one training loop; `callbacks` see every batch (per-example losses,
        forgetting events) and epoch. Returned in eval mode.

        For a modality that embeds with a pretrained, frozen encoder (text) the network is a linear classifier on
        that embedding ([`EmbeddingClassifier`]), trained the same way on the embeddings of the whole split."""
        prepared, config = self.prepared, self.config
        inputs, input_name = self.selection_inputs()
        generator = derive_generator(config.seed, key, "init")
        if input_name == EmbeddingClassifier.input_name:
            model = reinitialize_(EmbeddingClassifier(inputs.shape[1], prepared.train_data.num_classes), generator)
        else:
            model = fresh_model(prepared.model_config, generator)
        model = model.to(self.device)
        if epochs:
            protocol = dataclasses.replace(
                protocol or EvaluationProtocol(seed=config.seed), epochs=epochs, dsa_strategy=prepared.dsa_strategy
            )
            # A trained network depends on nothing else: with a cache folder it is trained once per data, architecture
            # and schedule (herding and k-center at every IPC share it). Callbacks must see the training: no cache.
            cached = self.cached_network_path(key, protocol) if not callbacks else None
            if cached is not None and cached.is_file():
                model.load_state_dict(load_file(str(cached), device=str(self.device)))
                return model.eval()
            train_with_protocol(
                model,
                inputs.to(self.device),
                prepared.train_data.labels.to(self.device),
                protocol,
                derive_generator(config.seed, key, "train"),
                show_progress=self.shows_progress,
                desc=f"Training the {key} network",
                input_name=input_name,
                mixed_precision=config.mixed_precision,
                callbacks=callbacks,
            )
            if cached is not None and (self.accelerator is None or self.accelerator.is_main_process):
                save_tensors_atomic(
                    {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}, cached
                )
        return model.eval()

    def cached_network_path(self, key: str, protocol: EvaluationProtocol) -> Path | None:
        """Where the selection network of `key` trained with `protocol` is cached (`config.selection_cache_dir`),
        named by a digest of everything it depends on: the data (labels, shape and a strided sample of the values),
        the architecture, the schedule, the seed and the precision. `None` without a cache folder."""
        folder = getattr(self.config, "selection_cache_dir", None)
        if not folder:
            return None
        data = self.prepared.train_data
        digest = hashlib.sha256()
        digest.update(data.labels.numpy().tobytes())
        inputs = self.selection_inputs()[0]
        digest.update(str(tuple(inputs.shape)).encode())
        stride = max(1, len(inputs) // 4096)
        digest.update(inputs[::stride].float().contiguous().cpu().numpy().tobytes())
        # Left out, so networks cached before them stay valid: `text_protocol` (read by text evaluation only) and
        # `test_batch_size` (how many test examples go through at once: training does not read it).
        schedule = {
            name: value
            for name, value in protocol.to_dict().items()
            if name not in ("text_protocol", "test_batch_size")
        }
        settings = [self.prepared.model_config.to_json_string(), json.dumps(schedule, sort_keys=True)]
        digest.update(json.dumps([*settings, key, self.config.seed, self.config.mixed_precision]).encode())
        return Path(folder) / f"{key}-{digest.hexdigest()[:16]}.safetensors"

    def selection_inputs(self) -> tuple[torch.Tensor, str]:
        """`(inputs, keyword)` of the selection networks: the modality's pretrained embeddings of every row under
        `"features"` (text), else the prepared inputs under the modality's keyword."""
        data = self.prepared.train_data
        features = self.prepared.modality.pretrained_features(data)
        if features is not None:
            return features, EmbeddingClassifier.input_name
        return data.inputs, self.prepared.modality.input_name

    def embedding(self, epochs: int) -> torch.Tensor:
        """The embedding selection works in, `(N, D)` on the CPU in row order: the modality's pretrained model's when
        it has one (text), else that of the run's network trained `epochs` epochs (see [`network`])."""
        inputs, input_name = self.selection_inputs()
        if input_name == EmbeddingClassifier.input_name:
            return inputs
        return self.features(self.network(epochs=epochs))

    @torch.no_grad()
    def features(self, network: nn.Module, batch_size: int = 1024) -> torch.Tensor:
        """The embedding `network` gives every real training example, `(N, D)` on the CPU, in row order."""
        inputs, input_name = self.selection_inputs()
        batches = inputs.split(batch_size)
        return torch.cat([extract_features(network, b.to(self.device), input_name=input_name).cpu() for b in batches])

    @torch.no_grad()
    def logits(self, network: nn.Module, batch_size: int = 1024) -> torch.Tensor:
        """The logits `network` gives every real training example, `(N, num_classes)` on the CPU, in row order."""
        inputs, input_name = self.selection_inputs()
        batches = inputs.split(batch_size)
        return torch.cat([network(**{input_name: b.to(self.device)}).logits.float().cpu() for b in batches])


def features_in_chunks(
    features: Callable[[torch.Tensor], torch.Tensor | list[torch.Tensor]], inputs: torch.Tensor, chunk: int | None
) -> list[torch.Tensor]:
    """`features(inputs)` computed in passes of `chunk` rows (one pass when `chunk` is `None`), as one `(N, D_l)`
    tensor per layer (`features` returns one tensor, or one per layer).

    Small passes are faster in float32 on a CPU: activations under glibc's 32 MB mmap ceiling reuse heap memory
    instead of being mapped, zeroed and unmapped again each time (benchmarks/README.md, "Parity with the authors'
    code"). Networks with batch norm must take a batch in one pass, so that its statistics do not depend on the split.
    """
    outputs = [features(part) for part in (inputs.split(chunk) if chunk else [inputs])]
    if isinstance(outputs[0], torch.Tensor):
        return [torch.cat(outputs)]
    return [torch.cat(layer) for layer in zip(*outputs)]


class DistillationMethod:
    """Base class of every method.

    Args:
        config ([`DistillConfig`]): The method's config.
        prepared ([`Prepared`]): What [`prepare`] made of the data: `train_data` (the real training split as
            tensors), `model_config` (the networks the method trains or samples), `modality` (how those networks take
            the inputs) and `augment` (applied identically to real and synthetic batches).
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[DistillConfig]] = DistillConfig
    #: Whether the method selects real rows (a coreset) instead of optimising pixels.
    selects_real_rows: ClassVar[bool] = False
    #: Whether the method builds its set in one pass ([`synthesize`]: e.g. from a teacher) instead of optimising it.
    synthesizes_once: ClassVar[bool] = False
    #: The modalities (`hf_distill.modalities`) whose data the method can distill.
    modalities: ClassVar[tuple[str, ...]] = ("image",)
    #: Paper metadata for cards and docs: title, authors, year, url, bibtex.
    paper: ClassVar[dict[str, str]] = {}
    #: Whether the loss is a sum of independent per-class terms. Such losses are shared out between processes by
    #: class and their gradients summed; the others are computed whole by every process and averaged.
    class_separable: ClassVar[bool] = True
    #: Whether the loss depends on the synthetic labels (learned soft labels need it).
    uses_labels: ClassVar[bool] = True

    def __init__(self, config: DistillConfig, prepared: Prepared):
        self.config = config
        self.prepared = prepared
        self.train_data = prepared.train_data
        self.model_config = prepared.model_config
        self.modality = prepared.modality
        self.augment = prepared.augment
        self.sampler = ClassBalancedSampler(self.train_data.labels, self.train_data.num_classes)

    # ------------------------------------------------------------------ frozen pretrained encoders (text)
    #
    # See `Prepared.frozen_features`: with a frozen encoder (text), methods that train networks train a linear
    # classifier on its embedding; real rows enter it as their cached embeddings, synthetic examples through the
    # encoder, differentiably.

    @property
    def frozen_embedding(self) -> torch.Tensor | None:
        """The modality's pretrained, frozen embedding of every real row, `(N, D)` (text); `None` for images."""
        return self.prepared.frozen_features

    @property
    def network_input_name(self) -> str:
        """The keyword the method's networks take their inputs under."""
        return self.prepared.network_input_name

    def build_network(self) -> nn.Module:
        """An (untrained) network of the method: the run's architecture, or a linear classifier on the frozen
        embedding."""
        return build_network(self.prepared.network_template())

    def real_inputs(self, rows: torch.LongTensor) -> torch.Tensor:
        """What the networks take for real rows `rows`: their frozen embeddings, or the prepared inputs."""
        frozen = self.frozen_embedding
        source = frozen if frozen is not None else self.train_data.inputs
        return source[rows.to(source.device)]

    def network_inputs(self, examples: torch.Tensor) -> torch.Tensor:
        """What the networks take for synthetic `examples`: the frozen encoder's embedding of them (differentiable
        w.r.t. them), or the examples themselves."""
        return self.modality.embed(examples) if self.frozen_embedding is not None else examples

    def network_logits(self, network: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """`network`'s logits on inputs of [`network_input_name`] (through the modality for its own inputs)."""
        if self.frozen_embedding is not None:
            return network(**{EmbeddingClassifier.input_name: inputs}).logits
        return self.modality.logits(network, inputs)

    # ------------------------------------------------------------------ shared pieces

    def prepare_network(self, network: nn.Module) -> nn.Module:
        """Puts a network in the memory layout the precision setting wants (channels-last for bf16)."""
        if self.config.mixed_precision == "bf16":
            network = network.to(memory_format=torch.channels_last)
        return network

    def prepare_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """Matches the inputs' memory layout to `prepare_network` (differentiable; values unchanged)."""
        if self.config.mixed_precision == "bf16":
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """bfloat16 autocast when `mixed_precision="bf16"`, else a no-op context."""
        return autocast_context(self.config.mixed_precision, device)

    def feature_function(
        self, network: nn.Module, layers: list[int] | None = None
    ) -> Callable[[torch.Tensor], torch.Tensor | list[torch.Tensor]]:
        """`extract_features(network, x, layers)`, compiled with `torch.compile` when the config asks for it.

        The compiled function reads the network's parameters at call time, so re-drawing them in place (as DM does
        each iteration) needs no recompilation.
        """

        input_name = self.modality.input_name

        def features(inputs: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
            return extract_features(network, inputs, layers, input_name=input_name)

        return torch.compile(features, dynamic=False) if self.config.torch_compile else features

    def sample_real(self, classes: list[int], n: int, *keys) -> torch.LongTensor:
        """Row indices of `n` real images for each class in `classes` (class-major).

        Each class draws from its own generator keyed by `(seed, *keys, class)`, so the rows a class gets do not
        depend on which other classes this process handles.
        """
        return self.sampler.sample_keyed(classes, n, self.config.seed, *keys, "real")

    def siamese_augment(
        self, real: torch.Tensor, synthetic: torch.Tensor, classes: list[int], n_real: int, n_syn: int, *keys
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augments class-major real and synthetic batches with the same transforms (DSA).

        With `siamese_pairing="class"` (the default, as the authors' `DiffAugment(..., seed=s)` called once per
        class in `main.py` and `main_DM.py`), class `c` draws one family and one transform from a generator keyed
        by `(seed, *keys, c)`, and every real and synthetic image of `c` gets that transform: the class means (DM)
        and gradients (DSA) are compared under one transform. With `"image"`, one family is drawn for all classes
        and image `j` of a class's real batch shares its transform with image `j` of its synthetic batch. Either
        way the draws do not depend on how classes are split across processes.
        """
        if not self.augment.enabled:
            return real, synthetic
        if self.config.siamese_pairing == "image":
            return self._augment_per_image(real, synthetic, classes, n_real, n_syn, *keys)
        real_parts, syn_parts = [], []
        for index, c in enumerate(classes):
            params = self.augment.sample(
                1, self.train_data.image_size, derive_generator(self.config.seed, *keys, "augment", c)
            )
            # One transform for the class: both batches go through it in one call.
            both = torch.cat(
                [real[index * n_real : (index + 1) * n_real], synthetic[index * n_syn : (index + 1) * n_syn]]
            )
            both = self.augment.apply(both, params.select(torch.zeros(len(both), dtype=torch.long)))
            real_parts.append(both[:n_real])
            syn_parts.append(both[n_real:])
        return torch.cat(real_parts), torch.cat(syn_parts)

    def _augment_per_image(
        self, real: torch.Tensor, synthetic: torch.Tensor, classes: list[int], n_real: int, n_syn: int, *keys
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Parameters for every class of the dataset (rows c * stride + j), so the draw is split-independent.
        stride = max(n_real, n_syn)
        params = self.augment.sample(
            self.train_data.num_classes * stride,
            self.train_data.image_size,
            derive_generator(self.config.seed, *keys, "augment"),
        )
        starts = torch.tensor(classes, dtype=torch.long).unsqueeze(1) * stride
        real_rows = (starts + torch.arange(n_real)).flatten()
        syn_rows = (starts + torch.arange(n_syn)).flatten()
        return (
            self.augment.apply(real, params.select(real_rows)),
            self.augment.apply(synthetic, params.select(syn_rows)),
        )

    # ------------------------------------------------------------------ interface

    def select(self, context: SelectionContext) -> torch.LongTensor:
        """Selection methods: row indices of the real examples to keep, class-major, `images_per_class` each.

        `context` ([`SelectionContext`]) gives the accelerator, networks of the run's architecture (random, or
        trained through the one training loop with callbacks that collect per-example statistics) and their
        features of every real example.
        """
        raise NotImplementedError(f"{type(self).__name__} does not select real rows.")

    def synthesize(self, context: SelectionContext) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One-pass methods: the set's inputs (class-major, `images_per_class` each) and its soft labels as logits
        (`None`: hard labels), built with what `context` gives (as for [`select`])."""
        raise NotImplementedError(f"{type(self).__name__} does not build its set in one pass.")

    def run_metadata(self) -> dict:
        """What the method adds to `distill_config.json` beside its config (e.g. the teacher it used)."""
        return {}

    def save_artifacts(self, output_dir: Path) -> None:
        """Writes what the method made besides the set (e.g. a teacher it trained) into `output_dir`: the staging
        folder of a save, whose new entries are moved into the run's folder before its config. Their names belong in
        `constants.METHOD_ARTIFACT_NAMES`, so that a later run of another method removes them."""

    def load_artifacts(self, output_dir: Path) -> None:
        """Reads back what [`save_artifacts`] wrote, when a saved set is loaded to be evaluated again (e.g. the
        teacher that labels the fair baseline, see [`baseline_label_logits`])."""

    def baseline_label_logits(self, inputs: torch.Tensor) -> torch.Tensor | None:
        """The soft labels (logits) the random real subset of the fair baseline gets: those the method's labeller
        gives `inputs` (a teacher's), so that the baseline is random real images with the same labels (DD-Ranking,
        Li et al., 2025). `None` (the default): hard labels, for sets whose labels are hard or learned with them."""
        return None

    @property
    def one_pass(self) -> bool:
        """Whether the set is made once (selected or synthesised) rather than optimised over iterations."""
        return self.selects_real_rows or self.synthesizes_once

    def state_dict(self) -> dict[str, torch.Tensor]:
        """State the method keeps across iterations (e.g. a pool of networks trained online), saved in every
        checkpoint as safetensors; empty for methods whose iterations depend on the seed alone."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restores what [`state_dict`] returned, when a run resumes from a checkpoint."""
        if state:
            raise ValueError(
                f"{type(self).__name__} keeps no state, but the checkpoint holds method state "
                f"({', '.join(sorted(state)[:3])}): it was written by another method."
            )

    @property
    def updates_per_iteration(self) -> int:
        """Optimiser steps on the synthetic set per iteration (DC/DSA: the outer loop; most methods: 1)."""
        return 1

    def loss(self, synthetic: SyntheticSet, classes: list[int], iteration: int, update: int = 0) -> torch.Tensor:
        """Optimising methods: the matching loss of `classes` at `(iteration, update)` (a scalar to minimise).

        The trainer calls it for `update = 0 .. updates_per_iteration - 1`, each followed by one optimiser step and
        [`after_update`]. All randomness must come from generators derived from `(config.seed, iteration, ...)`,
        and state kept between updates must be rebuilt at `update == 0` (checkpoints fall between iterations).
        """
        raise NotImplementedError(f"{type(self).__name__} does not optimise a synthetic set.")

    def after_update(self, synthetic: SyntheticSet, iteration: int, update: int) -> None:
        """Called after each optimiser step (DC/DSA train their network on the updated set here)."""

    def setup(self, context: SelectionContext) -> None:
        """Called once by the trainer before the set is made, with what a selection gets (e.g. to load or train a
        teacher); nothing by default."""

    def build_optimizer(self, groups: list[dict]) -> torch.optim.Optimizer | None:
        """The pixel optimiser over `groups`, for a method whose paper fixes its own (`None`: the config's SGD or
        Adam)."""
        return None

    def lr_factor(self, iteration: int) -> float:
        """The factor on every group's initial learning rate at `iteration` (a schedule; 1: constant)."""
        return 1.0

    def final_label_logits(self, synthetic: SyntheticSet) -> torch.Tensor | None:
        """Soft labels (logits) to give the set once optimised (e.g. a teacher's relabelling); `None`: keep its
        labels."""
        return None

    def evaluate_set(self, synthetic: SyntheticSet, test_images: torch.Tensor, test_labels: torch.Tensor) -> dict:
        """Figures the method itself can give about a set, beside the protocol's trained networks (e.g. the test
        accuracy of kernel ridge regression for KRR methods), keyed by result name; `{}` for most methods."""
        return {}

    def initial_step_size(self) -> float | None:
        """A learnable step size to give the synthetic set (MTT's syn_lr), or `None` for methods that learn none."""
        return None

    def optimizer_parameters(self, synthetic: SyntheticSet) -> list[dict]:
        """Parameter groups for the optimiser: the inputs, plus learned targets and the step size when learned."""
        groups = [{"params": [synthetic.images]}]
        for targets in (synthetic.label_logits, synthetic.regression_targets):
            if targets is not None:
                groups.append({"params": [targets], "lr": self.config.lr_labels})
        if synthetic.step_size is not None:
            groups.append({"params": [synthetic.step_size], "lr": self.config.lr_lr})
        return groups


#: A learned student step size is kept at or above `syn_lr_init * MIN_STEP_SIZE_FRACTION` (see
#: [`UnrolledSGDMethod.after_update`]).
MIN_STEP_SIZE_FRACTION = 1e-3


class UnrolledSGDMethod(DistillationMethod):
    """What the methods that train a student by unrolled SGD on the synthetic set share (MTT, DD).

    `self.network` supplies the student's architecture only: its parameters are replaced by the unroll's at every
    step (`self.spec` lays them out as one flat vector). It is in train mode (batch-norm networks use batch
    statistics, as the papers' students do). The set learns the student's step size, from `config.syn_lr_init`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.network = build_network(self.student_config()).requires_grad_(False)
        self.network.train()
        self.spec = ParameterSpec.from_module(self.network)

    def student_config(self) -> PretrainedConfig | nn.Module:
        """The architecture of the student trained in the unroll, unless a method says otherwise the method's network
        (`Prepared.network_template()`: the run's architecture, or with a frozen encoder (text) the linear classifier
        on its embedding)."""
        return self.prepared.network_template()

    def initial_step_size(self) -> float:
        return self.config.syn_lr_init

    def student_step_size(self, synthetic: SyntheticSet) -> torch.Tensor:
        """The set's learned step size, or the initial one, fixed, for a set built without it."""
        if synthetic.step_size is not None:
            return synthetic.step_size
        return torch.tensor(self.config.syn_lr_init, device=synthetic.images.device)

    def after_update(self, synthetic: SyntheticSet, iteration: int, update: int) -> None:
        # A step size that crosses zero makes the student climb the loss and the learned lr unusable for evaluation
        # (SGD refuses a negative lr). MTT does not guard it; with a large lr_lr (or a tiny problem) it happens, so
        # it is kept at or above a small positive floor.
        if synthetic.step_size is not None:
            with torch.no_grad():
                synthetic.step_size.clamp_(min=self.config.syn_lr_init * MIN_STEP_SIZE_FRACTION)

    def autocast_dtype(self) -> torch.dtype | None:
        """The unroll's forward precision: bfloat16 with `mixed_precision="bf16"`, else float32."""
        return torch.bfloat16 if self.config.mixed_precision == "bf16" else None
