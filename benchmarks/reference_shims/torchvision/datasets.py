"""`MNIST`, `FashionMNIST` and `CIFAR10` read from the offline parquet copies (folder: `$PARITY_DATA_DIR`).

Items are `(transform(uint8 array), label)` as torchvision's datasets give them; `download` is ignored.
"""

import os
from pathlib import Path

import numpy as np
from datasets import load_dataset

_FOLDERS = {"MNIST": ("mnist", "image"), "FashionMNIST": ("fashion_mnist", "image"), "CIFAR10": ("cifar10", "img")}


class _ParquetImages:
    name = None

    def __init__(self, root=None, train=True, download=False, transform=None, **_):
        folder, column = _FOLDERS[self.name]
        split = load_dataset(str(Path(os.environ["PARITY_DATA_DIR"]) / folder), split="train" if train else "test")
        self.classes = split.features["label"].names
        self.targets = list(split["label"])
        self.data = np.stack([np.asarray(image) for image in split[column]])
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        image = self.data[index]
        return (self.transform(image) if self.transform else image), self.targets[index]


class MNIST(_ParquetImages):
    name = "MNIST"


class FashionMNIST(_ParquetImages):
    name = "FashionMNIST"


class CIFAR10(_ParquetImages):
    name = "CIFAR10"
