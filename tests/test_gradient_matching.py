"""Gradient matching (DC / DSA): the distance, the loop rule, the loss, batch norm, the inner loop, resume."""

import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from hf_distill.config import DistillConfig
from hf_distill.methods import METHODS
from hf_distill.methods.gradient_matching import (
    DifferentiableSiameseAugmentation,
    DifferentiableSiameseAugmentationConfig,
    GradientMatching,
    GradientMatchingConfig,
    gradient_distance,
)
from hf_distill.modeling import build_model, reinitialize_
from hf_distill.seeding import derive_generator
from hf_distill.trainer import DistillTrainer

TINY = dict(
    images_per_class=2,
    num_iterations=2,
    net_width=4,
    net_depth=2,
    batch_real=6,
    batch_train=4,
    outer_loop=2,
    inner_loop=1,
    save_steps=0,
    eval_epochs=1,
    eval_num_models=1,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trainer(splits, config_class=GradientMatchingConfig, **overrides):
    return DistillTrainer(config_class(**{**TINY, **overrides}), splits["train"], splits["test"])


def _params(network):
    return [p.detach().clone() for p in network.parameters()]


# ---------------------------------------------------------------------------------------------------- distance


def _cos(a, b, eps=1e-6):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) + eps)


def test_gradient_distance_matches_hand_computation():
    generator = torch.Generator().manual_seed(0)
    shapes = [(2, 1, 2, 2), (2,), (3, 2), (3,)]  # conv weight, conv bias, linear weight, linear bias
    real = [torch.randn(s, generator=generator, dtype=torch.float64) for s in shapes]
    syn = [torch.randn(s, generator=generator, dtype=torch.float64) for s in shapes]
    as_lists = [(r.tolist(), s.tolist()) for r, s in zip(real, syn)]

    # per_channel: one row per output channel of each matrix-shaped gradient; biases are ignored.
    conv_r, conv_s = as_lists[0]
    lin_r, lin_s = as_lists[2]
    expected = 0.0
    for out in range(2):
        flat_r = [conv_r[out][0][i][j] for i in range(2) for j in range(2)]
        flat_s = [conv_s[out][0][i][j] for i in range(2) for j in range(2)]
        expected += 1 - _cos(flat_r, flat_s)
    for out in range(3):
        expected += 1 - _cos(lin_r[out], lin_s[out])
    assert gradient_distance(real, syn, "per_channel").item() == pytest.approx(expected, rel=1e-6)

    flat_r = [x for r in real for x in r.flatten().tolist()]
    flat_s = [x for s in syn for x in s.flatten().tolist()]
    mse = sum((x - y) ** 2 for x, y in zip(flat_r, flat_s))
    assert gradient_distance(real, syn, "mse").item() == pytest.approx(mse, rel=1e-6)
    assert gradient_distance(real, syn, "cosine").item() == pytest.approx(1 - _cos(flat_r, flat_s), rel=1e-5)

    # Identical gradients are at distance ~0 for every distance.
    for distance in ("per_channel", "mse", "cosine"):
        assert abs(gradient_distance(real, real, distance).item()) < 1e-5

    with pytest.raises(ValueError, match="per_channel, mse, cosine"):
        gradient_distance(real, syn, "l1")
    with pytest.raises(ValueError, match="shapes differ"):
        gradient_distance(real, syn[::-1], "mse")


# ---------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "ipc, outer, inner",
    [(1, 1, 1), (10, 10, 50), (20, 20, 25), (50, 50, 10), (5, 1, 1), (15, 10, 50), (100, 50, 10)],
)
def test_loop_rule_by_ipc(ipc, outer, inner):
    config = GradientMatchingConfig(images_per_class=ipc)
    assert (config.outer_loop, config.inner_loop) == (outer, inner)


def test_loop_rule_is_logged_saved_and_reloaded(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="hf_distill.methods.gradient_matching"):
        config = DifferentiableSiameseAugmentationConfig(images_per_class=7, inner_loop=3)
    assert "rule of IPC 10" in caplog.text
    assert (config.outer_loop, config.inner_loop) == (10, 3)  # an explicit value wins over the rule
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "distill_config.json").read_text())
    assert (saved["method"], saved["outer_loop"], saved["inner_loop"]) == ("dsa", 10, 3)
    reloaded = DistillConfig.from_pretrained(tmp_path)
    assert type(reloaded) is DifferentiableSiameseAugmentationConfig and reloaded == config


def test_registry_and_config_validation():
    assert METHODS["dc"] is GradientMatching and METHODS["dsa"] is DifferentiableSiameseAugmentation
    assert GradientMatchingConfig().dsa_strategy == "none"
    assert DifferentiableSiameseAugmentationConfig().dsa_strategy == "auto"
    assert GradientMatching.paper["year"] == "2021" and "bibtex" in DifferentiableSiameseAugmentation.paper
    with pytest.raises(ValueError, match="match_distance must be one of"):
        GradientMatchingConfig(match_distance="l2")
    with pytest.raises(ValueError, match="outer_loop must be >= 1"):
        GradientMatchingConfig(outer_loop=0)
    with pytest.raises(ValueError, match="use the 'dc' method"):
        DifferentiableSiameseAugmentationConfig(dsa_strategy="none")


# ---------------------------------------------------------------------------------------------------- loss


def test_loss_matches_hand_computation_for_one_class(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    trainer = _trainer(splits)
    method, synthetic, config = trainer.method, trainer.synthetic, trainer.config
    iteration, c = 3, 1
    loss = method.loss(synthetic, [c], iteration, update=0)

    # The same network, built independently of the method's object.
    network = reinitialize_(build_model(trainer.model_config), derive_generator(config.seed, iteration, "network"))
    parameters = list(network.parameters())
    real = trainer.train_data.images[method.sample_real([c], config.batch_real, iteration, 0)]
    real_loss = F.cross_entropy(network(pixel_values=real).logits, torch.full((config.batch_real,), c))
    real_grads = torch.autograd.grad(real_loss, parameters)
    syn = synthetic.images_of([c])
    syn_loss = F.cross_entropy(network(pixel_values=syn).logits, torch.full((2,), c))
    syn_grads = torch.autograd.grad(syn_loss, parameters, create_graph=True)
    expected = 0.0
    for r, s in zip(real_grads, syn_grads):
        if r.dim() > 1:
            r, s = r.flatten(1), s.flatten(1)  # one row per output channel; the papers add 1e-6 to the norms' product
            expected = expected + (1 - (r * s).sum(1) / (r.norm(dim=1) * s.norm(dim=1) + 1e-6)).sum()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)

    # The loss is differentiable w.r.t. the pixels of that class only.
    loss.backward()
    grad = synthetic.images.grad
    assert grad[synthetic.rows([c])].abs().sum() > 0
    assert grad[synthetic.rows([0, 2])].abs().sum() == 0


def test_soft_labels_receive_gradients(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    trainer = _trainer(splits, learn_soft_labels=True)
    trainer.method.loss(trainer.synthetic, [0, 1, 2], 0).backward()
    assert trainer.synthetic.label_logits.grad.abs().sum() > 0


def test_batch_norm_statistics_come_from_real_data_and_stay_frozen(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    trainer = _trainer(splits, net_norm="batchnorm", bn_images_per_class=4)
    method, config = trainer.method, trainer.config
    iteration, update = 1, 0
    loss = method.loss(trainer.synthetic, [0, 2], iteration, update)
    loss.backward()  # the synthetic double-backward pass must not touch the statistics either

    rows = method.sampler.sample_keyed(range(3), 4, config.seed, iteration, update, "batchnorm")
    first_norm = method.batch_norms[0]
    assert not first_norm.training
    with torch.no_grad():
        conv = method.network.features[0](trainer.train_data.images[rows])  # the layer before the first norm
    torch.testing.assert_close(first_norm.running_mean, conv.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(first_norm.running_var, conv.var(dim=(0, 2, 3), unbiased=True))
    assert int(first_norm.num_batches_tracked) == 1


def test_bf16_loss_close_to_float32(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    losses = {}
    for precision in ("no", "bf16"):
        trainer = _trainer(splits, mixed_precision=precision, match_distance="cosine")
        losses[precision] = trainer.method.loss(trainer.synthetic, [0, 1, 2], 0)
        losses[precision].backward()
        assert torch.isfinite(trainer.synthetic.images.grad).all()
    torch.testing.assert_close(losses["bf16"], losses["no"], rtol=0.1, atol=0.02)


# ---------------------------------------------------------------------------------------------------- iterations


def test_inner_loop_trains_the_network_between_updates(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    trainer = _trainer(splits, DifferentiableSiameseAugmentationConfig)
    assert trainer.method.updates_per_iteration == 2
    network, classes = trainer.method.network, [0, 1, 2]
    pixels = trainer.synthetic.images.detach().clone()

    trainer.method.loss(trainer.synthetic, classes, 0, 0)
    drawn = _params(network)  # the iteration's fresh network
    trainer._update(classes, 0)  # loss, pixel step, then one inner epoch
    trained = _params(network)
    assert any(not torch.equal(a, b) for a, b in zip(drawn, trained))
    assert not torch.equal(pixels, trainer.synthetic.images.detach())

    pixels = trainer.synthetic.images.detach().clone()
    trainer._update(classes, 1)  # the last update: matched on the trained network, no training after it
    assert all(torch.equal(a, b) for a, b in zip(trained, _params(network)))
    assert not torch.equal(pixels, trainer.synthetic.images.detach())

    with pytest.raises(RuntimeError, match="before update 0"):
        trainer.method.loss(trainer.synthetic, classes, 5, update=1)


def test_same_seed_same_set(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    runs = [_trainer(splits, DifferentiableSiameseAugmentationConfig, seed=s) for s in (1, 1, 2)]
    for trainer in runs:
        trainer.train()
    first, second, other = (t.synthetic.images.detach() for t in runs)
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)


def test_resume_equals_uninterrupted(tiny_image_dataset, tmp_path):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    common = dict(net_norm="batchnorm", save_steps=1)
    uninterrupted = _trainer(splits, DifferentiableSiameseAugmentationConfig, output_dir=str(tmp_path / "a"), **common)
    uninterrupted.train()

    interrupted_dir = str(tmp_path / "b")
    _trainer(
        splits, DifferentiableSiameseAugmentationConfig, num_iterations=1, output_dir=interrupted_dir, **common
    ).train()
    resumed = _trainer(
        splits,
        DifferentiableSiameseAugmentationConfig,
        output_dir=interrupted_dir,
        resume_from_checkpoint="latest",
        **common,
    )
    resumed.train()
    assert resumed.iteration == 2
    assert torch.equal(uninterrupted.synthetic.images.detach(), resumed.synthetic.images.detach())


@pytest.mark.parametrize("pairing", ["class", "image"])
def test_siamese_augmentation_per_class_shares_one_transform(tiny_image_dataset, pairing):
    """DSA's batch mode: every real and synthetic image of a class gets the same transform."""
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    trainer = _trainer(
        splits, DifferentiableSiameseAugmentationConfig, dsa_strategy="scale_rotate", siamese_pairing=pairing
    )
    image = trainer.train_data.images[:1]
    real, syn = image.repeat(2 * 5, 1, 1, 1), image.repeat(2 * 2, 1, 1, 1)  # classes [0, 2], 5 real / 2 syn each
    real_out, syn_out = trainer.method.siamese_augment(real, syn, [0, 2], 5, 2, 7, 0)
    torch.testing.assert_close(real_out[:2], syn_out[:2])  # image j of a class: the same transform either way
    same_within_class = torch.allclose(real_out[0], real_out[4])
    assert same_within_class == (pairing == "class")
    assert not torch.allclose(real_out[0], real_out[5])  # another class, another transform
