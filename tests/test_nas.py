"""Architecture search on a distilled set: the DC paper's space, the rank correlation, the report and the command."""

import json

import pytest

from hf_distill import nas
from hf_distill.methods import RandomSelectionConfig
from hf_distill.models import ConvNetConfig
from hf_distill.nas import NASConfig, sample_architectures, sample_space_size, search_architectures, spearman
from hf_distill.trainer import DistillTrainer


def test_the_search_space_is_the_dc_papers_and_fits_the_images():
    assert sample_space_size() == 720 and sample_space_size(16) == 720
    assert sample_space_size(8) == 720 - 4 * 3 * 5 * 2  # depth 4 with max or avg pooling cannot shrink 8 pixels 16x
    sample = sample_architectures(30, seed=0, image_side=28)
    assert len({json.dumps(s, sort_keys=True) for s in sample}) == 30
    assert sample == sample_architectures(30, seed=0, image_side=28)  # seeded
    for settings in sample:
        ConvNetConfig(num_channels=1, image_size=28, num_labels=10, **settings)  # every one is a valid ConvNet
    with pytest.raises(ValueError, match="between 2 and 720"):
        NASConfig(num_architectures=1)


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 6]) == pytest.approx(0.8660254)  # ties share their average rank


def test_search_reports_rankings_picks_and_seconds(tiny_image_dataset, tmp_path):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=6, size=16)
    config = RandomSelectionConfig(images_per_class=2, net_width=8, net_depth=2, save_steps=0)
    trainer = DistillTrainer(config, splits["train"], splits["test"])
    report = search_architectures(trainer, NASConfig(num_architectures=3, epochs=1, real_epochs=1), tmp_path / "nas")
    assert len(report["architectures"]) == 3
    assert set(report["summary"]) == {"distilled", "random_real", "whole_real"}
    for name in ("distilled", "random_real"):
        rho = report["summary"][name]["spearman_with_whole_real"]
        assert rho != rho or -1.0 <= rho <= 1.0  # NaN when a ranking is all ties
        assert report["summary"][name]["picked"] in [row["settings"] for row in report["architectures"]]
        ratio = report["summary"]["whole_real"]["seconds"] / report["summary"][name]["seconds"]
        assert report["summary"][name]["times_faster_than_whole_real"] == pytest.approx(ratio, abs=0.01)
    assert report["best_real_accuracy"] == max(row["whole_real"]["accuracy"] for row in report["architectures"])
    assert json.loads((tmp_path / "nas" / "nas_results.json").read_text()) == json.loads(json.dumps(report))
    assert (tmp_path / "nas" / "nas_ranks.png").stat().st_size > 0


def test_a_narrowed_space_samples_only_its_depths_and_widths():
    config = NASConfig(num_architectures=5, net_depths=[1, 2], net_widths=[8])
    assert sample_space_size(space=config.space()) == 2 * 1 * 3 * 3 * 5
    sample = sample_architectures(5, seed=0, image_side=16, space=config.space())
    assert {s["net_width"] for s in sample} == {8} and {s["net_depth"] for s in sample} <= {1, 2}
    with pytest.raises(ValueError, match="must be positive"):
        NASConfig(net_widths=[0])
    with pytest.raises(ValueError, match="must be >= 1"):
        NASConfig(real_epochs=0)


def test_a_stopped_search_resumes_where_it_stopped(tiny_image_dataset, tmp_path, monkeypatch):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=6, size=16)
    config = RandomSelectionConfig(images_per_class=2, net_width=8, net_depth=2, save_steps=0)
    trainer = DistillTrainer(config, splits["train"], splits["test"])
    search = NASConfig(num_architectures=3, epochs=1, real_epochs=1, net_widths=[8, 16])
    full = search_architectures(trainer, search, tmp_path / "nas")
    assert full["complete"] is True
    # What a search stopped after its first architecture leaves behind.
    path = tmp_path / "nas" / "nas_results.json"
    path.write_text(json.dumps({**full, "architectures": full["architectures"][:1], "complete": False}))
    trained = []
    evaluate_images = nas.evaluate_images

    def counting(*args, key, **kwargs):
        trained.append(key)
        return evaluate_images(*args, key=key, **kwargs)

    monkeypatch.setattr(nas, "evaluate_images", counting)
    resumed = search_architectures(trainer, search, tmp_path / "nas")
    assert sorted({key.split("-")[1] for key in trained}) == ["1", "2"]  # architecture 0 was not trained again
    assert [row["settings"] for row in resumed["architectures"]] == [row["settings"] for row in full["architectures"]]
    assert resumed["architectures"][0] == full["architectures"][0]
    # Another budget is another search: nothing is reused.
    trained.clear()
    search_architectures(
        trainer, NASConfig(num_architectures=3, epochs=2, real_epochs=1, net_widths=[8, 16]), tmp_path / "nas"
    )
    assert sorted({key.split("-")[1] for key in trained}) == ["0", "1", "2"]


def test_another_sets_search_reuses_the_whole_real_trainings(tiny_image_dataset, tmp_path, monkeypatch):
    splits = tiny_image_dataset(num_classes=3, rows_per_class=6, size=16)
    search = NASConfig(num_architectures=2, epochs=1, real_epochs=1, net_widths=[8])
    first = DistillTrainer(
        RandomSelectionConfig(images_per_class=2, net_width=8, net_depth=2, save_steps=0),
        splits["train"],
        splits["test"],
    )
    earlier = search_architectures(first, search, tmp_path / "first")
    second = DistillTrainer(
        RandomSelectionConfig(images_per_class=2, net_width=8, net_depth=2, save_steps=0, seed=1),
        splits["train"],
        splits["test"],
    )
    trained = []
    evaluate_images = nas.evaluate_images
    monkeypatch.setattr(
        nas, "evaluate_images", lambda *a, key, **k: trained.append(key) or evaluate_images(*a, key=key, **k)
    )
    report = search_architectures(
        second, search, tmp_path / "second", reuse_whole_real_from=tmp_path / "first" / "nas_results.json"
    )
    assert not [key for key in trained if key.endswith("whole_real")] and len(trained) == 4
    assert [row["whole_real"] for row in report["architectures"]] == [
        row["whole_real"] for row in earlier["architectures"]
    ]
    assert report["fingerprint"] != earlier["fingerprint"] and report["whole_real_key"] == earlier["whole_real_key"]
    with pytest.raises(ValueError, match="cannot be reused"):
        longer = NASConfig(num_architectures=2, epochs=1, real_epochs=2, net_widths=[8])
        search_architectures(second, longer, reuse_whole_real_from=tmp_path / "first" / "nas_results.json")
