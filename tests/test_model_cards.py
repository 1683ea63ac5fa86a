"""The example cards of `model_cards/`: each committed README.md is what its stored inputs render, and the
`model_cards/render.py` script round-trips (copy the inputs of a run, render, check) on tiny real runs."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
from conftest import TINY_CONFIG_DEFAULTS, TINY_KD_SETTINGS, make_image_dataset_dict
from huggingface_hub import DatasetCard, ModelCard

import hf_distill.cards as cards_module
import hf_distill.student_cards as student_cards_module
from hf_distill import DistributionMatchingConfig, distill_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
CARDS_DIR = REPO_ROOT / "model_cards"


def _load_render_script():
    # model_cards/ is no package: load the script the README tells people to run, as it is.
    spec = importlib.util.spec_from_file_location("model_cards_render", CARDS_DIR / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_render_script()
CARD_FOLDERS = sorted(path.parent for path in CARDS_DIR.glob("*/README.md"))


def _inputs_or_skip(card_dir: Path) -> dict:
    """The card's `render_inputs.json`; skips the test when the card's inputs are not all stored."""
    inputs_path = card_dir / render.RENDER_INPUTS_NAME
    if not inputs_path.is_file():
        pytest.skip(f"{card_dir.name}: no {render.RENDER_INPUTS_NAME}, the card cannot be re-rendered")
    inputs = json.loads(inputs_path.read_text())
    # The JSON inputs always (but the optional ones); a picture only when the card shows it (text sets have no grid).
    card = (card_dir / "README.md").read_text()
    needed = [
        name
        for name in render.INPUTS[inputs["kind"]]
        if (name.endswith(".json") and name not in render.OPTIONAL_INPUTS) or name in card
    ]
    missing = [name for name in needed if not (card_dir / name).is_file()]
    if missing:
        pytest.skip(f"{card_dir.name}: inputs {missing} are not stored")
    return inputs


def _relative_links(text: str) -> list[str]:
    """Targets of markdown links and images that are not URLs or anchors."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [target for target in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", target)]


# ---------------------------------------------------------------------------------------------------------------------
# The committed cards
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("card_dir", CARD_FOLDERS, ids=[path.name for path in CARD_FOLDERS])
def test_committed_card_is_what_its_inputs_render(card_dir):
    _inputs_or_skip(card_dir)
    assert (card_dir / "README.md").read_text() == render.render(card_dir), (
        f"{card_dir}/README.md is stale: run `python model_cards/render.py --rerender` (see model_cards/README.md)"
    )


@pytest.mark.parametrize("card_dir", CARD_FOLDERS, ids=[path.name for path in CARD_FOLDERS])
def test_committed_card_yaml_figures_and_links(card_dir):
    inputs = _inputs_or_skip(card_dir)
    text = (card_dir / "README.md").read_text()
    results = json.loads((card_dir / "eval_results.json").read_text())
    if inputs["kind"] == "dataset":
        card = DatasetCard(text)  # the YAML parses back
        recorded = json.loads((card_dir / "distill_config.json").read_text())
        assert card.data.tags == [*cards_module.CARD_TAGS, recorded["method"]]
        text_set = recorded.get("modality") == "text"
        assert card.data.task_categories == ["text-classification" if text_set else "image-classification"]
        evaluated = card.data["hf_distill"]["eval_results"]
        for name in ("distilled", "random_real"):
            assert evaluated[name]["mean"] == pytest.approx(results[name]["mean"], abs=1e-4)
            shown = f"{results[name]['mean']:.2f}" + ("" if text_set else f" ± {results[name]['std']:.2f}")
            assert f"| {shown} |" in card.text
        assert f'load_dataset("{inputs["repo_id"]}", split="train")' in card.text
    else:
        card = ModelCard(text)
        assert card.data.tags == student_cards_module.STUDENT_TAGS
        assert card.data.pipeline_tag == "image-classification"
        (result,) = card.data.eval_results
        assert result.metric_type == "accuracy"
        assert result.metric_value == pytest.approx(results["accuracy"] / 100, abs=1e-4)
        assert f"**Test accuracy: {results['accuracy']:.2f}%**" in card.text
        assert f'from_pretrained("{inputs["repo_id"]}")' in card.text
    assert card.data.license == inputs["license"]
    for name, version in inputs["versions"].items():
        assert f"- {name} {version}\n" in card.text

    links = _relative_links(card.text)
    assert "eval_results.json" in links
    assert [link for link in links if not (card_dir / link).is_file()] == []
    # Only the small inputs are stored: no data, no weights.
    assert sum(path.stat().st_size for path in card_dir.rglob("*") if path.is_file()) < 1_000_000
    assert not list(card_dir.glob("*.safetensors")) and not (card_dir / "dataset").exists()


# ---------------------------------------------------------------------------------------------------------------------
# The script, on tiny real runs
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> tuple[Path, Path]:
    """A distilled set saved by `DistillTrainer.save` (evaluated) and a student `hf_distill.kd` trained on it."""
    from hf_distill.kd import KDConfig, train_student

    root = tmp_path_factory.mktemp("runs")
    source = root / "source"
    make_image_dataset_dict().save_to_disk(str(source))
    config = DistributionMatchingConfig(**TINY_CONFIG_DEFAULTS)
    distilled = distill_dataset(str(source), config, evaluate=True, return_trainer=True).save(root / "distilled")
    kd_config = KDConfig(
        distilled_dataset=str(distilled),
        output_dir=str(root / "student"),
        **TINY_KD_SETTINGS,
    )
    train_student(kd_config)
    return distilled, Path(kd_config.output_dir)


def test_render_script_round_trip(tiny_runs, tmp_path, capsys, monkeypatch):
    distilled, student = tiny_runs
    cards = tmp_path / "cards"
    assert render.main(["--distilled", str(distilled), "--cards-dir", str(cards)]) == 0
    assert [path.name for path in render.card_dirs(cards)] == ["source-dm-ipc2"]  # --distilled alone
    assert render.main(["--student", str(student), "--cards-dir", str(cards)]) == 0
    dataset_dir, student_dir = render.card_dirs(cards)
    assert student_dir.name == "source-dm-ipc2-kd-student"
    assert sorted(p.name for p in dataset_dir.iterdir()) == sorted(
        ["README.md", "render_inputs.json", "distill_config.json", "eval_results.json", "synthetic_grid.png"]
    )
    assert sorted(p.name for p in student_dir.iterdir()) == sorted(  # no weights, no teacher/
        ["README.md", "render_inputs.json", "kd_config.json", "config.json", "eval_results.json"]
        + ["preprocessor_config.json"]
    )
    inputs = json.loads((student_dir / "render_inputs.json").read_text())
    assert inputs["kind"] == "student" and inputs["repo_id"] == "hf-distill/source-dm-ipc2-kd-student"
    assert 'from_pretrained("hf-distill/source-dm-ipc2-kd-student")' in (student_dir / "README.md").read_text()
    capsys.readouterr()

    # --check reads neither the runs, nor the source's card, nor the installed versions: same text anywhere.
    def not_used(*args, **kwargs):
        raise AssertionError("a check must not depend on the machine")

    for module in (cards_module, student_cards_module):
        monkeypatch.setattr(module, "source_license", not_used)
        monkeypatch.setattr(module, "framework_versions", not_used)
    assert render.main(["--check", "--cards-dir", str(cards)]) == 0
    assert "2 card(s) up to date" in capsys.readouterr().out

    readme = dataset_dir / "README.md"
    readme.write_text(readme.read_text().replace("## Evaluation", "## Evaluated"))
    assert render.main(["--check", "--cards-dir", str(cards)]) == 1
    diff = capsys.readouterr().out
    assert "-## Evaluated" in diff and "+## Evaluation" in diff

    assert render.main(["--rerender", "--cards-dir", str(cards)]) == 0
    assert render.main(["--check", "--cards-dir", str(cards)]) == 0
    assert "## Evaluated" not in readme.read_text()

    with pytest.raises(SystemExit):  # a check re-renders stored inputs only
        render.main(["--check", "--distilled", str(distilled), "--cards-dir", str(cards)])
