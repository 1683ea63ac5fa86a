"""The one training loop (`hf_distill.training.train_classifier`): schedule, generators, callbacks, accuracy."""

import pytest
import torch

from hf_distill.augment import SiameseAugment
from hf_distill.modeling import default_convnet_config, fresh_model
from hf_distill.training import TrainingCallback, accuracy, model_forward, predictions_accuracy, train_classifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def problem():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat(8)
    images = torch.randn(24, 1, 8, 8, generator=generator) + labels.view(-1, 1, 1, 1).float()
    return images, labels


def _model():
    return fresh_model(default_convnet_config(1, 8, 3, net_width=8, net_depth=2), torch.Generator().manual_seed(0))


def _train(model, images, labels, **overrides):
    settings = dict(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=2,
        batch_size=5,
        generator=torch.Generator().manual_seed(1),
    )
    return train_classifier(model, images, labels, **{**settings, **overrides})


class Recorder(TrainingCallback):
    """Per-example losses seen per epoch (a statistic forgetting/EL2N-style selection needs) and epoch snapshots."""

    def __init__(self):
        self.rows_per_epoch: dict[int, list[int]] = {}
        self.snapshots: list[torch.Tensor] = []

    def on_batch_end(self, epoch, rows, logits, loss):
        assert not logits.requires_grad and logits.shape == (len(rows), 3)
        self.rows_per_epoch.setdefault(epoch, []).extend(rows.tolist())

    def on_epoch_end(self, epoch, model):
        self.snapshots.append(torch.cat([p.detach().flatten() for p in model.parameters()]).clone())
        return {"epoch": epoch}


def test_callbacks_see_every_example_once_per_epoch_and_a_snapshot_per_epoch(problem):
    images, labels = problem
    recorder = Recorder()
    _train(_model(), images, labels, epochs=3, callbacks=[recorder])
    assert sorted(recorder.rows_per_epoch) == [0, 1, 2]
    assert all(sorted(rows) == list(range(24)) for rows in recorder.rows_per_epoch.values())
    assert len(recorder.snapshots) == 3 and not torch.equal(recorder.snapshots[0], recorder.snapshots[2])


def test_the_order_comes_from_the_generator_and_the_augmentation_from_its_own(problem):
    images, labels = problem
    augment = SiameseAugment("crop_scale")

    def weights(**overrides):
        model = _train(_model(), images, labels, augment=augment, **overrides)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    same = weights(augment_generator=torch.Generator().manual_seed(5))
    assert torch.equal(same, weights(augment_generator=torch.Generator().manual_seed(5)))
    assert not torch.equal(same, weights(augment_generator=torch.Generator().manual_seed(6)))


def test_learning_rate_drops_at_the_given_epoch(problem):
    images, labels = problem
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    _train(model, images, labels, optimizer=optimizer, epochs=4, lr_drop_epoch=2)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    _train(model, images, labels, optimizer=optimizer, epochs=2, lr_drop_epoch=None)
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_max_grad_norm_bounds_every_step(problem):
    images, labels = problem

    def steps(**overrides):
        recorder = Recorder()
        _train(_model(), images * 100, labels, epochs=3, batch_size=24, callbacks=[recorder], **overrides)
        before = torch.cat([p.detach().flatten() for p in _model().parameters()])
        snapshots = [before, *recorder.snapshots]  # one batch per epoch: one step between snapshots
        return [float((after - before).norm()) for before, after in zip(snapshots, snapshots[1:])]

    # Plain SGD at lr 0.1: a step moves the weights by 0.1 x the (clipped) gradient's norm.
    assert max(steps(max_grad_norm=0.5)) <= 0.1 * 0.5 + 1e-6
    assert max(steps()) > 0.1 * 0.5  # without the clip the same steps are longer


def test_bf16_forward_trains_float32_weights(problem):
    images, labels = problem
    model = _train(_model(), images, labels, mixed_precision="bf16")
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


def test_accuracy_agrees_with_predictions_accuracy(problem):
    images, labels = problem
    model = _train(_model(), images, labels, epochs=5).eval()
    forward = model_forward(model)
    with torch.no_grad():
        predictions = forward(images).argmax(-1)
    expected = predictions_accuracy(predictions.numpy(), labels.numpy())
    assert accuracy(forward, images, labels, torch.device("cpu"), batch_size=7) == pytest.approx(expected)
    assert expected == pytest.approx((predictions == labels).float().mean().item())


def test_predictions_accuracy_checks_lengths():
    assert predictions_accuracy([0, 1, 2, 1], [0, 1, 1, 1]) == 0.75
    with pytest.raises(ValueError, match="3 predictions for 2 references"):
        predictions_accuracy([0, 1, 2], [0, 1])


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_native(monkeypatch, caplog, native):
    from hf_distill import training

    monkeypatch.setattr(training, "has_native_bf16", lambda device: native)
    cpu = torch.device("cpu")
    assert training.resolve_mixed_precision("auto", cpu) == ("bf16" if native else "no")
    assert training.resolve_mixed_precision("no", cpu) == "no"
    with caplog.at_level("WARNING", logger="hf_distill.training"):
        assert training.resolve_mixed_precision("bf16", cpu) == "bf16"  # asked for explicitly: kept
    assert ("emulated" in caplog.text) == (not native)
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        training.resolve_mixed_precision("fp8", cpu)


def test_trainer_records_the_precision_auto_resolved_to(monkeypatch, tiny_image_dataset, tiny_config):
    from hf_distill import DistillTrainer, training

    monkeypatch.setattr(training, "has_native_bf16", lambda device: False)
    splits = tiny_image_dataset()
    trainer = DistillTrainer(tiny_config(mixed_precision="auto"), splits["train"], splits["test"])
    assert trainer.config.mixed_precision == "no"
    assert trainer.method.config.mixed_precision == "no"
