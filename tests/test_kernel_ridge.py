"""Kernel ridge regression methods (rfad, frepo): the KRR solve, the losses by hand, the online pool, resume."""

import math

import pytest
import torch

from hf_distill.cards import render_dataset_card
from hf_distill.evaluation import REGRESSION_MAX_GRAD_NORM
from hf_distill.methods import FeatureRegressionConfig, RandomFeatureConfig
from hf_distill.methods.kernel_ridge import centred_one_hot, kernel_ridge_predict, nngp_initialize_
from hf_distill.modeling import ConvNetConfig, build_model, convnet_variant, extract_features
from hf_distill.seeding import derive_generator
from hf_distill.trainer import DistillTrainer

TINY = dict(
    images_per_class=2,
    num_iterations=3,
    net_width=8,
    net_depth=2,
    save_steps=0,
    eval_epochs=2,
    eval_num_models=1,
    batch_real=5,
    num_models=2,
)


def test_kernel_ridge_predict_matches_the_closed_form():
    generator = torch.Generator().manual_seed(0)
    support, query = torch.randn(6, 4, generator=generator), torch.randn(3, 4, generator=generator)
    targets = torch.randn(6, 2, generator=generator)
    ridge, a, b = 0.1, 2.0, 0.01
    k_ss = a * support.double() @ support.double().T + b
    k_ss += ridge * k_ss.trace() / 6 * torch.eye(6, dtype=torch.float64)
    expected = (a * query.double() @ support.double().T + b) @ torch.linalg.inv(k_ss) @ targets.double()
    predicted = kernel_ridge_predict(support, targets, query, ridge, a, b)
    assert predicted.dtype == torch.float32
    torch.testing.assert_close(predicted, expected.float(), rtol=1e-5, atol=1e-6)


def test_kernel_ridge_interpolates_its_support_when_the_ridge_vanishes():
    support = torch.randn(5, 20, generator=torch.Generator().manual_seed(1))
    targets = centred_one_hot(torch.tensor([0, 1, 2, 0, 1]), 3)
    torch.testing.assert_close(
        kernel_ridge_predict(support, targets, support, ridge=1e-10), targets, atol=1e-5, rtol=0
    )


def test_nngp_initialisation_is_he_normal_and_seeded():
    network = build_model(ConvNetConfig(num_channels=1, image_size=16, net_width=64, net_norm="none"))
    nngp_initialize_(network, derive_generator(0, "a"))
    first = [p.detach().clone() for p in network.parameters()]
    conv = next(m for m in network.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels == 64)
    fan_in = conv.weight[0].numel()
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    assert conv.bias.std().item() == pytest.approx(0.1, rel=0.3)
    nngp_initialize_(network, derive_generator(0, "a"))
    assert all(torch.equal(a, b) for a, b in zip(first, network.parameters()))


def test_convnet_variant_changes_only_a_convnet():
    convnet = ConvNetConfig(num_channels=3, image_size=32, net_width=128, net_norm="instancenorm")
    kernel = convnet_variant(convnet, 256, "none")
    assert (kernel.net_width, kernel.net_norm) == (256, "none")
    assert (convnet.net_width, convnet.net_norm) == (128, "instancenorm")  # the run's config is left alone
    assert convnet_variant(convnet, None, None) is convnet
    from transformers import ResNetConfig

    resnet = ResNetConfig()
    assert convnet_variant(resnet, 256, "none") is resnet


def test_rfad_loss_matches_hand_computation(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    config = RandomFeatureConfig(**TINY, kernel_loss="mse")
    trainer = DistillTrainer(config, splits["train"])
    method, synthetic, iteration = trainer.method, trainer.synthetic, 4
    loss = method.loss(synthetic, [0, 1, 2], iteration)

    rows = method.sample_real([0, 1, 2], 5, iteration)
    real, labels = trainer.train_data.images[rows], trainer.train_data.labels[rows]
    network = build_model(method.kernel_config)
    syn_parts, real_parts = [], []
    for index in range(2):
        nngp_initialize_(network, derive_generator(config.seed, iteration, "kernel", index))
        syn_parts.append(extract_features(network, synthetic.images))
        real_parts.append(extract_features(network, real))
    scale = (2 * syn_parts[0].shape[1]) ** -0.5
    syn_features, real_features = torch.cat(syn_parts, 1) * scale, torch.cat(real_parts, 1) * scale
    predictions = kernel_ridge_predict(
        syn_features, centred_one_hot(synthetic.labels, 3), real_features, config.ridge, 2.0, 0.01
    )
    expected = 0.5 * ((predictions - centred_one_hot(labels, 3)) ** 2).sum(1).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)
    assert method.kernel_config.net_norm == "none" and trainer.model_config.net_norm == "instancenorm"


def test_rfad_learns_its_platt_temperature_and_resumes_it(tiny_image_dataset, tmp_path):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    common = {**TINY, "save_steps": 2}
    uninterrupted = DistillTrainer(RandomFeatureConfig(**common, output_dir=str(tmp_path / "a")), splits["train"])
    uninterrupted.train()
    assert uninterrupted.method.log_temperature.item() != 0.0
    DistillTrainer(
        RandomFeatureConfig(**{**common, "num_iterations": 2}, output_dir=str(tmp_path / "b")), splits["train"]
    ).train()
    resumed = DistillTrainer(
        RandomFeatureConfig(**common, output_dir=str(tmp_path / "b"), resume_from_checkpoint="latest"), splits["train"]
    )
    resumed.train()
    assert torch.equal(resumed.method.log_temperature.detach(), uninterrupted.method.log_temperature.detach())
    assert torch.equal(resumed.synthetic.images.detach(), uninterrupted.synthetic.images.detach())


def test_frepo_trains_the_drawn_network_online_and_redraws_it(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    trainer = DistillTrainer(FeatureRegressionConfig(**TINY, max_online_updates=1), splits["train"])
    method, synthetic = trainer.method, trainer.synthetic
    assert method.pool_steps == [0, 0]  # staggered by max_online_updates // num_models
    index = method.draw(0)
    before = [p.detach().clone() for p in method.networks[index].parameters()]
    method.after_update(synthetic, 0, 0)
    assert method.pool_steps[index] == 1
    assert not all(torch.equal(a, b) for a, b in zip(before, method.networks[index].parameters()))
    assert not any(p.requires_grad for p in method.networks[index].parameters())  # pixels only, in the next loss
    method.pool_steps[index] = 2  # past max_online_updates: the next visit re-draws it
    method.after_update(synthetic, 0, 0)
    assert method.pool_steps[index] == 0
    assert method.pool_optimizers[index].state == {}


def test_frepo_learns_targets_with_a_margin_and_exports_them(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    trainer = DistillTrainer(FeatureRegressionConfig(**TINY, lr_labels=0.01), splits["train"])
    initial = trainer.synthetic.regression_targets.detach().clone()
    trainer.train()
    learned = trainer.synthetic.regression_targets.detach()
    assert not torch.equal(initial, learned)
    dataset = trainer.to_dataset()
    assert "regression_target" in dataset.column_names
    torch.testing.assert_close(torch.tensor(dataset["regression_target"]), learned)


def test_regression_figures_and_card_say_how_the_targets_trained(tiny_image_dataset, tmp_path):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    trainer = DistillTrainer(FeatureRegressionConfig(**{**TINY, "num_iterations": 1}), splits["train"], splits["test"])
    trainer.train()
    results = trainer.evaluate()
    assert results["distilled"]["max_grad_norm"] == REGRESSION_MAX_GRAD_NORM
    assert "max_grad_norm" not in results["random_real"]  # hard labels: the papers' unclipped protocol
    card = render_dataset_card(trainer.save(tmp_path / "run")).text
    assert f"squared loss, each step's gradient clipped to norm\n  {REGRESSION_MAX_GRAD_NORM}," in card


def test_frepo_resume_equals_uninterrupted(tiny_image_dataset, tmp_path):
    """The pool (parameters, Adam moments, ages) is method state: a resumed run continues it exactly."""
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    common = dict(TINY, num_iterations=4, save_steps=2, max_online_updates=2)
    uninterrupted = DistillTrainer(FeatureRegressionConfig(**common, output_dir=str(tmp_path / "a")), splits["train"])
    uninterrupted.train()
    DistillTrainer(
        FeatureRegressionConfig(**{**common, "num_iterations": 2}, output_dir=str(tmp_path / "b")), splits["train"]
    ).train()
    resumed = DistillTrainer(
        FeatureRegressionConfig(**common, output_dir=str(tmp_path / "b"), resume_from_checkpoint="latest"),
        splits["train"],
    )
    resumed.train()
    assert resumed.iteration == 4
    assert resumed.method.pool_steps == uninterrupted.method.pool_steps
    assert torch.equal(uninterrupted.synthetic.images.detach(), resumed.synthetic.images.detach())
    assert torch.equal(
        uninterrupted.synthetic.regression_targets.detach(), resumed.synthetic.regression_targets.detach()
    )


@pytest.mark.parametrize(
    "config_class, settings, message",
    [
        (RandomFeatureConfig, {"kernel_loss": "hinge"}, "kernel_loss='hinge'"),
        (RandomFeatureConfig, {"num_models": 0}, "at least one network"),
        (RandomFeatureConfig, {"ridge": 0.0}, "ridge=0.0"),
        (RandomFeatureConfig, {"kernel_init": "xavier"}, "kernel_init='xavier'"),
        (FeatureRegressionConfig, {"max_online_updates": 0}, "max_online_updates"),
    ],
)
def test_bad_kernel_settings_are_clear_errors(config_class, settings, message):
    with pytest.raises(ValueError, match=message):
        config_class(**settings)


def test_paper_defaults():
    rfad, frepo = RandomFeatureConfig(), FeatureRegressionConfig()
    assert (rfad.num_models, rfad.ridge, rfad.kernel_loss, rfad.kernel_net_width, rfad.kernel_net_norm) == (
        8,
        5e-3,
        "platt",
        256,
        "none",
    )
    assert (frepo.num_models, frepo.max_online_updates, frepo.learn_regression_targets, frepo.target_margin) == (
        10,
        100,
        True,
        True,
    )


@pytest.mark.parametrize("config_class", [RandomFeatureConfig, FeatureRegressionConfig])
def test_kernel_regression_accuracy_is_reported_and_fits_its_own_support(config_class, tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    trainer = DistillTrainer(config_class(**TINY, ridge=1e-9), splits["train"], splits["test"])
    synthetic = trainer.synthetic
    # Ridge regression with a vanishing ridge reproduces its own targets: every synthetic example is classified right.
    assert trainer.method.kernel_regression_accuracy(synthetic, synthetic.images.detach(), synthetic.labels) == 100.0
    results = trainer.evaluate()
    kernel = results["kernel_regression"]
    assert 0.0 <= kernel["mean"] <= 100.0 and kernel["num_images"] == 6 and kernel["num_models"] == 2


def test_kernel_methods_distil_without_augmentation_unless_asked(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    plain = DistillTrainer(RandomFeatureConfig(**TINY, kernel_loss="mse"), splits["train"])
    assert not plain.method.augment.enabled  # the papers' default: dsa_strategy="none"
    augmented = DistillTrainer(
        RandomFeatureConfig(**TINY, kernel_loss="mse", dsa_strategy="crop_flip"), splits["train"]
    )
    classes = [0, 1, 2]
    # Same draws of networks and real rows; only the siamese transforms differ.
    assert not torch.equal(
        plain.method.loss(plain.synthetic, classes, 0), augmented.method.loss(augmented.synthetic, classes, 0)
    )
