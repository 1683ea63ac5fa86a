"""Explicit, order-independent randomness.

Every random draw in a distillation run comes from a `torch.Generator` derived from the run's seed and a key
that names the draw (for example `("real", iteration, class_index)`). Nothing depends on how many draws came
before, so a resumed run, or a run whose classes are split across processes, makes exactly the draws an
uninterrupted single-process run makes. The global RNG is never touched: `seeded_rng` forks it for code that
can only read it, and restores it.
"""

import contextlib
import hashlib
from collections.abc import Iterator, Sequence

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


@contextlib.contextmanager
def seeded_rng(seed: int, devices: Sequence[torch.device] = ()) -> Iterator[None]:
    """Fork the CPU RNG and the RNGs of `devices`, seeding each with `seed`; everything is restored on exit.

    For code that can only read the global RNG (`reset_parameters`, dropout inside a model). Only the forked
    generators are seeded (not `torch.manual_seed`, which would also reseed every other accelerator and so leak
    into the global state).

    Args:
        seed (`int`): The seed of the forked generators (e.g. from [`derive_seed`]).
        devices (`Sequence[torch.device]`, *optional*): Accelerator devices whose RNGs are forked too.
    """
    by_type: dict[str, set[int]] = {}
    for device in devices:
        if device.type not in ("cpu", "meta"):
            index = device.index
            if index is None:
                index = torch.get_device_module(device.type).current_device()
            by_type.setdefault(device.type, set()).add(index)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=[]))
        for device_type, indices in by_type.items():
            stack.enter_context(torch.random.fork_rng(devices=sorted(indices), device_type=device_type))
        torch.default_generator.manual_seed(seed)
        for device_type, indices in by_type.items():
            device_module = torch.get_device_module(device_type)
            for index in indices:
                if hasattr(device_module, "device"):
                    with device_module.device(index):
                        device_module.manual_seed(seed)
                else:  # e.g. mps: a single device
                    device_module.manual_seed(seed)
        yield
