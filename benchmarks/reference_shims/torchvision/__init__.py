"""A stand-in for the three corners of torchvision the authors' DC/DSA/DM and MTT scripts touch.

torchvision does not load beside the CPU torch wheel this project installs, so `benchmarks/parity_reference.py`
puts this folder first on `sys.path` before it runs a reference script. Nothing here is the authors' code: it
reads the offline datasets in `../shared/data` (Hub parquet layout) and offers `ToTensor`/`Normalize`/`Compose`,
`make_grid` and a `save_image` that writes a PNG grid.
"""

from . import datasets, transforms, utils  # noqa: F401
