"""Every push to the Hugging Face Hub: a distilled set, a KD student, expert trajectories, each with its card.

- [`push_distilled_to_hub`]: a folder written by [`DistillTrainer.save`] (the data with `Dataset.push_to_hub`,
  then one commit with `distill_config.json`, `eval_results.json`, the grid image and the card).
- [`push_student_to_hub`] / [`push_experts_to_hub`]: a model folder and its card ([`push_model_folder`]).

JSON files go without the local paths they record. The cards are rendered by `hf_distill.cards`; reaching the Hub
(ids, quick access checks, clear errors) is `hf_distill.hub_utils`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import (
    CommitOperationAdd,
    DatasetCard,
    HfApi,
    ModelCard,
    RepoCard,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .cards import merge_card, render_dataset_card
from .constants import (
    CONFIG_NAME,
    CROSS_ARCHITECTURE_RESULTS_NAME,
    DATASET_DIR,
    EVAL_RESULTS_NAME,
    EXPERTS_INDEX_NAME,
    GRID_NAME,
    ZCA_NAME,
)
from .hub_utils import CONNECTION_ERRORS, first_line, public_text
from .student_cards import render_experts_card, render_student_card
from .trajectories import ExpertTrajectories

logger = logging.getLogger(__name__)

# Errors a push can end with that say nothing about the local folder: the Hub answered an error, or was unreachable.
_PUSH_ERRORS: tuple[type[Exception], ...] = (HfHubHTTPError, *CONNECTION_ERRORS)
# Student files worth publishing (checkpoints, logs and pickled training arguments are left behind).
_STUDENT_SUFFIXES = (".json", ".safetensors", ".txt", ".model")


def _upload(path: Path) -> CommitOperationAdd:
    """The commit operation of a local file; a JSON file goes without the local paths it records (see
    [`public_text`]): a push publishes a run, not the layout of the machine it ran on."""
    if path.suffix == ".json":
        payload = public_text(json.loads(path.read_text()))
        return CommitOperationAdd(path.name, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())
    return CommitOperationAdd(path.name, str(path))


class HubPushError(RuntimeError):
    """A push to the Hub failed. The message says what was and was not committed; re-running the push is safe."""


def _existing_card(api: HfApi, card_class: type[RepoCard], repo_id: str, revision: str | None) -> RepoCard | None:
    """The README.md card of a Hub repository at `revision`, or `None` when it has none."""
    try:
        path = api.hf_hub_download(repo_id, "README.md", repo_type=card_class.repo_type, revision=revision)
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
        return None
    return card_class.load(path, ignore_metadata_errors=True)


def _push_failure(what: str, error: BaseException, committed: str, not_committed: str) -> HubPushError:
    status = getattr(getattr(error, "response", None), "status_code", None)
    reason = f"{type(error).__name__}{f' (HTTP {status})' if status else ''}: {first_line(error)}"
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
    extra_files = [
        name
        for name in (CONFIG_NAME, EVAL_RESULTS_NAME, CROSS_ARCHITECTURE_RESULTS_NAME, GRID_NAME, ZCA_NAME)
        if (output_dir / name).is_file()
    ]
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
        operations += [_upload(output_dir / name) for name in extra_files]
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
        operations += [_upload(folder / name) for name in files]
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


def push_experts_to_hub(
    expert_dir: str | os.PathLike,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Pushes a folder written by [`train_experts`] to a Hub model repository, with a model card.

    One commit holds `experts.json`, every expert file it lists and `README.md` (merged with a card already in
    the repository). [`ExpertTrajectories.from_pretrained`] then reads the repository, and
    `TrajectoryMatchingConfig(expert_path=repo_id)` distills with it.

    Args:
        expert_dir (`str` or `os.PathLike`): The folder.
        repo_id (`str`): The model repository (`"owner/name"`; created if missing).
        private (`bool`, *optional*): Visibility of a newly created repository.
        token (`str`, *optional*): Hugging Face token with write access (default: the logged-in one).
        commit_message (`str`, *optional*): Message of the commit.

    Returns:
        `str`: The commit URL.

    Raises:
        ValueError: `expert_dir` is not a complete expert folder (nothing is pushed).
        [`~hf_distill.hub.HubPushError`]: The Hub refused the upload or could not be reached (nothing is committed).
    """
    expert_dir = Path(expert_dir)
    trajectories = ExpertTrajectories.from_pretrained(expert_dir)  # checks the index and that every file exists
    card = render_experts_card(expert_dir, repo_id)
    files = [EXPERTS_INDEX_NAME, *(path.name for path in trajectories.files)]
    return push_model_folder(
        expert_dir,
        repo_id,
        files,
        card,
        lambda pushed_id: render_experts_card(expert_dir, pushed_id),
        private=private,
        token=token,
        commit_message=commit_message or "Upload expert trajectories (hf_distill)",
    )
