"""Knowledge distillation (hf_distill.kd): the loss, soft labels, augmentation, the output folder, the CLI.

Everything runs offline on tiny sets distilled from the conftest datasets (3 classes of 8x8 images, ConvNet width 8,
depth 2, a few epochs).
"""

import contextlib
import importlib.util
import io
import json
import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from datasets import List, Value, load_from_disk
from transformers import AutoImageProcessor, AutoModelForImageClassification

from hf_distill import KDConfig, KDTrainer
from hf_distill.augment import CutMix
from hf_distill.cli import main
from hf_distill.constants import CONFIG_NAME
from hf_distill.kd import (
    METRICS_DIR,
    distillation_loss,
    kd_target_probabilities,
    load_accuracy_metric,
    load_distilled_set,
    prepare_test_split,
    train_student,
    train_teacher,
)
from hf_distill.modeling import default_convnet_config, fresh_model
from hf_distill.seeding import derive_generator
from hf_distill.trainer import DistillTrainer

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_STUDENT = '{"net_width": 8, "net_depth": 2}'
TINY_KD = {"student_config": TINY_STUDENT, "num_train_epochs": 2, "disable_tqdm": True, "logging_steps": 1}


@pytest.fixture
def splits(tiny_image_dataset):
    return tiny_image_dataset()


@pytest.fixture
def distilled_dir(splits, tiny_config, tmp_path):
    """A folder written by `DistillTrainer.save`, whose recorded source is a `save_to_disk` copy of the splits."""
    source = tmp_path / "source"
    splits.save_to_disk(str(source))
    recorded = {"dataset": str(source), "config_name": None, "revision": None, "train_split": "train"}
    trainer = DistillTrainer(tiny_config(), splits["train"], splits["test"], source={**recorded, "test_split": "test"})
    trainer.train()
    return trainer.save(tmp_path / "distilled")


def tiny_teacher(num_labels: int = 3, seed: int = 0):
    config = default_convnet_config(1, 8, num_labels, net_width=8, net_depth=2)
    return fresh_model(config, derive_generator(seed, "test-teacher"))


def kd_config(tmp_path, distilled_dir, **overrides) -> KDConfig:
    values = {"distilled_dataset": str(distilled_dir), "output_dir": str(tmp_path / "student"), **TINY_KD}
    return KDConfig(**{**values, **overrides})


def kd_trainer(tmp_path, distilled_dir, teacher=None, **overrides) -> KDTrainer:
    distilled = load_distilled_set(distilled_dir)
    return KDTrainer(args=kd_config(tmp_path, distilled_dir, **overrides), teacher=teacher, distilled=distilled)


def with_soft_labels(distilled_dir: Path, tmp_path: Path, rows) -> Path:
    """A copy of the distilled folder with a `soft_label` column (one list of floats per row)."""
    dataset = load_from_disk(str(distilled_dir / "dataset"))
    dataset = dataset.add_column("soft_label", [list(map(float, row)) for row in rows])
    dataset = dataset.cast_column("soft_label", List(Value("float32")))
    folder = tmp_path / "distilled-soft"
    dataset.save_to_disk(str(folder / "dataset"))
    (folder / CONFIG_NAME).write_text((distilled_dir / CONFIG_NAME).read_text())
    return folder


def batch_of(trainer: KDTrainer) -> dict:
    features = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    return trainer.data_collator(features)


# ---------------------------------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------------------------------


def test_loss_equals_a_hand_computation():
    student = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    teacher = torch.tensor([[3.0, 1.0, 0.0], [-1.0, 2.0, 0.5]])
    labels = torch.tensor([0, 2])
    alpha, temperature = 0.3, 2.0

    loss, parts = distillation_loss(student, labels, teacher, alpha=alpha, temperature=temperature)

    def softmax(row):
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    ce = -sum(math.log(softmax(s)[y]) for s, y in zip(student.tolist(), labels.tolist())) / 2
    kl = 0.0
    for s, t in zip(student.tolist(), teacher.tolist()):
        p_t = softmax([v / temperature for v in t])
        p_s = softmax([v / temperature for v in s])
        kl += sum(p * (math.log(p) - math.log(q)) for p, q in zip(p_t, p_s))
    kd = temperature**2 * kl / 2  # batchmean, T^2-scaled
    assert loss.item() == pytest.approx(alpha * ce + (1 - alpha) * kd, rel=1e-5)
    assert parts["ce_loss"].item() == pytest.approx(ce, rel=1e-5)
    assert parts["kd_loss"].item() == pytest.approx(kd, rel=1e-5)


def test_alpha_one_is_plain_cross_entropy_and_needs_no_teacher(tmp_path, distilled_dir):
    logits, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    loss, parts = distillation_loss(logits, labels, None, alpha=1.0, temperature=4.0)
    assert torch.allclose(loss, F.cross_entropy(logits, labels))
    assert "kd_loss" not in parts

    trainer = kd_trainer(tmp_path, distilled_dir, alpha=1.0)
    assert trainer.teacher is None
    trainer.train()
    assert [r["kd_loss"] for r in trainer.state.log_history if "kd_loss" in r] == []
    assert all("ce_loss" in r for r in trainer.state.log_history if "loss" in r)


def test_trainer_loss_is_the_kd_loss_of_student_and_teacher(tmp_path, distilled_dir):
    teacher = tiny_teacher()
    trainer = kd_trainer(tmp_path, distilled_dir, teacher=teacher, alpha=0.25, temperature=3.0)
    assert not any(p.requires_grad for p in trainer.teacher.parameters()) and not trainer.teacher.training
    batch = batch_of(trainer)
    trainer.model.eval()  # no augmentation outside training
    loss = trainer.compute_loss(trainer.model, batch)
    with torch.no_grad():
        student_logits = trainer.model(pixel_values=batch["pixel_values"]).logits
        teacher_logits = teacher(pixel_values=batch["pixel_values"]).logits
    expected, _ = distillation_loss(student_logits, batch["labels"], teacher_logits, alpha=0.25, temperature=3.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Soft labels
# ---------------------------------------------------------------------------------------------------------------------


def test_soft_labels_logits_are_the_target_when_present(tmp_path, distilled_dir):
    rows = np.random.default_rng(0).normal(size=(6, 3)) * 3  # logits
    folder = with_soft_labels(distilled_dir, tmp_path, rows)
    trainer = kd_trainer(tmp_path, folder, alpha=0.0, temperature=2.0)  # no teacher: the soft labels are the target
    assert trainer.use_soft_labels and not trainer.soft_labels_are_probabilities
    batch = batch_of(trainer)
    assert batch["soft_labels"].shape == (6, 3)
    trainer.model.eval()
    loss = trainer.compute_loss(trainer.model, batch)
    with torch.no_grad():
        logits = trainer.model(pixel_values=batch["pixel_values"]).logits
    target = F.softmax(batch["soft_labels"] / 2.0, dim=-1)
    expected = 4.0 * F.kl_div(F.log_softmax(logits / 2.0, dim=-1), target, reduction="batchmean")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)

    trainer.train()
    kd = trainer.kd_config_dict()
    assert kd["soft_labels_used"] is True and kd["soft_label_kind"] == "logits"

    # 'no' ignores the column; then a KD term without a teacher is an error with the fix.
    with pytest.raises(ValueError, match="needs a teacher"):
        kd_trainer(tmp_path, folder, alpha=0.5, use_soft_labels="no")


def test_soft_label_probabilities_and_blending_with_a_teacher(tmp_path, distilled_dir):
    rows = np.random.default_rng(1).dirichlet(np.ones(3), size=6)
    rows[0] = [1.0, 0.0, 0.0]
    folder = with_soft_labels(distilled_dir, tmp_path, rows)
    teacher = tiny_teacher()
    trainer = kd_trainer(tmp_path, folder, teacher=teacher, alpha=0.0, temperature=2.0, soft_label_weight=0.25)
    assert trainer.soft_labels_are_probabilities
    batch = batch_of(trainer)
    trainer.model.eval()
    loss = trainer.compute_loss(trainer.model, batch)
    with torch.no_grad():
        logits = trainer.model(pixel_values=batch["pixel_values"]).logits
        teacher_logits = teacher(pixel_values=batch["pixel_values"]).logits
    tempered = batch["soft_labels"].pow(0.5)
    target = 0.25 * tempered / tempered.sum(-1, keepdim=True) + 0.75 * F.softmax(teacher_logits / 2.0, dim=-1)
    expected = 4.0 * F.kl_div(F.log_softmax(logits / 2.0, dim=-1), target, reduction="batchmean")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # A one-hot probability row stays one-hot at any temperature (zeros are kept exactly).
    one_hot = kd_target_probabilities(None, batch["soft_labels"][:1], 4.0, soft_labels_are_probabilities=True)
    assert one_hot.tolist() == [[1.0, 0.0, 0.0]]

    # Weight 1: the soft labels replace the teacher, which is then never run.
    calls = []
    trainer = kd_trainer(tmp_path, folder, teacher=teacher, alpha=0.0, soft_label_weight=1.0)
    trainer.teacher.register_forward_hook(lambda *args: calls.append(1))
    trainer.compute_loss(trainer.model, batch_of(trainer))
    assert calls == []


def test_use_soft_labels_yes_requires_the_column(tmp_path, distilled_dir):
    with pytest.raises(ValueError, match="no `soft_label` column"):
        kd_trainer(tmp_path, distilled_dir, alpha=1.0, use_soft_labels="yes")


# ---------------------------------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------------------------------


def test_augmentation_is_reproducible_for_a_seed(tmp_path, distilled_dir):
    first = kd_trainer(tmp_path, distilled_dir, alpha=1.0, seed=3)
    second = kd_trainer(tmp_path, distilled_dir, alpha=1.0, seed=3)
    other = kd_trainer(tmp_path, distilled_dir, alpha=1.0, seed=4)
    # "auto" takes the strategy the set was distilled with.
    assert first.augmentation_resolved == load_distilled_set(distilled_dir).dsa_strategy is not None
    x = batch_of(first)["pixel_values"]
    assert torch.equal(first.augment_batch(x, step=5), second.augment_batch(x, step=5))
    assert not torch.equal(first.augment_batch(x, step=5), first.augment_batch(x, step=6))
    assert not torch.equal(first.augment_batch(x, step=5), other.augment_batch(x, step=5))

    first.train()
    second.train()
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
    assert kd_trainer(tmp_path, distilled_dir, alpha=1.0, augmentation="none").augment.enabled is False


def test_cutmix_pastes_one_box_and_mixes_labels_by_the_area_kept():
    images = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 2, 8, 8).contiguous()
    mixing = CutMix.apply(images, 1.0, torch.Generator().manual_seed(0))
    again = CutMix.apply(images, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(mixing.mixed, again.mixed) and torch.equal(images[:, 0, 0, 0], torch.arange(4.0))
    for row in range(4):  # each image keeps `kept` of its pixels; the rest is its partner's (one box, all channels)
        own = (mixing.mixed[row] == row).float().mean().item()
        if mixing.partner[row] != row:
            assert own == pytest.approx(mixing.kept)
            assert torch.equal(mixing.mixed[row] != row, mixing.mixed[row] == mixing.partner[row].float())
    assert 0.0 <= mixing.kept <= 1.0
    # The share pasted is uniform (Beta(1, 1)) before the box is clipped at the border, which keeps ~68% on average.
    large = torch.zeros(4, 1, 32, 32)
    kept = [CutMix.apply(large, 1.0, torch.Generator().manual_seed(seed)).kept for seed in range(200)]
    assert 0.6 < float(np.mean(kept)) < 0.78 and min(kept) < 0.3 and max(kept) > 0.95

    # Hard labels mixed by the area: CE against kept * y + (1 - kept) * y[partner].
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    loss, _ = distillation_loss(logits, labels, None, alpha=1.0, temperature=1.0, mix_targets=mixing.mix)
    expected = mixing.kept * F.cross_entropy(logits, labels) + (1 - mixing.kept) * F.cross_entropy(
        logits, labels[mixing.partner]
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_cutmix_in_training_is_reproducible_and_refused_for_bad_values(tmp_path, distilled_dir):
    first = kd_trainer(tmp_path, distilled_dir, teacher=tiny_teacher(), alpha=0.0, cutmix=1.0, seed=3)
    second = kd_trainer(tmp_path, distilled_dir, teacher=tiny_teacher(), alpha=0.0, cutmix=1.0, seed=3)
    plain = kd_trainer(tmp_path, distilled_dir, teacher=tiny_teacher(), alpha=0.0, seed=3)
    for trainer in (first, second, plain):
        trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(first.model.parameters(), second.model.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(first.model.parameters(), plain.model.parameters()))
    assert first.kd_config_dict()["cutmix"] == 1.0
    with pytest.raises(ValueError, match="cutmix must be"):
        KDConfig(output_dir=str(tmp_path / "x"), cutmix=-1.0)


# ---------------------------------------------------------------------------------------------------------------------
# End to end, output folder
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def student_run(tmp_path, distilled_dir):
    config = kd_config(tmp_path, distilled_dir, train_teacher=True, teacher_epochs=2, teacher_net_width=8)
    config.teacher_net_depth = 2
    return train_student(config), Path(config.output_dir), distilled_dir


def test_train_student_writes_the_documented_files(student_run):
    trainer, output_dir, distilled_dir = student_run
    names = {p.name for p in output_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "kd_config.json"} <= names
    assert {"eval_results.json", "teacher"} <= names
    assert "training_args.bin" not in names  # nothing pickled
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {
        p.name for p in (output_dir / "teacher").iterdir()
    }

    results = json.loads((output_dir / "eval_results.json").read_text())
    source = json.loads((distilled_dir / CONFIG_NAME).read_text())["source"]
    assert set(results) == {
        "accuracy", "test_split", "dataset", "num_test_images", "seconds", "epochs", "alpha", "temperature"
    }  # fmt: skip
    assert 0.0 <= results["accuracy"] <= 100.0
    assert results["test_split"] == "test" and results["dataset"] == source["dataset"]
    assert results["num_test_images"] == 15 and results["epochs"] == 2
    assert (results["alpha"], results["temperature"]) == (0.1, 4.0)

    kd = json.loads((output_dir / "kd_config.json").read_text())
    assert kd["alpha"] == 0.1 and kd["temperature"] == 4.0 and kd["train_teacher"] is True
    assert kd["distilled_dataset"] == str(distilled_dir) and kd["distilled_source"] == source
    assert kd["teacher"]["description"] == f"ConvNet trained on the full {source['dataset']} train split"
    assert 0.0 <= kd["teacher"]["test_accuracy"] <= 100.0
    assert kd["base_model"] is None
    assert kd["student_architecture"]["net_width"] == 8 and kd["student_model_type"] == "hf_distill_convnet"
    assert kd["augmentation_resolved"] == source_strategy(distilled_dir)
    assert kd["training_args"]["num_train_epochs"] == 2
    assert any("kd_loss" in r and "ce_loss" in r for r in trainer.state.log_history)


def source_strategy(distilled_dir: Path) -> str | None:
    return json.loads((distilled_dir / CONFIG_NAME).read_text())["dsa_strategy_resolved"]


def test_saved_student_classifies_raw_pil_images_like_the_trainer(student_run, splits):
    trainer, output_dir, distilled_dir = student_run
    model = AutoModelForImageClassification.from_pretrained(output_dir).eval()
    processor = AutoImageProcessor.from_pretrained(output_dir)
    images = [splits["test"][i]["image"] for i in range(4)]
    inputs = processor(images=images, return_tensors="pt")
    prepared = prepare_test_split(load_distilled_set(distilled_dir), splits["test"]).images[:4]
    assert torch.allclose(inputs["pixel_values"], prepared, atol=1e-5)
    with torch.no_grad():
        loaded = model(**inputs).logits
        in_memory = trainer.model.eval()(pixel_values=prepared).logits
    assert torch.allclose(loaded, in_memory, atol=1e-5)
    assert model.config.id2label == {0: "class_0", 1: "class_1", 2: "class_2"}


def test_train_teacher_records_its_normalisation(splits, tmp_path):
    teacher = train_teacher(
        splits["train"], splits["test"], epochs=1, net_width=8, net_depth=2, show_progress=False, output_dir=tmp_path
    )
    assert teacher.config.image_mean and teacher.config.image_std
    assert 0.0 <= teacher.config.hf_distill_teacher["test_accuracy"] <= 100.0
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert reloaded.config.image_mean == teacher.config.image_mean
    assert list(AutoImageProcessor.from_pretrained(tmp_path).image_mean) == teacher.config.image_mean


# ---------------------------------------------------------------------------------------------------------------------
# Metric
# ---------------------------------------------------------------------------------------------------------------------


def test_shipped_accuracy_metric_loads_offline(monkeypatch):
    import evaluate

    def no_network(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert (METRICS_DIR / "accuracy" / "accuracy.py").is_file()
    metric = evaluate.load(str(METRICS_DIR / "accuracy"), keep_in_memory=True)
    assert metric.compute(predictions=[0, 1, 2, 1], references=[0, 1, 1, 1]) == {"accuracy": 0.75}
    shipped = load_accuracy_metric()
    assert isinstance(shipped, evaluate.EvaluationModule)
    assert shipped.compute(predictions=[1, 1], references=[1, 0]) == {"accuracy": 0.5}


# ---------------------------------------------------------------------------------------------------------------------
# CLI and recipe
# ---------------------------------------------------------------------------------------------------------------------


def test_cli_kd_runs_and_prints_the_accuracy(tmp_path, distilled_dir):
    teacher_dir = tmp_path / "teacher"
    tiny_teacher().save_pretrained(teacher_dir)
    output_dir = tmp_path / "cli-student"
    argv = ["kd", "--distilled", str(distilled_dir), "--teacher", str(teacher_dir), "--student_config", TINY_STUDENT]
    argv += ["--num_train_epochs", "2", "--alpha", "0.5", "--temperature", "2", "--output_dir", str(output_dir)]
    argv += ["--disable_tqdm", "true"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert f"{results['accuracy']:.2f}%" in stdout.getvalue()
    assert (results["alpha"], results["temperature"]) == (0.5, 2.0)
    kd = json.loads((output_dir / "kd_config.json").read_text())
    assert kd["teacher"]["name_or_path"] == str(teacher_dir)


def test_recipe_main_takes_yaml_defaults_and_flags_override_them(tmp_path, distilled_dir):
    spec = importlib.util.spec_from_file_location("kd_recipe", REPO_ROOT / "recipes" / "kd.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    path = tmp_path / "kd.yaml"
    values = {"distilled_dataset": str(distilled_dir), "alpha": 1.0, "temperature": 3.0, "num_train_epochs": 5}
    path.write_text(yaml.safe_dump({**values, "student_config": TINY_STUDENT, "disable_tqdm": True}))
    output_dir = tmp_path / "recipe-student"
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = recipe.main(["--config", str(path), "--num_train_epochs", "1", "--output_dir", str(output_dir)])
    assert (trainer.args.alpha, trainer.args.temperature, trainer.args.num_train_epochs) == (1.0, 3.0, 1)
    assert (output_dir / "eval_results.json").is_file()


def test_cli_unknown_yaml_key_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "kd.yaml"
    path.write_text(yaml.safe_dump({"alpha": 0.5, "not_an_option": 1}))
    assert main(["kd", "--config", str(path)]) == 2
    assert "hf-distill: error: Unknown option(s) ['not_an_option']" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# Clear errors
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_unit_interval_raises(alpha):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        KDConfig(alpha=alpha)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_non_positive_temperature_raises(temperature):
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        KDConfig(temperature=temperature)


def test_teacher_with_other_number_of_classes_raises(tmp_path, distilled_dir):
    with pytest.raises(ValueError, match="teacher predicts 5 classes but the distilled set has 3"):
        kd_trainer(tmp_path, distilled_dir, teacher=tiny_teacher(num_labels=5))

    class FourWay(torch.nn.Module):  # a plain module: caught by the dry run on one image
        def forward(self, x):
            return torch.zeros(x.shape[0], 4)

    with pytest.raises(ValueError, match=r"logits of shape \(1, 4\) but the distilled set has 3 classes"):
        kd_trainer(tmp_path, distilled_dir, teacher=FourWay())


def test_folder_without_distill_config_raises(tmp_path, distilled_dir):
    (distilled_dir / CONFIG_NAME).unlink()
    with pytest.raises(ValueError, match="has no distill_config.json"):
        load_distilled_set(distilled_dir)
    with pytest.raises(ValueError, match="has no distill_config.json"):
        train_student(kd_config(tmp_path, distilled_dir, alpha=1.0))


def test_other_config_errors():
    with pytest.raises(ValueError, match="not both"):
        KDConfig(teacher_name_or_path="x", train_teacher=True)
    with pytest.raises(ValueError, match="not valid JSON"):
        KDConfig(student_config="{net_width: 8}")
    with pytest.raises(ValueError, match="Unknown augmentation family"):
        KDConfig(augmentation="color_blur")
    with pytest.raises(ValueError, match="use_soft_labels must be one of"):
        KDConfig(use_soft_labels="maybe")
