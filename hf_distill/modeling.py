"""Building, re-drawing and reading any `transformers` model the way dataset distillation needs.

This module provides:

- [`build_model`]: a model from a config (the ConvNet family lives in [`hf_distill.models.convnet`]).
- [`reinitialize_`] / [`fresh_model`]: cheap, explicitly seeded re-draws of a network's parameters. Several methods
  (e.g. DM) sample a brand new random network every iteration, so this sits on a hot path and must neither touch
  the global RNG nor depend on it.
- [`extract_features`]: one feature extractor for any `transformers` vision classifier (ConvNet, ResNet, ViT,
  ConvNeXt, ...), so distillation methods never special-case an architecture.
- [`load_teacher`]: a frozen, pretrained classifier (a Hub id, a folder or a module): the teacher of the KD step and
  of the teacher-based methods.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterator, Sequence
from itertools import chain

import torch
from torch import nn
from transformers import (
    AutoModelForImageClassification,
    PretrainedConfig,
    PreTrainedModel,
)

from .hub_utils import check_hub_access, is_hub_id, looks_like_local_path
from .modalities import ImageModality, Modality
from .models.convnet import (
    ConvNetConfig,
    ConvNetForImageClassification,
    ConvNetPreTrainedModel,
    default_convnet_config,
)
from .seeding import seeded_rng

__all__ = [
    "ConvNetConfig",
    "ConvNetPreTrainedModel",
    "ConvNetForImageClassification",
    "build_model",
    "default_convnet_config",
    "extract_features",
    "fresh_model",
    "load_teacher",
    "reinitialize_",
]

# ---------------------------------------------------------------------------------------------------------------------
# Model construction and explicit-randomness re-initialisation
# ---------------------------------------------------------------------------------------------------------------------


def build_model(config: PretrainedConfig, model_class=AutoModelForImageClassification) -> PreTrainedModel:
    """
    Build a randomly initialised classifier from a configuration.

    Args:
        config ([`~transformers.PretrainedConfig`]):
            Any configuration registered with `model_class`, e.g. [`ConvNetConfig`] for the default.
        model_class (*optional*, defaults to [`~transformers.AutoModelForImageClassification`]): The Auto class
            (a modality's `classifier_class`, e.g. `AutoModelForSequenceClassification` for text).

    Returns:
        [`~transformers.PreTrainedModel`]
    """
    return model_class.from_config(config)


def build_network(template: PretrainedConfig | nn.Module) -> nn.Module:
    """A network from what `Prepared.network_template()` gives: a config is built ([`build_model`]), a module (the
    linear classifier on a frozen embedding) is returned as it is (re-draw it with [`fresh_model`])."""
    return build_model(template) if isinstance(template, PretrainedConfig) else template


def batch_norm_layers(model: nn.Module) -> list[nn.Module]:
    """Every batch-norm layer of `model` (any dimension, synchronised or not): the layers whose output depends on
    which examples share a forward pass."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())


def _iter_with_owner(
    module: nn.Module, owner: nn.Module | None = None
) -> Iterator[tuple[nn.Module, nn.Module | None]]:
    """Yield `(submodule, nearest enclosing PreTrainedModel)`, so composite models use each sub-model's own init."""
    if isinstance(module, PreTrainedModel):
        owner = module
    yield module, owner
    for child in module.children():
        yield from _iter_with_owner(child, owner)


@torch.no_grad()
def convnet_variant(model_config: PretrainedConfig, width: int | None, norm: str | None) -> PretrainedConfig:
    """The run's ConvNet with another `width` and/or `norm` (those given), e.g. the kernel networks of KRR methods or
    a cheaper network to distill with; any other architecture is returned as it is."""
    overrides = {"net_width": width, "net_norm": norm}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    if not overrides or not all(hasattr(model_config, name) for name in overrides):
        return model_config
    return model_config.__class__.from_dict({**model_config.to_dict(), **overrides})


def reinitialize_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """
    Re-draw all parameters of `model` in place, deterministically from `generator`.

    A seed is drawn from `generator` and the global RNG is forked and seeded with it while every submodule's
    `reset_parameters()` runs (PyTorch's default initialisation, as used by the distillation papers). Submodules
    with parameters but no `reset_parameters` (e.g. ViT's CLS token, ConvNeXt's layer scale) fall back to the
    enclosing `transformers` model's `_init_weights`. The global RNG state is unchanged afterwards, and the same
    generator state always yields bitwise identical parameters (on the same device). Parameters are updated in
    place, so optimisers and references to them stay valid.

    Args:
        model (`nn.Module`): The model to re-initialise (usually a [`~transformers.PreTrainedModel`]).
        generator (`torch.Generator`): Source of randomness; advanced by one draw.

    Returns:
        `nn.Module`: `model` itself.
    """
    seed = _draw_seed(generator)
    devices = {t.device for t in chain(model.parameters(), model.buffers())}
    with seeded_rng(seed, sorted(devices, key=str)):
        for module, owner in _iter_with_owner(model):
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            direct = list(module.parameters(recurse=False))
            if not direct:
                continue
            init_fn = getattr(owner, "_init_weights", None)
            if init_fn is None:
                warnings.warn(
                    f"{type(module).__name__} has parameters but neither `reset_parameters` nor an enclosing "
                    "`PreTrainedModel._init_weights`; its parameters were left unchanged.",
                    stacklevel=2,
                )
                continue
            # `transformers` init functions skip tensors flagged as loaded from a checkpoint; a re-draw must not.
            for tensor in chain(direct, module.buffers(recurse=False)):
                if getattr(tensor, "_is_hf_initialized", False):
                    tensor._is_hf_initialized = False
            init_fn(module)
    return model


def fresh_model(
    template: PretrainedConfig | PreTrainedModel,
    generator: torch.Generator,
    model_class=AutoModelForImageClassification,
) -> PreTrainedModel:
    """
    A new, randomly initialised model with the architecture of `template`.

    For hot loops (e.g. DM samples a new network every iteration) prefer keeping one model and calling
    [`reinitialize_`] on it, which avoids re-building the modules.

    Args:
        template ([`~transformers.PretrainedConfig`] or [`~transformers.PreTrainedModel`]):
            A configuration (built with [`build_model`], on CPU), or a model (deep-copied, so device, dtype and
            train/eval mode are kept).
        generator (`torch.Generator`): Source of randomness; the result depends only on its state.
        model_class (*optional*): The Auto class a config is built with (see [`build_model`]).

    Returns:
        [`~transformers.PreTrainedModel`]: The new model; the global RNG state is unchanged.
    """
    if isinstance(template, PretrainedConfig):
        # Construction draws from the global RNG (default layer init); fork it so callers' streams are untouched.
        with seeded_rng(_draw_seed(generator)):
            model = build_model(template, model_class)
    elif isinstance(template, nn.Module):
        model = copy.deepcopy(template)
        for param in model.parameters():
            param.grad = None
    else:
        raise TypeError(f"template must be a PretrainedConfig or a PreTrainedModel, got {type(template).__name__}.")
    return reinitialize_(model, generator)


# ---------------------------------------------------------------------------------------------------------------------
# Architecture-agnostic feature extraction
# ---------------------------------------------------------------------------------------------------------------------


def _output_field(outputs, name: str, index: int):
    if isinstance(outputs, tuple):
        return outputs[index] if len(outputs) > index else None
    return getattr(outputs, name, None)


def _pool_hidden(hidden: torch.Tensor) -> torch.Tensor:
    if hidden.dim() == 4:
        # (B, C, H, W) feature map: average over space.
        return hidden.mean(dim=(2, 3))
    if hidden.dim() == 3:
        # (B, T, D) tokens: average over tokens.
        return hidden.mean(dim=1)
    return hidden.flatten(1)


def _select_layers(hidden_states: Sequence[torch.Tensor], layers: Sequence[int]) -> list[torch.Tensor]:
    count = len(hidden_states)
    selected = []
    for layer in layers:
        if not -count <= layer < count:
            raise ValueError(f"Layer index {layer} is out of range for a model with {count} hidden states.")
        selected.append(hidden_states[layer])
    return selected


def extract_features(
    model: nn.Module, pixel_values: torch.Tensor, layers: list[int] | None = None, input_name: str = "pixel_values"
) -> torch.Tensor | list[torch.Tensor]:
    """
    Features of `pixel_values` for any `transformers` vision classifier, differentiable w.r.t. the input.

    With `layers=None` this is the embedding the classification head sees:

    - [`ConvNetForImageClassification`]: `model.embed` (flattened last feature map).
    - other models: `model.base_model(pixel_values=...)`'s `pooler_output` when present (flattened, e.g. ResNet's
      `(B, C, 1, 1)`), else `last_hidden_state`: token 0 for `(B, T, D)` (ViT's CLS, already layer-normed inside
      `ViTModel`) or the spatial mean for `(B, C, H, W)`.

    With `layers` given, one `(B, D_i)` tensor per requested hidden state: ConvNet block outputs are flattened
    (matching `embed` for the last block); for other models 4-D maps are averaged over space and token sequences over
    tokens. For `transformers` models `hidden_states[0]` is usually the embedding output.

    The model's train/eval mode is respected (callers decide, e.g. whether BatchNorm uses batch statistics).

    Args:
        model (`nn.Module`): A ConvNet or a `transformers` image classifier (or its base model).
        pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`): Input images.
        layers (`list[int]`, *optional*):
            Hidden state indices (Python semantics, negatives allowed).
        input_name (`str`, *optional*, defaults to `"pixel_values"`): The keyword a `transformers` base model takes
            the inputs under (the modality's, e.g. `inputs_embeds` for text).

    Returns:
        `torch.Tensor` of shape `(batch_size, hidden_dim)` when `layers` is `None`, else a `list` of such tensors.

    Raises:
        `ValueError`: if a layer index is out of range or the model output has no usable features.
    """
    if isinstance(model, ConvNetForImageClassification):
        if layers is None:
            return model.embed(pixel_values)
        _, hidden_states = model._run_blocks(pixel_values, output_hidden_states=True)
        return [hidden.flatten(1) for hidden in _select_layers(hidden_states, layers)]

    if layers is None and callable(getattr(model, "embed", None)):
        return model.embed(pixel_values)  # the package's other models (the MLP) say what their head sees
    base = getattr(model, "base_model", model)
    if layers is None:
        outputs = base(**{input_name: pixel_values})
        pooled = _output_field(outputs, "pooler_output", 1)
        if pooled is not None:
            return pooled.flatten(1)
        hidden = _output_field(outputs, "last_hidden_state", 0)
        if hidden is None:
            raise ValueError(f"{type(base).__name__} returned neither `pooler_output` nor `last_hidden_state`.")
        if hidden.dim() == 3:
            return hidden[:, 0]
        return _pool_hidden(hidden)

    outputs = base(**{input_name: pixel_values}, output_hidden_states=True)
    hidden_states = getattr(outputs, "hidden_states", None)
    if hidden_states is None:
        raise ValueError(f"{type(base).__name__} does not return `hidden_states`.")
    return [_pool_hidden(hidden) for hidden in _select_layers(hidden_states, layers)]


def describe_architecture(config: dict | None) -> str:
    """A short name for a `config.json` dict: the papers' ConvNet with its settings, else the model class."""
    if not config:
        return "an unrecorded architecture"
    if config.get("model_type") == "hf_distill_convnet":
        return (
            f"ConvNet-{config.get('net_depth')} (width {config.get('net_width')}, {config.get('net_norm')}, "
            f"{config.get('net_act')}, {config.get('net_pooling')})"
        )
    if config.get("model_type") == "hf_distill_embedding_classifier":
        return f"a linear classifier on {config.get('embedding_size')}-d frozen embeddings"
    if config.get("model_type") == "hf_distill_mlp":
        return f"MLP ({config.get('num_hidden_layers')} hidden layers of {config.get('hidden_size')})"
    path = config.get("_name_or_path")
    if config.get("model_type") == "resnet" and not path:
        blocks = "-".join(str(depth) for depth in config.get("depths") or [])
        widths = "-".join(str(width) for width in config.get("hidden_sizes") or [])
        return f"ResNet ({config.get('layer_type')} blocks {blocks}, widths {widths})"
    if config.get("model_type") == "vit" and not path:
        return (
            f"ViT ({config.get('num_hidden_layers')} layers of width {config.get('hidden_size')}, "
            f"{config.get('patch_size')}-pixel patches)"
        )
    name = (config.get("architectures") or [config.get("model_type") or "model"])[0]
    return f"{name} (`{path}`)" if path else name


def load_teacher(
    teacher: str | os.PathLike | nn.Module,
    device: str | torch.device | None = None,
    modality: Modality | None = None,
    **from_pretrained_kwargs,
) -> nn.Module:
    """A frozen teacher in eval mode.

    Args:
        teacher (`str`, `os.PathLike` or `nn.Module`): A Hub id or a local folder (loaded with the modality's
            classifier class, `AutoModelForImageClassification` by default, `AutoModelForSequenceClassification` for
            text; a folder written by [`train_teacher`] records the normalisation it was trained with), a
            `PreTrainedModel`, or any `nn.Module` mapping a batch of the set's inputs (e.g. `(B, C, H, W)` images)
            to logits (or to an output with `.logits`).
        device (`str` or `torch.device`, *optional*): Where to put it.
        modality ([`Modality`], *optional*): The distilled set's (default: images).
        **from_pretrained_kwargs: Passed to `from_pretrained` (`revision`, `token`, ...).

    Returns:
        `nn.Module`: The teacher, `eval()`, with `requires_grad=False` on every parameter. When its folder has an image
        processor, the processor's mean/std/size are attached as `teacher.hf_distill_input_settings` so
        [`KDTrainer`] can re-normalise the student's inputs for it.
    """
    modality = modality or ImageModality()
    if isinstance(teacher, (str, os.PathLike)):
        name = os.fspath(teacher)
        if not os.path.isdir(name):
            if isinstance(teacher, os.PathLike) or looks_like_local_path(name) or not is_hub_id(name):
                raise ValueError(f"Teacher {name!r}: no such folder, and not a Hub model id ('owner/name').")
            # One request first: no network fails at once, not after from_pretrained's retries.
            check_hub_access(name, repo_type="model", revision=from_pretrained_kwargs.get("revision"))
        try:
            model = modality.classifier_class.from_pretrained(name, **from_pretrained_kwargs)
        except Exception as error:
            raise ValueError(
                f"Could not load a teacher ({modality.classifier_class.__name__}) from {name!r}: "
                f"{type(error).__name__}: {error}. Pass a folder written by save_pretrained / train_teacher (e.g. "
                "<kd output>/teacher), a reachable Hub id, or an nn.Module."
            ) from error
        if isinstance(modality, ImageModality) and getattr(model.config, "image_mean", None) is None:
            settings = modality.model_settings(name)
            if settings:
                model.hf_distill_input_settings = settings
    elif isinstance(teacher, nn.Module):
        model = teacher
    else:
        raise TypeError(f"teacher must be a Hub id, a local path or an nn.Module, got {type(teacher).__name__}.")
    model.eval()
    model.requires_grad_(False)
    if device is not None:
        model.to(device)
    return model
