"""DistillTrainer: resume, checkpoint safety, and multi-process equivalence."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_distill.checkpointing import latest_checkpoint
from hf_distill.trainer import DistillTrainer


def _train(config, splits, **kwargs):
    trainer = DistillTrainer(config, splits["train"], splits["test"], **kwargs)
    trainer.train()
    return trainer


def test_train_changes_pixels_and_logs_loss(tiny_image_dataset, tiny_config):
    splits = tiny_image_dataset()
    config = tiny_config(num_iterations=3, logging_steps=1)
    trainer = DistillTrainer(config, splits["train"], splits["test"])
    before = trainer.synthetic.images.detach().clone()
    trainer.train()
    assert not torch.equal(before, trainer.synthetic.images.detach())
    losses = [record["loss"] for record in trainer.log_history if "loss" in record]
    assert len(losses) == 3 and all(loss >= 0 for loss in losses)
    assert trainer.iteration == 3


def test_the_logged_grad_norm_is_the_pixel_gradient_of_the_step(tiny_image_dataset, tiny_config):
    # SGD's first step (its momentum buffer is the gradient itself) moves the pixels by lr x gradient.
    splits = tiny_image_dataset()
    trainer = DistillTrainer(tiny_config(num_iterations=1, logging_steps=1), splits["train"], splits["test"])
    before = trainer.synthetic.images.detach().clone()
    trainer.train()
    moved = torch.linalg.vector_norm(trainer.synthetic.images.detach() - before).item()
    [record] = [record for record in trainer.log_history if "grad_norm" in record]
    assert record["grad_norm"] > 0
    assert record["grad_norm"] == pytest.approx(moved / trainer.config.lr_images, rel=1e-4)


def test_max_grad_norm_caps_the_pixel_step(tiny_image_dataset, tiny_config):
    splits = tiny_image_dataset()
    free = DistillTrainer(tiny_config(num_iterations=1, logging_steps=1), splits["train"], splits["test"])
    before = free.synthetic.images.detach().clone()
    free.train()
    grad_norm = free.log_history[-1]["grad_norm"]
    cap = grad_norm / 4
    clipped = DistillTrainer(
        tiny_config(num_iterations=1, logging_steps=1, max_grad_norm=cap), splits["train"], splits["test"]
    )
    clipped.train()
    # The same gradient (logged before clipping), a step of a quarter of the length in the same direction.
    assert clipped.log_history[-1]["grad_norm"] == pytest.approx(grad_norm)
    free_step = free.synthetic.images.detach() - before
    clipped_step = clipped.synthetic.images.detach() - before
    torch.testing.assert_close(clipped_step, free_step / 4, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="max_grad_norm must be > 0 or None"):
        tiny_config(max_grad_norm=0.0)


def test_same_seed_same_result_other_seed_differs(tiny_image_dataset, tiny_config):
    splits = tiny_image_dataset()
    first = _train(tiny_config(seed=1), splits).synthetic.images.detach()
    second = _train(tiny_config(seed=1), splits).synthetic.images.detach()
    third = _train(tiny_config(seed=2), splits).synthetic.images.detach()
    assert torch.equal(first, second)
    assert not torch.allclose(first, third)


def test_resume_equals_uninterrupted(tiny_image_dataset, tiny_config, tmp_path):
    splits = tiny_image_dataset()
    uninterrupted = _train(tiny_config(num_iterations=6, output_dir=str(tmp_path / "a"), save_steps=3), splits)

    interrupted_dir = str(tmp_path / "b")
    _train(tiny_config(num_iterations=3, output_dir=interrupted_dir, save_steps=3), splits)
    assert latest_checkpoint(interrupted_dir).name == "checkpoint-3"
    resumed = _train(
        tiny_config(num_iterations=6, output_dir=interrupted_dir, save_steps=3, resume_from_checkpoint="latest"),
        splits,
    )
    assert resumed.iteration == 6
    assert torch.equal(uninterrupted.synthetic.images.detach(), resumed.synthetic.images.detach())
    # The optimiser state (momentum) was restored too, or the trajectories would have diverged above;
    # check it directly as well.
    a = uninterrupted.optimizer.state_dict()["state"][0]["momentum_buffer"]
    b = resumed.optimizer.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(a, b)


def test_kill_mid_checkpoint_resumes_from_last_complete(tiny_image_dataset, tiny_config, tmp_path):
    splits = tiny_image_dataset()
    output_dir = tmp_path / "run"
    reference = _train(tiny_config(num_iterations=4, output_dir=str(tmp_path / "ref"), save_steps=2), splits)
    _train(tiny_config(num_iterations=2, output_dir=str(output_dir), save_steps=2), splits)

    # A run killed while writing checkpoint-4 leaves its temporary folder, and (worse) a folder with the final
    # name but no state file; neither may be taken for a checkpoint.
    partial = output_dir / ".checkpoint-4.tmp"
    partial.mkdir()
    (partial / "synthetic.safetensors").write_bytes(b"truncated")
    broken = output_dir / "checkpoint-4"
    shutil.copytree(output_dir / "checkpoint-2", broken)
    (broken / "trainer_state.json").unlink()
    assert latest_checkpoint(output_dir).name == "checkpoint-2"

    resumed = _train(
        tiny_config(num_iterations=4, output_dir=str(output_dir), save_steps=2, resume_from_checkpoint="latest"),
        splits,
    )
    assert torch.equal(reference.synthetic.images.detach(), resumed.synthetic.images.detach())
    assert json.loads((output_dir / "checkpoint-4" / "trainer_state.json").read_text())["iteration"] == 4


def test_resume_from_missing_checkpoint_path_raises(tiny_image_dataset, tiny_config, tmp_path):
    splits = tiny_image_dataset()
    trainer = DistillTrainer(tiny_config(resume_from_checkpoint=str(tmp_path / "nope")), splits["train"])
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        trainer.train()


def test_nan_loss_raises_clear_error(tiny_image_dataset, tiny_config, tmp_path):
    splits = tiny_image_dataset()
    trainer = DistillTrainer(tiny_config(output_dir=str(tmp_path)), splits["train"])
    with torch.no_grad():
        trainer.synthetic.images[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="lr_images"):
        trainer.train()


TWO_PROCESS_SETTINGS = {
    "dm": dict(batch_real=8),
    # Separable per class, with inner-loop network training between updates on every process.
    "dsa": dict(batch_real=4, outer_loop=2, inner_loop=1, learn_soft_labels=True),
    # Not separable: every process computes the whole loss and the gradients are averaged.
    "mtt": dict(syn_steps=2, max_start_epoch=2, expert_epochs=1),
    # Kernel ridge regression couples all classes; rfad learns a Platt temperature, frepo trains its pool online.
    "rfad": dict(batch_real=4, num_models=2, kernel_net_width=8),
    "frepo": dict(batch_real=4, num_models=2, max_online_updates=1),
    # Not separable, a random truncation and a learned step size.
    "dd": dict(batch_real=4, unroll_steps=3, window=2, learn_soft_labels=True),
}


@pytest.mark.parametrize("method", sorted(TWO_PROCESS_SETTINGS))
def test_two_processes_match_one(method, tiny_image_dataset, tmp_path, request):
    """`debug_launcher(num_processes=2)` (gloo on CPU) reaches the single-process set, to float tolerance."""
    from hf_distill.methods import get_method_class

    config_kwargs = dict(images_per_class=2, num_iterations=3, net_width=8, net_depth=2, save_steps=0, seed=3)
    config_kwargs.update(TWO_PROCESS_SETTINGS[method])
    if method == "mtt":
        config_kwargs["expert_path"] = request.getfixturevalue("tiny_experts")
    splits = tiny_image_dataset(num_classes=3)
    config = get_method_class(method).config_class(**config_kwargs)
    single = _train(config, {"train": splits["train"], "test": None})
    out_file = tmp_path / "two.safetensors"
    worker = Path(__file__).with_name("distributed_worker.py")
    payload = json.dumps({"method": method, **config_kwargs})
    subprocess.run([sys.executable, str(worker), str(out_file), payload], check=True, timeout=300)
    two = load_file(str(out_file))
    expected = {name: t.detach() for name, t in single.synthetic.state_dict().items()}
    assert sorted(two) == sorted(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-5, atol=1e-5, msg=f"{method}: {name} differs")


def test_soft_labels_with_a_method_that_ignores_labels_is_a_clear_error(tiny_image_dataset):
    from hf_distill import DistributionMatchingConfig

    config = DistributionMatchingConfig(images_per_class=2, num_iterations=1, net_width=8, learn_soft_labels=True)
    with pytest.raises(ValueError, match="learn_soft_labels has no effect with method 'dm'"):
        DistillTrainer(config, tiny_image_dataset()["train"])


def test_evaluation_augmentation_is_independent_of_distillation_augmentation(tiny_image_dataset):
    from hf_distill import DistributionMatchingConfig

    config = DistributionMatchingConfig(
        images_per_class=2, num_iterations=0, net_width=8, dsa_strategy="none", eval_dsa_strategy="auto"
    )
    trainer = DistillTrainer(config, tiny_image_dataset()["train"])
    assert trainer.dsa_strategy is None
    assert trainer.evaluation_protocol().dsa_strategy == "color_crop_cutout_flip_scale_rotate"


def test_learned_soft_labels_are_evaluated_saved_and_reloaded(tiny_image_dataset, tmp_path, monkeypatch):
    from hf_distill import DifferentiableSiameseAugmentationConfig
    from hf_distill import set_evaluation as trainer_module

    config = DifferentiableSiameseAugmentationConfig(
        images_per_class=2, num_iterations=1, net_width=4, net_depth=2, batch_real=4, outer_loop=1, inner_loop=1,
        learn_soft_labels=True, lr_labels=50.0, save_steps=0, eval_num_models=1, eval_epochs=1,
    )  # fmt: skip
    splits = tiny_image_dataset(num_classes=3)
    trainer = _train(config, splits)
    targets = trainer.synthetic.targets().detach()
    assert targets.shape == (6, 3) and not torch.allclose(targets.max(-1).values, torch.full((6,), 0.9))

    seen = []
    real_evaluate_images = trainer_module.evaluate_images
    monkeypatch.setattr(
        trainer_module,
        "evaluate_images",
        lambda images, targets, *args, **kwargs: (
            seen.append(targets) or real_evaluate_images(images, targets, *args, **kwargs)
        ),
    )
    trainer.evaluate(random_baseline=False)
    torch.testing.assert_close(seen[0], targets)  # evaluation trains on the learned soft labels
    trainer.save(tmp_path / "run")

    reloaded = DistillTrainer(config, splits["train"], splits["test"])
    reloaded.load_distilled(tmp_path / "run")
    torch.testing.assert_close(reloaded.synthetic.targets(), targets)
