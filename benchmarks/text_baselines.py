"""Text baselines under protocol (a): random real sentences (several draws) and the whole training split (issue 21).

```bash
python benchmarks/text_baselines.py --dataset ../shared/data/sst2 --test-split validation \
    --encoder ../shared/models/all-MiniLM-L6-v2 --ipc 1 10 50 --draws 5
```

The split is prepared by the package's text modality (the encoder's tokenizer, `max_length` tokens) and encoded once
by its frozen encoder (mean pooling, L2-normalised; cached in `--feature-cache-dir`, the recipes' cache, so the
recipes' runs read the same embeddings). Every figure is the package's protocol (a): `linear_probe`, a logistic
regression on the embeddings, tested on the whole test split. Random subsets are class-balanced draws keyed by the
seed (as the `random` method and every run's random baseline draw them). Results, with this command and the seconds
each step took, go to `benchmarks/results/text/<dataset>_baselines.json`.
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from datasets import load_dataset
from run_benchmark import REPO_ROOT, git_commit, machine_info  # scripts here run with this folder on sys.path

from hf_distill.evaluation import random_real_subset
from hf_distill.modalities import TextModality
from hf_distill.modalities.text import linear_probe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="../shared/data/sst2")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="validation")
    parser.add_argument("--encoder", default="../shared/models/all-MiniLM-L6-v2")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--draws", type=int, default=5, help="Random subsets per IPC (seeds 0..draws-1).")
    parser.add_argument("--feature-cache-dir", default="benchmarks/runs/feature_cache")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    splits = load_dataset(args.dataset)
    modality = TextModality()
    modality.model_settings(args.encoder)
    seconds = {}
    start = time.perf_counter()
    prepared = {}
    for name, split in ((args.train_split, splits[args.train_split]), (args.test_split, splits[args.test_split])):
        text_column, label_column = modality.find_columns(split)
        cache = args.feature_cache_dir if name == args.train_split else None
        prepared[name] = modality.prepare(split, text_column, label_column, args.max_length, cache)
    train, test = prepared[args.train_split], prepared[args.test_split]
    seconds["tokenize"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    cached = modality.feature_cache_path(train)
    was_cached = cached is not None and cached.is_file()
    train_features = modality.features(train)
    seconds["encode_train" + ("_from_cache" if was_cached else "")] = round(time.perf_counter() - start, 1)
    test_features = modality.features(test, show_progress=False)

    def probe(rows) -> float:
        features, labels = (
            (train_features, train.labels) if rows is None else (train_features[rows], train.labels[rows])
        )
        return 100.0 * linear_probe(features, labels, test_features, test.labels, train.num_classes)

    start = time.perf_counter()
    results = {"full_data": {"mean": probe(None), "num_rows": len(train)}}
    seconds["full_data_probe"] = round(time.perf_counter() - start, 1)
    for ipc in args.ipc:
        accuracies = [probe(random_real_subset(train, ipc, seed)) for seed in range(args.draws)]
        results[f"random_ipc{ipc}"] = {
            "mean": float(np.mean(accuracies)),
            "std": float(np.std(accuracies)),
            "accuracies": accuracies,
            "seeds": list(range(args.draws)),
        }
        print(f"random, {ipc} per class: {np.mean(accuracies):.2f} ± {np.std(accuracies):.2f} ({args.draws} draws)")
    print(f"whole {args.train_split} split ({len(train)} rows): {results['full_data']['mean']:.2f}")
    payload = {
        "command": shlex.join(["python", *sys.argv]),
        "commit": git_commit(),
        "machine": machine_info(),
        "dataset": args.dataset,
        "test_split": args.test_split,
        "test_rows": len(test),
        "encoder": args.encoder,
        "max_length": args.max_length,
        "protocol": "linear_probe (logistic regression, C = 1, on the frozen encoder's mean-pooled L2-normalised "
        "sentence embeddings)",
        "seconds": seconds,
        "results": results,
    }
    output = Path(
        args.output or REPO_ROOT / "benchmarks" / "results" / "text" / f"{Path(args.dataset).name}_baselines.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
