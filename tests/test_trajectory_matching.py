"""Trajectory matching (MTT): config defaults, clear errors, the loss, one optimiser step, resume, memory modes."""

import pytest
import torch
from conftest import TINY_EXPERT_EPOCHS

from hf_distill.config import DistillConfig
from hf_distill.experts import ExpertTrajectories
from hf_distill.methods.trajectory_matching import TrajectoryMatching, TrajectoryMatchingConfig
from hf_distill.trainer import DistillTrainer

FAST = dict(net_width=8, net_depth=2, images_per_class=2, syn_steps=3, max_start_epoch=2, expert_epochs=1)
FAST.update(eval_epochs=2, eval_num_models=1, save_steps=0, logging_steps=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def splits():
    from conftest import make_image_dataset_dict

    return make_image_dataset_dict()


def _trainer(splits, tiny_experts, **overrides):
    config = TrajectoryMatchingConfig(**{**FAST, "expert_path": tiny_experts, **overrides})
    return DistillTrainer(config, splits["train"], splits["test"])


# ---------------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ipc, syn_steps, max_start_epoch, lr_lr",
    [(1, 50, 2, 1e-7), (10, 30, 20, 1e-5), (50, 30, 40, 1e-5), (5, 30, 20, 1e-5)],
)
def test_defaults_follow_the_paper_by_ipc(ipc, syn_steps, max_start_epoch, lr_lr):
    config = TrajectoryMatchingConfig(images_per_class=ipc)
    assert (config.syn_steps, config.max_start_epoch, config.lr_lr) == (syn_steps, max_start_epoch, lr_lr)
    assert (config.expert_epochs, config.syn_lr_init, config.num_iterations, config.momentum_images) == (
        2,
        0.01,
        5000,
        0.5,
    )
    assert config.last_expert_epoch == max_start_epoch + 1
    # The resolved values are what distill_config.json records, and they load back as they are.
    assert DistillConfig.from_dict(config.to_dict()) == config


def test_explicit_values_win_and_invalid_ones_are_explained():
    config = TrajectoryMatchingConfig(images_per_class=1, syn_steps=7, max_start_epoch=5, lr_lr=1e-3)
    assert (config.syn_steps, config.max_start_epoch, config.lr_lr) == (7, 5, 1e-3)
    with pytest.raises(ValueError, match="unroll_memory must be one of full, checkpoint, tesla"):
        TrajectoryMatchingConfig(unroll_memory="cheap")
    with pytest.raises(ValueError, match=r"max_start_epoch must be >= 1 \(start epochs are drawn from"):
        TrajectoryMatchingConfig(max_start_epoch=0)
    with pytest.raises(ValueError, match="batch_syn"):
        TrajectoryMatchingConfig(batch_syn=0)


# ---------------------------------------------------------------------------------------------------------------------
# Clear errors at trainer construction
# ---------------------------------------------------------------------------------------------------------------------


def test_missing_expert_path_says_how_to_make_experts(splits, tmp_path):
    with pytest.raises(ValueError, match=r"expert_path is not set.*hf_distill\.experts\.train_experts_for_config"):
        _trainer(splits, None)
    with pytest.raises(ValueError, match="no experts.json.*train_experts"):
        _trainer(splits, str(tmp_path))
    with pytest.raises(ValueError, match="no such folder"):
        _trainer(splits, str(tmp_path / "nowhere"))


def test_experts_of_other_data_are_flagged(splits, tiny_experts, caplog):
    trainer = _trainer(splits, tiny_experts)
    assert trainer.method.experts.index["class_names"] == trainer.train_data.class_names
    experts = ExpertTrajectories.from_pretrained(tiny_experts)
    with caplog.at_level("WARNING", logger="hf_distill.experts"):
        experts.check_data(trainer.train_data)
        assert not caplog.records
        experts.index["image_mean"] = [0.1307]  # MNIST's
        experts.check_data(trainer.train_data)
    assert "are they from another dataset?" in caplog.text


def test_architecture_mismatch_and_too_few_epochs_are_clear(splits, tiny_experts):
    with pytest.raises(ValueError, match=r"width 8.*does not match the distillation network.*train_experts"):
        _trainer(splits, tiny_experts, net_width=4)
    with pytest.raises(ValueError, match=r"trained for 21 epochs.*num_epochs >= 30"):
        _trainer(splits, tiny_experts, max_start_epoch=29, expert_epochs=2)
    with pytest.raises(ValueError, match="holds 2 experts"):
        _trainer(splits, tiny_experts, num_experts=5)


# ---------------------------------------------------------------------------------------------------------------------
# The loss and the optimiser step
# ---------------------------------------------------------------------------------------------------------------------


def test_loss_is_the_normalised_distance_and_one_with_a_zero_step(splits, tiny_experts):
    trainer = _trainer(splits, tiny_experts)
    method, synthetic = trainer.method, trainer.synthetic
    assert isinstance(method, TrajectoryMatching) and not method.class_separable
    expert, start = method.draw_segment(3)
    assert 0 <= expert < 2 and 0 <= start < 2
    assert method.draw_segment(3) == (expert, start)  # keyed by (seed, iteration): reproducible
    assert {method.draw_segment(i) for i in range(40)} == {(e, s) for e in range(2) for s in range(2)}
    # `cycle` (the default, distill.py's): each round of 2 iterations matches both experts, in a varying order.
    rounds = [[method.draw_segment(2 * r + i)[0] for i in range(2)] for r in range(20)]
    assert all(sorted(experts) == [0, 1] for experts in rounds) and len({tuple(e) for e in rounds}) == 2

    loss = method.loss(synthetic, [0, 1, 2], iteration=3)
    assert loss.ndim == 0 and 0 < loss.item() and torch.isfinite(loss)
    with torch.no_grad():
        synthetic.step_size.zero_()  # the student does not move: it ends where the expert started
    torch.testing.assert_close(method.loss(synthetic, [0, 1, 2], iteration=3), torch.tensor(1.0))


def test_uniform_expert_sampling_draws_each_iteration_alone(splits, tiny_experts):
    method = _trainer(splits, tiny_experts, expert_sampling="uniform").method
    experts = [method.draw_segment(i)[0] for i in range(40)]
    assert set(experts) == {0, 1}
    # Independent draws: somewhere one expert is matched twice within a round of the cycle.
    assert any(experts[2 * r] == experts[2 * r + 1] for r in range(20))
    with pytest.raises(ValueError, match="expert_sampling must be one of cycle, uniform; got 'shuffled'"):
        _trainer(splits, tiny_experts, expert_sampling="shuffled")


def test_one_step_moves_pixels_and_step_size(splits, tiny_experts):
    trainer = _trainer(splits, tiny_experts, lr_images=10.0, lr_lr=1e-4, num_iterations=1)
    synthetic = trainer.synthetic
    groups = trainer.optimizer.param_groups
    assert [group["lr"] for group in groups] == [10.0, 1e-4]  # pixels, then the step size with lr_lr
    assert groups[1]["params"][0] is synthetic.step_size and synthetic.learned_lr == pytest.approx(0.01)
    images, step_size = synthetic.images.detach().clone(), synthetic.step_size.detach().clone()
    trainer.train()
    assert synthetic.step_size.grad is not None and synthetic.step_size.grad.abs() > 0
    assert not torch.equal(synthetic.images.detach(), images)
    assert synthetic.step_size.item() != step_size.item()


def test_soft_labels_are_learned(splits, tiny_experts):
    trainer = _trainer(splits, tiny_experts, learn_soft_labels=True, lr_labels=10.0, num_iterations=1)
    logits = trainer.synthetic.label_logits.detach().clone()
    trainer.train()
    assert trainer.synthetic.label_logits.grad.abs().sum() > 0
    assert not torch.equal(trainer.synthetic.label_logits.detach(), logits)


@pytest.mark.parametrize("soft_labels", [False, True])
def test_checkpoint_memory_gives_the_full_gradient(splits, tiny_experts, soft_labels):
    gradients = {}
    for memory in ("full", "checkpoint", "tesla"):
        trainer = _trainer(splits, tiny_experts, unroll_memory=memory, learn_soft_labels=soft_labels)
        synthetic = trainer.synthetic
        loss = trainer.method.loss(synthetic, [0, 1, 2], iteration=5)
        loss.backward()
        gradients[memory] = [loss.detach(), synthetic.images.grad, synthetic.step_size.grad]
        if soft_labels:
            gradients[memory].append(synthetic.label_logits.grad)
    for full, checkpoint in zip(gradients["full"], gradients["checkpoint"]):
        torch.testing.assert_close(checkpoint, full, rtol=2e-3, atol=1e-6)
    full_images, tesla_images = gradients["full"][1].flatten(), gradients["tesla"][1].flatten()
    assert not torch.allclose(tesla_images, full_images)  # first-order: an approximation over 3 steps
    assert torch.nn.functional.cosine_similarity(tesla_images, full_images, dim=0) > 0.5


def test_bf16_unroll_close_to_float32(splits, tiny_experts):
    losses = {}
    for precision in ("no", "bf16"):
        trainer = _trainer(splits, tiny_experts, mixed_precision=precision)
        losses[precision] = trainer.method.loss(trainer.synthetic, [0, 1, 2], iteration=1)
        losses[precision].backward()  # double backward through bfloat16 autocast works
        assert torch.isfinite(trainer.synthetic.images.grad).all()
    torch.testing.assert_close(losses["bf16"], losses["no"], rtol=0.05, atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------------


def test_resume_equals_uninterrupted(splits, tiny_experts, tmp_path):
    def run(output_dir, iterations, **overrides):
        trainer = _trainer(
            splits, tiny_experts, num_iterations=iterations, output_dir=str(output_dir), save_steps=2, **overrides
        )
        trainer.train()
        return trainer

    uninterrupted = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4, resume_from_checkpoint="latest")
    assert resumed.iteration == 4
    assert torch.equal(uninterrupted.synthetic.images.detach(), resumed.synthetic.images.detach())
    assert torch.equal(uninterrupted.synthetic.step_size.detach(), resumed.synthetic.step_size.detach())
    assert uninterrupted.synthetic.learned_lr != pytest.approx(0.01, abs=1e-12)  # the step size was learned


def test_distill_evaluate_save_records_the_learned_lr(splits, tiny_experts, tmp_path):
    import json

    trainer = _trainer(splits, tiny_experts, num_iterations=2)
    trainer.train()
    results = trainer.evaluate(random_baseline=False)
    assert results["distilled"]["lr"] == pytest.approx(trainer.synthetic.learned_lr)
    trainer.save(tmp_path / "run")
    metadata = json.loads((tmp_path / "run" / "distill_config.json").read_text())
    assert metadata["method"] == "mtt" and metadata["learned_lr"] == pytest.approx(trainer.synthetic.learned_lr)
    assert metadata["syn_steps"] == 3 and metadata["expert_path"] == tiny_experts


def test_step_size_stays_positive(splits, tiny_experts):
    trainer = _trainer(splits, tiny_experts, num_iterations=3, lr_lr=1.0)  # a huge lr_lr drives it below zero
    trainer.train()
    assert trainer.synthetic.learned_lr == pytest.approx(0.01 * 1e-3)  # held at the floor, never negative


def test_paper_defaults_run_with_tiny_experts(splits, tiny_experts):
    """What the registry-wide method tests do: paper defaults plus `expert_path` (IPC 2: 30 steps, starts < 20)."""
    config = TrajectoryMatchingConfig(
        images_per_class=2, num_iterations=2, net_width=8, net_depth=2, save_steps=0, expert_path=tiny_experts
    )
    assert (config.syn_steps, config.max_start_epoch, config.last_expert_epoch) == (30, 20, TINY_EXPERT_EPOCHS)
    trainer = DistillTrainer(config, splits["train"], splits["test"])
    before = trainer.synthetic.images.detach().clone()
    trainer.train()
    assert torch.isfinite(trainer.synthetic.images).all() and not torch.equal(before, trainer.synthetic.images)
