"""MTT on text: experts are linear classifiers on the frozen encoder's cached sentence embeddings, and the synthetic
examples (learned input embeddings) enter the student through the encoder. Tiny BERT as in `test_text.py`."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from text_helpers import make_text_dataset

from hf_distill import DistillTrainer
from hf_distill.checkpointing import save_tensors
from hf_distill.experts import ExpertTrajectories, train_experts_for_config
from hf_distill.methods.trajectory_matching import TrajectoryMatchingConfig
from hf_distill.models import EmbeddingClassifier
from hf_distill.trajectories import EXPERTS_FORMAT, EXPERTS_FORMAT_VERSION, epoch_key, expert_file_name


def mtt_text_config(encoder: str, expert_path: str | None = None, **overrides) -> TrajectoryMatchingConfig:
    settings = {
        "images_per_class": 2,
        "model_name_or_path": encoder,
        "max_length": 12,
        "expert_path": expert_path,
        "syn_steps": 3,
        "expert_epochs": 1,
        "max_start_epoch": 2,
        "syn_lr_init": 0.1,
        "lr_images": 0.1,
        "lr_lr": 1e-3,
        "num_iterations": 4,
        "save_steps": 0,
        "eval_num_models": 1,
        "eval_epochs": 2,
        **overrides,
    }
    return TrajectoryMatchingConfig(**settings)


@pytest.fixture(scope="module")
def text_experts(tiny_encoder, tmp_path_factory):
    splits = make_text_dataset()
    folder = tmp_path_factory.mktemp("text_experts")
    config = mtt_text_config(tiny_encoder, "unused")
    train_experts_for_config(
        config,
        splits["train"],
        splits["test"],
        folder,
        num_experts=2,
        num_epochs=2,
        lr=0.5,
        batch_size=8,
        show_progress=False,
    )
    return str(folder)


def test_text_experts_are_linear_heads_on_the_sentence_embeddings(text_experts):
    index = json.loads((Path(text_experts) / "experts.json").read_text())
    assert index["model_config"] == {
        "model_type": "hf_distill_embedding_classifier",
        "embedding_size": 16,
        "num_labels": 2,
    }
    assert index["parameter_names"] == ["classifier.weight", "classifier.bias"]
    assert index["image_mean"] is None and len(index["experts"]) == 2
    assert all(record["test_accuracy"] is not None for record in index["experts"])
    experts = ExpertTrajectories.from_pretrained(text_experts)
    # Each expert starts from its own draw and moves every epoch.
    assert not torch.equal(experts.epoch(0, 0), experts.epoch(1, 0))
    assert not torch.equal(experts.epoch(0, 0), experts.epoch(0, 2))


def test_the_text_mtt_loss_is_sgd_of_the_head_on_the_encoded_examples(tiny_encoder, text_experts):
    splits = make_text_dataset()
    trainer = DistillTrainer(mtt_text_config(tiny_encoder, text_experts), splits["train"], splits["test"])
    method, synthetic = trainer.method, trainer.synthetic
    assert isinstance(method.network, EmbeddingClassifier) and method.network_input_name == "features"
    loss = method.loss(synthetic, [0, 1], 0)

    # The same by hand: syn_steps full-batch SGD steps of W, b on the encoder's embedding of the examples.
    expert, start_epoch = method.draw_segment(0)
    start = method.experts.epoch(expert, start_epoch)
    target = method.experts.epoch(expert, start_epoch + 1)
    features = trainer.modality.embed(synthetic.images)
    params = (start[:32].view(2, 16).clone().requires_grad_(), start[32:].clone().requires_grad_())
    lr = float(synthetic.step_size.detach())
    for _ in range(3):
        logits = features @ params[0].T + params[1]
        grads = torch.autograd.grad(F.cross_entropy(logits, synthetic.targets()), params, create_graph=True)
        params = tuple(p - lr * g for p, g in zip(params, grads))
    final = torch.cat([params[0].reshape(-1), params[1]])
    expected = ((final - target) ** 2).sum() / ((start - target) ** 2).sum()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)


def test_mtt_distills_text_through_the_frozen_encoder(tiny_encoder, text_experts, tmp_path):
    splits = make_text_dataset()
    config = mtt_text_config(tiny_encoder, text_experts, output_dir=str(tmp_path / "run"))
    trainer = DistillTrainer(config, splits["train"], splits["test"])
    initial = trainer.synthetic.images.detach().clone()
    step_size = float(trainer.synthetic.step_size.detach())
    loss = trainer.method.loss(trainer.synthetic, [0, 1], 0)
    loss.backward()
    grad = trainer.synthetic.images.grad
    # The embeddings learn; the attention mask (last channel) never gets a gradient.
    assert grad[..., :-1].abs().sum() > 0 and grad[..., -1].abs().sum() == 0
    trainer.synthetic.images.grad = None
    trainer.train()
    learned = trainer.synthetic.images.detach()
    assert not torch.equal(learned[..., :-1], initial[..., :-1]) and torch.equal(learned[..., -1], initial[..., -1])
    assert float(trainer.synthetic.step_size.detach()) != step_size
    # Protocol (a) on the learned set: a logistic regression on the encoder's embedding of the examples.
    results = trainer.evaluate()
    assert results["protocol"]["text_protocol"] == "linear_probe" and 0.0 <= results["distilled"]["mean"] <= 100.0


def test_image_experts_are_refused_for_a_text_run(tiny_encoder, tmp_path):
    # A stored ConvNet trajectory: the text student is a linear head on the embedding, so the shapes differ.
    folder = tmp_path / "experts"
    folder.mkdir()
    save_tensors({epoch_key(e): torch.zeros(72) for e in range(3)}, folder / expert_file_name(0))
    index = {
        "format": EXPERTS_FORMAT,
        "format_version": EXPERTS_FORMAT_VERSION,
        "parameter_names": ["features.0.weight"],
        "parameter_shapes": [[8, 1, 3, 3]],
        "num_parameters": 72,
        "num_epochs": 2,
        "model_config": {"model_type": "hf_distill_convnet", "net_depth": 1, "net_width": 8},
        "training": {},
        "experts": [{"file": expert_file_name(0)}],
    }
    (folder / "experts.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="ConvNet-1 .* does not match the distillation network"):
        DistillTrainer(mtt_text_config(tiny_encoder, str(folder)), make_text_dataset()["train"])
