"""Renders the example cards of `model_cards/` from real runs, and checks that the committed cards are up to date.

```bash
python model_cards/render.py                     # both default runs below (a missing one is skipped, with a note)
python model_cards/render.py --distilled benchmarks/runs/mnist/dm_ipc10
python model_cards/render.py --student benchmarks/runs/kd/mnist/dm_ipc10-kd-seed0
python model_cards/render.py --check             # re-render every card from its stored inputs; diff + exit 1 if stale
python model_cards/render.py --rerender          # rewrite every card from its stored inputs (after a template change)
```

Rendering copies the small files a card is made from into `model_cards/<name>/` (never the data or the weights),
records in `render_inputs.json` what else the card depends on (card kind, repository id, license, framework
versions), then renders `README.md` from that folder alone. `--check` repeats the last step, so it needs neither the
runs nor the Hub, and gives the same text on any machine: the license and the versions come from
`render_inputs.json`, not from the source dataset's card or the installed libraries.

Names: `<source>-<method>-ipc<N>` for a distilled set (`mnist-dm-ipc10`), `<that>-kd-student` for a student trained
on it; the cards are written for the repositories `hf-distill/<name>`.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from hf_distill.cards import framework_versions, render_dataset_card
from hf_distill.constants import (
    CONFIG_NAME,
    CROSS_ARCHITECTURE_RESULTS_NAME,
    EVAL_RESULTS_NAME,
    GRID_NAME,
    KD_CONFIG_NAME,
)
from hf_distill.hub_utils import public_text
from hf_distill.student_cards import render_student_card

REPO_ROOT = Path(__file__).resolve().parents[1]
CARDS_DIR = REPO_ROOT / "model_cards"
DEFAULT_DISTILLED = "benchmarks/runs/mnist/dm_ipc10"
DEFAULT_STUDENT = "benchmarks/runs/kd/mnist/dm_ipc10-kd-seed0"
RENDER_INPUTS_NAME = "render_inputs.json"
CARD_NAME = "README.md"
REPO_NAMESPACE = "hf-distill"

# Per kind of card: the files copied from the run (the first one is required), and the renderer.
INPUTS = {
    "dataset": (CONFIG_NAME, EVAL_RESULTS_NAME, CROSS_ARCHITECTURE_RESULTS_NAME, GRID_NAME),
    "student": (KD_CONFIG_NAME, "config.json", EVAL_RESULTS_NAME, "preprocessor_config.json"),
}
RENDERERS = {"dataset": render_dataset_card, "student": render_student_card}
#: Inputs only some runs have: a set whose cross-architecture table was kept beside its results.
OPTIONAL_INPUTS = {CROSS_ARCHITECTURE_RESULTS_NAME}


@contextlib.contextmanager
def _in_repo_root() -> Iterator[None]:
    # The runs record paths relative to the repository root (e.g. the source `../shared/data/mnist`), and the
    # renderers test such paths against the working directory: render from where the runs were made.
    previous = Path.cwd()
    os.chdir(REPO_ROOT)
    try:
        yield
    finally:
        os.chdir(previous)


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _slug(name: str | None) -> str:
    """`../shared/data/mnist` -> `mnist`, `ylecun/mnist` -> `mnist`, `sklearn:digits` -> `digits`."""
    last = re.split(r"[/:\\]", str(name or "dataset").rstrip("/"))[-1]
    return re.sub(r"[^a-z0-9]+", "-", last.lower()).strip("-") or "dataset"


def card_name(kind: str, run_dir: Path) -> str:
    """The folder name (and repository name) of the card of `run_dir`, from what the run recorded."""
    if kind == "dataset":
        metadata = _read(run_dir / CONFIG_NAME)
        source = (metadata.get("source") or {}).get("dataset")
        method, ipc = metadata.get("method"), metadata.get("images_per_class")
    else:
        kd = _read(run_dir / KD_CONFIG_NAME)
        source = (kd.get("distilled_source") or {}).get("dataset") or _read(run_dir / EVAL_RESULTS_NAME).get("dataset")
        method, ipc = kd.get("distilled_method"), kd.get("images_per_class")
    name = f"{_slug(source)}-{method or 'unknown'}-ipc{ipc if ipc is not None else 'unknown'}"
    return name if kind == "dataset" else f"{name}-kd-student"


def render(card_dir: Path) -> str:
    """The card text rendered from the inputs stored in `card_dir` (no run folder, no Hub lookup)."""
    inputs = _read(card_dir / RENDER_INPUTS_NAME)
    if inputs.get("kind") not in RENDERERS:
        raise ValueError(f"{card_dir / RENDER_INPUTS_NAME} is missing or names no card kind ({sorted(RENDERERS)}).")
    with _in_repo_root():
        card = RENDERERS[inputs["kind"]](
            card_dir.resolve(), inputs["repo_id"], license=inputs["license"], versions=inputs["versions"]
        )
    return str(card)


def collect(kind: str, run_dir: Path, cards_dir: Path = CARDS_DIR) -> Path:
    """Copies the card inputs of `run_dir` into `cards_dir/<name>/`, records the rest, renders README.md there."""
    required = INPUTS[kind][0]
    if not (run_dir / required).is_file():
        raise FileNotFoundError(f"{run_dir / required} not found: {run_dir} is not a finished {kind} run.")
    name = card_name(kind, run_dir)
    card_dir = cards_dir / name
    card_dir.mkdir(parents=True, exist_ok=True)
    for file_name in INPUTS[kind]:
        target = card_dir / file_name
        if (run_dir / file_name).suffix == ".json" and (run_dir / file_name).is_file():
            # The copies are published with the repository: without the local paths the run recorded.
            target.write_text(json.dumps(public_text(_read(run_dir / file_name)), indent=2) + "\n")
        elif (run_dir / file_name).is_file():
            shutil.copyfile(run_dir / file_name, target)
        else:  # a copy left from an earlier run would describe the wrong run
            target.unlink(missing_ok=True)
    recorded = _read(run_dir / (CONFIG_NAME if kind == "dataset" else KD_CONFIG_NAME))
    with _in_repo_root():
        # The license the card gets today (the source dataset's card, read locally or from the Hub), kept so that
        # re-rendering elsewhere, without that card, gives the same text.
        license_ = RENDERERS[kind](run_dir.resolve()).data.license
    try:
        rendered_from = str(run_dir.resolve().relative_to(REPO_ROOT))
    except ValueError:
        rendered_from = str(run_dir.resolve())
    inputs = {
        "kind": kind,
        "repo_id": f"{REPO_NAMESPACE}/{name}",
        "rendered_from": rendered_from,
        "license": license_,
        "versions": framework_versions(recorded.get("hf_distill_version")),
    }
    (card_dir / RENDER_INPUTS_NAME).write_text(json.dumps(inputs, indent=2) + "\n")
    (card_dir / CARD_NAME).write_text(render(card_dir))
    return card_dir


def card_dirs(cards_dir: Path = CARDS_DIR) -> list[Path]:
    """The card folders of `cards_dir` (those with a `render_inputs.json`)."""
    return sorted(path.parent for path in cards_dir.glob(f"*/{RENDER_INPUTS_NAME}"))


def check(cards_dir: Path = CARDS_DIR) -> list[str]:
    """Re-renders every card of `cards_dir`; returns one unified diff per card whose README.md differs."""
    diffs = []
    for card_dir in card_dirs(cards_dir):
        committed_path = card_dir / CARD_NAME
        committed = committed_path.read_text() if committed_path.is_file() else ""
        expected = render(card_dir)
        if committed != expected:
            diff = difflib.unified_diff(
                committed.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                fromfile=f"{committed_path} (committed)",
                tofile=f"{committed_path} (rendered)",
            )
            diffs.append("".join(diff))
    return diffs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python model_cards/render.py",
        description="Render the example dataset and student cards of model_cards/ from real runs, or check them.",
    )
    parser.add_argument(
        "--distilled", type=Path, help=f"A folder written by DistillTrainer.save (default: {DEFAULT_DISTILLED})."
    )
    parser.add_argument(
        "--student", type=Path, help=f"A student folder written by hf-distill kd (default: {DEFAULT_STUDENT})."
    )
    stored = parser.add_mutually_exclusive_group()
    stored.add_argument(
        "--check",
        action="store_true",
        help="Re-render every card from the inputs stored beside it; print a diff and exit 1 if one differs.",
    )
    stored.add_argument(
        "--rerender",
        action="store_true",
        help="Rewrite every card from the inputs stored beside it (after a change to the templates or to "
        "hf_distill/cards.py; the runs are not needed).",
    )
    parser.add_argument("--cards-dir", type=Path, default=CARDS_DIR, help="Where the card folders live.")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cards_dir = args.cards_dir.resolve()
    if args.check or args.rerender:
        if args.distilled or args.student:
            parser.error("--check and --rerender use the inputs stored in the card folders; they take no run folder.")
        if not card_dirs(cards_dir):
            print(f"No card folder (with {RENDER_INPUTS_NAME}) in {cards_dir}.", file=sys.stderr)
            return 1
    if args.rerender:
        for card_dir in card_dirs(cards_dir):
            (card_dir / CARD_NAME).write_text(render(card_dir))
            print(f"Wrote {card_dir / CARD_NAME}")
        return 0
    if args.check:
        diffs = check(cards_dir)
        for diff in diffs:
            print(diff, end="")
        if diffs:
            print(
                f"{len(diffs)} card(s) differ from their stored inputs: run `python model_cards/render.py` "
                "(from the runs) or `python model_cards/render.py --rerender` (from the stored inputs).",
                file=sys.stderr,
            )
            return 1
        print(f"{len(card_dirs(cards_dir))} card(s) up to date.")
        return 0

    explicit = args.distilled is not None or args.student is not None
    runs = [("dataset", args.distilled), ("student", args.student)]
    if not explicit:  # the default runs; the KD student only exists once its benchmark has run
        runs = [("dataset", REPO_ROOT / DEFAULT_DISTILLED), ("student", REPO_ROOT / DEFAULT_STUDENT)]
    rendered = 0
    for kind, run_dir in runs:
        if run_dir is None:
            continue
        if not explicit and not run_dir.is_dir():
            print(f"Skipped the {kind} card: {run_dir} does not exist (see model_cards/README.md).")
            continue
        try:
            card_dir = collect(kind, run_dir.resolve(), cards_dir)
        except FileNotFoundError as error:
            print(error, file=sys.stderr)
            return 1
        print(f"Wrote {card_dir / CARD_NAME}")
        rendered += 1
    return 0 if rendered else 1


if __name__ == "__main__":
    sys.exit(main())
