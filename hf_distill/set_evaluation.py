"""How a `DistillTrainer` evaluates its set: the protocol, the baselines, other architectures and the fair figures.

[`SetEvaluationMixin`] holds the evaluation half of [`DistillTrainer`] (which inherits it), so that the trainer
module keeps to the distillation loop, checkpoints and output.
"""

import dataclasses
from collections.abc import Sequence

from transformers import PretrainedConfig

from .evaluation import (
    EvaluationProtocol,
    evaluate_full_data,
    evaluate_images,
    evaluate_random_baseline,
    fair_figures,
)
from .modeling import describe_architecture
from .models import named_architecture
from .preparation import build_model_config, resolve_architecture


class SetEvaluationMixin:
    """Evaluation of the trainer's synthetic set (`self.synthetic`) on its real test split (`self.test_data`).

    Uses the trainer's `config`, `train_data`, `test_data`, `model_config`, `modality`, `method`, `accelerator`,
    `eval_dsa_strategy`, `distill_seconds` and `iteration`; writes `eval_results`.
    """

    def _evaluate_synthetic(
        self, model_config: PretrainedConfig, protocol: EvaluationProtocol, key: str, show_progress: bool = True
    ) -> dict:
        """The protocol applied to the synthetic set as it is now (its targets decide the loss)."""
        return evaluate_images(
            self.synthetic.images.detach(),
            self.synthetic.targets().detach(),
            self.test_data,
            model_config,
            protocol,
            key=key,
            accelerator=self.accelerator,
            show_progress=show_progress,
            modality=self.modality,
            target_type=self.synthetic.target_type,
        )

    def _evaluate_random_subset(self, model_config: PretrainedConfig, protocol: EvaluationProtocol) -> dict:
        """The protocol applied to the random real subset of the set's size (the baseline of every figure), with the
        soft labels the method's labeller gives it when the set's soft labels come from one (a teacher's)."""
        labelled_alike = self.synthetic.target_type == "soft"
        return evaluate_random_baseline(
            self.train_data,
            self.config.images_per_class,
            self.test_data,
            model_config,
            protocol,
            self.accelerator,
            modality=self.modality,
            cache_dir=self.config.eval_cache_dir,
            label_logits=self.method.baseline_label_logits if labelled_alike else None,
        )

    def evaluation_protocol(self, num_models: int | None = None, epochs: int | None = None) -> EvaluationProtocol:
        """The standard protocol with this run's settings (the baselines' protocol; see `_distilled_protocol`)."""
        return EvaluationProtocol(
            num_models=num_models or self.config.eval_num_models,
            epochs=epochs or self.config.eval_epochs,
            lr=self.config.eval_lr,
            batch_size=self.config.eval_batch_size,
            dsa_strategy=self.eval_dsa_strategy,
            seed=self.config.seed,
            text_protocol=self.config.eval_text_protocol,
        )

    def _distilled_protocol(self, protocol: EvaluationProtocol) -> EvaluationProtocol:
        """`protocol` with the learned step size as learning rate when the set has one (as MTT evaluates; the mean of
        a per-step schedule)."""
        learned_lr = self.synthetic.learned_lr
        if learned_lr is None or not self.config.eval_use_learned_lr:
            return protocol
        return dataclasses.replace(protocol, lr=learned_lr)

    def eval_model_config(self) -> PretrainedConfig:
        """The architecture evaluation models use (`eval_model_name_or_path`, else the distillation network)."""
        if not self.config.eval_model_name_or_path:
            return self.model_config
        if self._eval_architecture is None:
            self._eval_architecture = resolve_architecture(self.config.eval_model_name_or_path)
        return build_model_config(self._eval_architecture, self.train_data, self.config)

    def evaluate(
        self,
        num_models: int | None = None,
        epochs: int | None = None,
        random_baseline: bool | None = None,
        full_data: bool | None = None,
        architectures: Sequence[str] | None = None,
    ) -> dict:
        """Evaluates the synthetic set with the standard protocol (see `hf_distill.evaluation`).

        Args:
            num_models (`int`, *optional*): Defaults to `config.eval_num_models`.
            epochs (`int`, *optional*): Defaults to `config.eval_epochs`.
            random_baseline (`bool`, *optional*): Also a random real subset of the same size
                (default `config.eval_random_baseline`).
            full_data (`bool`, *optional*): Also the whole training split (default `config.eval_full_data`).
            architectures (`Sequence[str]`, *optional*): Also train these architectures on the set (and on the random
                subset), see [`evaluate_architectures`] (default `config.eval_architectures`).

        Returns:
            `dict`: `distilled`, optionally `random_real` and `full_data` (each mean/std/accuracies in percent),
            `cross_architecture`, the `fair` figures (see [`fair_figures`]) and the `protocol` used.
        """
        if self.test_data is None:
            raise ValueError("No evaluation split: pass eval_dataset (or set test_split to a split the dataset has).")
        config = self.config
        protocol = self.evaluation_protocol(num_models, epochs)
        distilled_protocol = self._distilled_protocol(protocol)
        model_config = self.eval_model_config()
        results = {"distilled": self._evaluate_synthetic(model_config, distilled_protocol, "distilled")}
        results.update(self.method.evaluate_set(self.synthetic, self.test_data.inputs, self.test_data.labels))
        if config.eval_random_baseline if random_baseline is None else random_baseline:
            results["random_real"] = self._evaluate_random_subset(model_config, protocol)
        if config.eval_full_data if full_data is None else full_data:
            full_protocol = self.evaluation_protocol(num_models=1, epochs=config.eval_full_data_epochs)
            results["full_data"] = evaluate_full_data(
                self.train_data,
                self.test_data,
                model_config,
                full_protocol,
                self.accelerator,
                modality=self.modality,
                cache_dir=config.eval_cache_dir,
            )
        architectures = config.eval_architectures if architectures is None else architectures
        if architectures:
            results["cross_architecture"] = self.evaluate_architectures(
                architectures, num_models, epochs, random_baseline="random_real" in results
            )
        results["fair"] = fair_figures(results, self.synthetic.target_type)
        results["protocol"] = protocol.to_dict()
        if distilled_protocol is not protocol:
            results["distilled"]["lr"] = distilled_protocol.lr  # the learned one
        results["distill_seconds"] = round(self.distill_seconds, 2)
        results["iterations"] = self.iteration
        self.eval_results = results
        return results

    def architecture_config(self, name: str) -> PretrainedConfig:
        """The config of architecture `name` (one of `hf_distill.models.ARCHITECTURE_NAMES`, else a Hub id or local
        path), fitted to this run's data."""
        data = self.train_data
        named = named_architecture(name, data.num_channels, data.image_size, data.num_classes, self.model_config)
        return build_model_config(named or resolve_architecture(name), data, self.config)

    def evaluate_architectures(
        self,
        architectures: Sequence[str],
        num_models: int | None = None,
        epochs: int | None = None,
        random_baseline: bool = True,
    ) -> dict:
        """Trains each architecture on the set with the protocol (and on the random real subset of the same size).

        The models are drawn with the same keys as [`evaluate`]'s, so the entry of the run's own architecture
        (`"convnet"` for a ConvNet run) repeats its figures exactly.

        Args:
            architectures (`Sequence[str]`): Names (`convnet`, `convnet_bn`, `convnet_nonorm`, `convnet_depth2`,
                `convnet_depth4`, `convnet_width64`, `convnet_width256`, `mlp`, `resnet`, `vit`), Hub ids or paths.
            num_models (`int`, *optional*), epochs (`int`, *optional*): As [`evaluate`]'s.
            random_baseline (`bool`, *optional*, defaults to `True`): Also the random real subset.

        Returns:
            `dict`: per name, `architecture` (a description), `distilled`, `random_real` (when asked) and `fair`.
        """
        if self.test_data is None:
            raise ValueError("No evaluation split: pass eval_dataset (or set test_split to a split the dataset has).")
        configs = {name: self.architecture_config(name) for name in architectures}  # every name checked first
        protocol = self.evaluation_protocol(num_models, epochs)
        table = {}
        for name, model_config in configs.items():
            row = {
                "architecture": describe_architecture(model_config.to_dict()),
                "distilled": self._evaluate_synthetic(model_config, self._distilled_protocol(protocol), "distilled"),
            }
            if random_baseline:
                row["random_real"] = self._evaluate_random_subset(model_config, protocol)
            row["fair"] = fair_figures(row, self.synthetic.target_type)
            table[name] = row
        return table
