"""Teacher-based methods: RDED's crops, scoring and stitching, and its teacher saved with the set for the KD step."""

import json
import logging
import shutil

import pytest
import torch
from conftest import TINY_KD_SETTINGS
from torch import nn
from transformers import ResNetConfig
from transformers.modeling_outputs import ImageClassifierOutput

from hf_distill import DistillTrainer, evaluation
from hf_distill.cards import render_dataset_card
from hf_distill.constants import CONFIG_NAME, TEACHER_DIR
from hf_distill.kd import KDConfig, train_student
from hf_distill.methods import RDED, RandomSelectionConfig, RDEDConfig, SRe2LConfig
from hf_distill.methods.decoupled import BatchNormStatistics, random_resized_crops, stitch
from hf_distill.modeling import load_teacher

TINY = dict(images_per_class=2, net_width=8, net_depth=2, save_steps=0, eval_epochs=2, eval_num_models=1)


def test_full_size_crops_are_the_images_and_crops_follow_the_generator():
    images = torch.randn(3, 2, 6, 6)
    full = random_resized_crops(images, 2, (6, 6), 1.0, torch.Generator().manual_seed(0))
    assert full.shape == (3, 2, 2, 6, 6)
    torch.testing.assert_close(full, images.unsqueeze(1).expand(-1, 2, -1, -1, -1))
    small = [random_resized_crops(images, 4, (3, 3), 0.08, torch.Generator().manual_seed(1)) for _ in range(2)]
    assert small[0].shape == (3, 4, 2, 3, 3) and torch.equal(small[0], small[1])


def test_stitch_puts_patch_block_k_in_cell_k():
    patches = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 1, 2, 2)  # 4 blocks of 2 images
    images = stitch(patches, factor=2, count=2, size=(4, 4))
    assert images.shape == (2, 1, 4, 4)
    # image 0 takes patches 0, 2, 4, 6 (one per block), row-major in the 2 x 2 grid
    assert images[0, 0, ::2, ::2].tolist() == [[0.0, 2.0], [4.0, 6.0]]
    assert images[1, 0, ::2, ::2].tolist() == [[1.0, 3.0], [5.0, 7.0]]


class BrightnessTeacher(nn.Module):
    """Class 0 for bright inputs, class 1 for dark ones: its most confident class-0 crops are the brightest."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(4.0))

    def forward(self, pixel_values):
        brightness = pixel_values.mean(dim=(1, 2, 3))
        return ImageClassifierOutput(logits=torch.stack([brightness, -brightness], dim=1) * self.scale)


def test_rded_keeps_the_crops_the_teacher_is_surest_of(tiny_image_dataset, monkeypatch):
    data = tiny_image_dataset(num_classes=2, rows_per_class=10, size=8)
    monkeypatch.setattr(RDED, "setup", lambda self, context: setattr(self, "teacher", BrightnessTeacher().eval()))
    config = RDEDConfig(**TINY, candidates_per_class=10, crops_per_image=3)
    trainer = DistillTrainer(config, data["train"], data["test"])
    kept = trainer.synthetic.images[:2].mean(dim=(1, 2, 3))  # class 0's images
    crops = random_resized_crops(
        trainer.train_data.images[trainer.method.sample_real([0], 10, "rded-candidates")],
        3,
        (8, 8),
        config.min_crop_scale,
        torch.Generator().manual_seed(0),  # any crops of class 0's candidates
    )
    assert kept.min() >= crops.mean(dim=(2, 3, 4)).median()  # brighter than a typical crop
    # The soft labels are the teacher's logits on the final images.
    expected = BrightnessTeacher()(trainer.synthetic.images).logits
    torch.testing.assert_close(trainer.synthetic.label_logits.detach(), expected.detach())


def test_rded_saves_its_teacher_and_a_run_with_that_teacher_gives_the_same_set(tiny_image_dataset, tmp_path):
    data = tiny_image_dataset(num_classes=3, rows_per_class=10, size=8)
    config = RDEDConfig(**TINY, teacher_epochs=3, candidates_per_class=8, factor=2, output_dir=str(tmp_path / "a"))
    trainer = DistillTrainer(config, data["train"], data["test"])
    trainer.train()
    trainer.save()
    metadata = json.loads((tmp_path / "a" / CONFIG_NAME).read_text())
    teacher = load_teacher(tmp_path / "a" / TEACHER_DIR)
    test_accuracy = 100 * evaluation.model_accuracy(teacher, trainer.test_data)  # the saved teacher, measured apart
    assert metadata["teacher"] == {
        "name_or_path": TEACHER_DIR,
        "trained_here": True,
        "epochs": 3,
        "test_accuracy": pytest.approx(test_accuracy, abs=0.01),
    }
    assert metadata["target_type"] == "soft"
    assert teacher.hf_distill_input_settings["mean"] == pytest.approx(trainer.train_data.mean)
    again = RDEDConfig(
        **TINY, candidates_per_class=8, factor=2, teacher_name_or_path=str(tmp_path / "a" / TEACHER_DIR)
    )
    second = DistillTrainer(again, data["train"], data["test"])
    torch.testing.assert_close(second.synthetic.images, trainer.synthetic.images)
    assert second.method.run_metadata() == {
        "teacher": {
            "name_or_path": str(tmp_path / "a" / TEACHER_DIR),
            "test_accuracy": metadata["teacher"]["test_accuracy"],
        }
    }

    # A set made with a local teacher carries a copy of it, even saved over the folder the teacher came from.
    teacher_files = {path.name: path.read_bytes() for path in (tmp_path / "a" / TEACHER_DIR).iterdir()}
    second.save(tmp_path / "a")
    assert json.loads((tmp_path / "a" / CONFIG_NAME).read_text())["teacher"] == second.method.run_metadata()["teacher"]
    assert {path.name: path.read_bytes() for path in (tmp_path / "a" / TEACHER_DIR).iterdir()} == teacher_files
    # Another method's run over the folder removes the teacher: it would be taken for that set's labeller.
    DistillTrainer(
        RandomSelectionConfig(**TINY, output_dir=str(tmp_path / "a"), overwrite_output_dir=True), data["train"]
    ).save()
    assert not (tmp_path / "a" / TEACHER_DIR).exists()


def test_the_fair_baseline_of_a_teacher_labelled_set_has_that_teachers_soft_labels(
    tiny_image_dataset, tmp_path, monkeypatch, caplog
):
    data = tiny_image_dataset(num_classes=3, rows_per_class=10, size=8)
    data.save_to_disk(str(tmp_path / "data"))  # the source a saved set is evaluated again with
    output_dir = tmp_path / "run"
    config = RDEDConfig(**TINY, teacher_epochs=2, candidates_per_class=8, output_dir=str(output_dir))
    trainer = DistillTrainer(config, data["train"], data["test"])
    trainer.train()
    trained = []  # (key, inputs, targets, keywords) of every evaluation of real rows
    original = evaluation.evaluate_images

    def recorded(images, targets, *args, **kwargs):
        trained.append((args[3], images, targets, kwargs))
        return original(images, targets, *args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_images", recorded)
    results = trainer.evaluate(random_baseline=True)
    trainer.save()
    assert results["random_real"]["labels"] == "soft"
    assert results["fair"] == {
        "distilled_labels": "soft",
        "improvement_over_random": pytest.approx(results["distilled"]["mean"] - results["random_real"]["mean"]),
        "baseline_labels": "soft",
    }
    ((key, images, targets, kwargs),) = [call for call in trained if call[0] == "random"]
    assert kwargs["target_type"] == "soft"
    teacher = load_teacher(output_dir / TEACHER_DIR)
    torch.testing.assert_close(targets, teacher(pixel_values=images).logits.softmax(dim=-1), atol=1e-5, rtol=1e-4)

    # The set loaded again from its folder reads its teacher back: the same baseline, the same figures.
    reloaded = DistillTrainer.from_output_dir(output_dir, dataset=str(tmp_path / "data"))
    assert reloaded.evaluate(random_baseline=True)["random_real"] == results["random_real"]
    card = render_dataset_card(output_dir)
    assert "with the soft labels of the set's teacher" in str(card) and "neither is flattered" in str(card)
    # Without its teacher the baseline keeps hard labels, and says so.
    shutil.rmtree(output_dir / TEACHER_DIR)
    with caplog.at_level(logging.WARNING):
        without_teacher = DistillTrainer.from_output_dir(output_dir, dataset=str(tmp_path / "data"))
        hard = without_teacher.evaluate(random_baseline=True)
    assert "keeps hard labels" in caplog.text
    assert "labels" not in hard["random_real"] and hard["fair"]["baseline_labels"] == "hard"


def test_rded_settings_are_checked():
    with pytest.raises(ValueError, match="raise candidates_per_class"):
        RDEDConfig(images_per_class=10, candidates_per_class=20, factor=2)
    with pytest.raises(ValueError, match="min_crop_scale"):
        RDEDConfig(min_crop_scale=0.0)


def test_batch_norm_statistics_measure_the_distance_from_the_running_ones():
    layer = nn.BatchNorm2d(2).eval()
    x = torch.randn(8, 2, 4, 4) * 3 + 1
    layer.running_mean.copy_(x.mean(dim=(0, 2, 3)))
    layer.running_var.copy_(x.transpose(0, 1).flatten(1).var(dim=1, unbiased=False))
    statistics = BatchNormStatistics(nn.Sequential(layer))
    with statistics:
        layer(x)
        layer(x + 1)
    assert not layer._forward_hooks  # removed on exit
    same, shifted = statistics.take()
    assert same.item() == pytest.approx(0.0, abs=1e-5)
    assert shifted.item() == pytest.approx(2**0.5, rel=1e-4)  # the mean moved by 1 in both channels


def test_sre2l_recovers_images_from_a_batch_norm_teacher_and_relabels_them(tiny_image_dataset):
    data = tiny_image_dataset(num_classes=3, rows_per_class=10, size=8)
    config = SRe2LConfig(**TINY, teacher_epochs=3, num_iterations=6, logging_steps=1)
    trainer = DistillTrainer(config, data["train"], data["test"])
    assert trainer.synthetic.target_type == "hard"
    trainer.train()
    losses = [record["loss"] for record in trainer.log_history]
    assert losses[-1] < losses[0]
    assert trainer.optimizer.param_groups[0]["lr"] < 0.1 * config.lr_images  # cosine-decayed to near 0
    assert trainer.optimizer.param_groups[0]["betas"] == (0.5, 0.9)
    low = torch.tensor([-m / s for m, s in zip(trainer.train_data.mean, trainer.train_data.std, strict=True)])
    assert (trainer.synthetic.images.detach() >= low.view(1, -1, 1, 1) - 1e-6).all()  # clipped to valid pixels
    assert trainer.synthetic.target_type == "soft"
    torch.testing.assert_close(
        trainer.synthetic.label_logits.detach(), trainer.method.teacher_logits(trainer.synthetic.images.detach())
    )


def test_sre2l_needs_a_batch_norm_teacher(tiny_image_dataset):
    data = tiny_image_dataset(num_classes=3, rows_per_class=4, size=8)
    with pytest.raises(ValueError, match="no BatchNorm2d layer"):
        DistillTrainer(SRe2LConfig(**TINY, teacher_epochs=1, net_norm="instancenorm"), data["train"], None)


@pytest.mark.parametrize("config_class", [RDEDConfig, SRe2LConfig])
def test_a_resnet_teacher_at_a_higher_resolution_then_a_resnet_student(config_class, tiny_image_dataset, tmp_path):
    """Issue 22's higher-resolution path, in miniature: RGB images resized up (8 -> 16 pixels), a transformers
    ResNet teacher trained here, the set saved with it, and a ResNet student trained by the KD step with it."""
    data = tiny_image_dataset(num_classes=3, rows_per_class=6, size=8, mode="RGB")
    data.save_to_disk(str(tmp_path / "data"))  # the KD step reads the real test split from the source
    resnet = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
    settings = {**TINY, "teacher_epochs": 2, "image_size": 16, "output_dir": str(tmp_path / "set")}
    settings |= {"candidates_per_class": 6} if config_class is RDEDConfig else {"num_iterations": 2}
    trainer = DistillTrainer(config_class(**settings), data["train"], data["test"], model=resnet)
    assert trainer.method.teacher.config.model_type == "resnet"
    trainer.train()
    trainer.save()
    assert trainer.synthetic.images.shape == (6, 3, 16, 16) and trainer.synthetic.target_type == "soft"
    settings = {**TINY_KD_SETTINGS, "train_teacher": False, "student_config": resnet.to_dict()}
    kd = KDConfig(
        distilled_dataset=str(tmp_path / "set"),
        teacher_name_or_path=str(tmp_path / "set" / TEACHER_DIR),
        source_dataset=str(tmp_path / "data"),
        output_dir=str(tmp_path / "student"),
        **settings,
    )
    student = train_student(kd)
    assert student.model.config.model_type == "resnet"
    assert 0.0 <= student.eval_results["accuracy"] <= 100.0


def test_the_card_of_a_teacher_based_set_names_its_teacher_and_soft_labels(tiny_image_dataset, tmp_path):
    from hf_distill.cards import render_dataset_card

    data = tiny_image_dataset(num_classes=3, rows_per_class=6, size=8)
    config = RDEDConfig(**TINY, teacher_epochs=1, candidates_per_class=4, output_dir=str(tmp_path / "set"))
    trainer = DistillTrainer(config, data["train"], data["test"])
    trainer.train()
    trainer.save()
    card = str(render_dataset_card(tmp_path / "set"))
    assert "| Labels | the teacher's soft labels (`soft_label` column) |" in card
    assert "| Teacher | `teacher`: the distillation architecture trained 1 epochs on the whole training split" in card
    accuracy = trainer.method.teacher_test_accuracy
    assert f"kept in the run folder as `teacher/` for the KD step; {accuracy:.2f} % on the test split |" in card
