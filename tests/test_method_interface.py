"""The seams the coming method families build on: method state in checkpoints, `select(context)`, learned
regression targets, and the modality."""

from dataclasses import dataclass, field

import pytest
import torch
from datasets import Dataset, load_from_disk

from hf_distill import DistillTrainer, ImageModality, evaluation
from hf_distill.config import SyntheticOptimizationConfig
from hf_distill.constants import METHOD_STATE_NAME, REGRESSION_TARGET_COLUMN
from hf_distill.evaluation import EvaluationProtocol, evaluate_images, train_with_protocol
from hf_distill.methods import DistillationMethod, GradientMatchingConfig, SelectionContext
from hf_distill.modalities import resolve_modality
from hf_distill.modeling import fresh_model
from hf_distill.registry import METHODS, MODALITIES, get_modality_class, register_method
from hf_distill.synthetic import SyntheticSet
from hf_distill.training import TrainingCallback, loss_for_targets, regression_loss, train_classifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(images_per_class=2, net_width=8, net_depth=2, eval_epochs=1, eval_num_models=1, save_steps=0)


# ---------------------------------------------------------------------------------------------------------------------
# Method state in checkpoints
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class CountingConfig(SyntheticOptimizationConfig):
    method: str = field(default="test-counting", init=False)
    batch_real: int = 4


class CountingMethod(DistillationMethod):
    """Pulls the set towards 0 and counts its updates in a tensor: state a resumed run must get back."""

    config_class = CountingConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.updates = torch.zeros(1)

    def loss(self, synthetic, classes, iteration, update=0):
        return (synthetic.images_of(classes) ** 2).mean()

    def after_update(self, synthetic, iteration, update):
        self.updates += 1

    def state_dict(self):
        return {"updates": self.updates.clone()}

    def load_state_dict(self, state):
        self.updates = state["updates"].clone()


@pytest.fixture
def counting_method():
    register_method("test-counting")(CountingMethod)
    yield CountingMethod
    METHODS.pop("test-counting")


def test_method_state_is_checkpointed_and_restored(counting_method, tiny_image_dataset, tmp_path):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=6)
    settings = dict(TINY, output_dir=str(tmp_path), save_steps=2, save_total_limit=None)
    first = DistillTrainer(CountingConfig(num_iterations=4, **settings), splits["train"])
    first.train()
    assert first.method.updates.item() == 4
    assert (tmp_path / "checkpoint-2" / METHOD_STATE_NAME).is_file()

    resumed = DistillTrainer(
        CountingConfig(num_iterations=4, resume_from_checkpoint=str(tmp_path / "checkpoint-2"), **settings),
        splits["train"],
    )
    resumed.train()  # 2 restored updates + 2 more; without the restored state it would count 2
    assert resumed.method.updates.item() == 4 and resumed.iteration == 4


def test_a_stateless_method_refuses_another_methods_state(counting_method, tiny_image_dataset, tmp_path):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=6)
    DistillTrainer(
        CountingConfig(num_iterations=2, output_dir=str(tmp_path), **{**TINY, "save_steps": 2}), splits["train"]
    ).train()
    checkpoint = str(tmp_path / "checkpoint-2")
    config = GradientMatchingConfig(num_iterations=3, batch_real=4, resume_from_checkpoint=checkpoint, **TINY)
    trainer = DistillTrainer(config, splits["train"])
    with pytest.raises(ValueError, match="belongs to another run.*method: 'test-counting' .checkpoint. vs 'dc'"):
        trainer.train()
    with pytest.raises(ValueError, match="keeps no state.*another method"):
        trainer.method.load_state_dict({"updates": torch.ones(1)})


# ---------------------------------------------------------------------------------------------------------------------
# select(context)
# ---------------------------------------------------------------------------------------------------------------------


class LossPerExample(TrainingCallback):
    """The last loss each example had in training: the statistic EL2N/forgetting-style selection ranks by."""

    def __init__(self, num_rows: int):
        self.loss = torch.full((num_rows,), float("nan"))
        self.labels = None

    def on_batch_end(self, epoch, rows, logits, loss):
        per_example = torch.nn.functional.cross_entropy(logits, self.labels[rows], reduction="none")
        self.loss[rows.cpu()] = per_example.cpu()


def test_selection_context_trains_networks_through_the_one_loop(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=6)
    trainer = DistillTrainer(GradientMatchingConfig(num_iterations=0, batch_real=4, **TINY), splits["train"])
    context = SelectionContext(trainer.config, trainer.prepared, trainer.accelerator)
    data = trainer.train_data

    fresh, again = context.network(), context.network()
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), again.parameters()))  # seeded, not clocked

    statistics = LossPerExample(len(data))
    statistics.labels = data.labels
    trained = context.network(epochs=2, callbacks=[statistics])
    assert not trained.training
    assert torch.isfinite(statistics.loss).all()  # every example was seen
    assert any(not torch.equal(a, b) for a, b in zip(fresh.parameters(), trained.parameters()))

    features = context.features(trained, batch_size=5)
    assert features.shape[0] == len(data) and features.dim() == 2


# ---------------------------------------------------------------------------------------------------------------------
# Regression targets
# ---------------------------------------------------------------------------------------------------------------------


def test_learned_regression_targets_are_optimised_exported_and_restored(tiny_image_dataset, tmp_path):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=6)
    config = GradientMatchingConfig(
        num_iterations=1, batch_real=4, outer_loop=1, inner_loop=0, learn_regression_targets=True, **TINY
    )
    trainer = DistillTrainer(config, splits["train"], splits["test"])
    synthetic = trainer.synthetic
    assert synthetic.target_type == "regression" and not synthetic.has_soft_labels
    start = SyntheticSet.initial_regression_targets(synthetic.labels, 3)
    torch.testing.assert_close(synthetic.regression_targets.detach(), start)
    assert torch.allclose(start.sum(-1), torch.zeros(6), atol=1e-6)  # centred one-hot

    trainer.train()
    assert not torch.equal(synthetic.regression_targets.detach(), start)
    results = trainer.evaluate(random_baseline=False)
    assert 0.0 <= results["distilled"]["mean"] <= 100.0

    dataset = trainer.to_dataset()
    assert REGRESSION_TARGET_COLUMN in dataset.column_names and "soft_label" not in dataset.column_names
    trainer.save(tmp_path / "run")
    restored = SyntheticSet.from_dataset(load_from_disk(str(tmp_path / "run" / "dataset")), [0.5], [0.5])
    assert restored.target_type == "regression"
    torch.testing.assert_close(restored.regression_targets, synthetic.regression_targets.detach())


def test_regression_targets_train_with_the_squared_loss(tiny_image_dataset, monkeypatch):
    assert loss_for_targets("regression") is regression_loss
    assert loss_for_targets("soft") is loss_for_targets("hard") is torch.nn.functional.cross_entropy
    with pytest.raises(ValueError, match="Unknown target type"):
        loss_for_targets("ranking")

    splits = tiny_image_dataset(num_classes=3, rows_per_class=6)
    trainer = DistillTrainer(GradientMatchingConfig(num_iterations=0, batch_real=4, **TINY), splits["train"])
    images, labels = trainer.synthetic.images.detach(), trainer.synthetic.labels
    targets = SyntheticSet.initial_regression_targets(labels, 3)
    protocol = EvaluationProtocol(num_models=1, epochs=3, batch_size=4)

    def weights(target_type, values):
        model = fresh_model(trainer.model_config, torch.Generator().manual_seed(0))
        train_with_protocol(model, images, values, protocol, torch.Generator().manual_seed(1), target_type=target_type)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    def by_hand(loss_function, values, max_grad_norm):
        model = fresh_model(trainer.model_config, torch.Generator().manual_seed(0))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        train_classifier(
            model, images, values, optimizer=optimizer, epochs=3, batch_size=4,
            generator=torch.Generator().manual_seed(1), lr_drop_epoch=1, loss_function=loss_function,
            max_grad_norm=max_grad_norm,
        )  # fmt: skip
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    # A clip the tiny network's gradients exceed, so that it shows (regression targets only).
    monkeypatch.setattr(evaluation, "REGRESSION_MAX_GRAD_NORM", 0.05)
    regression = weights("regression", targets)
    torch.testing.assert_close(regression, by_hand(regression_loss, targets, 0.05))
    assert not torch.allclose(regression, by_hand(regression_loss, targets, None))
    one_hot = targets + 1.0 / 3  # the same targets as probabilities: cross-entropy trains elsewhere
    assert not torch.allclose(regression, weights("soft", one_hot))
    result = evaluate_images(
        images, targets, trainer.train_data, trainer.model_config, protocol, show_progress=False,
        target_type="regression",
    )  # fmt: skip
    assert 0.0 <= result["mean"] <= 100.0
    assert result["max_grad_norm"] == 0.05  # the figure says how it was trained


def test_soft_labels_and_regression_targets_are_exclusive():
    with pytest.raises(ValueError, match="exclusive"):
        GradientMatchingConfig(learn_soft_labels=True, learn_regression_targets=True)
    with pytest.raises(ValueError, match="not both"):
        SyntheticSet(
            torch.zeros(2, 1, 2, 2), 2, ["a", "b"], [0.0], [1.0], label_logits=torch.zeros(2, 2),
            regression_targets=torch.zeros(2, 2),
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Modality
# ---------------------------------------------------------------------------------------------------------------------


def test_image_is_a_registered_modality_and_auto_finds_it(tiny_image_dataset):
    assert get_modality_class("image") is ImageModality and "image" in MODALITIES
    modality = resolve_modality("auto", tiny_image_dataset()["train"])
    assert isinstance(modality, ImageModality)
    assert (modality.input_name, modality.input_column, modality.task) == (
        "pixel_values",
        "pixel_values",
        "image-classification",
    )
    with pytest.raises(ValueError, match="Unknown modality 'audio'. Available modalities: image, text"):
        resolve_modality("audio")


def test_a_dataset_no_modality_recognises_is_a_clear_error():
    numbers = Dataset.from_dict({"x": [0.5, 1.5], "label": [0, 1]})
    with pytest.raises(ValueError, match="No modality recognises the columns.*'x'"):
        resolve_modality("auto", numbers)


def test_the_modality_is_recorded_and_drives_the_export(tiny_image_dataset, tmp_path):
    import json

    splits = tiny_image_dataset(num_classes=3, rows_per_class=6)
    trainer = DistillTrainer(GradientMatchingConfig(num_iterations=0, batch_real=4, **TINY), splits["train"])
    assert trainer.method.modality is trainer.modality is trainer.synthetic.modality
    dataset = trainer.to_dataset()
    assert dataset.column_names[:2] == [ImageModality.preview_column, ImageModality.input_column]
    trainer.save(tmp_path)
    metadata = json.loads((tmp_path / "distill_config.json").read_text())
    assert (metadata["modality"], metadata["target_type"]) == ("image", "hard")
