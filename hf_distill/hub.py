"""The Hugging Face Hub side: cards, pushes, and clear errors when the Hub cannot be used.

- [`render_dataset_card`] / [`push_distilled_to_hub`]: the dataset card of a folder written by
  [`DistillTrainer.save`], and its upload (the data with `Dataset.push_to_hub`, then one commit with
  `distill_config.json`, `eval_results.json`, the grid image and the card).
- [`render_student_card`] / [`push_student_to_hub`]: the model card of a student trained with knowledge
  distillation (`hf_distill.kd`), and its upload.
- [`check_hub_access`] / [`hub_error`]: one request without retries before a long load, and the mapping of Hub
  exceptions (unknown repository, gated, bad revision, no connection, offline mode) to one clear error.

The cards are the Jinja templates in `hf_distill/templates/`, rendered with `DatasetCard.from_template` /
`ModelCard.from_template`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import (
    CommitOperationAdd,
    DatasetCard,
    DatasetCardData,
    EvalResult,
    HfApi,
    ModelCard,
    ModelCardData,
    RepoCard,
)
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from .config import CONFIG_NAME
from .data import DIGITS_SOURCE
from .methods import METHODS
from .trainer import DATASET_DIR, EVAL_RESULTS_NAME, GRID_NAME

try:  # huggingface_hub >= 1.0 talks HTTP through httpx (re-exported here, as `datasets` imports it)
    from huggingface_hub.utils import httpx as _httpx

    _TRANSPORT_ERRORS: tuple[type[Exception], ...] = (_httpx.TransportError,)
except ImportError:  # pragma: no cover - older huggingface_hub (requests): its errors are ConnectionError/OSError
    _TRANSPORT_ERRORS = ()

logger = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
DATASET_CARD_TEMPLATE = TEMPLATES_DIR / "dataset_card.md"
MODEL_CARD_TEMPLATE = TEMPLATES_DIR / "model_card.md"
KD_CONFIG_NAME = "kd_config.json"
CARD_TAGS = ["hf-distill", "dataset-distillation"]
STUDENT_TAGS = ["hf-distill", "knowledge-distillation", "dataset-distillation"]

_CONNECTION_ERRORS: tuple[type[Exception], ...] = (ConnectionError, TimeoutError, *_TRANSPORT_ERRORS)
# Errors a push can end with that say nothing about the local folder: the Hub answered an error, or was unreachable.
_PUSH_ERRORS: tuple[type[Exception], ...] = (HfHubHTTPError, *_CONNECTION_ERRORS)
# Student files worth publishing (checkpoints, logs and pickled training arguments are left behind).
_STUDENT_SUFFIXES = (".json", ".safetensors", ".txt", ".model")
_KD_SETTINGS = (
    ("learning_rate", "Learning rate"),
    ("per_device_train_batch_size", "Batch size (per device)"),
    ("weight_decay", "Weight decay"),
    ("optim", "Optimizer"),
    ("lr_scheduler_type", "Learning-rate schedule"),
    ("warmup_ratio", "Warm-up ratio"),
    ("seed", "Seed"),
)


class HubPushError(RuntimeError):
    """A push to the Hub failed. The message says what was and was not committed; re-running the push is safe."""


# ---------------------------------------------------------------------------------------------------------------------
# Hub access errors
# ---------------------------------------------------------------------------------------------------------------------


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _endpoint(repo_type: str) -> str:
    if repo_type == "dataset":
        import datasets.config

        # `load_dataset` and `push_to_hub` use the endpoint `datasets` read at import time.
        return datasets.config.HF_ENDPOINT.rstrip("/")
    return hub_constants.ENDPOINT.rstrip("/")


def _is_offline(repo_type: str) -> bool:
    if hub_constants.is_offline_mode():
        return True
    if repo_type == "dataset":
        import datasets.config

        return bool(datasets.config.HF_HUB_OFFLINE)
    return False


def _repo_url(repo_id: str, repo_type: str, endpoint: str | None = None) -> str:
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"{endpoint or _endpoint(repo_type)}/{prefix}{repo_id}"


def hub_error(
    error: BaseException,
    repo_id: str,
    *,
    repo_type: str = "dataset",
    revision: str | None = None,
    endpoint: str | None = None,
) -> Exception | None:
    """The clear error to raise instead of `error`, a failure to read `repo_id` from the Hub.

    Args:
        error (`BaseException`): What `huggingface_hub`, `datasets` or `transformers` raised.
        repo_id (`str`): The repository that was read.
        repo_type (`str`, *optional*, defaults to `"dataset"`): `"dataset"` or `"model"`.
        revision (`str`, *optional*): The revision asked for.
        endpoint (`str`, *optional*): The Hub endpoint (default: the one `datasets`/`huggingface_hub` use).

    Returns:
        `ValueError` (unknown repository or revision, gated or refused access: the user must change something),
        `RuntimeError` (no connection, offline mode, a server error), or `None` when `error` is not a Hub access
        problem (the caller re-raises it).
    """
    from datasets.exceptions import DatasetNotFoundError

    endpoint = endpoint or _endpoint(repo_type)
    url = _repo_url(repo_id, repo_type, endpoint)
    detail = _first_line(error)
    login = "log in (`hf auth login`) or pass token=..."
    # `datasets` turns Hub errors into DatasetNotFoundError and keeps only the message to tell them apart.
    from_datasets = isinstance(error, DatasetNotFoundError)
    if isinstance(error, GatedRepoError) or (from_datasets and "gated" in detail.lower()):
        return ValueError(
            f"The {repo_type} {repo_id!r} is gated on the Hugging Face Hub: accept its conditions at {url} with "
            f"your account, then {login}."
        )
    if isinstance(error, RevisionNotFoundError) or (from_datasets and detail.startswith("Revision")):
        return ValueError(
            f"Revision {revision!r} does not exist in the {repo_type} {repo_id!r} on the Hugging Face Hub. Pass a "
            f"branch, tag or commit hash of {url}, or leave the revision unset for the default branch."
        )
    if isinstance(error, RepositoryNotFoundError) or from_datasets:
        return ValueError(
            f"The {repo_type} {repo_id!r} was not found on the Hugging Face Hub ({endpoint}). Check that the id is "
            f"spelled correctly ('owner/name'); if it is private, {login} with read access; for a local folder, "
            "pass a path that exists."
        )
    if isinstance(error, HFValidationError):
        return ValueError(
            f"{repo_id!r} is neither an existing local path nor a valid Hub {repo_type} id ('owner/name'): {detail}"
        )
    if isinstance(error, OfflineModeIsEnabled) or (isinstance(error, ConnectionError) and "offline" in detail.lower()):
        return RuntimeError(
            f"Offline mode is on (HF_HUB_OFFLINE=1) and the {repo_type} {repo_id!r} is not in the local cache. Unset "
            "HF_HUB_OFFLINE to download it, or pass a local path."
        )
    if isinstance(error, _CONNECTION_ERRORS):
        return RuntimeError(
            f"Could not reach the Hugging Face Hub at {endpoint} to load the {repo_type} {repo_id!r} "
            f"({type(error).__name__}: {detail}). Check your network connection (and HF_ENDPOINT or proxy "
            "settings); to use a copy already in the local cache, set HF_HUB_OFFLINE=1."
        )
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        status = error.response.status_code
        if status in (401, 403):
            return ValueError(
                f"The Hugging Face Hub refused access to the {repo_type} {repo_id!r} (HTTP {status}): the token is "
                f"invalid or cannot read it; {login} with read access."
            )
        return RuntimeError(
            f"The Hugging Face Hub answered HTTP {status} for the {repo_type} {repo_id!r} ({detail}). This is "
            "usually temporary: try again later."
        )
    return None


def check_hub_access(
    repo_id: str,
    *,
    repo_type: str = "dataset",
    revision: str | None = None,
    token: str | bool | None = None,
) -> None:
    """Checks with one request (no retries) that `repo_id` can be read, before a long load starts.

    `load_dataset` and `from_pretrained` retry a failed connection for about half a minute per file and then
    raise errors that name neither the cause nor the fix; this check fails at once with one clear message
    instead. In offline mode (`HF_HUB_OFFLINE=1`) it does nothing: the cache is used.

    Args:
        repo_id (`str`): A Hub repository id.
        repo_type (`str`, *optional*, defaults to `"dataset"`): `"dataset"` or `"model"`.
        revision (`str`, *optional*): Branch, tag or commit hash.
        token (`str` or `bool`, *optional*): Hugging Face token.

    Raises:
        ValueError: Unknown repository or revision, gated repository, invalid id or refused token.
        RuntimeError: No connection or a server error.
    """
    if _is_offline(repo_type):
        return
    endpoint = _endpoint(repo_type)
    try:
        HfApi(endpoint=endpoint, token=token).repo_info(
            repo_id, repo_type=repo_type, revision=revision, timeout=hub_constants.HF_HUB_ETAG_TIMEOUT
        )
    except Exception as error:
        clear = hub_error(error, repo_id, repo_type=repo_type, revision=revision, endpoint=endpoint)
        if clear is None:
            raise
        raise clear from None


def is_hub_id(name: str | os.PathLike | None) -> bool:
    """Whether `name` names a Hub repository (a valid id that is not an existing local path)."""
    if not isinstance(name, str) or not name or Path(name).expanduser().exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------------
# Shared card pieces
# ---------------------------------------------------------------------------------------------------------------------


def framework_versions(hf_distill_version: str | None = None) -> dict[str, str]:
    """Versions of the libraries a card reports (`hf_distill_version`: the one recorded at training time)."""
    import datasets
    import torch
    import transformers

    from . import __version__

    return {
        "hf_distill": hf_distill_version or __version__,
        "PyTorch": torch.__version__,
        "Datasets": datasets.__version__,
        "Transformers": transformers.__version__,
    }


def merge_card(card: RepoCard, existing: RepoCard | None) -> RepoCard:
    """`card`, keeping the metadata of `existing` (the card already on the Hub) that `card` does not set.

    The YAML of `existing` (e.g. the `dataset_info` and `configs` that `datasets` writes, or keys a user added on the
    Hub) survives; keys `card` sets replace it, tags are united. The body is `card`'s.

    Args:
        card (`RepoCard`): The freshly rendered card.
        existing (`RepoCard`, *optional*): The card to update; `None` returns `card` unchanged.

    Returns:
        `RepoCard`: A card of the same class as `card`.
    """
    if existing is None:
        return card
    data = existing.data.to_dict()
    ours = card.data.to_dict()
    tags = [*_as_list(data.get("tags")), *_as_list(ours.get("tags"))]
    data.update(ours)
    if tags:
        data["tags"] = list(dict.fromkeys(tags))
    card_data = type(card).card_data_class(**data)
    return type(card)(f"---\n{card_data.to_yaml()}\n---\n{card.text}")


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _read_json(path: Path, *, required: bool = False, hint: str = "") -> dict:
    if not path.is_file():
        if required:
            raise ValueError(f"{path} not found{': ' + hint if hint else '.'}")
        return {}
    return json.loads(path.read_text())


def _size_category(num_rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if num_rows < limit:
            return name
    return "1M<n<10M" if num_rows < 10_000_000 else "other"


def describe_architecture(config: dict | None) -> str:
    """A short name for a `config.json` dict: the papers' ConvNet with its settings, else the model class."""
    if not config:
        return "an unrecorded architecture"
    if config.get("model_type") == "hf_distill_convnet":
        return (
            f"ConvNet-{config.get('net_depth')} (width {config.get('net_width')}, {config.get('net_norm')}, "
            f"{config.get('net_act')}, {config.get('net_pooling')})"
        )
    name = (config.get("architectures") or [config.get("model_type") or "model"])[0]
    path = config.get("_name_or_path")
    return f"{name} (`{path}`)" if path else name


def _source_link(source: str | None) -> str:
    """Markdown naming a source dataset: a link for Hub ids, a plain name for local or builtin data."""
    if not source:
        return "an in-memory dataset"
    if source == DIGITS_SOURCE:
        return "scikit-learn's 8x8 handwritten digits (`sklearn:digits`)"
    if is_hub_id(source):
        return f"[{source}](https://huggingface.co/datasets/{source})"
    return f"the local dataset `{Path(source).name}`"


def _source_short_name(source: str | None) -> str:
    if not source:
        return "Dataset"
    if source == DIGITS_SOURCE:
        return "scikit-learn digits"
    return source if is_hub_id(source) else Path(source).name


def _card_license(data: Any) -> Any:
    return data.get("license") if data is not None else None


def source_license(source: str | None, *, revision: str | None = None, token: str | bool | None = None) -> Any:
    """The license in the dataset card of `source` (a Hub id, or a local folder with a README.md), or `None`.

    A Hub lookup failure is logged and gives `None`: a card is still written, with `license: unknown`.
    """
    if not source or source == DIGITS_SOURCE:
        return None
    path = Path(source).expanduser()
    if path.exists():
        readme = path / "README.md" if path.is_dir() else path.parent / "README.md"
        if not readme.is_file():
            return None
        try:
            return _card_license(DatasetCard.load(readme, ignore_metadata_errors=True).data)
        except Exception as error:  # noqa: BLE001 - an unreadable card must not stop a push
            logger.warning("Could not read the license of %s from %s (%s).", source, readme, _first_line(error))
            return None
    if not is_hub_id(source) or _is_offline("dataset"):
        return None
    api = HfApi(endpoint=_endpoint("dataset"), token=token)
    try:
        # One request without retries first: a missing or unreachable repository fails fast here.
        info = api.dataset_info(source, revision=revision, timeout=hub_constants.HF_HUB_ETAG_TIMEOUT)
        license_ = _card_license(info.card_data)
        if license_ is None:  # some servers leave the card data out of the API answer: read the card itself
            readme = api.hf_hub_download(source, "README.md", repo_type="dataset", revision=info.sha)
            license_ = _card_license(DatasetCard.load(readme, ignore_metadata_errors=True).data)
        return license_
    except Exception as error:  # noqa: BLE001 - the card is still useful without the license
        reason = _first_line(error)
        logger.warning(
            "Could not read the license of %r from its dataset card (%s); writing 'unknown'.", source, reason
        )
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Dataset card
# ---------------------------------------------------------------------------------------------------------------------


def _format_accuracy(result: dict) -> str:
    return f"{result['mean']:.2f} ± {result['std']:.2f}"


def _eval_rows(results: dict, method: str) -> list[dict]:
    names = {
        "distilled": f"Distilled set (`{method}`)",
        "random_real": "Random real subset, same size",
        "full_data": "Whole training split",
    }
    return [
        {
            "name": name,
            "images": results[key].get("num_images", ""),
            "accuracy": _format_accuracy(results[key]),
            "models": results[key].get("num_models", ""),
            "epochs": results[key].get("epochs", ""),
        }
        for key, name in names.items()
        if isinstance(results.get(key), dict) and "mean" in results[key]
    ]


def _protocol_text(protocol: dict) -> str:
    if not protocol:
        return "see `eval_results.json`"
    augmentation = protocol.get("dsa_strategy")
    return (
        f"SGD (lr {protocol.get('lr')}, momentum {protocol.get('momentum')}, weight decay "
        f"{protocol.get('weight_decay')}), lr x0.1 at half the epochs, batch {protocol.get('batch_size')}, "
        + (f"differentiable augmentation `{augmentation}`" if augmentation else "no augmentation")
        + f", the final distilled set (not the best intermediate one), seed {protocol.get('seed')}"
    )


def _eval_summary(results: dict) -> dict:
    """The evaluation figures for the card's YAML (the full record stays in eval_results.json)."""
    keys = ("mean", "std", "num_models", "epochs", "num_images", "architecture")
    summary = {}
    for name in ("distilled", "random_real", "full_data"):
        if isinstance(results.get(name), dict) and "mean" in results[name]:
            entry = {k: results[name][k] for k in keys if k in results[name]}
            entry["mean"], entry["std"] = round(float(entry["mean"]), 4), round(float(entry["std"]), 4)
            summary[name] = entry
    return summary


def render_dataset_card(
    output_dir: str | os.PathLike,
    repo_id: str | None = None,
    *,
    token: str | bool | None = None,
    license: str | None = None,
    versions: dict[str, str] | None = None,
) -> DatasetCard:
    """Renders the dataset card of a distilled set saved by [`DistillTrainer.save`].

    Args:
        output_dir (`str` or `os.PathLike`): The folder (`dataset/`, `distill_config.json`, `eval_results.json`,
            `synthetic_grid.png`).
        repo_id (`str`, *optional*): The repository the card is for (used in the usage snippet).
        token (`str` or `bool`, *optional*): Token to read the source dataset's card (for its license).
        license (`str`, *optional*): The card's license (default: the source dataset card's, looked up locally or on
            the Hub; `unknown` when it has none).
        versions (`dict[str, str]`, *optional*): The framework versions the card lists (default:
            [`framework_versions`], the installed libraries). Recorded ones re-render a card identically elsewhere.

    Returns:
        `huggingface_hub.DatasetCard`: YAML (license inherited from the source dataset, task, tags, size, source,
        the evaluation figures under `hf_distill`) and a body built from `templates/dataset_card.md`.

    Example:

    ```python
    >>> from hf_distill.hub import render_dataset_card
    >>> card = render_dataset_card("outputs/mnist-dm-ipc10", "me/mnist-dm-ipc10")
    >>> card.data.tags
    ['hf-distill', 'dataset-distillation', 'dm']
    ```
    """
    output_dir = Path(output_dir)
    hint = "pass a folder written by DistillTrainer.save / hf-distill distill"
    metadata = _read_json(output_dir / CONFIG_NAME, required=True, hint=hint)
    results = _read_json(output_dir / EVAL_RESULTS_NAME)
    method = metadata.get("method") or "unknown"
    method_class = METHODS.get(method)
    paper = dict(getattr(method_class, "paper", None) or {})
    source = metadata.get("source") or {}
    source_id = source.get("dataset")
    num_classes = int(metadata.get("num_classes") or len(metadata.get("class_names") or []))
    images_per_class = int(metadata["images_per_class"])
    num_images = num_classes * images_per_class
    distill_architecture = describe_architecture(metadata.get("architecture"))
    license_ = license or source_license(source_id, revision=source.get("revision"), token=token) or "unknown"
    pretty_name = f"{_source_short_name(source_id)} distilled with {method} ({images_per_class} images per class)"
    summary = {
        "method": method,
        "paper": paper.get("url"),
        "source_dataset": source_id,
        "source_split": source.get("train_split") or metadata.get("train_split"),
        "images_per_class": images_per_class,
        "num_classes": num_classes,
        "iterations": metadata.get("iterations_completed"),
        "architecture": distill_architecture,
        "eval_results": _eval_summary(results),
    }
    card_data = DatasetCardData(
        license=license_,
        task_categories=["image-classification"],
        tags=[*CARD_TAGS, method],
        size_categories=[_size_category(num_images)],
        source_datasets=[source_id] if is_hub_id(source_id) else None,
        pretty_name=pretty_name,
        hf_distill={k: v for k, v in summary.items() if v is not None},
    )
    eval_model = metadata.get("eval_model_name_or_path")
    return DatasetCard.from_template(
        card_data,
        template_path=str(DATASET_CARD_TEMPLATE),
        repo_id=repo_id or "<user>/<dataset-name>",
        method=method,
        method_title=paper.get("title") or method,
        paper=paper,
        selects_real_rows=bool(getattr(method_class, "selects_real_rows", False)),
        source_link=_source_link(source_id),
        source_config=source.get("config_name"),
        source_revision=source.get("revision"),
        source_split=summary["source_split"] or "train",
        test_split=source.get("test_split") or "test",
        num_images=num_images,
        num_classes=num_classes,
        images_per_class=images_per_class,
        image_shape=tuple(metadata.get("image_shape") or ()),
        image_mean=[round(float(m), 4) for m in metadata.get("image_mean") or []],
        image_std=[round(float(s), 4) for s in metadata.get("image_std") or []],
        class_names=metadata.get("class_names") or [],
        init=metadata.get("init", "real"),
        iterations=metadata.get("iterations_completed", metadata.get("num_iterations")),
        distill_seconds=metadata.get("distill_seconds", "n/a"),
        num_processes=metadata.get("num_processes", 1),
        seed=metadata.get("seed"),
        dsa_strategy=metadata.get("dsa_strategy_resolved") or "none",
        soft_labels=bool(metadata.get("learn_soft_labels")),
        learned_lr=None if metadata.get("learned_lr") is None else float(f"{metadata['learned_lr']:.6g}"),
        distilled_lr=(results.get("distilled") or {}).get("lr"),
        distill_architecture=distill_architecture,
        eval_architecture=f"`{eval_model}`" if eval_model else distill_architecture,
        eval_rows=_eval_rows(results, method),
        protocol_text=_protocol_text(results.get("protocol") or {}),
        versions=versions or framework_versions(metadata.get("hf_distill_version")),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Pushing a distilled set
# ---------------------------------------------------------------------------------------------------------------------


def _existing_card(api: HfApi, card_class: type[RepoCard], repo_id: str, revision: str | None) -> RepoCard | None:
    """The README.md card of a Hub repository at `revision`, or `None` when it has none."""
    try:
        path = api.hf_hub_download(repo_id, "README.md", repo_type=card_class.repo_type, revision=revision)
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
        return None
    return card_class.load(path, ignore_metadata_errors=True)


def _push_failure(what: str, error: BaseException, committed: str, not_committed: str) -> HubPushError:
    status = getattr(getattr(error, "response", None), "status_code", None)
    reason = f"{type(error).__name__}{f' (HTTP {status})' if status else ''}: {_first_line(error)}"
    return HubPushError(
        f"Pushing {what} failed: {reason}. {committed} {not_committed} Nothing was changed locally; re-running the "
        "push is safe (it replaces the files on the Hub)."
    )


def push_distilled_to_hub(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
) -> str:
    """Pushes a distilled set saved by [`DistillTrainer.save`] to a Hub dataset repository.

    Two commits: `Dataset.push_to_hub` uploads `dataset/` as parquet (with the `dataset_info`/`configs` card
    metadata `datasets` writes), then one commit adds `distill_config.json`, `eval_results.json`,
    `synthetic_grid.png` and the dataset card (our YAML merged into the card `datasets` wrote; our body). Pushing
    again replaces the files and keeps the card's metadata.

    Args:
        output_dir (`str` or `os.PathLike`): The folder written by `DistillTrainer.save` / `hf-distill distill`.
        repo_id (`str`): The dataset repository (`"owner/name"`; created if missing).
        private (`bool`, *optional*): Visibility of a newly created repository (default: public, or the
            organisation's default).
        token (`str`, *optional*): Hugging Face token with write access (default: the logged-in one).
        commit_message (`str`, *optional*): Message of the commits.
        revision (`str`, *optional*): Branch to push to (created if missing; default: the main branch).

    Returns:
        `str`: The URL of the last commit.

    Raises:
        ValueError: If `output_dir` is not a complete output folder (nothing is pushed).
        HubPushError: If the Hub refuses an upload or cannot be reached; the message says what was committed.
            The local folder is never modified.

    Example:

    ```python
    >>> from hf_distill.hub import push_distilled_to_hub
    >>> url = push_distilled_to_hub("outputs/mnist-dm-ipc10", "me/mnist-dm-ipc10")
    ```
    """
    import datasets.config
    from datasets import load_from_disk

    output_dir = Path(output_dir)
    if not (output_dir / DATASET_DIR).is_dir():
        raise ValueError(
            f"{output_dir / DATASET_DIR} not found: pass a folder written by DistillTrainer.save / hf-distill distill."
        )
    # Rendered before anything is uploaded, so an incomplete folder fails with nothing pushed.
    card = render_dataset_card(output_dir, repo_id, token=token)
    dataset = load_from_disk(str(output_dir / DATASET_DIR))
    extra_files = [name for name in (CONFIG_NAME, EVAL_RESULTS_NAME, GRID_NAME) if (output_dir / name).is_file()]
    what = f"{output_dir} to the dataset repository {repo_id!r}"
    try:
        data_commit = dataset.push_to_hub(
            repo_id,
            split="train",
            private=private,
            token=token,
            revision=revision,
            commit_message=commit_message or "Upload distilled dataset (hf_distill)",
        )
    except _PUSH_ERRORS as error:
        raise _push_failure(
            what,
            error,
            "The dataset commit was not made (the repository may have been created).",
            f"Not pushed: {', '.join(['the data', *extra_files, 'the dataset card'])}.",
        ) from error

    pushed_id = data_commit.repo_url.repo_id or repo_id
    if pushed_id != repo_id:  # `repo_id` had no namespace: the usage snippet needs the full id
        card = render_dataset_card(output_dir, pushed_id, token=token)
    api = HfApi(endpoint=datasets.config.HF_ENDPOINT, token=token)
    try:
        # The card `datasets` just wrote holds the split sizes and data files (`dataset_info`, `configs`).
        card = merge_card(card, _existing_card(api, DatasetCard, pushed_id, data_commit.oid))
        operations = [CommitOperationAdd("README.md", str(card).encode())]
        operations += [CommitOperationAdd(name, str(output_dir / name)) for name in extra_files]
        info = api.create_commit(
            pushed_id,
            operations,
            commit_message=f"{commit_message} (card and metadata)" if commit_message else "Add card (hf_distill)",
            repo_type="dataset",
            revision=revision,
            # Fails rather than overwrite a card someone edited since the data commit.
            parent_commit=data_commit.oid if not (revision or "").startswith("refs/pr/") else None,
        )
    except _PUSH_ERRORS as error:
        raise _push_failure(
            what,
            error,
            f"The data was committed ({data_commit.commit_url}).",
            f"Not pushed: {', '.join([*extra_files, 'the dataset card'])}.",
        ) from error
    logger.info("Pushed %s to %s.", output_dir, info.commit_url)
    return info.commit_url


# ---------------------------------------------------------------------------------------------------------------------
# Student model card
# ---------------------------------------------------------------------------------------------------------------------


def _name_of(value: Any, *keys: str) -> str | None:
    """A repository id or path from a string or a dict recording one under one of `keys`."""
    if isinstance(value, dict):
        return next((str(value[k]) for k in keys if value.get(k)), None)
    return str(value) if value else None


def _model_link(name: str | None) -> str:
    if not name:
        return "an unrecorded model"
    return f"[{name}](https://huggingface.co/{name})" if is_hub_id(name) else f"`{name}`"


def _dataset_link(name: str | None) -> str:
    if name and is_hub_id(name):
        return f"[{name}](https://huggingface.co/datasets/{name})"
    return f"the local distilled set `{Path(name).name}`" if name else "a distilled set"


def _describe_teacher(teacher: Any) -> str:
    """The teacher recorded in kd_config.json: a `{"name_or_path", "description", "test_accuracy"}` dict or a name."""
    if not isinstance(teacher, dict):
        return _model_link(teacher) if teacher else "none (plain cross-entropy on the distilled labels)"
    name = _name_of(teacher, "name_or_path", "model_name_or_path", "repo_id")
    description = teacher.get("description") or teacher.get("model_type")
    if name and is_hub_id(name):
        text = _model_link(name) + (f" ({description})" if description else "")
    else:
        text = description or _model_link(name)
    accuracy = teacher.get("test_accuracy", teacher.get("accuracy"))
    return text + (f", {accuracy:.2f}% test accuracy" if isinstance(accuracy, int | float) else "")


def _distilled_size(kd: dict, distilled: str | None) -> str | None:
    """`'30 images, 10 per class'` from kd_config.json, or from the distilled set's folder when it is local."""
    count, ipc = kd.get("num_distilled_images"), kd.get("images_per_class")
    if (count is None or ipc is None) and distilled and (Path(distilled) / CONFIG_NAME).is_file():
        metadata = json.loads((Path(distilled) / CONFIG_NAME).read_text())
        ipc = metadata.get("images_per_class")
        count = ipc * metadata["num_classes"] if ipc and metadata.get("num_classes") else None
    if count is None:
        return None
    return f"{count} images, {ipc} per class" if ipc else f"{count} images"


def render_student_card(
    student_dir: str | os.PathLike,
    repo_id: str | None = None,
    *,
    token: str | bool | None = None,
    license: str | None = None,
    versions: dict[str, str] | None = None,
) -> ModelCard:
    """Renders the model card of a student trained with knowledge distillation on a distilled set.

    Args:
        student_dir (`str` or `os.PathLike`): The KD output folder: the model (`config.json`, weights),
            `preprocessor_config.json`, `kd_config.json` (teacher, distilled dataset and its source, `base_model`,
            `alpha`, `temperature`, training settings) and `eval_results.json` (`accuracy` in percent, `test_split`,
            `dataset`, `num_test_images`, `epochs`, ...).
        repo_id (`str`, *optional*): The model repository the card is for (usage snippet, model name).
        token (`str` or `bool`, *optional*): Token to read the source dataset's card (for its license).
        license (`str`, *optional*): The card's license (default: the source dataset card's; `unknown` when it has
            none).
        versions (`dict[str, str]`, *optional*): The framework versions the card lists (default: the installed
            libraries, see [`framework_versions`]).

    Returns:
        `huggingface_hub.ModelCard`: YAML with `model-index` (accuracy on the real test split), `datasets`,
        `base_model` (only for a student that started from a Hub checkpoint), tags, license, `pipeline_tag` and
        `library_name`, and a body built from `templates/model_card.md`.
    """
    student_dir = Path(student_dir)
    hint = "pass a folder written by hf_distill's knowledge distillation (hf-distill kd)"
    kd = _read_json(student_dir / KD_CONFIG_NAME, required=True, hint=hint)
    model_config = _read_json(student_dir / "config.json", required=True, hint=hint)
    results = _read_json(student_dir / EVAL_RESULTS_NAME)

    distilled_entry = kd.get("distilled_dataset")
    distilled = _name_of(distilled_entry, "id", "repo_id", "path", "name", "dataset")
    source_entry = (
        (distilled_entry.get("source") if isinstance(distilled_entry, dict) else None)
        or kd.get("distilled_source")
        or kd.get("source_dataset")
    )
    source = results.get("dataset") or _name_of(source_entry, "dataset", "id", "repo_id", "path")
    if source is None and distilled and (Path(distilled) / CONFIG_NAME).is_file():
        source = (json.loads((Path(distilled) / CONFIG_NAME).read_text()).get("source") or {}).get("dataset")
    base_model = kd.get("base_model") or None
    test_split = results.get("test_split") or "test"
    accuracy = results.get("accuracy")
    model_name = (repo_id or student_dir.name).split("/")[-1]
    architecture = describe_architecture(model_config)
    license_ = license or source_license(source, token=token) or "unknown"

    eval_results = None
    if isinstance(accuracy, int | float):
        eval_results = [
            EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                # A Hub id, or a name: a local path means nothing on the Hub.
                dataset_type=source if is_hub_id(source) else _source_short_name(source),
                dataset_name=_source_short_name(source),
                dataset_split=test_split,
                metric_type="accuracy",
                metric_name="Accuracy",
                metric_value=round(float(accuracy) / 100.0, 4),
            )
        ]
    card_data = ModelCardData(
        license=license_,
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=list(STUDENT_TAGS),
        datasets=[name for name in (distilled, source) if is_hub_id(name)] or None,
        base_model=base_model,
        metrics=["accuracy"],
        model_name=model_name,
        eval_results=eval_results,
    )
    training_args = kd.get("training_args") if isinstance(kd.get("training_args"), dict) else {}
    settings = [
        (label, kd[key] if kd.get(key) is not None else training_args[key])
        for key, label in _KD_SETTINGS
        if kd.get(key) is not None or training_args.get(key) is not None
    ]
    if kd.get("lr_decay_at_half"):
        # KDTrainer multiplies the lr by 0.1 at half the steps on top of the Trainer's schedule (the protocol's).
        settings.append(("Learning-rate decay", "x0.1 at half the training steps"))
    if kd.get("distilled_method"):
        settings.insert(0, ("Distillation method of the training set", f"`{kd['distilled_method']}`"))
    if results.get("seconds") is not None:
        settings.append(("Training time", f"{results['seconds']} s"))
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        repo_id=repo_id or "<user>/<model-name>",
        model_title=model_name,
        architecture=architecture,
        needs_hf_distill=model_config.get("model_type") == "hf_distill_convnet",
        num_labels=len(model_config.get("id2label") or {}) or model_config.get("num_labels", "?"),
        teacher=_describe_teacher(kd.get("teacher")),
        distilled_link=_dataset_link(distilled),
        distilled_size=_distilled_size(kd, distilled),
        source_link=_source_link(source),
        source_id=source if is_hub_id(source) else None,
        test_split=test_split,
        accuracy=f"{accuracy:.2f}" if isinstance(accuracy, int | float) else None,
        has_teacher=bool(kd.get("teacher")),
        num_test_images=results.get("num_test_images"),
        alpha=results.get("alpha", kd.get("alpha")),
        temperature=results.get("temperature", kd.get("temperature")),
        epochs=results.get("epochs", kd.get("num_train_epochs")),
        settings=settings,
        versions=versions or framework_versions(kd.get("hf_distill_version")),
    )


def push_student_to_hub(
    student_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Pushes a KD student folder (model, image processor, `kd_config.json`, `eval_results.json`) with its card.

    One commit holds the top-level JSON and safetensors files of `student_dir` and the model card (merged with the
    card already in the repository, if any). Checkpoint folders and logs are not uploaded.

    Args:
        student_dir (`str` or `os.PathLike`): The KD output folder (see [`render_student_card`]).
        repo_id (`str`): The model repository (`"owner/name"`; created if missing).
        private (`bool`, *optional*): Visibility of a newly created repository.
        token (`str`, *optional*): Hugging Face token with write access.
        commit_message (`str`, *optional*): Message of the commit.

    Returns:
        `str`: The commit URL.

    Raises:
        ValueError: If `student_dir` is not a KD output folder (nothing is pushed).
        HubPushError: If the Hub refuses the upload or cannot be reached (nothing is committed).

    Example:

    ```python
    >>> from hf_distill.hub import push_student_to_hub
    >>> url = push_student_to_hub("outputs/kd-student", "me/mnist-student")
    >>> # AutoModelForImageClassification.from_pretrained("me/mnist-student") now loads it
    ```
    """
    student_dir = Path(student_dir)
    card = render_student_card(student_dir, repo_id, token=token)
    files = sorted(
        path.name
        for path in student_dir.iterdir()
        if path.is_file() and path.suffix in _STUDENT_SUFFIXES and not path.name.endswith(".tmp")
    )
    if not any(name.endswith(".safetensors") for name in files):
        raise ValueError(f"No .safetensors weights in {student_dir}: save the student with save_pretrained first.")
    return push_model_folder(
        student_dir,
        repo_id,
        files,
        card,
        lambda pushed_id: render_student_card(student_dir, pushed_id, token=token),
        private=private,
        token=token,
        commit_message=commit_message or "Upload student model (hf_distill)",
    )


def push_model_folder(
    folder: Path,
    repo_id: str,
    files: list[str],
    card: ModelCard,
    render_card_for: Callable[[str], ModelCard],
    private: bool | None,
    token: str | None,
    commit_message: str,
) -> str:
    """Creates the model repository if needed and commits `files` of `folder` and the card in ONE commit.

    `render_card_for(repo_id)` re-renders the card when the Hub adds a namespace to `repo_id` (its usage snippet
    names the repository); a card already in the repository is merged in (its metadata kept).

    Raises:
        HubPushError: If the Hub refuses the upload or cannot be reached (nothing is committed).
    """
    api = HfApi(token=token)
    try:
        pushed_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if pushed_id != repo_id:
            card = render_card_for(pushed_id)
        card = merge_card(card, _existing_card(api, ModelCard, pushed_id, None))
        operations = [CommitOperationAdd("README.md", str(card).encode())]
        operations += [CommitOperationAdd(name, str(folder / name)) for name in files]
        info = api.create_commit(pushed_id, operations, commit_message=commit_message)
    except _PUSH_ERRORS as error:
        raise _push_failure(
            f"{folder} to the model repository {repo_id!r}",
            error,
            "No commit was made (the repository may have been created).",
            f"Not pushed: {', '.join([*files, 'the model card'])}.",
        ) from error
    logger.info("Pushed %s to %s.", folder, info.commit_url)
    return info.commit_url
