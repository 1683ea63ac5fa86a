"""`DistillTrainer`: runs any registered method on one or many processes through Accelerate.

Classes are shared out between processes (class `c` goes to process `c % num_processes`); each process computes
the matching loss of its classes, the gradients on the synthetic set are summed across processes, and every
process takes the same optimiser step. All randomness is derived from `(seed, iteration, ...)` (see
`hf_distill.seeding`), so a resumed run and a multi-process run reach the same synthetic set as an uninterrupted
single-process run.
"""

import contextlib
import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from datasets import Dataset, load_from_disk
from tqdm.auto import tqdm
from transformers import PretrainedConfig, PreTrainedModel

from .checkpointing import (
    rotate_checkpoints,
)
from .config import DistillConfig
from .constants import CONFIG_NAME, DATASET_DIR, ZCA_NAME
from .data import load_source
from .hub import push_distilled_to_hub
from .methods import SelectionContext
from .modalities import ImageData
from .preparation import prepare, resolve_architecture
from .registry import get_method_class, methods_for_modality
from .run_folder import (
    check_output_dir,
    check_saved_set,
    checkpoint_fingerprint,
    find_checkpoint,
    fingerprint_differences,
    read_checkpoint,
    read_run_metadata,
    remove_checkpoints,
    run_fingerprint,
    settings_not_recorded,
    write_checkpoint,
    write_run,
)
from .seeding import derive_generator
from .set_evaluation import SetEvaluationMixin
from .synthetic import SyntheticSet
from .training import resolve_mixed_precision

logger = get_logger(__name__)


class DistillTrainer(SetEvaluationMixin):
    """Distills a labelled image dataset with the method named by `config.method`.

    Args:
        config ([`DistillConfig`]): The method's config (e.g. [`DistributionMatchingConfig`]).
        train_dataset (`datasets.Dataset` or [`ImageData`]): The split to distill.
        eval_dataset (`datasets.Dataset` or [`ImageData`], *optional*): The real test split for evaluation.
        model (`str`, `PretrainedConfig` or `PreTrainedModel`, *optional*): The architecture to distill with;
            defaults to `config.model_name_or_path`, then to the papers' ConvNet.
        accelerator (`accelerate.Accelerator`, *optional*): Created from the config when not given.
        source (`dict`, *optional*): Where the data came from (dataset id, config name, splits), recorded in
            `distill_config.json` and the card.
        build_initial_set (`bool`, *optional*, defaults to `True`): Make the method's starting set now (coresets
            select, teacher-based methods train their teacher). `False` leaves `synthetic` empty for
            [`load_distilled`] to fill ([`from_output_dir`] does so): re-evaluating a saved coreset must not train
            its selection network again.

    Example:

    ```python
    >>> from hf_distill import DistillTrainer, DistributionMatchingConfig
    >>> trainer = DistillTrainer(DistributionMatchingConfig(images_per_class=10, num_iterations=100), train, test)
    >>> trainer.train()
    >>> trainer.evaluate()
    >>> trainer.save("outputs/mnist-dm-ipc10")
    ```
    """

    def __init__(
        self,
        config: DistillConfig,
        train_dataset: Dataset | ImageData,
        eval_dataset: Dataset | ImageData | None = None,
        model: str | PretrainedConfig | PreTrainedModel | None = None,
        accelerator: Accelerator | None = None,
        source: dict | None = None,
        build_initial_set: bool = True,
    ):
        self.config = config
        trackers = None if config.report_to in ("none", "", None) else config.report_to.split(",")
        if accelerator is None:
            # Under `accelerate launch --multi_gpu` on a machine without CUDA, processes only join one gloo group
            # when Accelerate is told to use the CPU.
            on_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
            accelerator = Accelerator(log_with=trackers, project_dir=config.output_dir, cpu=on_cpu)
        self.accelerator = accelerator
        mixed_precision = resolve_mixed_precision(config.mixed_precision, accelerator.device)
        if mixed_precision != config.mixed_precision:  # "auto": the run records what it used
            config = self.config = dataclasses.replace(config, mixed_precision=mixed_precision)
        self.source = dict(source or {})
        method_class = get_method_class(config.method)  # unknown names fail here, before data preparation

        # With data on disk the main process of each machine decodes each split once; the others then read its store.
        first = accelerator.local_main_process_first() if config.data_on_disk else contextlib.nullcontext()
        with first:
            prepared = prepare(config, train_dataset, eval_dataset, model)
        self.train_data, self.test_data = prepared.train_data, prepared.test_data
        self.model_config = prepared.model_config
        self.dsa_strategy, self.augment = prepared.dsa_strategy, prepared.augment
        self.prepared = prepared
        self.modality = prepared.modality
        eval_augment = self.modality.augmentation(config.eval_dsa_strategy, self.train_data.class_names)
        self.eval_dsa_strategy = eval_augment.strategy
        self.train_data.inputs = self.train_data.inputs.to(self.accelerator.device)
        if self.modality.name not in method_class.modalities:
            raise ValueError(
                f"Method {config.method!r} does not support {self.modality.name} data yet (it supports: "
                f"{', '.join(method_class.modalities)}). Methods for {self.modality.name}: "
                f"{', '.join(methods_for_modality(self.modality.name))}."
            )
        self.method = method_class(config, prepared)
        # Resolved now, so an unreachable or mistyped evaluation model fails before distilling, not after.
        self._eval_architecture = None
        if config.eval_model_name_or_path:
            self._eval_architecture = resolve_architecture(config.eval_model_name_or_path)

        self.iteration = 0
        self.log_history: list[dict] = []
        self.distill_seconds = 0.0
        self.eval_results: dict = {}
        self.selected_rows: torch.LongTensor | None = None
        # What setup, selection and one-pass synthesis may use: the run's config, data and accelerator.
        self.selection_context = SelectionContext(config, self.prepared, self.accelerator)
        self.synthetic: SyntheticSet | None = None
        self.optimizer = None
        if build_initial_set:
            self.method.setup(self.selection_context)
            self.synthetic = self._initial_synthetic_set().to(self.accelerator.device)
            self.optimizer = self._create_optimizer()

    @classmethod
    def from_output_dir(
        cls,
        output_dir: str | os.PathLike,
        dataset: str | None = None,
        dataset_config_name: str | None = None,
        load_distilled: bool = True,
        **config_overrides,
    ) -> "DistillTrainer":
        """Rebuilds the trainer of a saved run (same config and data), e.g. to re-evaluate its set.

        Args:
            output_dir (`str` or `os.PathLike`): A folder written by [`DistillTrainer.save`].
            dataset (`str`, *optional*): The source dataset (default: the one recorded in `distill_config.json`).
            dataset_config_name (`str`, *optional*): Its configuration name (default: the recorded one).
            load_distilled (`bool`, *optional*, defaults to `True`): Load the saved set from `output_dir/dataset`;
                `False` keeps the initial set (rebuilt exactly: every draw is seeded).
            **config_overrides: Config fields to change (e.g. `eval_model_name_or_path`).
        """
        output_dir = Path(output_dir)
        metadata = read_run_metadata(output_dir)
        config = DistillConfig.from_dict({**metadata, **config_overrides})
        source = metadata.get("source") or {}
        dataset = dataset or source.get("dataset")
        if not dataset:
            raise ValueError(
                f"No source dataset is recorded in {output_dir / CONFIG_NAME}: pass `dataset=` "
                "(`--dataset` with `hf-distill evaluate`)."
            )
        train, test = load_source(
            dataset,
            train_split=config.train_split,
            test_split=config.test_split,
            name=dataset_config_name or source.get("config_name"),
            revision=source.get("revision"),
            streaming=config.streaming,
        )
        trainer = cls(config, train, test, source=source, build_initial_set=not load_distilled)
        recorded = (metadata.get("class_names"), metadata.get("image_shape"))
        current = (trainer.train_data.class_names, list(trainer.train_data.example_shape))
        if None not in recorded and tuple(map(list, recorded)) != tuple(map(list, current)):
            raise ValueError(
                f"{output_dir} was distilled from data with classes {recorded[0]} and inputs {recorded[1]}, but "
                f"{dataset!r} has classes {current[0]} and inputs {current[1]}. Pass its source with --dataset."
            )
        if load_distilled:
            trainer.load_distilled(output_dir)
        return trainer

    def load_distilled(self, output_dir: str | os.PathLike) -> None:
        """Replaces the synthetic set with the one saved in `output_dir` (and its iteration count and seconds)."""
        output_dir = Path(output_dir)
        metadata = read_run_metadata(output_dir)
        distilled = load_from_disk(str(output_dir / DATASET_DIR))
        check_saved_set(output_dir, metadata, distilled.num_rows, distilled.features["label"].names)
        images = SyntheticSet.from_dataset(
            distilled,
            metadata["image_mean"],
            metadata["image_std"],
            step_size=metadata.get("learned_step_sizes", metadata.get("learned_lr")),
            modality=self.modality,
            zca=getattr(self.train_data, "zca", None),
        )
        self.synthetic = images.to(self.accelerator.device)
        self.optimizer = self._create_optimizer()  # over the loaded set's tensors, not the ones it replaced
        rows = metadata.get("selected_rows")  # a coreset: the real rows it kept
        self.selected_rows = torch.tensor(rows, dtype=torch.long) if rows is not None else None
        self.iteration = metadata.get("iterations_completed", 0)
        self.distill_seconds = metadata.get("distill_seconds", 0.0)
        self.method.load_artifacts(output_dir)

    # ------------------------------------------------------------------ set-up

    def _initial_synthetic_set(self) -> SyntheticSet:
        data, config = self.train_data, self.config
        classes = list(range(data.num_classes))
        learned_targets = {}
        if self.method.selects_real_rows:
            started = time.perf_counter()
            self.selected_rows = self.method.select(self.selection_context).cpu()
            self.distill_seconds = time.perf_counter() - started  # a coreset's cost is its selection
            images = self.modality.to_learnable(data.inputs[self.selected_rows.to(data.inputs.device)])
        elif self.method.synthesizes_once:
            started = time.perf_counter()
            images, label_logits = self.method.synthesize(self.selection_context)
            self.distill_seconds = time.perf_counter() - started  # its one pass (a teacher trains in setup)
            if label_logits is not None:
                learned_targets["label_logits"] = label_logits
        elif config.init == "real":
            rows = self.method.sample_real(classes, config.images_per_class, "init").to(data.inputs.device)
            images = self.modality.to_learnable(data.inputs[rows])
        else:
            if not isinstance(data, ImageData):
                raise ValueError(f"init={config.init!r} is for images; {self.modality.name} starts from real rows.")
            shape = (data.num_classes * config.images_per_class, *data.image_shape)
            images = torch.randn(shape, generator=derive_generator(config.seed, "init-noise"))
        learnable = not self.method.one_pass
        for flag in ("learn_soft_labels", "learn_regression_targets"):
            if getattr(config, flag, False) and not self.method.uses_labels:
                raise ValueError(
                    f"{flag} has no effect with method {config.method!r}: its loss does not use labels. "
                    f"Set {flag}=False, or use a method that trains on the labels (dc, dsa, mtt)."
                )
        labels = torch.arange(data.num_classes).repeat_interleave(config.images_per_class)
        if getattr(config, "learn_soft_labels", False):
            learned_targets["label_logits"] = SyntheticSet.initial_label_logits(labels, data.num_classes)
        if getattr(config, "learn_regression_targets", False):
            learned_targets["regression_targets"] = SyntheticSet.initial_regression_targets(labels, data.num_classes)
        return SyntheticSet(
            images.cpu(),
            data.num_classes,
            data.class_names,
            getattr(data, "mean", []),
            getattr(data, "std", []),
            learnable,
            step_size=None if self.method.one_pass else self.method.initial_step_size(),
            modality=self.modality,
            zca=getattr(data, "zca", None),
            source_previews=self._source_previews(),
            **learned_targets,
        )

    def _source_previews(self) -> list | None:
        """What a selected set shows for each row: the real sentence for text (its preview would be the tokenizer's
        rendering of it); `None` (the modality's preview) otherwise."""
        texts = getattr(self.train_data, "texts", None)
        if self.selected_rows is None or texts is None:
            return None
        return [texts[row] for row in self.selected_rows.tolist()]

    def _create_optimizer(self) -> torch.optim.Optimizer | None:
        if self.method.one_pass:
            return None
        groups = self.method.optimizer_parameters(self.synthetic)
        optimizer = self.method.build_optimizer(groups)
        if optimizer is None and self.config.optimizer == "adam":
            optimizer = torch.optim.Adam(groups, lr=self.config.lr_images)
        elif optimizer is None:
            optimizer = torch.optim.SGD(groups, lr=self.config.lr_images, momentum=self.config.momentum_images)
        for group in optimizer.param_groups:  # what method.lr_factor scales (saved and resumed with the state)
            group.setdefault("initial_lr", group["lr"])
        return optimizer

    def _learnable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]] if self.optimizer else []

    @property
    def local_classes(self) -> list[int]:
        """The classes whose matching loss this process computes (all of them for a non-separable loss)."""
        if not self.method.class_separable:
            return list(range(self.train_data.num_classes))
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        return [c for c in range(self.train_data.num_classes) if c % world == rank]

    # ------------------------------------------------------------------ training

    def train(self) -> SyntheticSet:
        """Runs (or resumes) the distillation and returns the synthetic set."""
        config, accelerator = self.config, self.accelerator
        self._prepare_output_dir()
        if self.method.one_pass:
            return self.synthetic
        if config.resume_from_checkpoint:
            self._resume(config.resume_from_checkpoint)
        accelerator.init_trackers("hf_distill", config={k: v for k, v in config.to_dict().items() if v is not None})
        progress = tqdm(
            total=config.num_iterations,
            initial=self.iteration,
            desc=f"Distilling ({config.method})",
            disable=not accelerator.is_local_main_process,
        )
        classes = self.local_classes
        started = time.perf_counter() - self.distill_seconds
        while self.iteration < config.num_iterations:
            loss, grad_norm = self._step(classes)
            self.iteration += 1
            self.distill_seconds = time.perf_counter() - started
            progress.update(1)
            if config.logging_steps and self.iteration % config.logging_steps == 0:
                seconds = round(self.distill_seconds, 2)
                record = {"loss": loss, "grad_norm": grad_norm, "iteration": self.iteration, "seconds": seconds}
                self.log_history.append(record)
                accelerator.log({"train/loss": loss, "train/grad_norm": grad_norm}, step=self.iteration)
                progress.set_postfix(loss=f"{loss:.4g}")
            if config.eval_steps and self.iteration % config.eval_steps == 0 and self.test_data is not None:
                self._evaluate_during_training()
                started = time.perf_counter() - self.distill_seconds  # evaluation time is not distillation time
            if config.save_steps and self.iteration % config.save_steps == 0 and config.output_dir:
                self.save_checkpoint()
                started = time.perf_counter() - self.distill_seconds
        progress.close()
        final_logits = self.method.final_label_logits(self.synthetic)
        if final_logits is not None:
            self.synthetic.set_soft_labels(final_logits)
        # Finish the trackers only: `accelerator.end_training()` would also destroy the process group, which
        # evaluation and saving still need.
        for tracker in accelerator.trackers:
            tracker.finish()
        return self.synthetic

    def _step(self, classes: list[int]) -> tuple[float, float]:
        """One iteration: `method.updates_per_iteration` optimiser steps; returns their mean loss (all classes) and
        mean input-gradient norm."""
        losses, norms = zip(*(self._update(classes, update) for update in range(self.method.updates_per_iteration)))
        return sum(losses) / len(losses), sum(norms) / len(norms)

    def _update(self, classes: list[int], update: int) -> tuple[float, float]:
        """One optimiser step on the synthetic set; returns the loss summed over all classes and the norm of the
        synthetic inputs' gradient (logged as `grad_norm`: with a pixel learning rate of 100-1000, one large
        gradient moves the set far in one step, which the loss alone does not show)."""
        self.optimizer.zero_grad(set_to_none=True)
        if classes:
            loss = self.method.loss(self.synthetic, classes, self.iteration, update)
        else:  # more processes than classes: this one contributes nothing
            loss = self.synthetic.images.sum() * 0.0
        self.accelerator.backward(loss)
        loss_value = loss.detach().reshape(1)
        if self.accelerator.num_processes > 1:
            # Separable losses: each process holds some classes' terms, so the gradients add up. Otherwise every
            # process computed the whole loss, and the mean keeps the step the single-process one.
            reduction = "sum" if self.method.class_separable else "mean"
            for parameter in self._learnable_parameters():
                if parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
                parameter.grad = self.accelerator.reduce(parameter.grad, reduction=reduction)
            loss_value = self.accelerator.reduce(loss_value, reduction=reduction)
        loss_value = loss_value.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(
                f"The {self.config.method} loss became {loss_value} at iteration {self.iteration}. Lower lr_images "
                "or check the input data; the last checkpoint in output_dir is intact."
            )
        gradient = self.synthetic.images.grad
        grad_norm = 0.0 if gradient is None else torch.linalg.vector_norm(gradient.float()).item()
        max_norm = getattr(self.config, "max_grad_norm", None)  # only configs that optimise inputs have it
        if gradient is not None and max_norm and grad_norm > max_norm:
            gradient.mul_(max_norm / grad_norm)  # the norm logged is the one before clipping
        factor = self.method.lr_factor(self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor
        self.optimizer.step()
        self.method.after_update(self.synthetic, self.iteration, update)
        return loss_value, grad_norm

    def _evaluate_during_training(self) -> None:
        epochs = self.config.eval_steps_epochs or self.config.eval_epochs
        protocol = self.evaluation_protocol(num_models=self.config.eval_steps_num_models, epochs=epochs)
        result = self._evaluate_synthetic(
            self.eval_model_config(), self._distilled_protocol(protocol), f"step-{self.iteration}", show_progress=False
        )
        record = {
            "iteration": self.iteration,
            "seconds": round(self.distill_seconds, 2),
            "eval_accuracy": result["mean"],
            "eval_std": result["std"],
            "eval_num_models": result["num_models"],
            "eval_epochs": result["epochs"],
        }
        self.log_history.append(record)
        self.accelerator.log({"eval/accuracy": result["mean"]}, step=self.iteration)
        logger.info(f"iteration {self.iteration}: accuracy {result['mean']:.2f} ± {result['std']:.2f}")

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path | None:
        """Writes `output_dir/checkpoint-{iteration}` atomically (main process) and prunes old ones."""
        path = None
        if self.accelerator.is_main_process:
            state = {
                "iteration": self.iteration,
                "distill_seconds": self.distill_seconds,
                "log_history": self.log_history,
                "fingerprint": self.fingerprint(),
            }
            path = write_checkpoint(
                Path(self.config.output_dir),
                self.synthetic,
                self.optimizer,
                self.method.state_dict(),
                self.config,
                state,
            )
            rotate_checkpoints(self.config.output_dir, self.config.save_total_limit)
        self.accelerator.wait_for_everyone()
        return path

    def _prepare_output_dir(self) -> None:
        """Checks, before any work, that the output folder can be written and is this run's to write; with
        `overwrite_output_dir` the other run's checkpoints are removed (they would mix with this run's)."""
        config = self.config
        if config.output_dir:
            resuming, overwrite = bool(config.resume_from_checkpoint), config.overwrite_output_dir
            check_output_dir(config.output_dir, resuming=resuming, overwrite=overwrite)
            if overwrite and not resuming and self.accelerator.is_main_process:
                remove_checkpoints(config.output_dir)
        self.accelerator.wait_for_everyone()

    def fingerprint(self) -> dict:
        """What a checkpoint of this run must agree on to be resumed by it (see [`run_fingerprint`])."""
        return run_fingerprint(self.config, self.model_config, self.train_data, self.source)

    def _resume(self, checkpoint: str) -> None:
        path = find_checkpoint(self.config.output_dir, checkpoint)
        if path is None:
            logger.warning(f"No checkpoint found in {self.config.output_dir}; starting from scratch.")
            return
        differences = fingerprint_differences(checkpoint_fingerprint(path), self.fingerprint())
        if differences:
            raise ValueError(
                f"{path} belongs to another run and cannot be resumed by this one: {'; '.join(differences)}. Resume "
                "with the checkpoint's settings, or start this run in another --output_dir."
            )
        unrecorded = settings_not_recorded(path, self.config)
        if unrecorded:
            logger.warning(
                f"{path} was written by an earlier version that did not record {', '.join(unrecorded)}: the run "
                "goes on with these values; check they are what you want (siamese_pairing='image' continues a dm run "
                "that an earlier version started as it began)."
            )
        method_state, state = read_checkpoint(path, self.synthetic, self.optimizer)
        self.synthetic.to(self.accelerator.device)
        self.method.load_state_dict(method_state)
        self.iteration = state["iteration"]
        self.distill_seconds = state.get("distill_seconds", 0.0)
        self.log_history = state.get("log_history", [])
        logger.info(f"Resumed from {path} at iteration {self.iteration}.")

    # ------------------------------------------------------------------ output

    def to_dataset(self) -> Dataset:
        """The distilled set as a `datasets.Dataset` (see [`SyntheticSet.to_dataset`])."""
        return self.synthetic.to_dataset()

    def save(self, output_dir: str | None = None) -> Path:
        """Writes the distilled set and everything needed to reuse or publish it.

        `output_dir/dataset` (`save_to_disk`), `distill_config.json` (method, every hyper-parameter, source,
        image statistics, package version), `eval_results.json`, `synthetic_grid.png` (one row per class).
        """
        output_dir = Path(output_dir or self.config.output_dir or "outputs")
        if self.accelerator.is_main_process:
            check_output_dir(output_dir, resuming=True, overwrite=True)  # writable; this run's to write
            write_run(
                output_dir,
                self.to_dataset(),
                self.config,
                self._run_metadata(),
                self.eval_results,
                self.synthetic.grid_image() if self.modality.preview_column == "image" else None,
                zca=self.synthetic.zca,
                artifacts=self.method.save_artifacts,
            )
        self.accelerator.wait_for_everyone()
        return output_dir

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        token: str | None = None,
        output_dir: str | os.PathLike | None = None,
    ) -> str | None:
        """Saves the distilled set (see [`save`]) and pushes it to a Hub dataset repository with its card.

        Only the main process uploads; the others wait for it.

        Args:
            repo_id (`str`): The dataset repository (`"owner/name"`; created if missing).
            private (`bool`, *optional*): Visibility of a newly created repository.
            token (`str`, *optional*): Hugging Face token with write access (default: the logged-in one).
            output_dir (`str` or `os.PathLike`, *optional*): Where to save first (default: `config.output_dir`,
                else a temporary folder that is removed afterwards).

        Returns:
            `str`: The URL of the last commit on the main process, `None` on the others.

        Raises:
            [`~hf_distill.hub.HubPushError`]: If the upload fails (the saved folder is left intact).
        """
        with contextlib.ExitStack() as stack:
            target = output_dir or self.config.output_dir
            if target is None:
                target = stack.enter_context(tempfile.TemporaryDirectory(prefix="hf_distill-push-"))
            self.save(target)
            url, error = None, None
            if self.accelerator.is_main_process:
                try:
                    url = push_distilled_to_hub(target, repo_id, private=private, token=token)
                except Exception as caught:  # re-raised below, once no process waits on this one any more
                    error = caught
            self.accelerator.wait_for_everyone()
        if error is not None:
            raise error
        return url

    def _run_metadata(self) -> dict:
        metadata = {
            "source": self.source,
            "image_mean": getattr(self.train_data, "mean", []),
            "image_std": getattr(self.train_data, "std", []),
            "image_shape": list(self.train_data.example_shape),
            "class_names": self.train_data.class_names,
            "modality": self.modality.name,
            "target_type": self.synthetic.target_type,
            "num_classes": self.train_data.num_classes,
            "dsa_strategy_resolved": self.dsa_strategy,
            "eval_dsa_strategy_resolved": self.eval_dsa_strategy,
            "architecture": self.model_config.to_dict(),
            "iterations_completed": self.iteration,
            "distill_seconds": round(self.distill_seconds, 2),
            "num_processes": self.accelerator.num_processes,
        }
        if self.selected_rows is not None:
            metadata["selected_rows"] = self.selected_rows.tolist()
        metadata.update(self.synthetic.step_size_metadata())
        metadata.update(self.method.run_metadata())
        if self.synthetic.zca is not None:
            metadata["zca"] = {"file": ZCA_NAME, "regularization": self.synthetic.zca.regularization}
        return metadata
