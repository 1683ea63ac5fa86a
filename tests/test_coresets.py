"""Coreset selection (herding, k-center, forgetting, EL2N, GraNd): the selection rules on hand-made data, the
per-example statistics against their definitions, and the per-class contract through the trainer."""

import json

import pytest
import torch
import torch.nn.functional as F

from hf_distill.methods import (
    EL2NConfig,
    ForgettingConfig,
    GraNdConfig,
    HerdingConfig,
    KCenterConfig,
    RandomSelectionConfig,
)
from hf_distill.methods.base import SelectionContext
from hf_distill.methods.forgetting import ForgettingEvents
from hf_distill.methods.herding import herding_order
from hf_distill.methods.k_center import k_center_order
from hf_distill.modeling import extract_features
from hf_distill.trainer import DistillTrainer

TINY = dict(images_per_class=2, net_width=8, net_depth=2, eval_epochs=1, eval_num_models=1, save_steps=0)


def test_herding_keeps_the_running_mean_closest_to_the_class_mean():
    features = torch.tensor([[0.0], [10.0], [4.0], [6.0], [5.0]])  # mean 5
    # t=1: the row at the mean (5); t=2: |2*5 - 5 - x| -> 4 (first of the tie 4/6); t=3: |15 - 9 - x| -> 6.
    assert herding_order(features, 3).tolist() == [4, 2, 3]
    # Every prefix's mean is at least as close to the mean as any other choice of the last row would make it.
    points = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    order = herding_order(points, 6).tolist()
    for t in range(1, 7):
        chosen = points[order[:t]].sum(0)
        best = min(
            float(((points[order[: t - 1]].sum(0) + points[i]) / t - points.mean(0)).norm())
            for i in range(40)
            if i not in order[: t - 1]
        )
        assert float((chosen / t - points.mean(0)).norm()) == pytest.approx(best)


def test_k_center_starts_at_the_medoid_and_covers_the_farthest_rows():
    features = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])  # mean 4.8: nearest is 2
    # Then the farthest from {2} is 11; then the farthest from {2, 11} is 0 (distance 2; 10 is 1 from 11).
    assert k_center_order(features, 3).tolist() == [2, 4, 0]
    duplicates = torch.ones(6, 3)
    assert sorted(k_center_order(duplicates, 4).tolist()) == sorted(set(k_center_order(duplicates, 4).tolist()))


def test_forgetting_events_follow_the_definition():
    labels = torch.tensor([0, 1, 0])
    events = ForgettingEvents(labels)
    right, wrong = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    # Row 0: right, wrong, right, wrong -> 2 events. Row 1 (label 1): always right -> 0. Row 2: never right -> inf.
    for logits in (right, wrong, right, wrong):
        events.on_batch_end(0, torch.tensor([0]), logits, torch.tensor(0.0))
    for _ in range(3):
        events.on_batch_end(0, torch.tensor([1]), wrong, torch.tensor(0.0))
        events.on_batch_end(0, torch.tensor([2]), wrong, torch.tensor(0.0))
    assert events.scores().tolist() == [2.0, 0.0, float("inf")]


def test_grand_closed_form_equals_the_head_gradient_norm(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=4)
    trainer = DistillTrainer(GraNdConfig(num_score_models=1, **TINY), splits["train"])
    context = SelectionContext(trainer.config, trainer.prepared, trainer.accelerator)
    network = context.network()
    scores = trainer.method.network_scores(context, network)

    images, labels = trainer.train_data.images, trainer.train_data.labels
    head = network.classifier
    for row in range(len(labels)):
        logits = head(extract_features(network, images[row : row + 1]))
        loss = F.cross_entropy(logits, labels[row : row + 1])
        grads = torch.autograd.grad(loss, [head.weight, head.bias])
        expected = torch.cat([g.flatten() for g in grads]).norm()
        torch.testing.assert_close(scores[row].float(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "config_class, settings",
    [
        (HerdingConfig, {"selection_epochs": 0}),
        (KCenterConfig, {"selection_epochs": 1}),
        (ForgettingConfig, {"selection_epochs": 3}),
        (EL2NConfig, {"selection_epochs": 1, "num_score_models": 2}),
        (GraNdConfig, {"num_score_models": 2}),
    ],
)
def test_coresets_select_distinct_rows_of_each_class_reproducibly(tiny_image_dataset, config_class, settings):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=8)
    rows = []
    for _ in range(2):
        trainer = DistillTrainer(config_class(**TINY, **settings), splits["train"])
        rows.append(trainer.selected_rows)
    selected = rows[0]
    assert torch.equal(selected, rows[1])  # seeded: the same rows every time
    assert trainer.train_data.labels[selected].tolist() == [0, 0, 1, 1, 2, 2]  # class-major, IPC each
    assert selected.unique().numel() == 6


def test_scored_coresets_keep_the_highest_or_the_lowest_scores(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=8)
    highest = DistillTrainer(EL2NConfig(**TINY, selection_epochs=1, num_score_models=1), splits["train"])
    lowest = DistillTrainer(EL2NConfig(**TINY, selection_epochs=1, num_score_models=1, keep="lowest"), splits["train"])
    context = SelectionContext(highest.config, highest.prepared, highest.accelerator)
    scores = highest.method.scores(context)
    for c in range(3):
        class_rows = (highest.train_data.labels == c).nonzero().flatten()
        ranked = class_rows[torch.argsort(scores[class_rows], descending=True, stable=True)]
        assert set(highest.selected_rows[2 * c : 2 * c + 2].tolist()) == set(ranked[:2].tolist())
        assert set(lowest.selected_rows[2 * c : 2 * c + 2].tolist()) == set(ranked[-2:].tolist())


def test_scored_coresets_write_their_scores_and_say_where_ties_decided(
    tiny_image_dataset, tmp_path, monkeypatch, caplog
):
    from safetensors.torch import load_file

    from hf_distill.constants import CONFIG_NAME, SELECTION_SCORES_NAME
    from hf_distill.methods.el2n import GraNd

    splits = tiny_image_dataset(num_classes=3, rows_per_class=8)  # row r is of class r % 3
    rows = torch.arange(24, dtype=torch.float64)
    # Class 0: distinct scores (its top two are rows 21, 18). Class 1: all tied. Class 2: three rows never learned.
    fixed = torch.where(rows % 3 == 0, rows, torch.where(rows % 3 == 1, 1.0, 0.0))
    fixed[[2, 5, 8]] = float("inf")
    monkeypatch.setattr(GraNd, "scores", lambda self, context: fixed.clone())
    with caplog.at_level("WARNING", logger="hf_distill.methods.coreset"):
        trainer = DistillTrainer(GraNdConfig(**TINY, num_score_models=1), splits["train"])
    assert trainer.selected_rows.tolist() == [21, 18, 1, 4, 2, 5]  # ties go to the earlier rows
    assert "in 2 of 3 classes the last row kept scores the same as rows left out" in caplog.text

    output_dir = trainer.save(tmp_path / "run")
    saved = load_file(str(output_dir / SELECTION_SCORES_NAME))
    torch.testing.assert_close(saved["scores"], fixed)
    assert torch.equal(saved["labels"], trainer.train_data.labels.long())
    metadata = json.loads((output_dir / CONFIG_NAME).read_text())
    assert metadata["selection_scores"] == {
        "file": SELECTION_SCORES_NAME,
        "rows": 24,
        "non_finite": 3,
        "classes_cut_among_ties": 2,
    }
    assert metadata["selected_rows"] == [21, 18, 1, 4, 2, 5]

    # Another method's run over this folder removes the scores: they would be read as its rows' scores.
    replacing = RandomSelectionConfig(**TINY, output_dir=str(output_dir), overwrite_output_dir=True)
    DistillTrainer(replacing, splits["train"]).save()
    assert json.loads((output_dir / CONFIG_NAME).read_text())["method"] == "random"
    assert not (output_dir / SELECTION_SCORES_NAME).exists()
    assert not list(output_dir.glob(".*tmp"))  # no staging folder left


def test_coreset_config_errors_say_what_to_change():
    with pytest.raises(ValueError, match="needs selection_epochs >= 2"):
        ForgettingConfig(selection_epochs=1)
    with pytest.raises(ValueError, match="keep must be one of highest, lowest"):
        EL2NConfig(keep="middle")
    with pytest.raises(ValueError, match="selection_epochs must be >= 1"):
        EL2NConfig(selection_epochs=0)
    with pytest.raises(ValueError, match="selection_epochs must be >= 0"):
        HerdingConfig(selection_epochs=-1)
    with pytest.raises(ValueError, match="num_score_models must be >= 1"):
        GraNdConfig(num_score_models=0)


def test_selection_networks_are_trained_once_and_shared_through_the_cache(tiny_image_dataset, tmp_path, monkeypatch):
    import hf_distill.methods.base as base_module

    splits = tiny_image_dataset(num_classes=3, rows_per_class=8)
    cache = dict(selection_epochs=1, selection_cache_dir=str(tmp_path / "cache"))
    herding = DistillTrainer(HerdingConfig(**TINY, **cache), splits["train"])
    (cached,) = (tmp_path / "cache").iterdir()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached network must not be trained again")

    monkeypatch.setattr(base_module, "train_with_protocol", no_training)
    again = DistillTrainer(HerdingConfig(**TINY, **cache), splits["train"])
    assert torch.equal(again.selected_rows, herding.selected_rows)
    k_center = DistillTrainer(KCenterConfig(**{**TINY, **cache, "images_per_class": 3}), splits["train"])
    assert k_center.selected_rows.numel() == 9  # the same network, another method and IPC
    with pytest.raises(AssertionError, match="must not be trained again"):
        DistillTrainer(HerdingConfig(**TINY, **cache, seed=1), splits["train"])  # another seed: another network
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cached.name]
