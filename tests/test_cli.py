"""Tests for the `hf-distill` command line, on the offline `sklearn:digits` source with tiny networks."""

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from datasets import load_from_disk
from PIL import Image

from hf_distill import DistributionMatchingConfig, RandomSelectionConfig
from hf_distill.cards import render_dataset_card
from hf_distill.cli import main, parse_distill_args, results_file_name
from hf_distill.constants import CONFIG_NAME

TINY_FLAGS = [
    "--net_width", "8",
    "--net_depth", "2",
    "--batch_real", "8",
    "--images_per_class", "1",
    "--num_iterations", "2",
    "--eval_epochs", "2",
    "--eval_num_models", "1",
]  # fmt: skip
OUTPUTS = ["dataset", CONFIG_NAME, "eval_results.json", "synthetic_grid.png"]


@pytest.fixture(scope="module")
def distilled_run(tmp_path_factory):
    """One `hf-distill distill` run on digits, shared by the tests that only read its outputs."""
    output_dir = tmp_path_factory.mktemp("cli") / "digits-dm"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["distill", "--dataset", "sklearn:digits", *TINY_FLAGS, "--output_dir", str(output_dir)])
    return code, output_dir, stdout.getvalue()


# ---------------------------------------------------------------------------------------------------------------------
# hf-distill distill
# ---------------------------------------------------------------------------------------------------------------------


def test_distill_writes_every_output(distilled_run):
    code, output_dir, _ = distilled_run
    assert code == 0
    assert sorted(p.name for p in output_dir.iterdir()) == sorted(OUTPUTS)  # no tmp folders left behind

    dataset = load_from_disk(str(output_dir / "dataset"))
    assert dataset.num_rows == 10  # 10 digits x 1 image per class
    assert set(dataset.column_names) == {"image", "pixel_values", "label"}
    assert dataset.features["label"].names == [str(i) for i in range(10)]
    assert sorted(dataset["label"]) == list(range(10))

    metadata = json.loads((output_dir / CONFIG_NAME).read_text())
    assert metadata["method"] == "dm"
    assert (metadata["images_per_class"], metadata["num_iterations"], metadata["net_width"]) == (1, 2, 8)
    assert metadata["iterations_completed"] == 2
    assert metadata["source"]["dataset"] == "sklearn:digits"
    assert "hf_distill_version" in metadata

    results = json.loads((output_dir / "eval_results.json").read_text())
    assert set(results) >= {"distilled", "random_real", "protocol"}
    assert results["distilled"]["num_models"] == 1 and results["distilled"]["epochs"] == 2
    assert results["distilled"]["num_images"] == 10
    assert results["iterations"] == 2

    with Image.open(output_dir / "synthetic_grid.png") as grid:
        # 8x8 digits are enlarged x8 to 64 px cells with 2 px padding: one column, one row per class.
        assert grid.size == (1 * 66 + 2, 10 * 66 + 2)


def test_distill_prints_the_accuracy_lines(distilled_run):
    _, output_dir, stdout = distilled_run
    results = json.loads((output_dir / "eval_results.json").read_text())
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("Distilled with dm (1 images/class, 2 iterations,")
    distilled_mean = f"{results['distilled']['mean']:.2f} ±"
    assert any(line.startswith("  test accuracy, distilled set") and distilled_mean in line for line in lines)
    assert any(line.startswith("  test accuracy, random real subset") and "(n=1, 2 epochs)" in line for line in lines)
    assert lines[-1].startswith(f"Wrote {output_dir}/")


def test_distill_with_method_random(tmp_path, capsys):
    output_dir = tmp_path / "digits-random"
    argv = ["distill", "--method", "random", "--images_per_class", "2", "--net_width", "8", "--net_depth", "2"]
    argv += ["--eval_epochs", "1", "--eval_num_models", "1", "--output_dir", str(output_dir)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Distilled with random (2 images/class, 0 iterations" in out
    assert "test accuracy, distilled set" in out

    metadata = json.loads((output_dir / CONFIG_NAME).read_text())
    assert metadata["method"] == "random"
    assert len(metadata["selected_rows"]) == 20
    assert load_from_disk(str(output_dir / "dataset")).num_rows == 20


def test_distill_help_lists_the_config_fields(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["distill", "--help"])
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config", "--method", "--dataset", "--images_per_class", "--batch_real", "--lr_images"):
        assert flag in out


def test_kd_help_lists_the_config_fields(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["kd", "--help"])  # argparse %-formats every help string: a stray "%" crashed it
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--distilled", "--teacher", "--train_teacher", "--teacher_epochs", "--alpha", "--output_dir"):
        assert flag in out


# ---------------------------------------------------------------------------------------------------------------------
# parse_distill_args: YAML recipes and flags
# ---------------------------------------------------------------------------------------------------------------------


def write_recipe(tmp_path, values) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_parse_defaults_without_a_recipe():
    script_args, config = parse_distill_args([])
    assert script_args.dataset == "sklearn:digits"
    assert type(config) is DistributionMatchingConfig
    assert config == DistributionMatchingConfig(output_dir="outputs/sklearn-digits-dm-ipc10")


def test_yaml_recipe_gives_defaults_and_flags_override_them(tmp_path):
    recipe = write_recipe(
        tmp_path,
        {
            "method": "dm",
            "dataset": "sklearn:digits",
            "images_per_class": 5,
            "num_iterations": 7,
            "net_width": 16,
            "lr_images": 0.5,
            "eval_random_baseline": False,
            "test_split": None,
            "eval_lr": "1e-3",  # YAML 1.1 reads 1e-3 as a string; the flag's type converts it
            "resume_from_checkpoint": True,
        },
    )
    script_args, config = parse_distill_args(["--config", recipe, "--images_per_class", "3", "--net_width", "32"])
    assert script_args.dataset == "sklearn:digits"
    assert type(config) is DistributionMatchingConfig
    assert config.images_per_class == 3  # flag beats YAML
    assert config.net_width == 32  # flag beats YAML
    assert config.num_iterations == 7  # from YAML
    assert config.lr_images == 0.5  # from YAML
    assert config.eval_random_baseline is False  # a YAML boolean
    assert config.test_split is None  # a YAML null
    assert config.eval_lr == 0.001
    assert config.resume_from_checkpoint == "latest"
    assert config.batch_real == 256  # neither: the paper default
    assert config.output_dir == "outputs/sklearn-digits-dm-ipc3"

    _, config = parse_distill_args(["--config", recipe, "--output_dir", str(tmp_path / "out")])
    assert config.images_per_class == 5
    assert config.output_dir == str(tmp_path / "out")


def test_yaml_recipe_selects_the_method(tmp_path):
    recipe = write_recipe(tmp_path, {"method": "random", "images_per_class": 4})
    _, config = parse_distill_args(["--config", recipe])
    assert type(config) is RandomSelectionConfig
    assert config.images_per_class == 4
    # `--method` on the command line beats the recipe's method.
    _, config = parse_distill_args(["--config", write_recipe(tmp_path, {"method": "random"}), "--method", "dm"])
    assert type(config) is DistributionMatchingConfig


def test_unknown_yaml_key_raises(tmp_path):
    recipe = write_recipe(tmp_path, {"images_per_class": 2, "not_an_option": 1})
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['not_an_option'\] for method 'dm'"):
        parse_distill_args(["--config", recipe])
    # A key of another method is unknown to this one.
    recipe = write_recipe(tmp_path, {"method": "random", "batch_real": 8})
    with pytest.raises(ValueError, match=r"\['batch_real'\] for method 'random'"):
        parse_distill_args(["--config", recipe])


def test_yaml_recipe_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a YAML mapping"):
        parse_distill_args(["--config", str(path)])


def test_invalid_values_in_flags_raise_the_config_error():
    with pytest.raises(ValueError, match="images_per_class must be >= 1"):
        parse_distill_args(["--images_per_class", "0"])


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="Available methods"):
        parse_distill_args(["--method", "no-such-method"])


# ---------------------------------------------------------------------------------------------------------------------
# hf-distill evaluate
# ---------------------------------------------------------------------------------------------------------------------


def test_evaluate_architectures_adds_the_table_to_eval_results_and_the_card(distilled_run, tmp_path, capsys):
    _, source_dir, _ = distilled_run
    output_dir = tmp_path / "copy"
    shutil.copytree(source_dir, output_dir)
    before = json.loads((output_dir / "eval_results.json").read_text())
    flags = ["--num_models", "1", "--epochs", "1", "--architectures", "convnet_bn,mlp"]
    assert main(["evaluate", str(output_dir), *flags]) == 0
    after = json.loads((output_dir / "eval_results.json").read_text())
    assert after["distilled"] == before["distilled"]  # the recorded figures are kept
    assert list(after["cross_architecture"]) == ["convnet_bn", "mlp"]
    assert "convnet_bn" in capsys.readouterr().out
    card = str(render_dataset_card(output_dir, "org/digits"))
    assert "### Other architectures" in card and "| `convnet_bn` |" in card and "| `mlp` |" in card
    # Kept beside the recorded results instead (`--results_name eval_results_cross_architecture.json`, as
    # benchmarks/cross_architecture.py does), the table still reaches the card.
    (output_dir / "eval_results.json").write_text(json.dumps(before))
    (output_dir / "eval_results_cross_architecture.json").write_text(json.dumps(after))
    assert str(render_dataset_card(output_dir, "org/digits")) == card


def test_evaluate_reads_the_random_subset_back_from_the_eval_cache(distilled_run, tmp_path, monkeypatch):
    import hf_distill.evaluation as evaluation

    _, source_dir, _ = distilled_run
    flags = ["--num_models", "1", "--epochs", "1", "--architectures", "mlp", "--eval_cache_dir", str(tmp_path / "c")]
    for name in ("first", "second"):  # two sets of the same data and size (here copies of one run)
        shutil.copytree(source_dir, tmp_path / name)
    assert main(["evaluate", str(tmp_path / "first"), *flags]) == 0

    trained = []
    real_evaluate_images = evaluation.evaluate_images

    def recorded(*args, **kwargs):
        trained.append(kwargs.get("key", args[5] if len(args) > 5 else "distilled"))
        return real_evaluate_images(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_images", recorded)
    assert main(["evaluate", str(tmp_path / "second"), *flags]) == 0
    assert "random" not in trained  # read back, not trained again
    first, second = (
        json.loads((tmp_path / name / "eval_results.json").read_text())["cross_architecture"]["mlp"]
        for name in ("first", "second")
    )
    assert "reused_from" not in first["random_real"]
    assert second["random_real"].pop("reused_from").startswith("random-")
    assert second["random_real"] == first["random_real"]
    assert second["fair"]["improvement_over_random"] == first["fair"]["improvement_over_random"]


def test_a_saved_coreset_is_reloaded_without_selecting_again(tmp_path, monkeypatch):
    from hf_distill.methods.herding import Herding
    from hf_distill.trainer import DistillTrainer

    flags = ["--method", "herding", "--selection_epochs", "1", "--eval_num_models", "1", "--eval_epochs", "1"]
    flags += ["--images_per_class", "2", "--net_width", "8", "--output_dir", str(tmp_path / "herding")]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["distill", "--dataset", "sklearn:digits", *flags]) == 0
    saved = json.loads((tmp_path / "herding" / CONFIG_NAME).read_text())["selected_rows"]

    def fail(*args, **kwargs):
        raise AssertionError("the saved set was selected again")

    monkeypatch.setattr(Herding, "select", fail)
    monkeypatch.setattr(Herding, "setup", fail)
    trainer = DistillTrainer.from_output_dir(tmp_path / "herding")
    assert trainer.selected_rows.tolist() == saved
    torch.testing.assert_close(trainer.synthetic.images, trainer.train_data.inputs[trainer.selected_rows])


def test_nas_command_writes_its_report(distilled_run, tmp_path, capsys):
    _, source_dir, _ = distilled_run
    flags = ["--num_architectures", "2", "--epochs", "1", "--real_epochs", "1", "--results_dir", str(tmp_path / "nas")]
    assert main(["nas", str(source_dir), *flags]) == 0
    out = capsys.readouterr().out
    assert "2 of 600 architectures" in out and "Spearman" in out  # 8x8 digits: depth-4 pooling nets excluded
    assert (tmp_path / "nas" / "nas_results.json").is_file() and (tmp_path / "nas" / "nas_ranks.png").is_file()


def test_results_of_a_clipped_regression_evaluation_go_beside_unclipped_ones():
    recorded = {"protocol": {"num_models": 3, "epochs": 300}, "distilled": {"architecture": "hf_distill_convnet"}}
    clipped = {**recorded, "distilled": {**recorded["distilled"], "max_grad_norm": 10.0}}
    assert results_file_name(recorded, None) == results_file_name(recorded, recorded) == "eval_results.json"
    assert results_file_name(clipped, clipped) == "eval_results.json"
    assert results_file_name(clipped, recorded) == "eval_results_3models_300epochs_hf_distill_convnet_clip10.json"


def test_evaluate_writes_another_protocol_beside_the_recorded_results(distilled_run, tmp_path, capsys):
    _, source_dir, _ = distilled_run
    output_dir = tmp_path / "copy"
    shutil.copytree(source_dir, output_dir)
    before = json.loads((output_dir / "eval_results.json").read_text())
    assert before["distilled"]["epochs"] == 2

    assert main(["evaluate", str(output_dir), "--num_models", "1", "--epochs", "1"]) == 0
    assert json.loads((output_dir / "eval_results.json").read_text()) == before  # never replaced by another protocol
    after = json.loads((output_dir / "eval_results_1models_1epochs_hf_distill_convnet.json").read_text())
    assert after["distilled"]["epochs"] == 1 and after["protocol"]["epochs"] == 1
    assert after["distilled"]["num_models"] == 1
    assert after["distilled"]["num_images"] == 10
    assert after["iterations"] == 2  # recorded at distillation, not reset
    assert "random_real" in after
    out = capsys.readouterr().out
    assert "(n=1, 1 epochs)" in out
    # The distilled set itself is untouched.
    evaluated = load_from_disk(str(output_dir / "dataset")).with_format("numpy")[:]["pixel_values"]
    original = load_from_disk(str(source_dir / "dataset")).with_format("numpy")[:]["pixel_values"]
    assert np.array_equal(evaluated, original)


def test_evaluate_turns_the_random_baseline_on_or_off_whatever_the_run_recorded(distilled_run, tmp_path):
    _, source_dir, _ = distilled_run
    output_dir = tmp_path / "copy"
    shutil.copytree(source_dir, output_dir)
    config = json.loads((output_dir / CONFIG_NAME).read_text())
    (output_dir / CONFIG_NAME).write_text(json.dumps({**config, "eval_random_baseline": False}))
    flags = ["--num_models", "1", "--epochs", "1", "--results_name", "check.json"]
    assert main(["evaluate", str(output_dir), *flags]) == 0
    assert "random_real" not in json.loads((output_dir / "check.json").read_text())  # as recorded
    assert main(["evaluate", str(output_dir), *flags, "--random_baseline"]) == 0
    results = json.loads((output_dir / "check.json").read_text())
    assert "random_real" in results and "improvement_over_random" in results["fair"]
    with pytest.raises(SystemExit):  # not both
        main(["evaluate", str(output_dir), "--random_baseline", "--no_random_baseline"])


def test_evaluate_without_a_recorded_source_asks_for_dataset(distilled_run, tmp_path, capsys):
    _, source_dir, _ = distilled_run
    output_dir = tmp_path / "copy"
    shutil.copytree(source_dir, output_dir)
    metadata = json.loads((output_dir / CONFIG_NAME).read_text())
    metadata["source"] = {}
    (output_dir / CONFIG_NAME).write_text(json.dumps(metadata))
    assert main(["evaluate", str(output_dir), "--num_models", "1", "--epochs", "1"]) == 2
    assert "--dataset" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--dataset"):  # --debug: the exception itself
        main(["evaluate", str(output_dir), "--num_models", "1", "--epochs", "1", "--debug"])


# ---------------------------------------------------------------------------------------------------------------------
# top-level usage
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [[], ["-h"], ["--help"]])
def test_usage_returns_zero(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hf-distill {analyze,distill,evaluate,kd,nas,")
    assert all(f"  {command} " in out for command in ("analyze", "distill", "evaluate", "nas", "push"))


def test_unknown_command_returns_two(capsys):
    assert main(["frobnicate"]) == 2
    assert "usage: hf-distill" in capsys.readouterr().out


def test_train_experts_then_mtt_distill_from_the_command_line(tmp_path, capsys):
    """`train-experts` writes experts for the same data/network flags; `distill --method mtt` then uses them."""
    expert_dir = tmp_path / "experts"
    common = ["--dataset", "sklearn:digits", "--net_width", "8", "--net_depth", "2", "--images_per_class", "1"]
    code = main(["train-experts", *common, "--expert_dir", str(expert_dir), "--num_experts", "1", "--num_epochs", "2"])
    assert code == 0
    assert "Wrote 1 expert trajectories x 2 epochs" in capsys.readouterr().out
    assert (expert_dir / "experts.json").is_file()
    output_dir = tmp_path / "mtt"
    flags = ["--method", "mtt", "--expert_path", str(expert_dir), "--max_start_epoch", "1", "--expert_epochs", "1"]
    flags += ["--syn_steps", "2", "--num_iterations", "1", "--save_steps", "0", "--eval_epochs", "1"]
    flags += ["--eval_num_models", "1", "--no_eval_random_baseline", "--output_dir", str(output_dir)]
    assert main(["distill", *common, *flags]) == 0
    config = json.loads((output_dir / "distill_config.json").read_text())
    assert config["method"] == "mtt" and config["learned_lr"] > 0
