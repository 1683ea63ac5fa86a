"""Which DM settings reach a given accuracy in the fewest iterations? (MNIST, IPC 10)

Distills MNIST with several pixel-optimiser / real-batch / precision settings and evaluates each at a few
iteration counts with the standard protocol (2 models, 300 epochs, DSA). Iteration counts, not seconds, are
compared here: the sweep is meant to run on a fast machine (a GPU), and the per-iteration cost of each setting is
measured separately on the target CPU (benchmarks/README.md).

    python benchmarks/dm_settings_sweep.py --data mnist.npz --out results/dm_settings_sweep.json

`--data` is an .npz with train_images/train_labels/test_images/test_labels (uint8 28x28 / int64), written from
../shared/data/mnist, so the sweep can run where `datasets` is not installed.
"""

import argparse
import json
import platform
import sys
import time

import numpy as np
import torch

from hf_distill import DistributionMatchingConfig, ImageData
from hf_distill.trainer import DistillTrainer

SETTINGS = {
    "paper_sgd1_b256_fp32": dict(optimizer="sgd", lr_images=1.0, batch_real=256, mixed_precision="no"),
    "sgd1_b64_fp32": dict(optimizer="sgd", lr_images=1.0, batch_real=64, mixed_precision="no"),
    "sgd1_b64_bf16": dict(optimizer="sgd", lr_images=1.0, batch_real=64, mixed_precision="bf16"),
    "sgd3_b64_bf16": dict(optimizer="sgd", lr_images=3.0, batch_real=64, mixed_precision="bf16"),
    "sgd10_b64_bf16": dict(optimizer="sgd", lr_images=10.0, batch_real=64, mixed_precision="bf16"),
    "adam0.01_b64_bf16": dict(optimizer="adam", lr_images=0.01, batch_real=64, mixed_precision="bf16"),
    "adam0.03_b64_bf16": dict(optimizer="adam", lr_images=0.03, batch_real=64, mixed_precision="bf16"),
}


def image_data(images: np.ndarray, labels: np.ndarray, names: list[str], mean=None, std=None) -> ImageData:
    pixels = torch.from_numpy(images).float().div(255).unsqueeze(1)
    mean = [pixels.mean().item()] if mean is None else mean
    std = [pixels.std().item()] if std is None else std
    return ImageData((pixels - mean[0]) / std[0], torch.from_numpy(labels), names, mean, std)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS))
    parser.add_argument("--checkpoints", nargs="*", type=int, default=[500, 1500, 4000])
    parser.add_argument("--eval-models", type=int, default=2)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--ipc", type=int, default=10)
    args = parser.parse_args()

    arrays = np.load(args.data)
    # The class names decide the DSA strategy ('auto' drops the flip for digit classes).
    names = [str(name) for name in arrays["class_names"]] if "class_names" in arrays else [str(i) for i in range(10)]
    train = image_data(arrays["train_images"], arrays["train_labels"], names)
    test = image_data(arrays["test_images"], arrays["test_labels"], names, train.mean, train.std)
    results = {
        "command": " ".join(sys.argv),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor(),
        "torch": torch.__version__,
        "runs": {},
    }
    for name in args.settings:
        config = DistributionMatchingConfig(
            images_per_class=args.ipc,
            eval_epochs=args.eval_epochs,
            num_iterations=0,
            save_steps=0,
            eval_num_models=args.eval_models,
            eval_random_baseline=False,
            logging_steps=0,
            **SETTINGS[name],
        )
        trainer = DistillTrainer(config, train, test)
        points = []
        for target in [0, *args.checkpoints]:
            started = time.perf_counter()
            trainer.config.num_iterations = target
            trainer.train()
            seconds = time.perf_counter() - started
            result = trainer.evaluate(random_baseline=False)["distilled"]
            points.append(
                {
                    "iteration": target,
                    "accuracy": result["mean"],
                    "std": result["std"],
                    "accuracies": result["accuracies"],
                    "segment_seconds": round(seconds, 2),
                }
            )
            print(name, points[-1], flush=True)
            # Written after every point, so a run cut short keeps what it measured.
            results["runs"][name] = {"settings": SETTINGS[name], "points": points}
            with open(args.out, "w") as handle:
                json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
