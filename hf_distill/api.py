"""`distill_dataset()`: the one-call entry point over `DistillTrainer`."""

import os

from datasets import Dataset, DatasetDict
from transformers import PretrainedConfig, PreTrainedModel

from .config import DistillConfig
from .data import load_source
from .trainer import DistillTrainer


def distill_dataset(
    dataset: str | os.PathLike | Dataset | DatasetDict,
    config: DistillConfig,
    model: str | PretrainedConfig | PreTrainedModel | None = None,
    *,
    dataset_config_name: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    eval_dataset: Dataset | None = None,
    evaluate: bool = False,
    return_trainer: bool = False,
) -> Dataset | DistillTrainer:
    """Distills a labelled image dataset into `config.images_per_class` images per class.

    Args:
        dataset (`str`, `os.PathLike`, `Dataset` or `DatasetDict`): A Hub dataset id, a local folder (parquet,
            imagefolder or `save_to_disk`), `"sklearn:digits"` (a small offline demo set), or an in-memory
            dataset. Splits are taken from `config.train_split` / `config.test_split`.
        config ([`DistillConfig`]): The method and its hyper-parameters, e.g.
            `DistributionMatchingConfig(images_per_class=10)`.
        model (`str`, `PretrainedConfig` or `PreTrainedModel`, *optional*): Architecture to distill with
            (default: the papers' ConvNet, or `config.model_name_or_path`).
        dataset_config_name (`str`, *optional*): Hub dataset configuration name.
        revision (`str`, *optional*), token (`str` or `bool`, *optional*): Passed to `load_dataset`.
        eval_dataset (`Dataset`, *optional*): The real test split, when `dataset` is a single `Dataset`.
        evaluate (`bool`, *optional*, defaults to `False`): Run the evaluation protocol after distilling
            (results on the trainer's `eval_results`; saved by `trainer.save`).
        return_trainer (`bool`, *optional*, defaults to `False`): Return the `DistillTrainer` (to `save`,
            `evaluate` or push) instead of the dataset.

    Returns:
        `datasets.Dataset` with `image`, `pixel_values` and `label` columns (or the trainer).

    Example:

    ```python
    >>> from hf_distill import DistributionMatchingConfig, distill_dataset
    >>> config = DistributionMatchingConfig(images_per_class=10, num_iterations=200)
    >>> distilled = distill_dataset("sklearn:digits", config)
    ```
    """
    train, test = load_source(
        dataset,
        train_split=config.train_split,
        test_split=config.test_split,
        name=dataset_config_name,
        revision=revision,
        token=token,
        # A run that will evaluate fails here, before distilling, when its test split is missing.
        require_test_split=evaluate and eval_dataset is None,
        streaming=config.streaming,
    )
    test = eval_dataset if eval_dataset is not None else test
    source = {
        "dataset": _source_name(dataset),
        "config_name": dataset_config_name,
        "revision": revision,
        "train_split": config.train_split,
        "test_split": config.test_split if test is not None else None,
    }
    trainer = DistillTrainer(config, train, test, model=model, source=source)
    trainer.train()
    if evaluate:
        trainer.evaluate()
    return trainer if return_trainer else trainer.to_dataset()


def _source_name(dataset) -> str | None:
    """A printable name of the source: the id or path given, else the builder name `datasets` recorded."""
    if isinstance(dataset, str | os.PathLike):
        return str(dataset)
    first = next(iter(dataset.values())) if isinstance(dataset, DatasetDict) else dataset
    return first.info.dataset_name or None
