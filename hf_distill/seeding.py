"""Explicit, order-independent randomness.

Every random draw in a distillation run comes from a `torch.Generator` derived from the run's seed and a key
that names the draw (for example `("real", iteration, class_index)`). Nothing depends on how many draws came
before, so a resumed run, or a run whose classes are split across processes, makes exactly the draws an
uninterrupted single-process run makes. The global RNG is never touched.
"""

import hashlib

import torch


def derive_seed(seed: int, *keys) -> int:
    """Returns a 63-bit seed that depends only on `seed` and `keys`.

    Args:
        seed (`int`): The run's seed.
        *keys: Hashable labels (strings, integers) that name one random draw.

    Returns:
        `int`: A non-negative seed suitable for `torch.Generator.manual_seed`.
    """
    text = "/".join(str(part) for part in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def derive_generator(seed: int, *keys, device: str | torch.device = "cpu") -> torch.Generator:
    """Returns a fresh `torch.Generator` seeded with `derive_seed(seed, *keys)`.

    Args:
        seed (`int`): The run's seed.
        *keys: Labels that name one random draw.
        device (`str` or `torch.device`, *optional*, defaults to `"cpu"`): Device of the generator.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, *keys))
    return generator
