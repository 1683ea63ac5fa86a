"""Reaching the Hugging Face Hub: ids vs local paths, one quick access check, and clear errors.

- [`check_hub_access`] / [`hub_error`]: one request without retries before a long load, and the mapping of Hub
  exceptions (unknown repository, gated, bad revision, no connection, offline mode) to one clear error.
- [`is_hub_id`] / [`looks_like_local_path`]: what a string names.

A leaf module: it imports nothing of this package.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import datasets.config
from datasets.exceptions import DatasetNotFoundError
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

try:  # huggingface_hub >= 1.0 talks HTTP through httpx (re-exported here, as `datasets` imports it)
    from huggingface_hub.utils import httpx as _httpx

    _TRANSPORT_ERRORS: tuple[type[Exception], ...] = (_httpx.TransportError,)
except ImportError:  # pragma: no cover - older huggingface_hub (requests): its errors are ConnectionError/OSError
    _TRANSPORT_ERRORS = ()

#: Errors that mean the Hub could not be reached at all.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (ConnectionError, TimeoutError, *_TRANSPORT_ERRORS)


def looks_like_local_path(name: str) -> bool:
    """Whether `name` is written as a path (`/`, `./`, `../`, `~`, a Windows drive) rather than a Hub id."""
    return name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or (os.name == "nt" and ":\\" in name)


#: An absolute POSIX path (or `~/...`) inside a text, starting a word (at the start, after a space, a quote, `(`,
#: `[` or `=`), up to its last component.
_ABSOLUTE_PATH = re.compile(r"(?<![^\s'\"`(=\[])~?/(?:[^\s/'\"`<>()\[\],]+/)*([^\s/'\"`<>()\[\],]+)")


def public_text(value: Any) -> Any:
    """`value` with every absolute local path (in strings, lists and dicts, at any depth) replaced by its last
    component: what is published (cards, configs pushed to the Hub) names a local dataset or model by its folder
    name, never by where it lies on the user's machine. A value that is a whole path becomes `./<name>` (still read
    as a local name, not as a Hub id). Hub ids and relative names are kept."""
    if isinstance(value, str):
        whole = _ABSOLUTE_PATH.fullmatch(value)
        if whole:
            return f"./{whole.group(1)}"
        return _ABSOLUTE_PATH.sub(lambda match: match.group(1), value)
    if isinstance(value, list | tuple):
        return type(value)(public_text(item) for item in value)
    if isinstance(value, dict):
        return {key: public_text(item) for key, item in value.items()}
    return value


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def hub_endpoint(repo_type: str) -> str:
    if repo_type == "dataset":
        # `load_dataset` and `push_to_hub` use the endpoint `datasets` read at import time.
        return datasets.config.HF_ENDPOINT.rstrip("/")
    return hub_constants.ENDPOINT.rstrip("/")


def is_offline(repo_type: str) -> bool:
    if hub_constants.is_offline_mode():
        return True
    if repo_type == "dataset":
        return bool(datasets.config.HF_HUB_OFFLINE)
    return False


def repo_url(repo_id: str, repo_type: str, endpoint: str | None = None) -> str:
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"{endpoint or hub_endpoint(repo_type)}/{prefix}{repo_id}"


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
    endpoint = endpoint or hub_endpoint(repo_type)
    url = repo_url(repo_id, repo_type, endpoint)
    detail = first_line(error)
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
    if isinstance(error, LocalEntryNotFoundError):
        # What `hf_hub_download` raises when the Hub cannot be reached and the file is not cached.
        return RuntimeError(
            f"Could not reach the Hugging Face Hub at {endpoint} to download from the {repo_type} {repo_id!r}, and "
            f"the file is not in the local cache ({detail}). Check your network connection (and HF_ENDPOINT or "
            "proxy settings), or pass a local folder."
        )
    if isinstance(error, CONNECTION_ERRORS):
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
    if is_offline(repo_type):
        return
    endpoint = hub_endpoint(repo_type)
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


def hub_download(
    repo_id: str,
    filename: str,
    *,
    repo_type: str = "model",
    revision: str | None = None,
    token: str | bool | None = None,
    missing_hint: str = "",
) -> Path:
    """`hf_hub_download` with one clear error per cause: the Hub unreachable (fast, never taken for a missing file),
    an unknown or gated repository or revision, or a repository without `filename` (`missing_hint` says what the
    repository should have been). Call [`check_hub_access`] once before a series of downloads."""
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type, revision=revision, token=token))
    except Exception as error:
        clear = hub_error(error, repo_id, repo_type=repo_type, revision=revision)
        if clear is None and isinstance(error, EntryNotFoundError):
            clear = ValueError(f"The {repo_type} repository {repo_id!r} has no {filename}{missing_hint}.")
        if clear is None:
            raise
        raise clear from None
