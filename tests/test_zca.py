"""ZCA whitening: the transform, and a whitened run from distillation to saved set, card, evaluation and KD inputs."""

import json

import pytest
import torch

from hf_distill.cards import render_dataset_card
from hf_distill.constants import CONFIG_NAME, ZCA_NAME
from hf_distill.kd.data import load_distilled_set, prepare_test_split
from hf_distill.modalities.zca import ZCAWhitening


def _correlated_images(n=400, shape=(1, 4, 4), seed=0):
    generator = torch.Generator().manual_seed(seed)
    dim = torch.Size(shape).numel()
    mixing = torch.randn(dim, dim, generator=generator)
    return (torch.randn(n, dim, generator=generator) @ mixing + 3.0).view(n, *shape)


def test_zca_whitens_to_identity_covariance_and_inverts():
    images = _correlated_images()
    zca = ZCAWhitening.fit(images, regularization=1e-8)
    white = zca(images).view(len(images), -1).double()
    assert white.mean(0).abs().max() < 1e-4
    covariance = white.T @ white / len(white)
    torch.testing.assert_close(covariance, torch.eye(16, dtype=torch.float64), atol=2e-3, rtol=0)
    torch.testing.assert_close(zca.inverse(zca(images)), images, atol=1e-3, rtol=1e-4)


def test_zca_is_symmetric_and_its_regulariser_damps_weak_directions():
    images = _correlated_images()
    weak = ZCAWhitening.fit(images, regularization=1e-8)
    strong = ZCAWhitening.fit(images, regularization=0.1)
    # ZCA (unlike PCA whitening) is the symmetric square root: W = W^T.
    torch.testing.assert_close(strong._whitening, strong._whitening.T, atol=1e-5, rtol=0)
    assert strong(images).std() < weak(images).std()


def test_zca_save_load_round_trip_and_errors(tmp_path):
    zca = ZCAWhitening.fit(_correlated_images(), regularization=0.1)
    zca.save(tmp_path / "zca.safetensors")
    loaded = ZCAWhitening.load(tmp_path / "zca.safetensors")
    assert loaded.image_shape == (1, 4, 4) and loaded.regularization == pytest.approx(0.1)
    images = _correlated_images(seed=1)
    torch.testing.assert_close(loaded(images), zca(images))
    with pytest.raises(ValueError, match="fitted on images of shape"):
        zca(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="zca_regularization must be > 0"):
        ZCAWhitening.fit(_correlated_images(), regularization=0.0)


@pytest.fixture
def whitened_run(tiny_image_dataset, tiny_config, tmp_path):
    from hf_distill.trainer import DistillTrainer

    splits = tiny_image_dataset(num_classes=3, rows_per_class=10)
    config = tiny_config(zca=True, zca_regularization=0.1, num_iterations=2, eval_num_models=1, eval_epochs=1)
    trainer = DistillTrainer(config, splits["train"], splits["test"])
    trainer.train()
    trainer.evaluate()
    output_dir = trainer.save(tmp_path / "run")
    return trainer, splits, output_dir


def test_a_whitened_run_whitens_both_splits_with_the_training_statistics(whitened_run, tiny_config):
    from hf_distill.preparation import prepare

    trainer, splits, _ = whitened_run
    zca = trainer.train_data.zca
    assert zca is not None and trainer.test_data.zca is zca
    plain = prepare(tiny_config(), splits["train"], splits["test"])
    torch.testing.assert_close(trainer.train_data.images, zca(plain.train_data.images))
    torch.testing.assert_close(trainer.test_data.images, zca(plain.test_data.images))
    # The previews are in pixel space: the set's un-whitened values.
    torch.testing.assert_close(
        trainer.synthetic.denormalized(),
        plain.train_data.denormalize(zca.inverse(trainer.synthetic.images.detach())),
        atol=1e-5,
        rtol=0,
    )


def test_a_whitened_set_is_saved_with_its_transform_and_reloaded_with_it(whitened_run):
    trainer, splits, output_dir = whitened_run
    assert (output_dir / ZCA_NAME).is_file()
    metadata = json.loads((output_dir / CONFIG_NAME).read_text())
    assert metadata["zca"] == {"file": ZCA_NAME, "regularization": 0.1}
    distilled = load_distilled_set(output_dir)
    test = prepare_test_split(distilled, splits["test"])
    torch.testing.assert_close(test.images, trainer.test_data.images)  # evaluate/kd see the whitened test split
    card = str(render_dataset_card(output_dir, "org/tiny-zca"))
    assert "ZCA-whitened" in card and f'hf_hub_download("org/tiny-zca", "{ZCA_NAME}"' in card

    (output_dir / ZCA_NAME).unlink()
    with pytest.raises(ValueError, match=f"{ZCA_NAME} is missing"):
        load_distilled_set(output_dir)


def test_a_run_without_zca_removes_an_older_runs_transform(whitened_run, tiny_image_dataset, tiny_config):
    from hf_distill.trainer import DistillTrainer

    _, splits, output_dir = whitened_run
    trainer = DistillTrainer(tiny_config(num_iterations=0), splits["train"])
    trainer.save(output_dir)
    assert not (output_dir / ZCA_NAME).exists()
    assert load_distilled_set(output_dir).zca is None


def test_kd_teacher_inputs_are_unwhitened(whitened_run):
    from hf_distill.kd.trainer import KDTrainer

    trainer, _, output_dir = whitened_run
    distilled = load_distilled_set(output_dir)
    whitened = trainer.synthetic.images.detach()[:2]
    kd = KDTrainer.__new__(KDTrainer)  # only the input mapping is exercised
    kd.distilled, kd._teacher_settings = distilled, {}
    torch.testing.assert_close(kd._teacher_inputs(whitened), distilled.zca.inverse(whitened))
