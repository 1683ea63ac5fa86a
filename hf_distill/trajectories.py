"""`ExpertTrajectories`: reading stored expert trajectories (a folder or a Hub model repository), lazily.

The storage format (written by [`hf_distill.experts.train_experts`]):

- `expert_{i:03d}.safetensors`: one float32 tensor per epoch, key `epoch_{e:03d}`, the flattened parameter vector
  (parameters in `model.named_parameters()` order). A reader loads only the epochs it needs
  (`safetensors.safe_open(...).get_tensor("epoch_002")`), without reading the rest of the file.
- `experts.json`: the index: format version, parameter names and shapes, the model config, the number of epochs,
  the training settings, the image statistics and classes, and one record per expert (file, final train/test
  accuracy).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from .constants import EXPERTS_INDEX_NAME
from .functional import ParameterSpec
from .hub_utils import check_hub_access, hub_download, is_hub_id, looks_like_local_path
from .modalities import ImageData
from .modeling import describe_architecture

logger = logging.getLogger(__name__)

EXPERTS_FORMAT = "hf_distill.expert_trajectories"
EXPERTS_FORMAT_VERSION = 1


def expert_file_name(index: int) -> str:
    """`expert_{index:03d}.safetensors`."""
    return f"expert_{index:03d}.safetensors"


def epoch_key(epoch: int) -> str:
    """The tensor name of `epoch` in an expert file (`epoch_{epoch:03d}`)."""
    return f"epoch_{epoch:03d}"


class ExpertTrajectories:
    """Expert trajectories stored by [`train_experts`], read lazily, one epoch vector at a time.

    Use [`ExpertTrajectories.from_pretrained`] to open a folder or a Hub model repository.

    Args:
        root (`Path`): Folder holding the index and the expert files.
        index (`dict`): The parsed `experts.json`.
        files (`list[Path]`): The expert files in use (local paths).
        source (`str`): Where they came from (for messages).
        max_epoch (`int`, *optional*): The last epoch that may be read (default: all stored).
    """

    def __init__(self, root: Path, index: dict, files: list[Path], source: str, max_epoch: int | None = None):
        self.root = root
        self.index = index
        self.files = files
        self.source = source
        self.spec = ParameterSpec(index["parameter_names"], [tuple(s) for s in index["parameter_shapes"]])
        self.max_epoch = self.num_epochs if max_epoch is None else max_epoch

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(source={self.source!r}, num_experts={self.num_experts}, "
            f"num_epochs={self.num_epochs}, num_parameters={self.spec.num_parameters})"
        )

    @property
    def num_experts(self) -> int:
        """Number of experts in use."""
        return len(self.files)

    @property
    def num_epochs(self) -> int:
        """Epochs stored per expert (epochs `0..num_epochs` are available; 0 is the initialisation)."""
        return int(self.index["num_epochs"])

    @property
    def model_config(self) -> dict:
        """The architecture the experts were trained with (`PretrainedConfig.to_dict()`)."""
        return self.index["model_config"]

    @property
    def training(self) -> dict:
        """The training settings (lr, momentum, weight decay, batch size, augmentation, seed, precision)."""
        return self.index["training"]

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike,
        revision: str | None = None,
        token: str | bool | None = None,
        max_epoch: int | None = None,
        num_experts: int | None = None,
    ) -> ExpertTrajectories:
        """Opens the trajectories in a local folder or a Hub model repository.

        From the Hub, `experts.json` is downloaded first (and checked), then the expert files in use (into the
        Hugging Face cache). Epoch vectors are read from the files on demand.

        Args:
            path_or_repo_id (`str` or `os.PathLike`): A folder written by [`train_experts`], or a Hub model
                repository pushed with [`push_experts_to_hub`].
            revision (`str`, *optional*): Branch, tag or commit of the Hub repository.
            token (`str` or `bool`, *optional*): Hugging Face token (private repositories).
            max_epoch (`int`, *optional*): The last epoch the caller will read; checked against the stored epochs.
            num_experts (`int`, *optional*): Use only the first `num_experts` experts (default: all; from the Hub,
                only their files are downloaded).

        Raises:
            ValueError: Not an expert folder or repository, a corrupt or incomplete index, too few epochs or
                experts. The message says how to fix it.
        """
        path = Path(path_or_repo_id).expanduser()
        if path.is_dir():
            index_path = path / EXPERTS_INDEX_NAME
            if not index_path.is_file():
                raise ValueError(
                    f"{path} holds no {EXPERTS_INDEX_NAME}: it is not a folder of expert trajectories. Create one "
                    "with hf_distill.experts.train_experts_for_config(...) or train_experts(...)."
                )
            index = cls.check_index(json.loads(index_path.read_text()), str(path), max_epoch, num_experts)
            files = [path / record["file"] for record in index["experts"][: num_experts or None]]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise ValueError(
                    f"{path} lists expert files that are missing ({', '.join(missing[:3])}). Re-run train_experts "
                    "with the same output_dir and settings to restore them, or lower num_experts."
                )
            return cls(path, index, files, str(path), max_epoch)
        return cls._from_hub(str(path_or_repo_id), revision, token, max_epoch, num_experts)

    @classmethod
    def _from_hub(
        cls,
        repo_id: str,
        revision: str | None,
        token: str | bool | None,
        max_epoch: int | None,
        num_experts: int | None,
    ) -> ExpertTrajectories:
        if looks_like_local_path(repo_id) or not is_hub_id(repo_id):
            raise ValueError(
                f"Expert trajectories {repo_id!r}: no such folder, and not a Hub repository id ('owner/name'). Pass "
                "the output_dir of hf_distill.experts.train_experts or a model repository pushed with "
                "push_experts_to_hub."
            )

        # One request first: no network or a wrong id fails at once, not after the downloads' retries.
        check_hub_access(repo_id, repo_type="model", revision=revision, token=token)
        hint = ": it does not hold expert trajectories pushed with hf_distill.hub.push_experts_to_hub"

        def download(filename: str) -> Path:
            return hub_download(repo_id, filename, revision=revision, token=token, missing_hint=hint)

        index_path = download(EXPERTS_INDEX_NAME)
        index = cls.check_index(json.loads(index_path.read_text()), repo_id, max_epoch, num_experts)
        files = [download(record["file"]) for record in index["experts"][: num_experts or None]]
        return cls(index_path.parent, index, files, repo_id, max_epoch)

    @staticmethod
    def check_index(index: Any, source: str, max_epoch: int | None, num_experts: int | None) -> dict:
        if not isinstance(index, dict) or index.get("format") != EXPERTS_FORMAT:
            raise ValueError(f"{source}: {EXPERTS_INDEX_NAME} is not an hf_distill expert-trajectory index.")
        if int(index.get("format_version", 0)) > EXPERTS_FORMAT_VERSION:
            raise ValueError(
                f"{source} was written by a newer hf_distill (format version {index['format_version']}); upgrade "
                "hf_distill to read it."
            )
        required = ("parameter_names", "parameter_shapes", "num_epochs", "experts", "model_config", "training")
        missing = [key for key in required if key not in index]
        if missing:
            raise ValueError(f"{source}: {EXPERTS_INDEX_NAME} lacks {', '.join(missing)}; it is corrupt.")
        stored_experts, stored_epochs = len(index["experts"]), int(index["num_epochs"])
        if stored_experts == 0:
            raise ValueError(f"{source} holds no trained expert yet: run train_experts to completion first.")
        if num_experts is not None and not 1 <= num_experts <= stored_experts:
            raise ValueError(
                f"num_experts={num_experts}, but {source} holds {stored_experts} experts. Lower num_experts (None "
                "uses all), or train more experts into the folder (train_experts with a larger num_experts)."
            )
        if max_epoch is not None and not 0 <= max_epoch <= stored_epochs:
            raise ValueError(
                f"Epoch {max_epoch} is needed (MTT: max_start_epoch - 1 + expert_epochs; DM: network_pool_max_epoch), "
                f"but the experts in {source} were trained for {stored_epochs} epochs. Lower those settings, or train "
                f"experts with num_epochs >= {max_epoch}."
            )
        return index

    @classmethod
    def for_network(
        cls,
        path_or_repo_id: str | os.PathLike,
        network: torch.nn.Module,
        train_data: ImageData,
        *,
        revision: str | None = None,
        max_epoch: int | None = None,
        num_experts: int | None = None,
        description: str = "the distillation network",
    ) -> ExpertTrajectories:
        """[`~ExpertTrajectories.from_pretrained`], then checked against the network and the data that will use them.

        Reads only the index (and, from the Hub, downloads the files), so a wrong path or architecture fails before
        any long work starts.

        Args:
            path_or_repo_id (`str` or `os.PathLike`): A folder written by [`train_experts`] or a Hub repository.
            network (`torch.nn.Module`): The network whose parameters the trajectories must fit (names and shapes).
            train_data ([`ImageData`]): The data being distilled; a warning is logged when the experts were
                trained on differently normalised data or other classes.
            revision, max_epoch, num_experts: As in [`~ExpertTrajectories.from_pretrained`].
            description (`str`): How error messages name `network`.
        """
        experts = cls.from_pretrained(path_or_repo_id, revision=revision, max_epoch=max_epoch, num_experts=num_experts)
        experts.check_compatible(ParameterSpec.from_module(network), description)
        experts.check_data(train_data)
        return experts

    def check_compatible(self, spec: ParameterSpec, description: str = "the distillation network") -> None:
        """Raises a `ValueError` unless the experts' parameters have `spec`'s names and shapes (in order).

        Args:
            spec ([`ParameterSpec`]): The parameters of the network that will follow the trajectories.
            description (`str`): How to name that network in the message.
        """
        if spec == self.spec:
            return
        ours = {name: shape for name, shape in zip(spec.names, spec.shapes)}
        theirs = {name: shape for name, shape in zip(self.spec.names, self.spec.shapes)}
        mismatch = next(
            (
                f"{name}: {list(theirs.get(name, ())) or 'absent'} in the experts, "
                f"{list(ours.get(name, ())) or 'absent'} in the network"
                for name in [*self.spec.names, *spec.names]
                if theirs.get(name) != ours.get(name)
            ),
            "the parameter order differs",
        )
        raise ValueError(
            f"The expert trajectories in {self.source} were trained with {describe_architecture(self.model_config)} "
            f"({self.spec.num_parameters} parameters), which does not match {description} "
            f"({spec.num_parameters} parameters; first difference: {mismatch}). Either distill with the experts' "
            "architecture (e.g. the same net_width/net_depth/net_norm and image size as their model_config in "
            f"{EXPERTS_INDEX_NAME}), or train experts for this network with hf_distill.experts.train_experts("
            "trainer.train_data, trainer.model_config, ...)."
        )

    def check_data(self, train_data: ImageData) -> None:
        """Logs a warning when `train_data` is not normalised like the experts' data or has other classes.

        Trajectories of differently normalised images still load (the architecture matches) but lead the synthetic
        set astray; this usually means the experts were trained on another dataset or another image size.
        """
        recorded = (self.index.get("image_mean"), self.index.get("image_std"), self.index.get("class_names"))
        if None in recorded:
            return
        mean, std, names = recorded
        close = all(abs(a - b) <= 1e-3 for a, b in zip([*mean, *std], [*train_data.mean, *train_data.std]))
        if not close or list(names) != list(train_data.class_names):
            logger.warning(
                "The expert trajectories in %s were trained on data with mean %s, std %s and classes %s, but the "
                "data being distilled has mean %s, std %s and classes %s: are they from another dataset?",
                self.source,
                mean,
                std,
                names[:5],
                train_data.mean,
                train_data.std,
                train_data.class_names[:5],
            )

    def epoch(self, expert: int, epoch: int) -> torch.Tensor:
        """The flat float32 parameter vector of `expert` after `epoch` epochs (0: the initialisation), on CPU."""
        if not 0 <= expert < self.num_experts:
            raise IndexError(f"expert {expert} out of range: {self.num_experts} experts are in use.")
        if not 0 <= epoch <= self.max_epoch:
            raise IndexError(f"epoch {epoch} out of range 0..{self.max_epoch}.")
        with safe_open(str(self.files[expert]), framework="pt") as handle:
            return handle.get_tensor(epoch_key(epoch))

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """A parameter dict (views of `vector`) keyed by parameter name, e.g. for `model.load_state_dict`."""
        return self.spec.unflatten(vector)

    def load_into(self, network: torch.nn.Module, expert: int, epoch: int) -> torch.nn.Module:
        """Copies `expert`'s parameters after `epoch` epochs into `network` in place (buffers are left as they are).

        In place, so a `torch.compile`d function of `network` sees the new values without recompiling.
        """
        return self.spec.copy_into(network, self.epoch(expert, epoch))
