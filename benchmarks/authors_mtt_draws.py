"""The expert segments the authors' MTT `distill.py` matches for a seed, without running it.

`parity_reference.py` seeds `random`, NumPy and torch with the seed. `distill.py` then reseeds torch from the clock
at every iteration (`utils.get_network`), so its minibatches and augmentation cannot be repeated, but its segments
can: the start epoch is `np.random.randint(0, max_start_epoch)` after `get_images`' one `np.random.permutation` per
class, and the expert order is `random.shuffle` of the buffer file as loaded, again at every wrap (the one file's
list is shuffled too, which draws nothing). Checked against the segments parity_reference.py logged for
Fashion-MNIST seeds 0, 1 and 2 (90 of 90 equal, sessions 34-35); `parity.py` uses it for the authors' runs made
before that logging (session 32's MNIST seeds).

```bash
python benchmarks/authors_mtt_draws.py --dataset mnist --seeds 0 1 2 --iterations 31
```
"""

import argparse
import json
import random

import numpy as np

#: Training images per class, in class order (`distill.py` builds `indices_class` from the training split).
CLASS_SIZES = {
    "mnist": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "fashion_mnist": [6000] * 10,
}


def replayed_segments(
    seed: int, class_sizes: list[int], iterations: int, num_experts: int = 3, max_start_epoch: int = 5
) -> list[tuple[int, int]]:
    """`(expert, start_epoch)` of each of `iterations` updates of `distill.py` (one buffer file, no `--load_all`, no
    `--max_experts`), the expert as its position in the buffer file."""
    random.seed(seed)
    np.random.seed(seed)
    for size in class_sizes:
        np.random.permutation(size)  # get_images: one permutation of each class's indices
    order = list(range(num_experts))
    random.shuffle(order)
    position, segments = 0, []
    for _ in range(iterations):
        expert = order[position]
        position += 1
        if position == num_experts:  # the file is loaded again, in its order, and shuffled
            position, order = 0, list(range(num_experts))
            random.shuffle(order)
        segments.append((expert, int(np.random.randint(0, max_start_epoch))))
    return segments


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(CLASS_SIZES), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--iterations", type=int, required=True, help="updates of the set")
    parser.add_argument("--num-experts", type=int, default=3)
    parser.add_argument("--max-start-epoch", type=int, default=5)
    args = parser.parse_args(argv)
    for seed in args.seeds:
        segments = replayed_segments(
            seed, CLASS_SIZES[args.dataset], args.iterations, args.num_experts, args.max_start_epoch
        )
        experts, starts = zip(*segments)
        print(json.dumps({"seed": seed, "experts": list(experts), "start_epochs": list(starts)}))


if __name__ == "__main__":
    main()
