"""Tests for `hf_distill.synthetic.SyntheticSet`."""

import numpy as np
import pytest
import torch
from datasets import Array3D, ClassLabel, Image
from PIL import Image as PILImage

from hf_distill import SyntheticSet

NAMES = ["cat", "dog", "frog"]


def make_set(num_classes=3, ipc=2, channels=1, size=8, seed=0, requires_grad=True) -> SyntheticSet:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(num_classes * ipc, channels, size, size, generator=generator)
    return SyntheticSet(
        images,
        num_classes,
        NAMES[:num_classes],
        mean=[0.5] * channels,
        std=[0.25] * channels,
        requires_grad=requires_grad,
    )


def test_construction_is_class_major():
    synthetic = make_set(num_classes=3, ipc=2)
    assert synthetic.images_per_class == 2
    assert synthetic.image_shape == (1, 8, 8)
    assert synthetic.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert synthetic.images.requires_grad
    assert not make_set(requires_grad=False).images.requires_grad


def test_images_are_copied_not_shared():
    images = torch.zeros(4, 1, 4, 4)
    synthetic = SyntheticSet(images, 2, ["a", "b"], [0.0], [1.0])
    images.fill_(1.0)
    assert synthetic.images.abs().sum().item() == 0.0


def test_uneven_split_raises():
    with pytest.raises(ValueError, match="7 images cannot be split evenly into 3 classes"):
        SyntheticSet(torch.zeros(7, 1, 4, 4), 3, NAMES, [0.0], [1.0])


def test_rows_are_class_major_in_the_requested_order():
    synthetic = make_set(num_classes=3, ipc=2)
    assert synthetic.rows([0]).tolist() == [0, 1]
    assert synthetic.rows([2, 0]).tolist() == [4, 5, 0, 1]
    assert synthetic.rows([1, 2]).tolist() == [2, 3, 4, 5]
    assert synthetic.rows([1]).dtype == torch.long


def test_images_of_selects_rows_and_keeps_gradients():
    synthetic = make_set(num_classes=3, ipc=2)
    assert synthetic.images_of([0, 1, 2]) is synthetic.images
    subset = synthetic.images_of([2, 0])
    assert torch.equal(subset, torch.cat([synthetic.images[4:6], synthetic.images[0:2]]))

    synthetic.images_of([1]).sum().backward()
    grad = synthetic.images.grad
    assert torch.equal(grad[2:4], torch.ones_like(grad[2:4]))
    assert grad[:2].abs().sum().item() == 0.0 and grad[4:].abs().sum().item() == 0.0


def test_denormalized_is_clamped_pixel_units():
    synthetic = make_set()
    pixels = synthetic.denormalized()
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    expected = (synthetic.images.detach() * 0.25 + 0.5).clamp(0, 1)
    assert torch.allclose(pixels, expected)
    assert not pixels.requires_grad


@pytest.mark.parametrize(("channels", "mode"), [(1, "L"), (3, "RGB")])
def test_to_dataset_columns_and_features(channels, mode):
    synthetic = make_set(num_classes=3, ipc=2, channels=channels, size=6)
    dataset = synthetic.to_dataset()

    assert dataset.num_rows == 6
    assert set(dataset.column_names) == {"image", "pixel_values", "label"}
    assert isinstance(dataset.features["image"], Image)
    assert isinstance(dataset.features["pixel_values"], Array3D)
    assert dataset.features["pixel_values"].shape == (channels, 6, 6)
    assert dataset.features["pixel_values"].dtype == "float32"
    assert isinstance(dataset.features["label"], ClassLabel)
    assert dataset.features["label"].names == NAMES
    assert list(dataset["label"]) == [0, 0, 1, 1, 2, 2]

    previews = list(dataset["image"])
    assert all(isinstance(p, PILImage.Image) and p.mode == mode and p.size == (6, 6) for p in previews)
    expected_preview = (synthetic.denormalized()[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(previews[0]).reshape(expected_preview.shape), expected_preview)

    pixel_values = dataset.with_format("numpy")[:]["pixel_values"]
    assert pixel_values.dtype == np.float32
    assert np.array_equal(pixel_values, synthetic.images.detach().numpy())  # exact, not a preview


def test_from_dataset_round_trip():
    synthetic = make_set(num_classes=3, ipc=2, channels=3)
    dataset = synthetic.to_dataset()
    restored = SyntheticSet.from_dataset(dataset, synthetic.mean, synthetic.std)

    assert torch.equal(restored.images, synthetic.images.detach())
    assert torch.equal(restored.labels, synthetic.labels)
    assert restored.class_names == NAMES
    assert (restored.num_classes, restored.images_per_class) == (3, 2)
    assert (restored.mean, restored.std) == (synthetic.mean, synthetic.std)
    assert not restored.images.requires_grad


def test_from_dataset_restores_class_major_order_of_shuffled_rows():
    synthetic = make_set(num_classes=3, ipc=2)
    shuffled = synthetic.to_dataset().select([5, 2, 0, 4, 3, 1])
    restored = SyntheticSet.from_dataset(shuffled, synthetic.mean, synthetic.std)
    assert restored.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # The sort is stable: rows of a class keep their order in the dataset.
    expected = synthetic.images.detach()[[0, 1, 2, 3, 5, 4]]
    assert torch.equal(restored.images, expected)


def test_save_and_load_state_round_trip(tmp_path):
    original = make_set(seed=0)
    path = tmp_path / "synthetic.safetensors"
    original.save(path)
    assert path.is_file()

    other = make_set(seed=1)
    assert not torch.equal(other.images, original.images)
    other.load_state(path)
    assert torch.equal(other.images, original.images)
    assert other.images.requires_grad  # loaded in place: still the learnable parameter

    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
        assert list(handle.keys()) == ["images"]
    assert metadata["num_classes"] == "3"
    assert metadata["class_names"].split("\x1f") == NAMES


def test_load_state_rejects_a_different_shape(tmp_path):
    path = tmp_path / "synthetic.safetensors"
    make_set(ipc=2).save(path)
    with pytest.raises(RuntimeError):
        make_set(ipc=3).load_state(path)


@pytest.mark.parametrize(("num_classes", "ipc", "size", "channels"), [(3, 2, 8, 1), (2, 4, 6, 3), (3, 1, 100, 1)])
def test_grid_image_has_one_row_per_class(num_classes, ipc, size, channels):
    synthetic = make_set(num_classes=num_classes, ipc=ipc, size=size, channels=channels)
    grid = synthetic.grid_image(max_cell=64)
    scale = max(1, 64 // size)
    cell, pad = size * scale, 2
    assert grid.mode == "RGB"
    assert grid.size == (ipc * (cell + pad) + pad, num_classes * (cell + pad) + pad)

    # The top-left pixel of the cell of (class c, image j) is the top-left pixel of that preview.
    previews = synthetic.to_pil_images()
    for c in range(num_classes):
        for j in range(ipc):
            expected = previews[c * ipc + j].convert("RGB").getpixel((0, 0))
            assert grid.getpixel((pad + j * (cell + pad), pad + c * (cell + pad))) == expected
    assert grid.getpixel((0, 0)) == (255, 255, 255)  # padding is white


# ---------------------------------------------------------------------------------------------------------------------
# Learned soft labels and step size
# ---------------------------------------------------------------------------------------------------------------------


def make_soft_set(step_size=None) -> SyntheticSet:
    base = make_set(num_classes=3, ipc=2)
    logits = SyntheticSet.initial_label_logits(base.labels, 3, confidence=0.9)
    return SyntheticSet(base.images.detach(), 3, NAMES, [0.5], [0.25], label_logits=logits, step_size=step_size)


def test_initial_label_logits_are_label_smoothing():
    labels = torch.tensor([0, 2])
    probabilities = SyntheticSet.initial_label_logits(labels, 3, confidence=0.9).softmax(-1)
    torch.testing.assert_close(probabilities, torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.05, 0.9]]))
    with pytest.raises(ValueError, match="confidence"):
        SyntheticSet.initial_label_logits(labels, 3, confidence=0.2)


def test_targets_are_hard_labels_without_soft_labels():
    synthetic = make_set()
    assert not synthetic.has_soft_labels
    assert torch.equal(synthetic.targets(), synthetic.labels)
    assert synthetic.targets_of([2]).tolist() == [2, 2]
    assert synthetic.learned_lr is None


def test_soft_targets_are_differentiable_probabilities():
    synthetic = make_soft_set(step_size=0.01)
    targets = synthetic.targets_of([1])
    assert targets.shape == (2, 3)
    torch.testing.assert_close(targets.sum(-1), torch.ones(2))
    assert targets.argmax(-1).tolist() == [1, 1]
    (targets[:, 0]).sum().backward()
    assert synthetic.label_logits.grad is not None and synthetic.label_logits.grad.abs().sum() > 0
    assert synthetic.learned_lr == pytest.approx(0.01)
    assert synthetic.step_size.requires_grad


def test_soft_labels_are_exported_and_restored(tmp_path):
    synthetic = make_soft_set(step_size=0.02)
    with torch.no_grad():
        synthetic.label_logits[0] = torch.tensor([0.0, 3.0, -1.0])
    dataset = synthetic.to_dataset()
    assert dataset.column_names == ["image", "pixel_values", "label", "soft_label"]
    row = np.asarray(dataset[0]["soft_label"], dtype=np.float32)
    np.testing.assert_allclose(row, torch.tensor([0.0, 3.0, -1.0]).softmax(-1).numpy(), rtol=1e-6)
    dataset.save_to_disk(str(tmp_path / "set"))
    from datasets import load_from_disk

    restored = SyntheticSet.from_dataset(load_from_disk(str(tmp_path / "set")), [0.5], [0.25], step_size=0.02)
    torch.testing.assert_close(restored.targets(), synthetic.targets().detach())
    assert restored.learned_lr == pytest.approx(0.02)
    assert not restored.label_logits.requires_grad


def test_soft_label_state_round_trips_through_checkpoints(tmp_path):
    synthetic = make_soft_set(step_size=0.03)
    with torch.no_grad():
        synthetic.label_logits.add_(1.5)
        synthetic.step_size.fill_(0.05)
    synthetic.save(tmp_path / "s.safetensors")
    other = make_soft_set(step_size=0.01)
    other.load_state(tmp_path / "s.safetensors")
    torch.testing.assert_close(other.label_logits, synthetic.label_logits)
    assert other.learned_lr == pytest.approx(0.05)


def test_label_logits_shape_is_checked():
    with pytest.raises(ValueError, match="label_logits must have shape"):
        SyntheticSet(torch.zeros(4, 1, 2, 2), 2, ["a", "b"], [0.0], [1.0], label_logits=torch.zeros(4, 3))
