"""Cross-architecture evaluation and the fair figures: every named architecture builds and runs, the run's own
architecture repeats the protocol's figures, the table reaches eval_results.json and the card."""

import json
from pathlib import Path

import pytest
import torch

from hf_distill.evaluation import fair_figures
from hf_distill.methods import RandomSelectionConfig
from hf_distill.modeling import build_model, describe_architecture, extract_features
from hf_distill.models import ARCHITECTURE_NAMES, ConvNetConfig, default_convnet_config, named_architecture
from hf_distill.trainer import DistillTrainer

TINY = dict(images_per_class=2, net_width=8, net_depth=2, eval_epochs=1, eval_num_models=1, save_steps=0)


@pytest.mark.parametrize("name", ARCHITECTURE_NAMES)
@pytest.mark.parametrize("channels, size", [(1, 16), (3, 16)])
def test_every_named_architecture_classifies_and_embeds(name, channels, size):
    config = named_architecture(name, channels, size, 4)
    config.num_labels = 4
    model = build_model(config).eval()
    images = torch.randn(2, channels, size, size)
    assert model(pixel_values=images).logits.shape == (2, 4)
    assert extract_features(model, images).shape[0] == 2


def test_convnet_variants_start_from_the_run_network():
    run = default_convnet_config(1, 28, 10, net_width=32, net_act="leakyrelu")
    variant = named_architecture("convnet_bn", 1, 28, 10, run)
    assert (variant.net_norm, variant.net_width, variant.net_act) == ("batchnorm", 32, "leakyrelu")
    assert named_architecture("convnet_width256", 1, 28, 10, run).net_width == 256
    assert named_architecture("convnet_depth2", 1, 28, 10, None).net_width == 128  # the papers' ConvNet
    assert named_architecture("someone/some-model", 1, 28, 10) is None  # a Hub id: resolved elsewhere


def test_the_table_names_each_network_by_its_shape():
    described = {
        name: describe_architecture(named_architecture(name, 1, 28, 10).to_dict()) for name in ARCHITECTURE_NAMES
    }
    assert described["resnet"] == "ResNet (basic blocks 2-2-2-2, widths 64-128-256-512)"
    assert described["vit"] == "ViT (4 layers of width 128, 4-pixel patches)"
    assert described["mlp"] == "MLP (2 hidden layers of 128)"
    assert described["convnet_bn"].startswith("ConvNet-3 (width 128, batchnorm")
    assert len(set(described.values())) == len(described)  # no two networks of the table read alike


def test_fair_figures():
    results = {
        "distilled": {"mean": 90.0},
        "random_real": {"mean": 70.5},
        "full_data": {"mean": 99.25},
    }
    assert fair_figures(results, "soft") == {
        "distilled_labels": "soft",
        "improvement_over_random": 19.5,
        "baseline_labels": "hard",
        "hard_label_recovery": 9.25,
    }
    assert fair_figures({"distilled": {"mean": 90.0}}) == {"distilled_labels": "hard"}


def test_the_run_architecture_repeats_the_protocol_and_others_join_the_table(tiny_image_dataset, tmp_path):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=6)
    trainer = DistillTrainer(RandomSelectionConfig(**TINY), splits["train"], splits["test"])
    saved = ConvNetConfig.from_dict({**trainer.model_config.to_dict(), "net_width": 4})
    saved.save_pretrained(tmp_path / "narrow")
    results = trainer.evaluate(architectures=["convnet", "mlp", str(tmp_path / "narrow")])
    table = results["cross_architecture"]
    assert list(table) == ["convnet", "mlp", str(tmp_path / "narrow")]
    assert table["convnet"]["distilled"]["accuracies"] == results["distilled"]["accuracies"]
    assert table["convnet"]["random_real"]["accuracies"] == results["random_real"]["accuracies"]
    assert table["mlp"]["architecture"] == "MLP (2 hidden layers of 128)"
    assert "width 4" in table[str(tmp_path / "narrow")]["architecture"]
    for row in table.values():
        gain = row["distilled"]["mean"] - row["random_real"]["mean"]
        assert row["fair"]["improvement_over_random"] == pytest.approx(gain, abs=0.01)
    assert results["fair"]["improvement_over_random"] == pytest.approx(
        results["distilled"]["mean"] - results["random_real"]["mean"], abs=0.01
    )
    with pytest.raises(ValueError, match="does not exist"):
        trainer.evaluate_architectures(["./no-such-model"])


def test_benchmark_shares_the_random_subset_through_the_eval_cache(monkeypatch, tmp_path):
    # benchmarks/ is a folder of scripts (their imports expect it on sys.path), not a package.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import cross_architecture

    config = {"method": "dm", "source": {"dataset": "mnist"}, "images_per_class": 10}
    (tmp_path / "dm").mkdir()
    (tmp_path / "dm" / "distill_config.json").write_text(json.dumps(config))
    (tmp_path / "dm" / cross_architecture.RESULTS_NAME).write_text(json.dumps({"cross_architecture": {}}))
    commands = []

    def fake_run_measured(command, cwd):
        commands.append(command)
        return {"returncode": 0, "wall_seconds": 1.0, "peak_rss_mib": 1.0}

    monkeypatch.setattr(cross_architecture, "run_measured", fake_run_measured)
    cache = tmp_path / "cache"
    for mode in ("shared", "each", "none"):
        row = cross_architecture.evaluate_set(tmp_path / "dm", "convnet,mlp", 1, 1, mode, cache)
        assert row["method"] == "dm" and row["dataset"] == "mnist" and row["wall_seconds"] == 1.0
    shared, each, none = commands
    assert shared[shared.index("--eval_cache_dir") + 1] == str(cache) and "--no_random_baseline" not in shared
    assert "--eval_cache_dir" not in each and "--no_random_baseline" not in each
    assert "--no_random_baseline" in none and "--eval_cache_dir" not in none


def test_benchmark_keeps_the_rows_of_unchanged_sets_and_evaluates_the_rest(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import cross_architecture

    sets = [tmp_path / name for name in ("dm", "herding", "random")]
    for path in sets:
        (path / "dataset").mkdir(parents=True)
        (path / "dataset" / "data.arrow").write_bytes(path.name.encode())
        config = {"method": path.name, "source": {"dataset": "mnist"}, "images_per_class": 10}
        (path / "distill_config.json").write_text(json.dumps(config))
        (path / cross_architecture.RESULTS_NAME).write_text(json.dumps({"cross_architecture": {}}))
    evaluated = []

    def fake_run_measured(command, cwd):
        evaluated.append(Path(command[command.index("evaluate") + 1]).name)
        return {"returncode": 0, "wall_seconds": 1.0, "peak_rss_mib": 1.0}

    monkeypatch.setattr(cross_architecture, "run_measured", fake_run_measured)
    first = cross_architecture.evaluate_sets(sets[:2], "convnet", 1, 1, "none")  # a table stopped after two sets
    assert evaluated == ["dm", "herding"]

    (sets[1] / cross_architecture.RESULTS_NAME).write_text("{}")  # an evaluation beside the set: still the same set
    (sets[0] / "dataset" / "data.arrow").write_bytes(b"remade")  # the dm set was made again
    evaluated.clear()
    rows = cross_architecture.evaluate_sets(sets, "convnet", 1, 1, "none", finished=first)
    assert evaluated == ["dm", "random"]  # herding's row is kept
    assert [row["method"] for row in rows] == ["dm", "herding", "random"] and rows[1] is first[1]
    assert rows[0]["set_digest"] != first[0]["set_digest"]

    # A regression-target set's row from before the protocol clipped its gradients is evaluated again.
    stale = {**rows[2], "target_type": "regression", "table": {"convnet": {"distilled": {"mean": 9.8}}}}
    evaluated.clear()
    assert cross_architecture.evaluate_sets(sets, "convnet", 1, 1, "none", finished=[*rows[:2], stale])[:2] == rows[:2]
    assert evaluated == ["random"]

    table = tmp_path / "mnist_ipc10.json"
    settings = {"architectures": ["convnet"], "num_models": 1, "epochs": 1, "random_baseline": "none"}
    table.write_text(json.dumps({**settings, "rows": rows}))
    assert cross_architecture.finished_rows(table, settings) == rows
    assert cross_architecture.finished_rows(table, {**settings, "epochs": 300}) == []  # another protocol: start over
    assert cross_architecture.finished_rows(tmp_path / "absent.json", settings) == []


def test_benchmark_plots_the_table(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import cross_architecture

    entry = {"distilled": {"mean": 90.0, "std": 1.0}, "random_real": {"mean": 80.0}}
    rows = [
        {"method": method, "table": {"convnet": entry, "mlp": {"distilled": {"mean": 70.0, "std": 0.5}}}}
        for method in "ab"
    ]
    cross_architecture.plot_table(rows, ["convnet", "mlp", "vit"], tmp_path / "table.png")
    assert (tmp_path / "table.png").stat().st_size > 0
    assert "| `a` | 90.00 ± 1.00 (80.00) | 70.00 ± 0.50 | — |" in cross_architecture.markdown(
        rows, ["convnet", "mlp", "vit"]
    )
    # A subset given the set's teacher's soft labels is marked.
    rows[1]["table"]["convnet"] = {**entry, "random_real": {"mean": 80.0, "labels": "soft"}}
    assert "| `b` | 90.00 ± 1.00 (80.00§) |" in cross_architecture.markdown(rows, ["convnet"])
    # A set evaluated on its own variant of the column's network (e.g. a batch-norm teacher's ConvNet) is marked.
    for row in rows:
        row["table"]["convnet"] = {**entry, "architecture": "ConvNet-3 (in)"}
    rows.append({"method": "c", "table": {"convnet": {**entry, "architecture": "ConvNet-3 (bn)"}}})
    table = cross_architecture.markdown(rows, ["convnet"])
    assert "| `a` | 90.00 ± 1.00 (80.00) |" in table and "| `c` | 90.00 ± 1.00 (80.00)¶ |" in table
    assert "¶: on the set's own ConvNet-3 (bn), its subset too (the column's other rows: ConvNet-3 (in))." in table
