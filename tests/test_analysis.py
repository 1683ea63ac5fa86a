"""`hf-distill analyze`: each finding against data where the answer is planted, and the report on disk."""

import json

import pytest
import torch
from datasets import Dataset

from hf_distill.analysis import AnalysisConfig, analyze_dataset, class_outliers, class_statistics, near_duplicates
from hf_distill.cli import main


def test_class_statistics_count_rows_and_undo_the_normalisation():
    labels = torch.tensor([0, 0, 0, 1])
    images = torch.zeros(4, 1, 2, 2)  # normalised 0 = the mean
    images[3] = 1.0  # one std above
    stats = class_statistics(images, labels, ["a", "b"], mean=[0.5], std=[0.25])
    assert stats["num_rows"] == 4 and stats["imbalance_ratio"] == 3.0
    assert (stats["largest_class"], stats["smallest_class"]) == ("a", "b")
    assert stats["per_class"]["a"] == {"rows": 3, "pixel_mean": [0.5], "pixel_std": [0.0]}
    assert stats["per_class"]["b"]["pixel_mean"] == [0.75]


def test_near_duplicates_find_planted_pairs_in_blocks():
    features = torch.randn(50, 16, generator=torch.Generator().manual_seed(0))
    features[30] = features[3] + 1e-4  # (nearly) the same row
    features[41] = features[7]
    found = near_duplicates(features, threshold=0.999, chunk_size=8)
    assert [(i, j) for i, j, _ in found["pairs"]] == [(3, 30), (7, 41)] or [(i, j) for i, j, _ in found["pairs"]] == [
        (7, 41),
        (3, 30),
    ]
    assert found["nearest_similarity"][[3, 30, 7, 41]].min() > 0.999
    assert found["nearest_similarity"][0] < 0.999


def test_outliers_and_rows_nearer_another_class():
    generator = torch.Generator().manual_seed(1)
    features = torch.cat([torch.randn(40, 4, generator=generator), torch.randn(40, 4, generator=generator) + 10.0])
    labels = torch.tensor([0] * 40 + [1] * 40)
    features[5] = 40.0  # far from everything: the largest z of class 0, and nearer class 1's mean
    result = class_outliers(features, labels, 2)
    assert int(result["z"][:40].argmax()) == 5 and result["z"][5] > 3
    assert int(result["nearest_class"][5]) == 1 and (result["nearest_class"][6:40] == 0).all()


def test_analyze_dataset_reports_a_planted_cross_label_duplicate(tiny_image_dataset, tmp_path):
    train = tiny_image_dataset(num_classes=3, rows_per_class=10)["train"]
    rows = train[:]
    rows["image"].append(rows["image"][0])
    rows["label"].append(2 if rows["label"][0] != 2 else 1)  # the same image under another label
    dataset = Dataset.from_dict(rows, features=train.features)
    config = AnalysisConfig(net_width=8, net_depth=2, images_per_class=1, duplicate_threshold=0.9999)
    report = analyze_dataset(dataset, config, tmp_path / "analysis")
    assert report["num_rows"] == 31 and report["num_classes"] == 3
    duplicates = report["near_duplicates"]
    assert duplicates["cross_class_pairs"] >= 1
    assert duplicates["listed"][0]["rows"] == [0, 30] and len(set(duplicates["listed"][0]["labels"])) == 2
    assert json.loads((tmp_path / "analysis" / "analysis.json").read_text()) == report
    assert (tmp_path / "analysis" / "analysis.png").stat().st_size > 0


def test_analyze_command(tmp_path, capsys):
    output = tmp_path / "digits"
    assert main(["analyze", "sklearn:digits", "--output_dir", str(output), "--net_width", "8"]) == 0
    out = capsys.readouterr().out
    assert "1438 rows, 10 classes" in out and "near-duplicate pairs" in out  # the demo's train split
    assert (output / "analysis.png").is_file()
    report = json.loads((output / "analysis.json").read_text())
    assert report["command"] == f"hf-distill analyze sklearn:digits --output_dir {output} --net_width 8"
    with pytest.raises(ValueError, match="duplicate_threshold must be in"):
        AnalysisConfig(duplicate_threshold=1.5)
