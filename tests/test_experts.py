"""Expert trajectories (`hf_distill.experts`): training, resume, the folder and Hub round trips, clear errors."""

import json
import os

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors import safe_open

from hf_distill.constants import EXPERTS_INDEX_NAME
from hf_distill.experts import ExpertTrajectories, train_experts
from hf_distill.functional import ParameterSpec
from hf_distill.hub import HubPushError, push_experts_to_hub
from hf_distill.methods.trajectory_matching import TrajectoryMatchingConfig
from hf_distill.modeling import fresh_model
from hf_distill.preparation import build_model_config, prepare_splits
from hf_distill.seeding import derive_generator
from hf_distill.student_cards import render_experts_card

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    """`(train_data, test_data, model_config)` of the tiny 3-class 8x8 dataset, as a trainer prepares them."""
    from conftest import make_image_dataset_dict

    splits = make_image_dataset_dict()
    config = TrajectoryMatchingConfig(net_width=8, net_depth=2, images_per_class=2)
    train_data, test_data = prepare_splits(splits["train"], splits["test"], config)
    return train_data, test_data, build_model_config(None, train_data, config)


def _train(data, output_dir, **overrides):
    train_data, test_data, model_config = data
    settings = dict(num_experts=2, num_epochs=2, test_data=test_data, show_progress=False)
    return train_experts(train_data, model_config, output_dir, **{**settings, **overrides})


@pytest.fixture(scope="module")
def expert_dir(data, tmp_path_factory):
    return _train(data, tmp_path_factory.mktemp("experts") / "experts", source={"dataset": "org/tiny-source"})


def test_train_experts_writes_trajectories_and_index(data, expert_dir):
    train_data, _, model_config = data
    index = json.loads((expert_dir / EXPERTS_INDEX_NAME).read_text())
    assert index["num_epochs"] == 2 and [r["file"] for r in index["experts"]] == [
        "expert_000.safetensors",
        "expert_001.safetensors",
    ]
    assert index["training"] == {
        "optimizer": "sgd",
        "lr": 0.01,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "batch_size": 256,
        "dsa_strategy": "color_crop_cutout_flip_scale_rotate",  # class names are not digits
        "seed": 0,
        "mixed_precision": "no",
    }
    assert index["image_shape"] == [1, 8, 8] and index["class_names"] == train_data.class_names
    assert index["model_config"]["net_width"] == 8 and index["source"] == {"dataset": "org/tiny-source"}
    assert all(0 <= r["test_accuracy"] <= 100 and 0 <= r["train_accuracy"] <= 100 for r in index["experts"])

    reference = fresh_model(model_config, derive_generator(0, "expert", 1))
    spec = ParameterSpec.from_module(reference)
    assert index["parameter_names"] == list(spec.names) and index["num_parameters"] == spec.num_parameters
    with safe_open(str(expert_dir / "expert_001.safetensors"), framework="pt") as handle:
        assert sorted(handle.keys()) == ["epoch_000", "epoch_001", "epoch_002"]
        initial, final = handle.get_tensor("epoch_000"), handle.get_tensor("epoch_002")
    # Epoch 0 is the expert's seeded initialisation; training moved it.
    torch.testing.assert_close(initial, spec.flatten(dict(reference.named_parameters())).detach())
    assert initial.dtype == torch.float32 and not torch.equal(initial, final)
    assert not any(path.name.endswith(".tmp") for path in expert_dir.iterdir())


def test_rerun_skips_finished_experts_and_retrains_missing_ones(data, expert_dir, tmp_path):
    copy = tmp_path / "experts"
    copy.mkdir()
    for path in expert_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    stat_0 = os.stat(copy / "expert_000.safetensors")
    original_1 = ExpertTrajectories.from_pretrained(expert_dir).epoch(1, 2)
    (copy / "expert_001.safetensors").unlink()  # as if the run had stopped while training expert 1

    _train(data, copy, num_experts=3)
    assert os.stat(copy / "expert_000.safetensors").st_mtime_ns == stat_0.st_mtime_ns  # not retrained
    trajectories = ExpertTrajectories.from_pretrained(copy)
    assert trajectories.num_experts == 3
    torch.testing.assert_close(trajectories.epoch(1, 2), original_1)  # every expert is reproducible on its own
    assert not torch.equal(trajectories.epoch(2, 0), trajectories.epoch(1, 0))

    with pytest.raises(ValueError, match=r"other settings \(num_epochs, training.lr differ\)"):
        _train(data, copy, num_epochs=3, lr=0.05)


def test_folder_round_trip_and_checks(data, expert_dir, tmp_path):
    trajectories = ExpertTrajectories.from_pretrained(expert_dir, max_epoch=2)
    assert (trajectories.num_experts, trajectories.num_epochs) == (2, 2)
    with safe_open(str(expert_dir / "expert_001.safetensors"), framework="pt") as handle:
        assert torch.equal(trajectories.epoch(1, 1), handle.get_tensor("epoch_001"))
    params = trajectories.unflatten(trajectories.epoch(0, 2))
    model = fresh_model(data[2], derive_generator(1, "other"))
    model.load_state_dict(params)  # names and shapes line up with the architecture
    trajectories.check_compatible(ParameterSpec.from_module(model))
    assert ExpertTrajectories.from_pretrained(expert_dir, num_experts=1).num_experts == 1

    with pytest.raises(ValueError, match=r"trained for 2 epochs.*num_epochs >= 5"):
        ExpertTrajectories.from_pretrained(expert_dir, max_epoch=5)
    with pytest.raises(ValueError, match="holds 2 experts"):
        ExpertTrajectories.from_pretrained(expert_dir, num_experts=3)
    with pytest.raises(ValueError, match="no experts.json.*train_experts"):
        ExpertTrajectories.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no such folder"):
        ExpertTrajectories.from_pretrained(str(tmp_path / "missing"))
    wider = build_model_config(None, data[0], TrajectoryMatchingConfig(net_width=16, net_depth=2))
    with pytest.raises(ValueError, match=r"width 8.*does not match the distillation network.*train_experts"):
        trajectories.check_compatible(ParameterSpec.from_module(fresh_model(wider, derive_generator(0, "w"))))


def test_card(expert_dir):
    card = render_experts_card(expert_dir, "org/tiny-experts")
    data = ModelCard(str(card)).data
    assert data.tags == ["hf-distill", "dataset-distillation", "expert-trajectories"]
    assert data.datasets == ["org/tiny-source"]
    text = card.text
    assert "**2 expert trajectories**" in text and "**2 epochs**" in text
    assert "SGD, lr 0.01, momentum 0.0, weight decay 0.0" in text
    snippet = 'TrajectoryMatchingConfig(expert_path="org/tiny-experts", images_per_class=10, net_width=8, net_depth=2'
    assert snippet in text  # the experts' architecture, to distill with
    assert "with 915 parameters and 3 classes" in text
    assert "epoch_002" in text and "@inproceedings{cazenavette2022distillation" in text


def test_hub_round_trip(hub, expert_dir):
    url = push_experts_to_hub(expert_dir, "org/tiny-experts", private=True)
    assert url.endswith(hub.commits("org/tiny-experts", repo_type="model")[0])
    files = hub.files("org/tiny-experts", repo_type="model")
    assert {"README.md", EXPERTS_INDEX_NAME, "expert_000.safetensors", "expert_001.safetensors"} <= set(files)
    assert "expert-trajectories" in ModelCard(files["README.md"].decode()).data.tags

    local = ExpertTrajectories.from_pretrained(expert_dir)
    remote = ExpertTrajectories.from_pretrained("org/tiny-experts", max_epoch=2)
    assert (remote.num_experts, remote.num_epochs, remote.spec) == (2, 2, local.spec)
    for expert in range(2):
        for epoch in range(3):
            assert torch.equal(remote.epoch(expert, epoch), local.epoch(expert, epoch))
    assert ExpertTrajectories.from_pretrained("org/tiny-experts", num_experts=1).num_experts == 1

    with pytest.raises(ValueError, match="The model 'org/missing' was not found"):
        ExpertTrajectories.from_pretrained("org/missing")
    hub.fail_next_commits()
    with pytest.raises(HubPushError, match=r"No commit was made.*re-running the push"):
        push_experts_to_hub(expert_dir, "org/other-experts")


def test_torch_compile_trains_the_same_trajectory(data, expert_dir, tmp_path):
    compiled = _train(data, tmp_path / "compiled", num_experts=1, torch_compile=True)
    # Compilation changes the speed only: not recorded as a training setting, so such experts can join a folder.
    assert "torch_compile" not in json.loads((compiled / EXPERTS_INDEX_NAME).read_text())["training"]
    eager, fused = ExpertTrajectories.from_pretrained(expert_dir), ExpertTrajectories.from_pretrained(compiled)
    torch.testing.assert_close(fused.epoch(0, 2), eager.epoch(0, 2), rtol=1e-4, atol=1e-5)
