"""How DM and DSA pair real and synthetic images under differentiable siamese augmentation (`siamese_pairing`).

The authors' code calls `DiffAugment(images, strategy, seed=s)` once per class for the real and once for the
synthetic images with the same seed, and with a seed every op copies the first image's parameters to the whole
batch: one transform, of one family, per class, shared by all its real and synthetic images.
"""

import pytest
import torch
from conftest import TINY_CONFIG_DEFAULTS

from hf_distill import DistillTrainer, DistributionMatchingConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NUM_CLASSES, N_REAL, N_SYN = 4, 5, 2


def _method(dataset, pairing: str, **settings):
    config = DistributionMatchingConfig(
        **{**TINY_CONFIG_DEFAULTS, "num_iterations": 0, "dsa_strategy": "crop_scale_rotate", **settings},
        siamese_pairing=pairing,
    )
    return DistillTrainer(config, dataset["train"], dataset["test"]).method


def _constant_batches(size: int, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    # Every image of a class is the same asymmetric pattern, so equal outputs mean equal transforms.
    pattern = torch.linspace(0, 1, size * size).view(1, 1, size, size) ** 2
    real = pattern.repeat(len(classes) * N_REAL, 1, 1, 1)
    syn = pattern.repeat(len(classes) * N_SYN, 1, 1, 1).requires_grad_(True)
    return real, syn


def _augment_all_classes(method, iteration: int):
    classes = list(range(NUM_CLASSES))
    real, syn = _constant_batches(8, classes)
    return (real, syn, *method.siamese_augment(real, syn, classes, N_REAL, N_SYN, iteration))


def test_class_pairing_gives_every_image_of_a_class_one_transform(tiny_image_dataset):
    dataset = tiny_image_dataset(num_classes=NUM_CLASSES, size=8)
    _, syn, real_aug, syn_aug = _augment_all_classes(_method(dataset, "class"), 7)
    per_class = []
    for c in range(NUM_CLASSES):
        images = torch.cat([real_aug[c * N_REAL : (c + 1) * N_REAL], syn_aug[c * N_SYN : (c + 1) * N_SYN]])
        torch.testing.assert_close(images, images[:1].expand_as(images))
        per_class.append(images[0])
    # The classes do not all share one transform (each draws its own).
    assert any(not torch.allclose(per_class[0], other) for other in per_class[1:])
    syn_aug.sum().backward()
    assert syn.grad is not None and syn.grad.abs().sum() > 0


def test_class_pairing_draws_one_family_per_class(tiny_image_dataset):
    # Families that act on different things make a class's family visible: a flip only moves pixels, colour
    # changes their values. Within one iteration, some classes must get one family and some the other.
    dataset = tiny_image_dataset(num_classes=NUM_CLASSES, size=8)
    method = _method(dataset, "class", dsa_strategy="flip_color")
    for iteration in range(8):
        real, _, real_aug, _ = _augment_all_classes(method, iteration)
        families = set()
        for c in range(NUM_CLASSES):
            pixels_kept = torch.allclose(real_aug[c * N_REAL].flatten().sort().values, real[0].flatten().sort().values)
            families.add("flip" if pixels_kept else "color")
        if families == {"flip", "color"}:
            return
    pytest.fail("every iteration gave all classes one family")


def test_class_pairing_does_not_depend_on_which_classes_a_process_handles(tiny_image_dataset):
    dataset = tiny_image_dataset(num_classes=NUM_CLASSES, size=8)
    method = _method(dataset, "class")
    real, syn, real_all, syn_all = _augment_all_classes(method, 3)
    # A second process handling classes 2 and 3 only.
    real_part, syn_part = method.siamese_augment(real[2 * N_REAL :], syn[2 * N_SYN :], [2, 3], N_REAL, N_SYN, 3)
    torch.testing.assert_close(real_part, real_all[2 * N_REAL :])
    torch.testing.assert_close(syn_part, syn_all[2 * N_SYN :])


def test_image_pairing_pairs_image_j_of_both_batches(tiny_image_dataset):
    dataset = tiny_image_dataset(num_classes=NUM_CLASSES, size=8)
    _, _, real_aug, syn_aug = _augment_all_classes(_method(dataset, "image"), 7)
    for c in range(NUM_CLASSES):
        torch.testing.assert_close(syn_aug[c * N_SYN : (c + 1) * N_SYN], real_aug[c * N_REAL : c * N_REAL + N_SYN])
    # ...but the images of a class get different transforms.
    assert not torch.allclose(real_aug[0], real_aug[1])


def test_unknown_pairing_is_refused():
    with pytest.raises(ValueError, match="siamese_pairing='pixel'"):
        DistributionMatchingConfig(siamese_pairing="pixel")
