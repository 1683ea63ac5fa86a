"""Every registered method, exercised through the same trainer, plus method-specific checks."""

import pytest
import torch
from torch.nn.utils import parameters_to_vector

from hf_distill.experts import ExpertTrajectories
from hf_distill.methods import METHODS, DistributionMatchingConfig, get_method_class
from hf_distill.modeling import extract_features, reinitialize_
from hf_distill.seeding import derive_generator
from hf_distill.trainer import DistillTrainer

TINY = dict(images_per_class=2, num_iterations=2, net_width=8, net_depth=2, save_steps=0, eval_epochs=2)


def _config(name, **overrides):
    config_class = get_method_class(name).config_class
    fields = {**TINY, **overrides}
    if hasattr(config_class, "batch_real"):
        fields.setdefault("batch_real", 8)
    return config_class(**fields)


#: Settings a method cannot run without, from fixtures (fixture name per config field).
REQUIRED_FROM_FIXTURES = {"mtt": {"expert_path": "tiny_experts"}}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_distills_and_exports(name, tiny_image_dataset, tmp_path, request):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    required = {key: request.getfixturevalue(f) for key, f in REQUIRED_FROM_FIXTURES.get(name, {}).items()}
    trainer = DistillTrainer(_config(name, eval_num_models=1, **required), splits["train"], splits["test"])
    before = trainer.synthetic.images.detach().clone()
    trainer.train()
    after = trainer.synthetic.images.detach()
    assert after.shape == (6, 1, 8, 8)
    assert torch.isfinite(after).all()
    if trainer.method.selects_real_rows:
        # A coreset keeps real rows exactly: every selected image is a row of the training tensor.
        rows = trainer.selected_rows
        assert torch.equal(after, trainer.train_data.images[rows])
        assert trainer.train_data.labels[rows].tolist() == trainer.synthetic.labels.tolist()
    elif trainer.method.synthesizes_once:
        # Built in one pass when the trainer is made (a teacher's crops), with the teacher's soft labels.
        assert torch.equal(before, after) and trainer.synthetic.has_soft_labels
    else:
        assert not torch.equal(before, after)

    dataset = trainer.to_dataset()
    assert dataset.num_rows == 6
    assert sorted(dataset["label"]) == [0, 0, 1, 1, 2, 2]
    results = trainer.evaluate(random_baseline=True)
    assert 0.0 <= results["distilled"]["mean"] <= 100.0
    assert results["random_real"]["num_images"] == 6
    trainer.save(tmp_path / name)
    assert (tmp_path / name / "dataset").is_dir()


def test_methods_at_one_size_share_the_random_baseline_through_the_eval_cache(tiny_image_dataset, tmp_path):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    results = {}
    for name in ("random", "dm"):
        config = _config(name, eval_num_models=1, eval_cache_dir=str(tmp_path / "eval_cache"))
        trainer = DistillTrainer(config, splits["train"], splits["test"])
        trainer.train()
        results[name] = trainer.evaluate(random_baseline=True)
    assert "reused_from" not in results["random"]["random_real"]
    assert results["dm"]["random_real"]["reused_from"].startswith("random-")
    assert results["dm"]["random_real"]["accuracies"] == results["random"]["random_real"]["accuracies"]
    assert results["dm"]["fair"]["improvement_over_random"] == round(
        results["dm"]["distilled"]["mean"] - results["random"]["random_real"]["mean"], 2
    )


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown method 'nope'. Available methods: .*dm"):
        get_method_class("nope")


def test_dm_loss_matches_hand_computation(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    config = DistributionMatchingConfig(**{**TINY, "batch_real": 4, "dsa_strategy": "none"})
    trainer = DistillTrainer(config, splits["train"])
    method, synthetic = trainer.method, trainer.synthetic
    classes, iteration = [0, 2], 5
    loss = method.loss(synthetic, classes, iteration)

    network = reinitialize_(method.network, derive_generator(config.seed, iteration, "network"))
    expected = 0.0
    for c in classes:
        rows = method.sample_real([c], 4, iteration)
        real_mean = extract_features(network, trainer.train_data.images[rows]).mean(0)
        syn_mean = extract_features(network, synthetic.images_of([c])).mean(0)
        expected = expected + ((real_mean - syn_mean) ** 2).sum()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_dm_batch_norm_statistics_span_the_whole_real_batch(tiny_image_dataset):
    """With batch norm each pass is one forward (as the authors' ConvNetBN branch), whatever the chunk size."""
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    losses = []
    for chunk in (4, 256):
        settings = {**TINY, "batch_real": 4, "dsa_strategy": "none", "net_norm": "batchnorm"}
        trainer = DistillTrainer(DistributionMatchingConfig(**settings, forward_chunk=chunk), splits["train"])
        losses.append(trainer.method.loss(trainer.synthetic, [0, 1, 2], 3))
    torch.testing.assert_close(losses[0], losses[1])


def test_dm_forward_chunks_leave_loss_and_gradient_unchanged(tiny_image_dataset):
    """Without batch norm both passes may be split (a speed setting): the loss and the pixel gradients stay."""
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    results = []
    for chunk in (2, 256):
        settings = {**TINY, "batch_real": 4, "images_per_class": 3}
        trainer = DistillTrainer(DistributionMatchingConfig(**settings, forward_chunk=chunk), splits["train"])
        loss = trainer.method.loss(trainer.synthetic, [0, 1, 2], 3)
        loss.backward()
        results.append((loss.detach(), trainer.synthetic.images.grad.clone()))
    torch.testing.assert_close(results[0], results[1])


def test_dm_real_forward_chunk_is_a_deprecated_alias():
    with pytest.warns(FutureWarning, match="use forward_chunk"):
        config = DistributionMatchingConfig(real_forward_chunk=16)
    assert (config.forward_chunk, config.real_forward_chunk) == (16, None)
    with pytest.raises(ValueError, match="forward_chunk=0"):
        DistributionMatchingConfig(forward_chunk=0)


def test_multi_layer_dm_loss_matches_hand_computation(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    settings = {**TINY, "batch_real": 4, "dsa_strategy": "none"}
    single = DistillTrainer(DistributionMatchingConfig(**settings), splits["train"])
    last = DistillTrainer(DistributionMatchingConfig(**settings, feature_layers=[-1]), splits["train"])
    both = DistillTrainer(DistributionMatchingConfig(**settings, feature_layers=[0, 1]), splits["train"])
    classes, iteration = [0, 2], 3
    # [-1] is the last block's flattened output: the embedding, so the paper's loss.
    torch.testing.assert_close(
        last.method.loss(last.synthetic, classes, iteration), single.method.loss(single.synthetic, classes, iteration)
    )

    network = reinitialize_(both.method.network, derive_generator(both.config.seed, iteration, "network"))
    expected = 0.0
    for c in classes:
        rows = both.method.sample_real([c], 4, iteration)
        real = extract_features(network, both.train_data.images[rows], [0, 1])
        syn = extract_features(network, both.synthetic.images_of([c]), [0, 1])
        last_size = real[1].shape[1]
        for r, s in zip(real, syn):
            expected = expected + ((r.mean(0) - s.mean(0)) ** 2).sum() * last_size / r.shape[1]
    assert real[0].shape[1] == 4 * real[1].shape[1]  # block 0 is wider: its term is scaled down
    torch.testing.assert_close(both.method.loss(both.synthetic, classes, iteration), expected, rtol=1e-5, atol=1e-6)

    with pytest.raises(ValueError, match="feature_layers must list at least one"):
        DistributionMatchingConfig(**settings, feature_layers=[])


def test_dm_network_pool_draws_fresh_networks_and_expert_snapshots(tiny_image_dataset, tiny_experts):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    settings = {**TINY, "batch_real": 4, "dsa_strategy": "none"}
    fresh_only = DistillTrainer(DistributionMatchingConfig(**settings), splits["train"])
    pooled = DistillTrainer(
        DistributionMatchingConfig(**settings, network_pool_path=tiny_experts, network_pool_max_epoch=2),
        splits["train"],
    )
    experts = ExpertTrajectories.from_pretrained(tiny_experts)
    snapshots = {
        (expert, epoch): experts.epoch(expert, epoch) for expert in range(experts.num_experts) for epoch in (1, 2)
    }
    drawn = set()
    for iteration in range(30):
        fresh = parameters_to_vector(fresh_only.method.draw_network(iteration, torch.device("cpu")).parameters())
        used = parameters_to_vector(pooled.method.draw_network(iteration, torch.device("cpu")).parameters())
        match = [key for key, vector in snapshots.items() if torch.equal(used, vector)]
        # Either the paper's fresh network of this iteration, or exactly one stored snapshot (epochs 1..2).
        assert torch.equal(used, fresh) or len(match) == 1
        drawn.add(match[0][1] if match else 0)
        # The same iteration draws the same network again (resume and multi-process runs rely on it).
        again = parameters_to_vector(pooled.method.draw_network(iteration, torch.device("cpu")).parameters())
        assert torch.equal(again, used)
    assert drawn == {0, 1, 2}

    # The loss is the paper's loss on the drawn network: a snapshot iteration differs from the fresh-network run.
    snapshot_iteration = next(
        i
        for i in range(30)
        if not torch.equal(
            parameters_to_vector(pooled.method.draw_network(i, torch.device("cpu")).parameters()),
            parameters_to_vector(fresh_only.method.draw_network(i, torch.device("cpu")).parameters()),
        )
    )
    pooled_loss = pooled.method.loss(pooled.synthetic, [0, 1, 2], snapshot_iteration)
    fresh_loss = fresh_only.method.loss(fresh_only.synthetic, [0, 1, 2], snapshot_iteration)
    assert torch.isfinite(pooled_loss) and not torch.isclose(pooled_loss, fresh_loss)


def test_dm_network_pool_errors_are_clear(tiny_image_dataset, tiny_experts, tmp_path):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    settings = {**TINY, "batch_real": 4}
    with pytest.raises(ValueError, match="network_pool_max_epoch=0: it must be at least 1"):
        DistributionMatchingConfig(**settings, network_pool_max_epoch=0)
    with pytest.raises(ValueError, match="holds no experts.json"):
        DistillTrainer(DistributionMatchingConfig(**settings, network_pool_path=str(tmp_path)), splits["train"])
    with pytest.raises(ValueError, match="DM: network_pool_max_epoch"):
        DistillTrainer(
            DistributionMatchingConfig(**settings, network_pool_path=tiny_experts, network_pool_max_epoch=999),
            splits["train"],
        )
    with pytest.raises(ValueError, match="does not match the DM network"):
        DistillTrainer(
            DistributionMatchingConfig(**{**settings, "net_width": 16}, network_pool_path=tiny_experts),
            splits["train"],
        )


def test_dm_step_reduces_its_loss_on_a_fixed_network(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    config = DistributionMatchingConfig(**{**TINY, "batch_real": 8, "dsa_strategy": "none", "lr_images": 0.1})
    trainer = DistillTrainer(config, splits["train"])
    classes = [0, 1, 2]
    before = trainer.method.loss(trainer.synthetic, classes, 0)
    before.backward()
    trainer.optimizer.step()
    after = trainer.method.loss(trainer.synthetic, classes, 0)  # same iteration: same network, same real batch
    assert after.item() < before.item()


def test_dm_bf16_compiled_loss_close_to_float32(tiny_image_dataset):
    """bf16 autocast + channels-last + torch.compile compute the same loss up to bf16 rounding."""
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    losses = {}
    for precision, compiled in (("no", False), ("bf16", True)):
        config = DistributionMatchingConfig(
            **{**TINY, "batch_real": 8, "mixed_precision": precision, "torch_compile": compiled}
        )
        trainer = DistillTrainer(config, splits["train"])
        losses[precision] = trainer.method.loss(trainer.synthetic, [0, 1, 2], iteration=1)
        losses[precision].backward()
        assert torch.isfinite(trainer.synthetic.images.grad).all()
    torch.testing.assert_close(losses["bf16"], losses["no"], rtol=0.1, atol=1e-3)
