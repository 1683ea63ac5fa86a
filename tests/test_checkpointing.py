"""Tests for `hf_distill.checkpointing`: atomic folders, checkpoint discovery/rotation, optimizer state."""

import json
import os
import stat

import pytest
import torch

from hf_distill.checkpointing import (
    OPTIMIZER_META_NAME,
    OPTIMIZER_NAME,
    STATE_NAME,
    commit_folder,
    latest_checkpoint,
    list_checkpoints,
    load_optimizer,
    rotate_checkpoints,
    save_optimizer,
    save_tensors,
)


def write_folder(path, files: dict[str, str]):
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def make_checkpoint(root, iteration: int, complete: bool = True):
    files = {"synthetic.safetensors": f"data {iteration}"}
    if complete:
        files[STATE_NAME] = json.dumps({"iteration": iteration})
    return write_folder(root / f"checkpoint-{iteration}", files)


# ---------------------------------------------------------------------------------------------------------------------
# save_tensors
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_save_tensors_follows_the_umask_not_safetensors_0600(tmp_path, umask):
    from safetensors.torch import load_file

    previous = os.umask(umask)
    try:
        save_tensors({"x": torch.arange(3.0)}, tmp_path / "t.safetensors", metadata={"k": "v"})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "t.safetensors").st_mode) == 0o666 & ~umask
    assert torch.equal(load_file(str(tmp_path / "t.safetensors"))["x"], torch.arange(3.0))


# ---------------------------------------------------------------------------------------------------------------------
# commit_folder
# ---------------------------------------------------------------------------------------------------------------------


def test_commit_folder_moves_tmp_into_place(tmp_path):
    tmp = write_folder(tmp_path / ".checkpoint-3.tmp", {"a.txt": "new"})
    final = tmp_path / "checkpoint-3"
    commit_folder(tmp, final)
    assert not tmp.exists()
    assert (final / "a.txt").read_text() == "new"


def test_commit_folder_replaces_an_existing_folder_completely(tmp_path):
    final = write_folder(tmp_path / "dataset", {"a.txt": "old", "stale.txt": "only in the old copy"})
    tmp = write_folder(tmp_path / ".dataset.tmp", {"a.txt": "new", "b.txt": "added"})
    commit_folder(tmp, final)
    assert sorted(p.name for p in final.iterdir()) == ["a.txt", "b.txt"]
    assert (final / "a.txt").read_text() == "new"
    assert not tmp.exists()
    assert not (tmp_path / "dataset.old").exists()  # the aside copy is cleaned up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_commit_folder_survives_a_leftover_old_copy(tmp_path):
    # A run killed between the two renames leaves `final.old` behind; the next commit must still work.
    write_folder(tmp_path / "checkpoint-5.old", {"a.txt": "older"})
    final = write_folder(tmp_path / "checkpoint-5", {"a.txt": "old"})
    commit_folder(write_folder(tmp_path / ".tmp", {"a.txt": "new"}), final)
    assert (final / "a.txt").read_text() == "new"
    assert not (tmp_path / "checkpoint-5.old").exists()


# ---------------------------------------------------------------------------------------------------------------------
# list / latest / rotate
# ---------------------------------------------------------------------------------------------------------------------


def test_list_checkpoints_sorts_numerically_and_skips_incomplete_and_tmp_folders(tmp_path):
    for iteration in (10, 2, 100):
        make_checkpoint(tmp_path, iteration)
    make_checkpoint(tmp_path, 500, complete=False)  # killed before trainer_state.json was written
    write_folder(tmp_path / ".checkpoint-600.tmp", {STATE_NAME: "{}"})  # not yet committed
    write_folder(tmp_path / "checkpoint-700.old", {STATE_NAME: "{}"})  # aside copy of a replace
    write_folder(tmp_path / "checkpoint-latest", {STATE_NAME: "{}"})  # not a number
    (tmp_path / "checkpoint-800").write_text("a file, not a folder")

    found = list_checkpoints(tmp_path)
    assert [p.name for p in found] == ["checkpoint-2", "checkpoint-10", "checkpoint-100"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-100"
    assert latest_checkpoint(str(tmp_path)) == tmp_path / "checkpoint-100"


def test_no_checkpoints(tmp_path):
    assert list_checkpoints(tmp_path / "missing") == []
    assert latest_checkpoint(tmp_path / "missing") is None
    make_checkpoint(tmp_path, 1, complete=False)
    assert list_checkpoints(tmp_path) == []
    assert latest_checkpoint(tmp_path) is None


def test_rotate_checkpoints_deletes_the_oldest(tmp_path):
    for iteration in (1, 2, 3, 10):
        make_checkpoint(tmp_path, iteration)
    incomplete = make_checkpoint(tmp_path, 50, complete=False)

    rotate_checkpoints(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-10"]
    assert not (tmp_path / "checkpoint-1").exists() and not (tmp_path / "checkpoint-2").exists()
    assert incomplete.exists()  # only complete checkpoints are rotated

    rotate_checkpoints(tmp_path, keep=5)  # fewer than `keep`: nothing to delete
    assert len(list_checkpoints(tmp_path)) == 2
    rotate_checkpoints(tmp_path, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-10"]


def test_rotate_checkpoints_none_keeps_everything(tmp_path):
    for iteration in range(1, 6):
        make_checkpoint(tmp_path, iteration)
    rotate_checkpoints(tmp_path, keep=None)
    assert len(list_checkpoints(tmp_path)) == 5


# ---------------------------------------------------------------------------------------------------------------------
# optimizer state
# ---------------------------------------------------------------------------------------------------------------------


OPTIMIZERS = {
    "sgd-momentum": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.5),
    "adam": lambda params: torch.optim.Adam(params, lr=0.05, betas=(0.8, 0.99)),
}


def _quadratic_step(optimizer, params, target):
    optimizer.zero_grad()
    loss = sum(((p - t) ** 2).sum() for p, t in zip(params, target))
    loss.backward()
    optimizer.step()


def _normalised_groups(optimizer):
    # JSON has no tuples (Adam's betas come back as a list); compare values, not container types.
    return json.loads(json.dumps(optimizer.state_dict()["param_groups"]))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_save_and_load_optimizer_round_trip(tmp_path, name):
    generator = torch.Generator().manual_seed(0)
    initial = [torch.randn(4, 3, generator=generator), torch.randn(5, generator=generator)]
    target = [torch.randn_like(t) for t in initial]

    params = [torch.nn.Parameter(t.clone()) for t in initial]
    optimizer = OPTIMIZERS[name](params)
    for _ in range(2):
        _quadratic_step(optimizer, params, target)
    save_optimizer(optimizer, tmp_path)
    assert (tmp_path / OPTIMIZER_NAME).is_file() and (tmp_path / OPTIMIZER_META_NAME).is_file()
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.bin"))  # no pickles

    # A fresh optimizer on a copy of the parameters, restored from disk.
    restored_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    restored = OPTIMIZERS[name](restored_params)
    load_optimizer(restored, tmp_path)

    original_state, restored_state = optimizer.state_dict()["state"], restored.state_dict()["state"]
    assert original_state.keys() == restored_state.keys() == {0, 1}
    for param_id, values in original_state.items():
        assert values.keys() == restored_state[param_id].keys()
        for key, value in values.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(restored_state[param_id][key])), key
    assert _normalised_groups(restored) == _normalised_groups(optimizer)

    # The next step is the same for both: momentum / moments were really restored.
    _quadratic_step(optimizer, params, target)
    _quadratic_step(restored, restored_params, target)
    for a, b in zip(params, restored_params):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_restored_state_differs_from_a_fresh_optimizer(tmp_path, name):
    # Guard against a vacuous round trip: without the saved state the next step would differ.
    params = [torch.nn.Parameter(torch.ones(3))]
    optimizer = OPTIMIZERS[name](params)
    for _ in range(3):
        _quadratic_step(optimizer, params, [torch.zeros(3)])
    save_optimizer(optimizer, tmp_path)

    fresh_params = [torch.nn.Parameter(params[0].detach().clone())]
    fresh = OPTIMIZERS[name](fresh_params)
    restored_params = [torch.nn.Parameter(params[0].detach().clone())]
    restored = OPTIMIZERS[name](restored_params)
    load_optimizer(restored, tmp_path)
    _quadratic_step(fresh, fresh_params, [torch.zeros(3)])
    _quadratic_step(restored, restored_params, [torch.zeros(3)])
    assert not torch.equal(fresh_params[0], restored_params[0])


def test_optimizer_without_state_round_trips(tmp_path):
    params = [torch.nn.Parameter(torch.ones(2))]
    save_optimizer(torch.optim.SGD(params, lr=0.3, momentum=0.9), tmp_path)
    restored = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=1.0, momentum=0.0)
    load_optimizer(restored, tmp_path)
    assert restored.state_dict()["state"] == {}
    assert restored.param_groups[0]["lr"] == 0.3 and restored.param_groups[0]["momentum"] == 0.9
