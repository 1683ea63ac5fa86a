"""Why some ConvNets of a NAS sample train to chance on a set with regression targets (rfad, KIP).

```bash
python benchmarks/regression_targets_probe.py benchmarks/sets/mnist/rfad_ipc10 \
    --report benchmarks/results/nas/mnist_rfad_ipc10/nas_results.json --indices 5 2 \
    --output benchmarks/results/nas/mnist_rfad_ipc10/regression_targets_probe.json
```

Each listed network of the report is trained on the set as the search trained it (the protocol, the same model and
training generators): on the set's regression targets with the squared loss, once without clipping the gradient (the
protocol before `REGRESSION_MAX_GRAD_NORM`) and once per `--max-grad-norms` value, and on the same images with the
targets' argmax as hard labels and cross-entropy. The mean loss of each epoch says whether a run diverged (the epoch
of the first non-finite loss), and the accuracies whether the images or the targets are to blame. Writes JSON with
the command.
"""

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

from hf_distill.checkpointing import write_json_atomic
from hf_distill.evaluation import EvaluationProtocol, fresh_classifier, model_accuracy, train_with_protocol
from hf_distill.nas import sampled_model_config
from hf_distill.seeding import derive_generator
from hf_distill.trainer import DistillTrainer
from hf_distill.training import TrainingCallback

LOGGED_EPOCHS = (0, 1, 2, 5, 10, 50, 299)


class EpochLosses(TrainingCallback):
    """The mean batch loss of every epoch."""

    def __init__(self):
        self.losses: dict[int, list[float]] = {}

    def on_batch_end(self, epoch, rows, logits, loss) -> None:
        self.losses.setdefault(epoch, []).append(float(loss))

    def per_epoch(self) -> list[float]:
        return [sum(values) / len(values) for _, values in sorted(self.losses.items())]


def probe(
    trainer: DistillTrainer, settings: dict, index: int, epochs: int, lr: float, seed: int, max_grad_norms: list[float]
) -> list[dict]:
    """The trainings of one network (see the module docstring)."""
    model_config = sampled_model_config(trainer, settings)  # as the search built it
    images, targets = trainer.synthetic.images.detach(), trainer.synthetic.targets().detach()
    protocol = EvaluationProtocol(
        num_models=1, epochs=epochs, lr=lr, dsa_strategy=trainer.eval_dsa_strategy, seed=seed
    )
    key = f"nas-{index}-distilled"  # the search's keys: the regression run repeats its figure
    rows = []
    trainings = [("regression targets, squared loss", targets, trainer.synthetic.target_type, None)]
    trainings += [
        (f"regression targets, squared loss, clipped at {norm}", targets, trainer.synthetic.target_type, norm)
        for norm in max_grad_norms
    ]
    trainings.append(("argmax as hard labels, cross-entropy", targets.argmax(1), "hard", None))
    for name, training_targets, target_type, max_grad_norm in trainings:
        model = fresh_classifier(model_config, derive_generator(seed, key, "model", 0), trainer.modality)
        losses, start = EpochLosses(), time.perf_counter()
        generator = derive_generator(seed, key, "train", 0)
        train_with_protocol(
            model,
            images,
            training_targets,
            protocol,
            generator,
            target_type=target_type,
            callbacks=[losses],
            max_grad_norm=max_grad_norm,
        )
        per_epoch = losses.per_epoch()
        rows.append(
            {
                "index": index,
                "settings": settings,
                "training": name,
                "lr": lr,
                "max_grad_norm": max_grad_norm,
                "accuracy": round(100 * model_accuracy(model, trainer.test_data), 2),
                "mean_loss_at_epochs": {e: per_epoch[e] for e in LOGGED_EPOCHS if e < len(per_epoch)},
                "first_nonfinite_epoch": next((e for e, v in enumerate(per_epoch) if not math.isfinite(v)), None),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(json.dumps(rows[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("set_dir", type=Path)
    parser.add_argument("--report", type=Path, required=True, help="The nas_results.json whose networks to probe.")
    parser.add_argument("--indices", type=int, nargs="+", required=True)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument(
        "--max-grad-norms", type=float, nargs="*", default=[], help="Gradient-norm clips to train the targets with."
    )
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    trainer = DistillTrainer.from_output_dir(args.set_dir)
    epochs, seed = report["config"]["epochs"], report["config"]["seed"]
    targets = trainer.synthetic.targets()
    rows = []
    for index in args.indices:
        settings = report["architectures"][index]["settings"]
        rows += probe(trainer, settings, index, epochs, args.lr, seed, args.max_grad_norms)
    write_json_atomic(
        args.output,
        {
            "command": shlex.join(["python", "benchmarks/regression_targets_probe.py", *sys.argv[1:]]),
            "target_type": trainer.synthetic.target_type,
            "target_range": [float(targets.min()), float(targets.max())],
            "rows": rows,
        },
    )
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
