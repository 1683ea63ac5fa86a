"""Meta-learning (dd): the loss and its gradient against plain autograd, the truncation, the chunked real loss."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from hf_distill.cards import render_dataset_card
from hf_distill.methods import MetaLearningConfig
from hf_distill.modeling import reinitialize_
from hf_distill.seeding import derive_generator
from hf_distill.trainer import DistillTrainer

TINY = dict(
    images_per_class=2,
    num_iterations=2,
    net_width=8,
    net_depth=2,
    save_steps=0,
    eval_epochs=2,
    eval_num_models=1,
    batch_real=4,
    unroll_steps=3,
    window=None,
    dsa_strategy="none",
)


def _trainer(splits, **overrides):
    return DistillTrainer(MetaLearningConfig(**{**TINY, **overrides}), splits["train"])


def _by_hand(method, synthetic, iteration, steps_with_graph, steps_without_graph=0, adam=False):
    """The same student trained by plain autograd on all images (batch_syn None), then the real cross-entropy.

    `adam`: the student steps by Adam (torch.optim.Adam's formulas, written out per parameter) instead of SGD."""
    config = method.config
    network = reinitialize_(method.network, derive_generator(config.seed, iteration, "network"))
    params = {name: p.detach().clone() for name, p in network.named_parameters()}
    moments = {name: (torch.zeros_like(p), torch.zeros_like(p)) for name, p in params.items()}
    images, labels = synthetic.images, synthetic.labels
    lr = synthetic.step_size

    def direction(name, gradient, count):
        if not adam:
            return gradient
        m, v = moments[name]
        m, v = 0.9 * m + 0.1 * gradient, 0.999 * v + 0.001 * gradient**2
        moments[name] = (m, v)
        return (m / (1 - 0.9**count)) / ((v / (1 - 0.999**count)).sqrt() + 1e-8)

    def student_step(params, images, lr, graph, count):
        params = {name: p.requires_grad_(True) if not p.requires_grad else p for name, p in params.items()}
        logits = functional_call(network, params, (), {"pixel_values": images}).logits
        grads = torch.autograd.grad(F.cross_entropy(logits, labels), list(params.values()), create_graph=graph)
        return {name: p - lr * direction(name, g, count) for (name, p), g in zip(params.items(), grads)}

    def lr_of(step):  # one step size, or DD's schedule
        return lr[step] if lr.dim() else lr

    for step in range(steps_without_graph):
        params = student_step(params, images.detach(), lr_of(step).detach(), False, step + 1)
        params = {n: p.detach() for n, p in params.items()}
        moments = {n: (m.detach(), v.detach()) for n, (m, v) in moments.items()}
    for step in range(steps_without_graph, steps_without_graph + steps_with_graph):
        params = student_step(params, images, lr_of(step), True, step + 1)
    rows = method.sample_real(list(range(3)), config.batch_real, iteration)
    real = method.train_data.images[rows]
    logits = functional_call(network, params, (), {"pixel_values": real}).logits
    return F.cross_entropy(logits, method.train_data.labels[rows])


def test_dd_loss_and_gradient_match_plain_autograd(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    trainer = _trainer(splits)
    method, synthetic = trainer.method, trainer.synthetic
    loss = method.loss(synthetic, [0, 1, 2], iteration=4)
    images_grad, lr_grad = torch.autograd.grad(loss, [synthetic.images, synthetic.step_size])
    expected = _by_hand(method, synthetic, 4, steps_with_graph=3)
    expected_images_grad, expected_lr_grad = torch.autograd.grad(expected, [synthetic.images, synthetic.step_size])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(images_grad, expected_images_grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(lr_grad, expected_lr_grad, rtol=1e-4, atol=1e-7)
    assert images_grad.abs().sum() > 0


@pytest.mark.parametrize("memory", ["full", "checkpoint"])
def test_truncated_unroll_backpropagates_through_the_last_window_only(tiny_image_dataset, memory):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    trainer = _trainer(splits, unroll_steps=5, window=2, random_truncation=False, unroll_memory=memory)
    method, synthetic = trainer.method, trainer.synthetic
    assert method.draw_unroll(0) == (3, 2)
    loss = method.loss(synthetic, [0, 1, 2], iteration=1)
    (images_grad,) = torch.autograd.grad(loss, [synthetic.images])
    expected = _by_hand(method, synthetic, 1, steps_with_graph=2, steps_without_graph=3)
    (expected_grad,) = torch.autograd.grad(expected, [synthetic.images])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(images_grad, expected_grad, rtol=1e-4, atol=1e-7)


def test_adam_student_matches_plain_autograd_across_the_burn_in(tiny_image_dataset):
    """RaT-BPTT's inner Adam: the window resumes the moments of the burn-in, and the gradient reaches the pixels and
    the learned Adam learning rate."""
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    adam = dict(unroll_steps=5, window=2, random_truncation=False, inner_optimizer="adam", syn_lr_init=1e-3)
    trainer = _trainer(splits, **adam)
    method, synthetic = trainer.method, trainer.synthetic
    loss = method.loss(synthetic, [0, 1, 2], iteration=1)
    images_grad, lr_grad = torch.autograd.grad(loss, [synthetic.images, synthetic.step_size])
    expected = _by_hand(method, synthetic, 1, steps_with_graph=2, steps_without_graph=3, adam=True)
    expected_images_grad, expected_lr_grad = torch.autograd.grad(expected, [synthetic.images, synthetic.step_size])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(images_grad, expected_images_grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(lr_grad, expected_lr_grad, rtol=1e-4, atol=1e-7)
    assert images_grad.abs().sum() > 0 and lr_grad != 0
    # Not SGD under another name: the same set and network trained by SGD give another loss.
    sgd = _by_hand(method, synthetic, 1, steps_with_graph=2, steps_without_graph=3)
    assert not torch.allclose(sgd, expected, rtol=1e-4)


def test_adam_student_learns_its_learning_rate_and_the_card_says_so(tiny_image_dataset, tmp_path):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    trainer = _trainer(splits, inner_optimizer="adam", syn_lr_init=1e-3, lr_lr=1e-4, window=2)
    trainer.train()
    assert trainer.synthetic.learned_lr != pytest.approx(1e-3)
    trainer.save(tmp_path / "run")
    card = str(render_dataset_card(tmp_path / "run", "org/tiny-dd"))
    assert "(the learning rate of the Adam student in the unroll)" in card


@pytest.mark.parametrize("memory", ["full", "checkpoint"])
def test_per_step_lr_learns_dd_schedule_of_the_steps_back_propagated_through(tiny_image_dataset, memory):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    schedule = dict(unroll_steps=5, window=2, random_truncation=False, per_step_lr=True, unroll_memory=memory)
    trainer = _trainer(splits, **schedule)
    method, synthetic = trainer.method, trainer.synthetic
    assert synthetic.step_size.shape == (5,)
    with torch.no_grad():
        synthetic.step_size.copy_(torch.tensor([0.01, 0.02, 0.03, 0.04, 0.05]))
    loss = method.loss(synthetic, [0, 1, 2], iteration=1)
    images_grad, lr_grad = torch.autograd.grad(loss, [synthetic.images, synthetic.step_size])
    expected = _by_hand(method, synthetic, 1, steps_with_graph=2, steps_without_graph=3)
    expected_images_grad, expected_lr_grad = torch.autograd.grad(expected, [synthetic.images, synthetic.step_size])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(images_grad, expected_images_grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(lr_grad, expected_lr_grad, rtol=1e-4, atol=1e-7)
    assert torch.count_nonzero(lr_grad[:3]) == 0 and torch.count_nonzero(lr_grad[3:]) == 2  # the window's steps only


def test_per_step_lr_is_saved_and_loaded_with_the_set(tiny_image_dataset, tmp_path):
    import json

    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    trainer = _trainer(splits, per_step_lr=True, lr_lr=0.05, num_iterations=2, window=2)
    trainer.train()
    learned = trainer.synthetic.learned_step_sizes
    assert len(learned) == 3 and learned != pytest.approx([0.01] * 3)
    trainer.save(tmp_path / "run")
    metadata = json.loads((tmp_path / "run" / "distill_config.json").read_text())
    assert metadata["learned_step_sizes"] == pytest.approx(learned)
    assert metadata["learned_lr"] == pytest.approx(sum(learned) / 3)  # what eval_use_learned_lr trains with
    other = _trainer(splits, per_step_lr=True, window=2)
    other.load_distilled(tmp_path / "run")
    assert other.synthetic.learned_step_sizes == pytest.approx(learned)
    card = str(render_dataset_card(tmp_path / "run", "org/tiny-dd"))
    assert "the mean of a schedule of 3 per-step values" in card
    assert "evaluation trains with it" not in card  # dd evaluates with the protocol's lr by default


def test_random_truncation_draws_lengths_between_the_window_and_the_unroll(tiny_image_dataset):
    trainer = _trainer(tiny_image_dataset(num_classes=3), unroll_steps=6, window=2)
    draws = [trainer.method.draw_unroll(i) for i in range(200)]
    assert {window for _, window in draws} == {2}
    assert {burn_in for burn_in, _ in draws} == {0, 1, 2, 3, 4}  # unrolls of 2 .. 6 steps
    assert draws == [trainer.method.draw_unroll(i) for i in range(200)]  # seeded by the iteration


def test_chunked_real_loss_equals_one_pass(tiny_image_dataset):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    results = []
    for chunk in (5, 1000):
        trainer = _trainer(splits, forward_chunk=chunk, batch_real=8)
        loss = trainer.method.loss(trainer.synthetic, [0, 1, 2], iteration=2)
        results.append((loss.detach(), torch.autograd.grad(loss, [trainer.synthetic.images])[0]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-7)


def test_dd_learns_a_positive_step_size_and_saves_it(tiny_image_dataset, tmp_path):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    trainer = _trainer(splits, lr_lr=0.05, num_iterations=3, window=2, output_dir=str(tmp_path / "run"))
    trainer.train()
    assert trainer.synthetic.learned_lr != pytest.approx(0.01)
    assert trainer.synthetic.learned_lr >= 0.01 * 1e-3


def test_dd_config_errors_say_what_to_change():
    with pytest.raises(ValueError, match="window=7: it must be between 1 and unroll_steps"):
        MetaLearningConfig(unroll_steps=5, window=7)
    with pytest.raises(ValueError, match="use learn_soft_labels=True"):
        MetaLearningConfig(learn_regression_targets=True)
    assert MetaLearningConfig(unroll_steps=5, window=None).backprop_window == 5
    with pytest.raises(ValueError, match="inner_optimizer must be one of sgd, adam"):
        MetaLearningConfig(inner_optimizer="rmsprop")
    with pytest.raises(ValueError, match="set unroll_memory='full'"):
        MetaLearningConfig(inner_optimizer="adam", unroll_memory="checkpoint")
    with pytest.raises(ValueError, match="leave it False with inner_optimizer='adam'"):
        MetaLearningConfig(inner_optimizer="adam", eval_use_learned_lr=True)


def test_inner_net_width_trains_a_narrower_student_and_evaluates_with_the_run_network(tiny_image_dataset):
    trainer = _trainer(tiny_image_dataset(num_classes=3), net_width=8, inner_net_width=4, window=2)
    assert trainer.method.network.config.net_width == 4
    assert trainer.eval_model_config().net_width == 8
    loss = trainer.method.loss(trainer.synthetic, [0, 1, 2], iteration=0)
    assert torch.autograd.grad(loss, [trainer.synthetic.images])[0].abs().sum() > 0
    with pytest.raises(ValueError, match="inner_net_width must be >= 1"):
        MetaLearningConfig(inner_net_width=0)
