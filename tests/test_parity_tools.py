"""The pieces `benchmarks/parity.py` runs the authors' code with: the torchvision stand-in, the runner
(`benchmarks/parity_reference.py`) on a stand-in "reference repository" written here, and the report."""

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO_ROOT / "benchmarks"


@pytest.fixture
def shim_transforms(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS / "reference_shims"))
    from torchvision import transforms

    return transforms


@pytest.fixture
def parity(monkeypatch):
    """`benchmarks/parity.py` as a module (the scripts there import their neighbours by name)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import parity

    return parity


@pytest.fixture
def parity_authors(parity):
    """`benchmarks/parity_authors.py`: the authors' side of the parity runs."""
    import parity_authors

    return parity_authors


@pytest.fixture
def parity_results(parity):
    import parity_results

    return parity_results


def test_to_tensor_and_normalize_follow_torchvision(shim_transforms):
    image = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    tensor = shim_transforms.Compose([shim_transforms.ToTensor(), shim_transforms.Normalize([0.5], [0.25])])(image)
    assert tensor.shape == (1, 3, 4) and tensor.dtype == torch.float32
    torch.testing.assert_close(tensor[0], (torch.from_numpy(image).float() / 255 - 0.5) / 0.25)
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 2] = 255
    assert shim_transforms.ToTensor()(rgb)[:, 0, 0].tolist() == [0.0, 0.0, 1.0]


def _write_tiny_mnist(folder: Path) -> None:
    features = Features({"image": Image(), "label": ClassLabel(names=[str(i) for i in range(3)])})
    for split, rows in (("train", 6), ("test", 3)):
        images = [PIL.Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)) for i in range(rows)]
        Dataset.from_dict({"image": images, "label": [i % 3 for i in range(rows)]}, features=features).to_parquet(
            str(folder / "mnist" / f"{split}.parquet")
        )


#: A stand-in for the authors' repository: a network that flattens with `.view`, and a script that reads MNIST
#: through torchvision, feeds the network an input with `rand_crop`'s strides, and prints `iter = ` lines.
NETWORKS = """
    import torch
    from torch import nn


    class ConvNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x):
            out = self.conv(x)
            return out.view(out.size(0), -1)
"""
SCRIPT = """
    import sys

    import numpy as np
    import torch
    from torchvision import datasets, transforms

    from networks import ConvNet

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    train = datasets.MNIST("data", train=True, download=True, transform=transform)
    image, label = train[1]
    odd_strides = torch.randn(2, 8, 8, 1).permute(0, 3, 1, 2)  # what rand_crop's permute leaves
    features = ConvNet()(odd_strides)
    for it in range(0, 21, 10):
        print(f"iter = {it:05d}, loss = 0.0")
    with open("out.txt", "w") as out:
        out.write(f"{len(train)} {train.classes} {label} {float(image.mean()):.4f} {tuple(features.shape)} "
                  f"{np.random.randint(1000)} {sys.argv[1:]}")
"""


def _runner_on_stand_in(tmp_path: Path, files: dict[str, str]) -> tuple[list[str], Path]:
    """A stand-in reference repository with `files`, the tiny MNIST, and the runner's command up to `--workdir`."""
    repo, data = tmp_path / "repo", tmp_path / "data"
    repo.mkdir()
    (data / "mnist").mkdir(parents=True)
    for name, text in files.items():
        (repo / name).write_text(textwrap.dedent(text))
    _write_tiny_mnist(data)
    command = [sys.executable, str(BENCHMARKS / "parity_reference.py"), "--repo", str(repo), "--data-dir", str(data)]
    return command, tmp_path / "work"


def test_runner_runs_a_script_with_the_shims_and_seeds(tmp_path):
    command, work = _runner_on_stand_in(tmp_path, {"networks.py": NETWORKS, "script.py": SCRIPT})
    outputs = []
    for _ in range(2):
        result = subprocess.run(
            [*command, "--workdir", str(work), "--seed", "3", "--", "script.py", "--flag", "x"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        assert "iter = 00020" in result.stdout
        outputs.append((work / "out.txt").read_text())
    # 6 rows, class names from the ClassLabel, row 1's label and normalised pixels ((40/255 - 0.5) / 0.5),
    # the network's flattened output, a seeded NumPy draw (the same both times) and the script's arguments.
    assert outputs[0] == outputs[1]
    assert outputs[0].startswith("6 ['0', '1', '2'] 1 -0.6863 (2, 256) ")
    assert outputs[0].endswith("['--flag', 'x']")


#: A stand-in for mtt-distillation: `utils.get_dataset` knows CIFAR10 only (as theirs), and a script that does what
#: `distill.py` does around the compared path: reads its arguments back from wandb, calls `.cuda()` and
#: `make_grid` where it saves, and ends with `wandb.finish()`; and what `buffer.py` does with `.cpu()`.
MTT_UTILS = """
    import kornia as K


    def get_dataset(dataset, data_path, batch_size=1, subset="imagenette", args=None):
        if dataset == "CIFAR10":
            return "theirs"
        exit("unknown dataset: %s" % dataset)
"""
MTT_SCRIPT = """
    import argparse

    import torch
    import torchvision.utils
    import wandb

    from utils import get_dataset

    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="MNIST")
    parser.add_argument("--zca", action="store_true")
    args = parser.parse_args()
    channel, im_size, num_classes, class_names, mean, std, dst_train, dst_test, testloader, _, class_map, _ = (
        get_dataset(args.dataset, "data", 256, "imagenette", args=args)
    )
    wandb.init(project="x", config=args)
    args = type("", (), {})()
    for key in wandb.config._items:
        setattr(args, key, wandb.config._items[key])
    image_syn = torch.stack([dst_train[i][0] for i in range(3)]).requires_grad_(True)
    label_syn = torch.tensor([dst_train[i][1] for i in range(3)])
    syn_lr = torch.tensor(0.01, requires_grad=True)
    grid = torchvision.utils.make_grid(image_syn.cuda(), nrow=2, normalize=True)
    x, y = next(iter(testloader))
    with open("out.txt", "w") as out:
        out.write(f"{args.dataset} {channel} {im_size} {num_classes} {mean} {std} {len(dst_train)} {len(dst_test)} "
                  f"{tuple(x.shape)} {class_map} {tuple(grid.shape)} {float(grid.min()):.1f} {float(grid.max()):.1f} "
                  f"{get_dataset('CIFAR10', 'data', args=args)}")
    # buffer.py's snapshots of each epoch's parameters (`p.detach().cpu()`), then an in-place update.
    weight = torch.nn.Parameter(torch.zeros(2))
    snapshots = [weight.detach().cpu()]
    weight.sum().backward()
    torch.optim.SGD([weight], lr=1.0).step()
    snapshots.append(weight.detach().cpu())
    with open("snapshots.txt", "w") as out:
        out.write(str([snapshot.tolist() for snapshot in snapshots]))
    # distill.py's pixel step: its gradient norm is logged (the weight's step above is not), with its start epoch.
    start_epoch, expert_trajectory = 3, [[torch.full((2,), 0.25)], [torch.zeros(2)]]
    optimizer_img = torch.optim.SGD([image_syn], lr=0.0)
    image_syn.sum().backward()
    optimizer_img.step()
    # distill.py's loop logs `Progress` at the top of every iteration, then updates the set.
    for it in range(3):
        wandb.log({"Progress": it}, step=it)
        with torch.no_grad():
            image_syn.add_(1.0)
    wandb.finish()
"""


def test_runner_answers_what_the_mtt_script_needs(tmp_path):
    files = {"networks.py": NETWORKS, "utils.py": MTT_UTILS, "distill.py": MTT_SCRIPT}
    command, work = _runner_on_stand_in(tmp_path, files)
    result = subprocess.run(
        [*command, "--workdir", str(work), "--add-digit-datasets", "--snapshots", "1", "--", "distill.py"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    # MNIST as the DC code gives it (one 28 x 28 channel... here the tiny 8 x 8 stand-in's rows, its classes), every
    # other dataset from their function; the arguments read back from wandb; a normalised grid of 2 x 2 tiles.
    text = (work / "out.txt").read_text()
    assert text.startswith("MNIST 1 (28, 28) 3 [0.1307] [0.3081] 6 3 (3, 1, 8, 8) {0: 0, 1: 1, 2: 2} (1, 16, 16) ")
    assert text.endswith(" 0.0 1.0 theirs")
    # `.cpu()` copies as it would off a GPU: the first epoch's snapshot is not the updated parameter.
    assert (work / "snapshots.txt").read_text() == "[[0.0, 0.0], [-1.0, -1.0]]"
    final = torch.load(work / "final_set.pt")
    assert sorted(final) == ["image_syn", "label_syn", "syn_lr"]
    assert final["image_syn"].shape == (3, 1, 8, 8) and final["label_syn"].tolist() == [0, 1, 2]
    assert not final["image_syn"].requires_grad and float(final["syn_lr"]) == pytest.approx(0.01)
    # The set after 1 of its 3 updates, kept on the way; no other iteration was asked for.
    kept = torch.load(work / "snapshot_1.pt")
    assert torch.allclose(kept["image_syn"] + 2.0, final["image_syn"])
    assert sorted(path.name for path in work.glob("snapshot_*.pt")) == ["snapshot_1.pt"]
    # One pixel step, gradient all ones over 3 x 1 x 8 x 8 pixels.
    assert float((work / "grad_norms.txt").read_text()) == pytest.approx((3 * 8 * 8) ** 0.5)
    assert (work / "segments.txt").read_text() == "3 0.5\n"  # start epoch, expert named by its initial sum
    # Without the flag their get_dataset answers (and refuses MNIST as theirs does).
    result = subprocess.run([*command, "--workdir", str(work), "--", "distill.py"], capture_output=True, text=True)
    assert result.returncode != 0 and "unknown dataset: MNIST" in result.stdout + result.stderr


def test_runner_says_when_the_script_is_missing(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "parity_reference.py"), "--repo", str(tmp_path), "--data-dir", str(tmp_path),
         "--workdir", str(tmp_path / "w"), "--", "main_DM.py"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "main_DM.py does not exist: is --repo a checkout of the right code?" in result.stderr


def test_report_summarises_every_variant(tmp_path, parity_results):
    def run(variant, seed, speed, project, second, cpu="x"):
        judges = {"project": {"accuracies": project}, "second": {"accuracies": second}}
        return {
            "variant": variant, "seed": seed, "iterations": 600, "seconds_per_iteration": speed, "judges": judges,
            "machine": {"cpu": cpu, "threads": 2},
        }  # fmt: skip

    runs = {
        "authors/0": run("authors", 0, 1.0, [90.0, 92.0], [80.0, 80.0]),
        "authors/1": run("authors", 1, 2.0, [94.0, 94.0], [82.0, 82.0]),
        "authors/2": run("authors", 2, 0.3, [92.0, 92.0], [81.0, 81.0], cpu="y"),
        "float32/0": run("float32", 0, 0.5, [95.0, 95.0], [85.0, 85.0]),
    }
    data = {"dataset": "mnist", "method": "dm", "ipc": 10, "settings": {}}
    (tmp_path / "mnist_dm_ipc10.json").write_text(json.dumps({**data, "runs": runs}))
    table = parity_results.report(tmp_path)
    # Accuracy over every seed; seconds per iteration per machine, never averaged across machines.
    assert "| authors | 0, 1, 2 | [600] | 1.500 (x); 0.300 (y) | 92.33 ± 1.53 | 81.00 ± 1.00 |" in table
    assert "| float32 | 0 | [600] | 0.500 (x) | 95.00 | 85.00 |" in table

    # A run that shared the cores keeps its accuracy but leaves the timings, and the table says so.
    parity_results.mark_timing_disturbed(tmp_path / "mnist_dm_ipc10.json", "authors/1", "shared the cores")
    table = parity_results.report(tmp_path)
    assert "| authors | 0, 1, 2 | [600] | 1.000 (x); 0.300 (y) (not timed: seed 1) | 92.33 ± 1.53 |" in table
    assert "Seed 1 of authors: timing left out (shared the cores)." in table
    with pytest.raises(SystemExit, match="has no run 'authors/7'"):
        parity_results.mark_timing_disturbed(tmp_path / "mnist_dm_ipc10.json", "authors/7", "why")


def test_snapshots_on_the_way_leave_the_final_set_unchanged(tiny_image_dataset, tiny_config, parity):
    from hf_distill.preparation import prepare

    config = tiny_config(num_iterations=4, mixed_precision="no")
    data = tiny_image_dataset()
    prepared = prepare(config, data["train"], data["test"])
    straight = parity.run_ours(config, prepared)
    config = tiny_config(num_iterations=4, mixed_precision="no")
    stopped = parity.run_ours(config, prepared, snapshots=[1, 3, 4, 9])
    assert torch.equal(straight["images"], stopped["images"])
    # Iterations past the end (and the end itself) are no snapshots; each snapshot is a copy, not the live set.
    assert [s["iteration"] for s in stopped["snapshots"]] == [1, 3]
    assert len(stopped["losses"]) == 4 and stopped["losses"] == straight["losses"]  # one per iteration
    assert not torch.equal(stopped["snapshots"][0]["images"], stopped["snapshots"][1]["images"])
    assert stopped["snapshots"][0]["seconds"] <= stopped["snapshots"][1]["seconds"] <= stopped["seconds"]


def test_ours_can_start_from_the_authors_initial_set(tiny_image_dataset, tiny_config, parity):
    from hf_distill.preparation import prepare

    config = tiny_config(num_iterations=2, mixed_precision="no")
    data = tiny_image_dataset()
    prepared = prepare(config, data["train"], data["test"])
    own = parity.run_ours(config, prepared, snapshots=[0])
    initial, labels = own["snapshots"][0]["images"], own["labels"]
    theirs = torch.randn(initial.shape, generator=torch.Generator().manual_seed(3))
    config = tiny_config(num_iterations=2, mixed_precision="no")
    started = parity.run_ours(config, prepared, snapshots=[0], start=(theirs, labels))
    # Iteration 0 is the set it was given, and the loop then moves that set, not its own draw.
    assert torch.equal(started["snapshots"][0]["images"], theirs) and started["snapshots"][0]["seconds"] == 0.0
    assert not torch.equal(started["images"], own["images"]) and not torch.equal(started["images"], theirs)
    with pytest.raises(ValueError, match="ordered class by class"):
        parity.run_ours(tiny_config(num_iterations=1), prepared, start=(theirs, labels.flip(0)))


def test_the_authors_initial_set_is_judged_only_when_asked(parity):
    initial = {"iteration": 0, "seconds": 0.0, "images": torch.zeros(2, 1, 4, 4)}
    later = {"iteration": 10, "seconds": 5.0, "images": torch.ones(2, 1, 4, 4)}
    labels = torch.tensor([0, 1])
    run = {"snapshots": [initial, later], "labels": labels}
    images, start_labels = parity.authors_start(run, judged=False)
    assert torch.equal(images, initial["images"]) and torch.equal(start_labels, labels)
    assert run["snapshots"] == [later]  # not in their curve: no --curve 0
    run = {"snapshots": [initial, later], "labels": labels}
    parity.authors_start(run, judged=True)
    assert run["snapshots"] == [initial, later]
    with pytest.raises(RuntimeError, match="kept no initial set"):
        parity.authors_start({"snapshots": [later], "labels": labels}, judged=False)


def test_paired_runs_have_a_results_file_and_title_of_their_own(tmp_path, parity_results):
    path = parity_results.results_path(tmp_path, "mnist", "mtt", 10, ["same_start", "our_experts"])
    assert path.name == "mnist_mtt_ipc10_same_start_our_experts.json"
    assert parity_results.results_path(tmp_path, "mnist", "mtt", 10).name == "mnist_mtt_ipc10.json"
    judged = {"project": {"accuracies": [90.0]}, "second": {"accuracies": [80.0]}}
    run = {"variant": "authors", "seed": 0, "iterations": 30, "seconds_per_iteration": 1.0, "seconds": 30.0}
    header = {"dataset": "mnist", "method": "mtt", "ipc": 10, "settings": {}, "pairing": ["same_start", "our_experts"]}
    parity_results.record(path, "authors/0", {**run, "judges": judged, "machine": {"cpu": "x"}}, header)
    title = "; ours start from the authors' initial set of each seed; both sides match our experts)"
    assert title in parity_results.report(tmp_path)


def test_report_gives_time_to_the_authors_accuracy(tmp_path, parity_results):
    def judges(project, second):
        return {"project": {"accuracies": project}, "second": {"accuracies": second}}

    machine_x, machine_y = {"cpu": "x", "threads": 2}, {"cpu": "y", "threads": 2}
    authors = {"variant": "authors", "iterations": 600, "seconds_per_iteration": 1.0, "machine": machine_x}
    curve = [{"iteration": 100, "seconds": 50.0, "judges": judges([89.0], [79.0])},
             {"iteration": 200, "seconds": 100.0, "judges": judges([91.0], [80.0])}]  # fmt: skip
    ours = {"variant": "float32", "iterations": 600, "seconds_per_iteration": 0.5, "seconds": 300.0}
    runs = {
        "authors/0": {**authors, "seed": 0, "seconds": 600.0, "judges": judges([90.0], [80.0])},
        "authors/1": {**authors, "seed": 1, "seconds": 600.0, "judges": judges([92.0], [82.0]), "curve": curve[:1]},
        "float32/0": {**ours, "seed": 0, "judges": judges([95.0], [81.0]), "curve": curve, "machine": machine_x},
        "float32/1": {**ours, "seed": 1, "judges": judges([95.0], [81.0]), "curve": curve, "machine": machine_y},
    }
    data = {"dataset": "mnist", "method": "dm", "ipc": 10, "settings": {}}
    (tmp_path / "mnist_dm_ipc10.json").write_text(json.dumps({**data, "runs": runs}))
    table = parity_results.report(tmp_path)
    # The bar is the authors' mean less one std: 91 - 1.41 = 89.59 (project), 81 - 1.41 = 79.59 (second).
    assert "project 89.59, second 79.59" in table
    assert "| float32 | 0 | x | 100 | 50 | 89.00 | 79.00 |" in table
    assert "| float32 | 0 | x | 600 | 300 | 95.00 | 81.00 |" in table
    assert "| time to the authors' accuracy, project judge | 0 | x | | 100 | ratio 6.00 | |" in table
    assert "| time to the authors' accuracy, second judge | 0 | x | | 100 | ratio 6.00 | |" in table
    # The authors' own curve is listed (MTT keeps one), without a time to their own accuracy.
    assert "| authors | 1 | x | 100 | 50 | 89.00 | 79.00 |" in table
    assert "| time to the authors' accuracy, project judge | 1 | x |" not in table
    # A run on a machine where the authors' code did not run gets no ratio: timings of two machines never mix.
    assert (
        "| time to the authors' accuracy, project judge | 1 | y | | 100 | no authors' run on this machine | |" in table
    )


def test_our_experts_must_match_the_authors_experts_size(tmp_path, parity):
    folder = tmp_path / "experts"
    args = argparse.Namespace(our_experts=str(folder), num_experts=3, expert_train_epochs=6)
    config = argparse.Namespace(expert_path=str(folder), max_start_epoch=5, expert_epochs=2)
    with pytest.raises(SystemExit, match="no experts.json there"):
        parity.our_experts(args, config, prepared=None)

    folder.mkdir()
    experts = [{"file": f"expert_{i:03d}.safetensors", "train_seconds": 400.0} for i in range(2)]
    (folder / "experts.json").write_text(json.dumps({"num_epochs": 6, "experts": experts, "training": {"lr": 0.01}}))
    # Experts of another size would make the comparison one of the experts, not of the distillation.
    with pytest.raises(SystemExit, match="holds 2 experts x 6 epochs"):
        parity.our_experts(args, config, prepared=None)

    args.num_experts = 2
    assert parity.our_experts(args, config, prepared=None) == {
        "path": str(folder), "num_experts": 2, "num_epochs": 6, "training": {"lr": 0.01}, "train_seconds": 800.0,
    }  # fmt: skip


BUFFER_SCRIPT = """
    import argparse
    import os

    parser = argparse.ArgumentParser()
    for name in ("--dataset", "--model", "--buffer_path"):
        parser.add_argument(name)
    args, _ = parser.parse_known_args()
    folder = os.path.join(args.buffer_path, args.dataset, args.model)
    os.makedirs(folder)
    with open(os.path.join(folder, "replay_buffer_0.pt"), "w") as out:
        out.write("experts")
"""


def test_authors_experts_are_trained_once_and_their_cost_kept(tmp_path, monkeypatch, parity_authors):
    files = {"networks.py": NETWORKS, "utils.py": MTT_UTILS, "buffer.py": BUFFER_SCRIPT}
    command, _ = _runner_on_stand_in(tmp_path, files)
    monkeypatch.setattr(parity_authors, "RUNS_DIR", tmp_path / "runs")
    args = argparse.Namespace(
        reference_repo=command[3], data_dir=command[5], dataset="mnist", method="mtt", num_experts=2,
        expert_train_epochs=3, seeds=[4, 5],
    )  # fmt: skip
    prepared = argparse.Namespace(dsa_strategy="crop")
    trained = parity_authors.authors_experts(args, prepared)
    buffers = tmp_path / "runs" / "buffers" / "mnist_2x3"
    assert trained["path"] == str(buffers) and trained["seed"] == 4 and trained["train_seconds"] > 0
    assert "--num_experts 2 --train_epochs 3" in " ".join(trained["command"])
    assert (buffers / "MNIST" / "ConvNet" / "replay_buffer_0.pt").read_text() == "experts"
    # Found the second time: not trained again, and what the training cost is read back.
    (buffers.with_name("mnist_2x3_work") / "log.txt").unlink()
    assert parity_authors.authors_experts(args, prepared) == trained
    assert not (buffers.with_name("mnist_2x3_work") / "log.txt").exists()


def test_our_experts_become_the_authors_buffer(tmp_path, monkeypatch, parity_authors):
    from safetensors.torch import save_file

    from hf_distill.trajectories import epoch_key

    ours = tmp_path / "ours"
    ours.mkdir()
    vectors = {(e, epoch): torch.randn(7) for e in range(2) for epoch in range(3)}
    for expert in range(2):
        save_file({epoch_key(epoch): vectors[expert, epoch] for epoch in range(3)}, ours / f"expert_{expert}.st")
    index = {"num_epochs": 2, "experts": [{"file": f"expert_{e}.st"} for e in range(2)]}
    (ours / "experts.json").write_text(json.dumps(index))
    monkeypatch.setattr(parity_authors, "RUNS_DIR", tmp_path / "runs")
    args = argparse.Namespace(dataset="mnist", num_experts=2, expert_train_epochs=2, experts="ours")
    converted = parity_authors.authors_buffer_from_our_experts(args, str(ours))
    buffer_file = Path(converted["path"]) / "MNIST" / "ConvNet" / "replay_buffer_0.pt"
    assert Path(converted["path"]) == parity_authors.authors_buffers(args)
    # As distill.py reads a trajectory: expert, then epoch, then its parameters flattened and concatenated.
    buffer = torch.load(buffer_file)
    assert len(buffer) == 2 and all(len(trajectory) == 3 for trajectory in buffer)
    for (expert, epoch), vector in vectors.items():
        assert torch.equal(torch.cat([p.reshape(-1) for p in buffer[expert][epoch]]), vector)
    # Reused while our experts are the same; converted again when they changed.
    written = buffer_file.stat().st_mtime_ns
    assert parity_authors.authors_buffer_from_our_experts(args, str(ours)) == converted
    assert buffer_file.stat().st_mtime_ns == written
    (ours / "experts.json").write_text(json.dumps({**index, "experts": index["experts"][:1]}))
    assert len(torch.load(buffer_file)) == 2
    parity_authors.authors_buffer_from_our_experts(args, str(ours))
    assert len(torch.load(buffer_file)) == 1


def test_a_diverged_authors_run_is_not_judged(tmp_path, monkeypatch, parity_authors):
    # What the first MTT run on aliased experts gave: `loss = nan` for every iteration, a set of NaN pixels.
    monkeypatch.setattr(parity_authors, "mtt_arguments", lambda *args: ["distill.py"])
    monkeypatch.setattr(parity_authors, "run_reference", lambda *args: {0: 0.0, 10: 5.0})
    nan_set = (torch.full((2, 1, 4, 4), float("nan")), torch.tensor([0, 1]))
    monkeypatch.setattr(parity_authors, "mtt_final_set", lambda workdir: nan_set)
    monkeypatch.setattr(parity_authors.tempfile, "mkdtemp", lambda **_: str(tmp_path))
    args = argparse.Namespace(method="mtt", dataset="mnist", num_experts=3, expert_train_epochs=6, experts="own")
    with pytest.raises(RuntimeError, match="non-finite pixels"):
        parity_authors.run_authors(args, argparse.Namespace(num_iterations=10), 0, prepared=None)


def test_the_authors_mtt_sets_on_their_way_come_back_with_their_seconds(tmp_path, monkeypatch, parity_authors):
    def reference(args, workdir, seed, script_and_arguments, snapshots):
        assert snapshots == [0, 10, 20]  # within the run only (0: the initial set), each once
        for iteration in [*snapshots, "final"]:
            value = 30.0 if iteration == "final" else float(iteration)
            kept = {"image_syn": torch.full((2, 1, 4, 4), value), "label_syn": torch.tensor([0, 1])}
            kept["syn_lr"] = torch.tensor(value / 1000)
            name = "final_set.pt" if iteration == "final" else f"snapshot_{iteration}.pt"
            torch.save(kept, workdir / name)
        (workdir / "snapshot_20.pt").unlink()  # e.g. the real wandb was installed and kept nothing
        (workdir / "grad_norms.txt").write_text("0.004\n0.066\n")
        (workdir / "segments.txt").write_text("0 2.0\n4 -1.0\n")  # parity_reference's fingerprints
        return {0: 0.0, 10: 5.0, 20: 10.0, 30: 15.0}

    monkeypatch.setattr(parity_authors, "mtt_arguments", lambda *args: ["distill.py"])
    monkeypatch.setattr(parity_authors, "run_reference", reference)
    # The run's folder: not left in /tmp.
    monkeypatch.setattr(parity_authors.tempfile, "mkdtemp", lambda **_: str(tmp_path))
    args = argparse.Namespace(method="mtt", dataset="mnist", num_experts=3, expert_train_epochs=6, experts="own")
    # The buffer distill.py read: two experts, whose initial parameters sum to 2 and -1.
    buffers = tmp_path / "buffers"
    monkeypatch.setattr(parity_authors, "authors_buffers", lambda args: buffers)
    parity_authors.buffer_file(args, buffers).parent.mkdir(parents=True)
    torch.save([[[torch.ones(2)]], [[-torch.ones(1)]]], parity_authors.buffer_file(args, buffers))
    # Our normalisation equal to theirs: the pixels come back unchanged.
    prepared = argparse.Namespace(train_data=argparse.Namespace(mean=[0.1307], std=[0.3081]))
    run = parity_authors.run_authors(args, argparse.Namespace(num_iterations=30), 0, prepared, [0, 0, 10, 20, 30, 40])
    assert [(kept["iteration"], kept["seconds"]) for kept in run["snapshots"]] == [(0, 0.0), (10, 5.0)]
    assert torch.allclose(run["snapshots"][1]["images"], torch.full((2, 1, 4, 4), 10.0))
    assert torch.allclose(run["images"], torch.full((2, 1, 4, 4), 30.0)) and run["seconds"] == 15.0
    assert run["step_size"] == pytest.approx(0.03)  # their learned step size at the end
    assert run["grad_norms"] == [0.004, 0.066]  # their pixel gradients, as parity_reference.py logged them
    # and the segment of each step: the expert's place in the buffer, found by its fingerprint, and start epoch
    assert run["experts"] == [0, 1] and run["start_epochs"] == [0, 4]


def test_a_variant_of_one_method_is_refused_for_another(parity, capsys):
    with pytest.raises(SystemExit):
        parity.main(["--method", "dm", "--variants", "auto-full-unroll"])
    assert "variant 'auto-full-unroll' is for --method mtt only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parity.main(["--method", "dm", "--same-start", "--reference-repo", "x"])
    assert "--same-start is for --method mtt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parity.main(["--method", "mtt", "--variants", "auto", "--set", "max_grad_norm"])
    assert "--set takes KEY=VALUE items" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # paired draws come from a paired run
        parity.main(["--method", "mtt", "--variants", "auto-full-unroll-authors-draws"])
    assert "add --same-start" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the authors' scripts print their time every 10 iterations
        parity.main(["--method", "dm", "--variants", "authors", "--reference-repo", "x", "--iterations", "10"])
    assert "--iterations must be >= 11" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parity.main(["--method", "dm", "--experts", "ours", "--reference-repo", "x"])
    assert "--experts is for --method mtt" in capsys.readouterr().err


def test_set_changes_our_variants_only(parity):
    args = argparse.Namespace(our_settings=["max_grad_norm=0.01", "expert_sampling=uniform"])
    run_settings = {"expert_path": "experts"}
    ours = parity.variant_settings(args, run_settings, "auto-full-unroll")
    assert ours == {**run_settings, "mixed_precision": "auto", "unroll_memory": "full", **parity.our_settings(args)}
    assert ours["max_grad_norm"] == "0.01" and ours["expert_sampling"] == "uniform"
    assert parity.variant_settings(args, run_settings, "authors") == run_settings


def test_the_authors_initial_set_is_kept_for_later_runs_of_ours(tmp_path, monkeypatch, parity):
    monkeypatch.setattr(parity, "RUNS_DIR", tmp_path / "runs")
    results_file = tmp_path / "mnist_mtt_ipc10_same_start_our_experts.json"
    with pytest.raises(SystemExit, match="run the seed once with 'authors' first"):
        parity.load_start(results_file, 2)
    images, labels = torch.randn(4, 1, 4, 4), torch.tensor([0, 0, 1, 1])
    parity.keep_start(results_file, 2, (images, labels))
    kept_images, kept_labels = parity.load_start(results_file, 2)
    assert torch.equal(kept_images, images) and torch.equal(kept_labels, labels)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [f"{results_file.stem}_authors_2_initial.pt"]


def test_our_mtt_entries_keep_each_iterations_segment(parity):
    # What the trainer's method drew at each iteration, as the authors' entries keep what their script drew.
    config = argparse.Namespace(num_iterations=3, expert_sampling="cycle")
    method = argparse.Namespace(draw_segment=lambda iteration: (iteration % 2, 4 - iteration))
    segments = parity.our_segments(argparse.Namespace(config=config, method=method))
    assert segments == {"expert_sampling": "cycle", "experts": [0, 1, 0], "start_epochs": [4, 3, 2]}


def test_the_authors_scripts_make_as_many_updates_as_ours(parity_authors):
    # Their loops run `range(Iteration + 1)` and update the set in every pass, the last included.
    assert len(range(int(parity_authors.iteration_argument(30)) + 1)) == 30


def test_ours_can_visit_the_authors_expert_segments(tiny_image_dataset, tiny_experts, parity, tmp_path):
    from hf_distill.methods.trajectory_matching import TrajectoryMatchingConfig
    from hf_distill.preparation import prepare
    from tests.conftest import TINY_CONFIG_DEFAULTS

    settings = {**TINY_CONFIG_DEFAULTS, "syn_steps": 2, "max_start_epoch": 4, "mixed_precision": "no"}
    data = tiny_image_dataset()
    config = TrajectoryMatchingConfig(**settings, expert_path=tiny_experts)
    prepared = prepare(config, data["train"], data["test"])
    # Segments none of our draws would give in this order (the authors' entry keeps theirs).
    authors = {"experts": [1, 1, 0], "start_epochs": [3, 0, 2]}
    path = tmp_path / "mnist_mtt_ipc2_same_start.json"
    path.write_text(json.dumps({"runs": {"authors/0": authors}}))
    segments, draws = parity.stored_segments(path, 0)
    assert draws == "authors/0"
    run = parity.run_ours(config, prepared, segments=segments)
    assert (run["experts"], run["start_epochs"]) == ([1, 1, 0], [3, 0, 2])
    # An entry from before they were logged says so, unless their draws can be replayed; a seed never run, always.
    path.write_text(json.dumps({"runs": {"authors/0": {"grad_norms": [0.1]}}}))
    with pytest.raises(SystemExit, match="no expert segments of the authors' run of seed 0"):
        parity.stored_segments(path, 0)
    replayed, draws = parity.stored_segments(path, 0, replay=lambda: [(0, 1), (1, 2), (0, 3)])
    assert (replayed, draws) == ([(0, 1), (1, 2), (0, 3)], "authors/0, replayed by authors_mtt_draws.py")
    with pytest.raises(SystemExit, match="seed 1"):
        parity.stored_segments(path, 1, replay=lambda: replayed)
    with pytest.raises(ValueError, match="2 expert segments given for 3 iterations"):
        parity.run_ours(config, prepared, segments=segments[:2])


# What parity_reference.py logged from the authors' distill.py on Fashion-MNIST, 30 updates (sessions 34 and 35):
# (experts, start epochs) per seed.
LOGGED_AUTHORS_SEGMENTS = {
    0: (
        [0, 2, 1, 2, 1, 0, 0, 1, 2, 0, 2, 1, 0, 2, 1, 1, 0, 2, 1, 0, 2, 2, 0, 1, 2, 1, 0, 1, 0, 2],
        [2, 4, 1, 2, 0, 3, 4, 0, 4, 0, 0, 3, 4, 3, 4, 2, 4, 3, 3, 3, 4, 0, 0, 3, 4, 1, 0, 4, 2, 3],
    ),
    1: (
        [1, 2, 0, 2, 0, 1, 0, 2, 1, 0, 2, 1, 1, 2, 0, 2, 0, 1, 0, 2, 1, 1, 0, 2, 0, 1, 2, 2, 0, 1],
        [3, 0, 4, 0, 4, 1, 1, 1, 3, 1, 1, 3, 2, 2, 2, 2, 0, 2, 3, 2, 1, 4, 2, 2, 3, 3, 3, 2, 3, 3],
    ),
    2: (
        [1, 2, 0, 2, 1, 0, 2, 1, 0, 2, 0, 1, 1, 0, 2, 1, 0, 2, 0, 2, 1, 0, 1, 2, 0, 1, 2, 0, 1, 2],
        [0, 3, 0, 3, 0, 4, 4, 4, 2, 0, 4, 0, 0, 0, 1, 3, 3, 2, 2, 3, 2, 4, 0, 4, 0, 0, 3, 0, 4, 4],
    ),
}


@pytest.mark.parametrize("seed", sorted(LOGGED_AUTHORS_SEGMENTS))
def test_the_authors_mtt_segments_follow_from_the_seed(parity, seed):
    import authors_mtt_draws

    logged_experts, logged_starts = LOGGED_AUTHORS_SEGMENTS[seed]
    segments = authors_mtt_draws.replayed_segments(seed, authors_mtt_draws.CLASS_SIZES["fashion_mnist"], 30)
    assert segments == list(zip(logged_experts, logged_starts))
    # Every expert once per round of 3, as their shuffled buffer is walked.
    assert all(sorted(logged_experts[i : i + 3]) == [0, 1, 2] for i in range(0, 30, 3))


def test_the_authors_segments_are_replayed_only_where_the_replay_holds(parity):
    import argparse

    import authors_mtt_draws

    config = argparse.Namespace(num_iterations=31, max_start_epoch=5)
    ours = argparse.Namespace(experts="ours", dataset="mnist", num_experts=3)
    replay = parity.replayable_segments(ours, config, 2)
    assert replay() == authors_mtt_draws.replayed_segments(2, authors_mtt_draws.CLASS_SIZES["mnist"], 31, 3, 5)
    # Their own experts sit at buffer positions that are not our indices; CIFAR-10's class sizes are not listed.
    assert parity.replayable_segments(argparse.Namespace(**{**vars(ours), "experts": "authors"}), config, 2) is None
    assert parity.replayable_segments(argparse.Namespace(**{**vars(ours), "dataset": "cifar10"}), config, 2) is None
