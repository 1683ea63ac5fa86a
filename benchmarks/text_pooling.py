"""Which sentence embedding of a pretrained encoder a linear classifier reads best: mean pooling, `[CLS]`, pooler.

Why the default text KD student (`MeanPoolingForSequenceClassification`) pools by the mean and not by BERT's `[CLS]`
pooler (`BertForSequenceClassification`): protocol (a) (a logistic regression, C = 1, L-BFGS) on each embedding of
`--train-size` random training sentences (seed 0), tested on the whole validation split.

```bash
python benchmarks/text_pooling.py   # SST-2, all-MiniLM-L6-v2, 4,000 sentences: results/text/sst2_pooling.json
```
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from datasets import load_dataset
from run_benchmark import REPO_ROOT, git_commit, machine_info  # scripts here run with this folder on sys.path
from transformers import AutoModel, AutoTokenizer

from hf_distill.modalities.text import linear_probe
from hf_distill.models import mean_pooled


@torch.no_grad()
def embeddings(model, tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """The mean-pooled (L2-normalised), `[CLS]` and pooler embeddings of `texts`."""
    parts = {"mean": [], "cls": [], "pooler": []}
    for start in range(0, len(texts), 256):
        tokens = tokenizer(
            texts[start : start + 256], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        output = model(**tokens)
        parts["mean"].append(mean_pooled(output.last_hidden_state, tokens["attention_mask"]))
        parts["cls"].append(output.last_hidden_state[:, 0])
        parts["pooler"].append(output.pooler_output)
    return {name: torch.cat(values) for name, values in parts.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="../shared/data/sst2")
    parser.add_argument("--encoder", default="../shared/models/all-MiniLM-L6-v2")
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--output", default=str(REPO_ROOT / "benchmarks" / "results" / "text" / "sst2_pooling.json"))
    args = parser.parse_args(argv)
    splits = load_dataset(str(REPO_ROOT / args.dataset))
    train = splits["train"].shuffle(seed=0).select(range(args.train_size))
    test = splits["validation"]
    tokenizer = AutoTokenizer.from_pretrained(REPO_ROOT / args.encoder)
    model = AutoModel.from_pretrained(REPO_ROOT / args.encoder).eval()
    started = time.perf_counter()
    train_x = embeddings(model, tokenizer, list(train["text"]), args.max_length)
    test_x = embeddings(model, tokenizer, list(test["text"]), args.max_length)
    seconds = time.perf_counter() - started
    train_y, test_y = torch.tensor(list(train["label"])), torch.tensor(list(test["label"]))
    accuracies = {
        name: round(100.0 * linear_probe(train_x[name], train_y, test_x[name], test_y, 2), 2) for name in train_x
    }
    record = {
        "command": " ".join(shlex.quote(a) for a in ["python", "benchmarks/text_pooling.py", *(argv or sys.argv[1:])]),
        "git_commit": git_commit(),
        "machine": machine_info(),
        "encoder": args.encoder,
        "train_sentences": args.train_size,
        "test_split": "validation",
        "accuracy": accuracies,
        "encoding_seconds": round(seconds, 1),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(accuracies))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
