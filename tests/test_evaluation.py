"""Tests for `hf_distill.evaluation`: the standard protocol on tiny ConvNets and tiny in-memory data."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from hf_distill.evaluation import (
    EvaluationProtocol,
    evaluate_full_data,
    evaluate_images,
    evaluate_random_baseline,
    format_result,
    random_real_subset,
    train_with_protocol,
)
from hf_distill.evaluation import model_accuracy as accuracy_of
from hf_distill.modalities.image_data import ImageData
from hf_distill.modalities.image_decoding import prepare_images
from hf_distill.modeling import default_convnet_config, fresh_model

NUM_CLASSES = 3
DSA = "color_crop_cutout_scale_rotate"


@pytest.fixture
def splits(tiny_image_dataset) -> tuple[ImageData, ImageData]:
    dataset = tiny_image_dataset(num_classes=NUM_CLASSES, rows_per_class=20, size=8, mode="L")
    train = prepare_images(dataset["train"], "image", "label")
    test = prepare_images(dataset["test"], "image", "label", mean=train.mean, std=train.std)
    return train, test


@pytest.fixture(scope="module")
def model_config():
    return default_convnet_config(1, 8, NUM_CLASSES, net_width=8, net_depth=2)


def protocol(**overrides) -> EvaluationProtocol:
    return EvaluationProtocol(**{"num_models": 1, "epochs": 5, "batch_size": 16, **overrides})


def state_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------------------
# train_with_protocol / model_accuracy
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("soft", [False, True], ids=["hard-labels", "soft-labels"])
def test_train_with_protocol_learns_a_separable_problem(splits, model_config, soft):
    train, test = splits
    model = fresh_model(model_config, torch.Generator().manual_seed(0))
    before = accuracy_of(model, test)
    targets = F.one_hot(train.labels, NUM_CLASSES).float() if soft else train.labels
    trained = train_with_protocol(model, train.images, targets, protocol(epochs=10), torch.Generator().manual_seed(1))
    assert trained is model
    assert not model.training  # returned in eval mode
    after = accuracy_of(model, test)
    assert after >= 0.9
    assert after > before


def test_train_with_protocol_is_deterministic_and_uses_the_generator(splits, model_config):
    train, _ = splits

    def run(seed: int):
        model = fresh_model(model_config, torch.Generator().manual_seed(0))
        p = protocol(epochs=2, dsa_strategy=DSA)
        return state_of(train_with_protocol(model, train.images, train.labels, p, torch.Generator().manual_seed(seed)))

    first, again, other = run(1), run(1), run(2)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_train_with_protocol_with_zero_epochs_leaves_weights_unchanged(splits, model_config):
    train, _ = splits
    model = fresh_model(model_config, torch.Generator().manual_seed(0))
    before = state_of(model)
    train_with_protocol(model, train.images, train.labels, protocol(epochs=0), torch.Generator().manual_seed(0))
    assert all(torch.equal(before[k], v) for k, v in state_of(model).items())


def test_accuracy_counts_over_every_batch():
    images = torch.zeros(10, 1, 2, 2)
    images[:, 0, 0, 0] = torch.arange(10, dtype=torch.float32)
    labels = torch.tensor([1, 1, 0, 1, 0, 1, 0, 0, 1, 1])
    data = ImageData(images, labels, ["a", "b"], [0.0], [1.0])

    class Parity(torch.nn.Module):  # predicts the parity of the first pixel
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, pixel_values):
            odd = pixel_values[:, 0, 0, 0].long() % 2
            return SimpleNamespace(logits=F.one_hot(odd, 2).float())

    # Predictions are [0, 1, 0, 1, ...]: rows 1, 2, 3, 4, 5, 6, 9 are right.
    assert accuracy_of(Parity(), data, batch_size=3) == pytest.approx(0.7)
    assert accuracy_of(Parity(), data, batch_size=1024) == pytest.approx(0.7)


# ---------------------------------------------------------------------------------------------------------------------
# evaluate_images
# ---------------------------------------------------------------------------------------------------------------------


def test_evaluate_images_result_fields(splits, model_config):
    train, test = splits
    p = protocol(num_models=3, epochs=4)
    result = evaluate_images(train.images, train.labels, test, model_config, p, show_progress=False)
    assert len(result["accuracies"]) == 3
    assert all(0.0 <= a <= 100.0 for a in result["accuracies"])
    assert result["mean"] == pytest.approx(sum(result["accuracies"]) / 3)
    mean = result["mean"]
    assert result["std"] == pytest.approx(math.sqrt(sum((a - mean) ** 2 for a in result["accuracies"]) / 3))
    assert result["mean"] >= 90.0  # percent, on a separable problem
    assert result["num_models"] == 3
    assert result["epochs"] == 4
    assert result["architecture"] == "hf_distill_convnet"
    assert result["num_images"] == len(train)


def test_evaluate_images_is_deterministic_and_leaves_the_global_rng_alone(splits, model_config):
    train, test = splits
    # One epoch on a few images with augmentation: accuracies are far from saturated, so they depend on the seed.
    rows = torch.tensor([0, 1, 2, 3, 4, 5])
    images, labels = train.images[rows], train.labels[rows]

    def run(seed: int, key: str = "distilled") -> dict:
        p = protocol(num_models=3, epochs=1, dsa_strategy=DSA, seed=seed)
        return evaluate_images(images, labels, test, model_config, p, key=key, show_progress=False)

    torch.manual_seed(1234)
    rng_state = torch.get_rng_state()
    first = run(0)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert run(0) == first
    # Each model gets its own initialisation: different seeds or keys give other models.
    others = [run(1)["accuracies"], run(2)["accuracies"], run(0, key="random")["accuracies"]]
    assert any(accuracies != first["accuracies"] for accuracies in others)


def test_evaluate_images_with_soft_labels(splits, model_config):
    train, test = splits
    # Soft labels (N, K): mostly the true class, the rest spread over the others.
    soft = torch.full((len(train), NUM_CLASSES), 0.1 / (NUM_CLASSES - 1))
    soft[torch.arange(len(train)), train.labels] = 0.9
    p = protocol(num_models=2, epochs=8)
    result = evaluate_images(train.images, soft, test, model_config, p, show_progress=False)
    assert result["num_models"] == 2 and len(result["accuracies"]) == 2
    assert result["num_images"] == len(train)
    assert result["mean"] >= 90.0

    # One-hot soft labels train the same models as hard labels (cross-entropy is the same function).
    one_hot = F.one_hot(train.labels, NUM_CLASSES).float()
    p = protocol(num_models=1, epochs=3)
    hard_result = evaluate_images(train.images, train.labels, test, model_config, p, show_progress=False)
    soft_result = evaluate_images(train.images, one_hot, test, model_config, p, show_progress=False)
    assert soft_result["accuracies"] == pytest.approx(hard_result["accuracies"], abs=100.0 / len(test) + 1e-9)


# ---------------------------------------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------------------------------------


def test_random_real_subset_is_class_balanced_and_deterministic(splits):
    train, _ = splits
    rows = random_real_subset(train, images_per_class=4, seed=0)
    assert rows.dtype == torch.long
    assert rows.shape == (4 * NUM_CLASSES,)
    assert train.labels[rows].tolist() == [0] * 4 + [1] * 4 + [2] * 4  # class-major
    assert len(set(rows.tolist())) == len(rows)  # without replacement
    assert torch.equal(random_real_subset(train, 4, seed=0), rows)
    assert not torch.equal(random_real_subset(train, 4, seed=1), rows)
    # A larger subset with the same seed does not reshuffle what each class draws first.
    bigger = random_real_subset(train, 6, seed=0)
    for c in range(NUM_CLASSES):
        assert bigger[6 * c : 6 * c + 4].tolist() == rows[4 * c : 4 * c + 4].tolist()


def test_random_baseline_and_full_data(splits, model_config):
    train, test = splits
    p = protocol(num_models=1, epochs=2)
    random_result = evaluate_random_baseline(train, 2, test, model_config, p)
    assert random_result["num_images"] == 2 * NUM_CLASSES
    assert random_result["num_models"] == 1
    full_result = evaluate_full_data(train, test, model_config, p)
    assert full_result["num_images"] == len(train)
    assert 0.0 <= random_result["mean"] <= 100.0 and 0.0 <= full_result["mean"] <= 100.0


def test_baselines_are_read_back_from_the_cache_for_the_same_inputs_only(splits, model_config, tmp_path, monkeypatch):
    import hf_distill.evaluation as evaluation

    train, test = splits
    p = protocol(num_models=2, epochs=2)
    first = evaluate_random_baseline(train, 2, test, model_config, p, cache_dir=tmp_path)
    full = evaluate_full_data(train, test, model_config, p, cache_dir=tmp_path)
    assert "reused_from" not in first
    assert sorted(path.name.split("-")[0] for path in tmp_path.glob("*.json")) == ["full", "random"]

    trained = []
    real_evaluate_images = evaluation.evaluate_images

    def counted(*args, **kwargs):
        trained.append(1)
        return real_evaluate_images(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_images", counted)
    again = evaluate_random_baseline(train, 2, test, model_config, p, cache_dir=tmp_path)
    assert trained == []  # read back, no model trained
    assert again.pop("reused_from").startswith("random-")
    assert again == first
    assert evaluate_full_data(train, test, model_config, p, cache_dir=tmp_path)["accuracies"] == full["accuracies"]

    # Another seed, another size or another network is another evaluation: trained again, kept beside the first.
    seeded = protocol(num_models=2, epochs=2, seed=1)
    evaluate_random_baseline(train, 2, test, model_config, seeded, cache_dir=tmp_path)
    evaluate_random_baseline(train, 3, test, model_config, p, cache_dir=tmp_path)
    wider = default_convnet_config(1, 8, NUM_CLASSES, net_width=16, net_depth=2)
    evaluate_random_baseline(train, 2, test, wider, p, cache_dir=tmp_path)
    assert len(trained) == 3
    assert len(list(tmp_path.glob("random-*.json"))) == 4

    # Soft labels (a teacher's, as a teacher-labelled set's baseline has) are other targets: trained, kept apart,
    # marked, and read back only for the same labels.
    def teacher(images):
        return images.flatten(1)[:, :NUM_CLASSES] * 3.0

    soft = evaluate_random_baseline(train, 2, test, model_config, p, cache_dir=tmp_path, label_logits=teacher)
    assert len(trained) == 4 and soft["labels"] == "soft" and "reused_from" not in soft
    soft_again = evaluate_random_baseline(train, 2, test, model_config, p, cache_dir=tmp_path, label_logits=teacher)
    assert soft_again["reused_from"].startswith("random-") and soft_again["labels"] == "soft"
    assert len(trained) == 4 and len(list(tmp_path.glob("random-*.json"))) == 5
    assert "labels" not in evaluate_random_baseline(train, 2, test, model_config, p, cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# protocol and formatting
# ---------------------------------------------------------------------------------------------------------------------


def test_protocol_defaults_follow_the_papers():
    p = EvaluationProtocol()
    assert (p.lr, p.momentum, p.weight_decay, p.batch_size) == (0.01, 0.9, 5e-4, 256)
    assert p.to_dict()["epochs"] == 300


def test_format_result():
    result = {"mean": 97.123, "std": 0.1, "num_models": 3, "epochs": 300}
    assert format_result(result) == "97.12 ± 0.10 (n=3, 300 epochs)"
    assert format_result({"mean": 5.0, "std": 0.0, "num_models": 1, "epochs": 2}) == "5.00 ± 0.00 (n=1, 2 epochs)"
    assert format_result({}) == "n/a"
    assert format_result(None) == "n/a"
    assert format_result({"mean": float("nan"), "std": 0.0, "num_models": 1, "epochs": 1}) == "n/a"
