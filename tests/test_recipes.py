"""The YAML recipes parse with the CLI's parser, and the benchmark's report generation works (no subprocess)."""

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from hf_distill.cli import parse_distill_args, parse_kd_args
from hf_distill.methods import METHODS

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = REPO_ROOT / "recipes"
# Every YAML under recipes/ except the accelerate launcher configs and the `hf-distill kd` recipes (recipes/kd/) is a
# `hf-distill distill` recipe.
RECIPES = sorted(p for p in RECIPES_DIR.rglob("*.yaml") if not {"accelerate_configs", "kd"} & set(p.parts))
KD_RECIPES = sorted((RECIPES_DIR / "kd").glob("*.yaml"))
RECIPE_NAME = re.compile(r"^(?P<method>[a-z][a-z0-9_]*)_ipc(?P<ipc>\d+)\.yaml$")


def _load_benchmark_module():
    # benchmarks/ is a folder of scripts, not a package: load the file directly.
    spec = importlib.util.spec_from_file_location("run_benchmark", REPO_ROOT / "benchmarks" / "run_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipes_exist():
    names = {p.relative_to(RECIPES_DIR).as_posix() for p in RECIPES}
    for dataset in ("mnist", "fashion_mnist", "cifar10"):
        for method in ("dm", "random"):
            for ipc in (1, 10, 50):
                assert f"{dataset}/{method}_ipc{ipc}.yaml" in names
    assert {"digits/dm_ipc1.yaml", "digits/dm_ipc10.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(RECIPES_DIR).as_posix())
def test_recipe_parses(path):
    values = yaml.safe_load(path.read_text())
    assert values["method"] in METHODS, f"{path}: method {values['method']!r} is not registered"
    # Unknown keys raise inside parse_distill_args; values are validated by the config's __post_init__.
    script_args, config = parse_distill_args(["--config", str(path)])
    assert config.method == values["method"]
    for key, value in values.items():
        if key in ("dataset", "method"):
            continue
        assert getattr(config, key) == value, f"{path}: {key} was not applied"

    # The file name, the folder and the contents agree (the benchmark finds runs by these names).
    match = RECIPE_NAME.match(path.name)
    assert match, f"{path.name} should be named <method>_ipc<N>.yaml"
    assert match["method"] == config.method and int(match["ipc"]) == config.images_per_class
    dataset_folder = path.parent.name
    assert config.output_dir == f"benchmarks/runs/{dataset_folder}/{config.method}_ipc{config.images_per_class}"
    if dataset_folder != "digits":  # a folder may name a variant of the data after the dataset: cifar10_64px
        assert script_args.dataset == f"../shared/data/{dataset_folder.removesuffix('_64px')}"
    if config.method == "dm":
        # Every checkpoint is kept: the benchmark evaluates each of them for the accuracy-vs-time curve.
        assert config.save_total_limit is None and config.save_steps > 0


@pytest.mark.parametrize("path", KD_RECIPES, ids=lambda p: p.name)
def test_kd_recipe_parses_and_names_a_set_made_by_a_distill_recipe(path):
    values = yaml.safe_load(path.read_text())
    config = parse_kd_args(["--config", str(path)])  # unknown keys and bad values raise
    for key, value in values.items():
        assert getattr(config, key) == value, f"{path}: {key} was not applied"
    # `<dataset>_<method>_ipc<N>.yaml` trains on the set `recipes/<dataset>/<method>_ipc<N>.yaml` writes.
    dataset, set_name = path.stem.split("_", 1)
    distill_recipe = RECIPES_DIR / dataset / f"{set_name}.yaml"
    assert yaml.safe_load(distill_recipe.read_text())["output_dir"] == config.distilled_dataset
    assert config.output_dir == f"benchmarks/runs/{dataset}_kd/{set_name}"


def test_accelerate_config_parses():
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(RECIPES_DIR / "accelerate_configs" / "cpu_2proc.yaml"))
    assert config.num_processes == 2 and config.num_machines == 1


def _fake_result(dataset, method, ipc, mean, curve=None, status="ok"):
    result = {"mean": mean, "std": 0.5, "accuracies": [mean - 0.5, mean + 0.5], "num_models": 2, "epochs": 300}
    return {
        "schema_version": 1,
        "dataset": dataset,
        "method": method,
        "ipc": ipc,
        "status": status,
        "returncode": 0 if status == "ok" else 1,
        "iterations": 1000 if method == "dm" else 0,
        "distill_seconds": 812.4 if method == "dm" else 0.0,
        "wall_seconds": 1500.0,
        "peak_rss_mib": 1234.5,
        "machine": {"nproc": 2, "cpu_model": "Test CPU", "torch": "2.13.0"},
        "eval_results": {"distilled": result, "random_real": {**result, "mean": 92.0}} if status == "ok" else None,
        "curve": curve,
    }


def test_benchmark_reports(tmp_path):
    bench = _load_benchmark_module()
    curve = {
        "protocol": {"num_models": 2, "epochs": 100},
        "points": [
            {"iteration": 0, "distill_seconds": 0.0, "mean": 93.0, "std": 0.2},
            {"iteration": 500, "distill_seconds": 400.0, "mean": 94.8, "std": 0.1},
            {"iteration": 1000, "distill_seconds": 812.4, "mean": 95.3, "std": 0.2},
        ],
    }
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    for record in (
        _fake_result("mnist", "dm", 10, 95.31, curve=curve),
        _fake_result("mnist", "random", 10, 93.12),
        _fake_result("cifar10", "dm", 1, float("nan"), status="failed"),
    ):
        name = bench.result_filename(record["dataset"], record["method"], record["ipc"])
        (results_dir / name).write_text(json.dumps(record))
    (results_dir / "broken.json").write_text("{not json")  # skipped, never fatal

    records = bench.load_results(results_dir)
    # Sorted by dataset (MNIST first), IPC, then random before dm.
    assert [(r["dataset"], r["method"]) for r in records] == [("mnist", "random"), ("mnist", "dm"), ("cifar10", "dm")]

    table = bench.render_table(records)
    baseline = "92.00 ± 0.50 (n=2, 300 ep)"
    ours = "95.31 ± 0.50 (n=2, 300 ep)"
    dm_row = f"| MNIST | 10 | dm | {ours} | {baseline} | +3.31 | 97.5 ± 0.1 [DM23]* | 1000 | 812 | 1,234 |"
    assert dm_row in table
    assert f"| MNIST | 10 | random | 93.12 ± 0.50 (n=2, 300 ep) | {baseline} | +1.12 | 95.1 ± 0.9 [DC21]* |" in table
    assert "| CIFAR-10 | 1 | dm | failed (exit code 1) | — | — | 26.0 ± 0.8 [DM23] |" in table
    learned = _fake_result("mnist", "rfad", 1, 90.0)
    learned["config"] = {"learn_regression_targets": True}
    assert bench.gain_over_random(learned) == ("-2.00 †", True)
    assert "† the set's labels are learned" in bench.render_table([learned])
    assert "[DM23] Zhao & Bilen" in table and "[DC21]" in table

    readme = tmp_path / "README.md"
    readme.write_text(f"# Bench\n\nintro\n\n{bench.MARKER_START}\nold table\n{bench.MARKER_END}\n\nafter\n")
    written = bench.regenerate_reports(results_dir, readme, plot=False)
    text = readme.read_text()
    assert "old table" not in text and "intro" in text and text.rstrip().endswith("after")
    assert text.count(bench.MARKER_START) == 1 and "95.31 ± 0.50" in text
    summary = json.loads(written["summary"].read_text())
    rows = {(r["dataset"], r["method"], r["ipc"]): r for r in summary["results"]}
    assert rows[("mnist", "dm", 10)]["curve_points"] == 3
    assert rows[("mnist", "dm", 10)]["published"]["mean"] == 97.5
    assert rows[("cifar10", "dm", 1)]["status"] == "failed"

    # Regenerating is idempotent, and a file without markers gets them appended.
    bench.regenerate_reports(results_dir, readme, plot=False)
    assert readme.read_text() == text
    assert bench.replace_between_markers("plain\n", "T").endswith(f"{bench.MARKER_START}\nT\n{bench.MARKER_END}\n")

    assert bench.baseline_accuracy(records, "mnist", 10) == 93.12
    assert bench.parse_overrides(["num_iterations=5", "dm:batch_real=32"]) == {
        None: {"num_iterations": "5"},
        "dm": {"batch_real": "32"},
    }
    assert bench.overrides_for(bench.parse_overrides(["a=1", "dm:a=2"]), "random") == {"a": "1"}
    # Repeated --set flags all count (a second --set once silently replaced the first).
    args = bench.build_parser().parse_args(["--set", "a=1", "--set", "b=2 3", "c=4"])
    assert args.overrides == ["a=1", "b=2 3", "c=4"]
    assert bench.build_parser().parse_args([]).overrides == []


def test_benchmark_reports_expert_cost(tmp_path):
    bench = _load_benchmark_module()
    assert bench.expert_summary(tmp_path) is None  # no experts.json
    (tmp_path / "experts.json").write_text(
        json.dumps(
            {
                "num_epochs": 6,
                "training": {"lr": 0.01},
                "experts": [
                    {"file": "expert_000.safetensors", "test_accuracy": 88.0, "train_seconds": 500.0},
                    {"file": "expert_001.safetensors", "test_accuracy": 87.0, "train_seconds": 520.5},
                ],
            }
        )
    )
    experts = bench.expert_summary(tmp_path)
    assert experts["num_experts"] == 2 and experts["num_epochs"] == 6
    assert experts["train_seconds"] == 1020.5 and experts["mean_test_accuracy"] == 87.5
    record = {**_fake_result("fashion_mnist", "mtt", 1, 71.0), "experts": experts}
    assert (
        "Fashion-MNIST mtt IPC 1: experts paid once and not in *distill s*: 2 x 6 epochs, 1,020 s of training "
        "(final test accuracy 87.50%)."
    ) in bench.render_table([record])


def test_benchmark_plot(tmp_path):
    pytest.importorskip("matplotlib")
    bench = _load_benchmark_module()
    curve = {"protocol": {"num_models": 1, "epochs": 2}, "points": [{"distill_seconds": 0.0, "mean": 10.0}]}
    records = [_fake_result("mnist", "dm", 10, 95.0, curve=curve), _fake_result("mnist", "random", 10, 93.0)]
    path = bench.plot_accuracy_vs_time(records, tmp_path / "plot.png")
    assert path.is_file() and path.stat().st_size > 0
    assert bench.plot_accuracy_vs_time(records[1:], tmp_path / "none.png") is None


EVAL_RESULTS = {"distilled": {"mean": 90.0, "std": 0.1, "num_models": 3, "epochs": 300}}


def _fake_interpreter(tmp_path, run_dir, checkpoints=()):
    """A stand-in interpreter: records its arguments and leaves what a finished run leaves behind.

    `checkpoints` are the iterations whose complete checkpoint folders the "run" writes.
    """
    lines = [
        "#!/bin/sh",
        f'echo "$@" > {tmp_path / "argv.txt"}',
        f"mkdir -p {run_dir}",
        f'echo \'{{"distill_seconds": 1500.0, "iterations_completed": 500}}\' > {run_dir / "distill_config.json"}',
        f"echo '{json.dumps(EVAL_RESULTS)}' > {run_dir / 'eval_results.json'}",
    ]
    for iteration in checkpoints:
        folder = run_dir / f"checkpoint-{iteration}"
        lines += [f"mkdir -p {folder}", f"echo '{{\"iteration\": {iteration}}}' > {folder / 'trainer_state.json'}"]
    fake_python = tmp_path / "fake_python"
    fake_python.write_text("\n".join(lines) + "\n")
    fake_python.chmod(0o755)
    return fake_python


def _benchmark_args(bench, fake_python, tmp_path, *flags):
    base = ["--python", str(fake_python), "--results-dir", str(tmp_path / "results"), "--runs-dir"]
    return bench.build_parser().parse_args([*base, str(tmp_path / "runs"), *flags])


@pytest.mark.parametrize("resume", [False, True])
def test_benchmark_resume_keeps_the_checkpoints(tmp_path, resume):
    bench = _load_benchmark_module()
    run_dir = tmp_path / "runs" / "mnist" / "mtt_ipc1"
    (run_dir / "checkpoint-400").mkdir(parents=True)
    (run_dir / "checkpoint-400" / "trainer_state.json").write_text(json.dumps({"iteration": 400}))
    (run_dir / "checkpoint-500").mkdir()  # incomplete (no trainer_state.json): never resumed from
    fake_python = _fake_interpreter(tmp_path, run_dir)
    recipe = tmp_path / "mtt_ipc1.yaml"
    recipe.write_text("method: mtt\n")
    args = _benchmark_args(bench, fake_python, tmp_path, *(["--resume"] if resume else []))

    record = bench.benchmark_one("mnist", "mtt", 1, recipe, args, {}, machine={})

    argv = (tmp_path / "argv.txt").read_text().split()
    assert record["status"] == "ok" and record["distill_seconds"] == 1500.0
    if resume:
        assert argv[argv.index("--resume_from_checkpoint") + 1] == "latest"
        assert (run_dir / "checkpoint-400").is_dir() and record["resumed_from_iteration"] == 400
        assert "resumed from its iteration-400 checkpoint" in bench.render_table([record])
    else:  # a fresh run never mixes in a previous run's checkpoints
        assert "--resume_from_checkpoint" not in argv and not (run_dir / "checkpoint-400").exists()
        assert "resumed_from_iteration" not in record


def test_benchmark_carried_checkpoint_goes_on_on_a_fresh_machine(tmp_path):
    bench = _load_benchmark_module()
    run_dir = tmp_path / "runs" / "mnist" / "dsa_ipc10"
    carry_dir = tmp_path / "carried"
    recipe = tmp_path / "dsa_ipc10.yaml"
    recipe.write_text("method: dsa\n")
    carry = ("--carry", "--carry-dir", str(carry_dir))

    # First machine: a fresh run keeps only its newest complete checkpoint in the carried folder.
    fake_python = _fake_interpreter(tmp_path, run_dir, checkpoints=(10, 20))
    record = bench.benchmark_one(
        "mnist", "dsa", 10, recipe, _benchmark_args(bench, fake_python, tmp_path, *carry), {}, {}
    )
    carried = carry_dir / "mnist" / "dsa_ipc10"
    assert [p.name for p in carried.iterdir()] == ["checkpoint-20"]
    assert json.loads((carried / "checkpoint-20" / "trainer_state.json").read_text()) == {"iteration": 20}
    assert record["carried_checkpoint"].endswith("checkpoint-20")

    # Next machine: the runs folder is gone (git-ignored); --resume starts from the carried checkpoint.
    shutil.rmtree(tmp_path / "runs")
    fake_python = _fake_interpreter(tmp_path, run_dir, checkpoints=(30,))
    args = _benchmark_args(bench, fake_python, tmp_path, "--resume", *carry)
    record = bench.benchmark_one("mnist", "dsa", 10, recipe, args, {}, {})
    argv = (tmp_path / "argv.txt").read_text().split()
    assert argv[argv.index("--resume_from_checkpoint") + 1] == "latest"
    assert record["resumed_from_iteration"] == 20 and (run_dir / "checkpoint-20" / "trainer_state.json").is_file()
    assert [p.name for p in carried.iterdir()] == ["checkpoint-30"]
