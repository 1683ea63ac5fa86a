"""Fixed-size rows in one file on disk ([`RowStore`]), read back with positioned reads, and a read-only tensor-like
view of them ([`RowsOnDisk`]) that the training loops and methods index like a tensor.

Why not the Arrow table itself: decoding PNG/JPEG bytes on every step costs more than the step on small images, and
pages of a memory-mapped file count in the process's resident memory as they are touched, so random sampling over a
large memory-mapped split grows it with the number of rows. Here the rows are decoded once into a flat file, and
each read is an `os.preadv` into the output array: memory holds only what a step asked for, and a read costs the
same whatever the number of rows.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

STORE_HEADER = "rows.json"
STORE_DATA = "rows.bin"
#: Rows read per block when a whole store is scanned in order (statistics, copies).
SCAN_ROWS = 4096


class RowStore:
    """A folder with `rows.bin` (rows of `row_shape` and `dtype`, back to back) and `rows.json` (their description,
    written last: a folder without it is incomplete and never read).

    Args:
        path (`str` or `os.PathLike`): The folder, as written by [`RowStoreWriter`].
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        header_path = self.path / STORE_HEADER
        if not header_path.is_file():
            raise FileNotFoundError(f"{self.path} is not a complete row store (no {STORE_HEADER}).")
        header = json.loads(header_path.read_text())
        self.num_rows = int(header["num_rows"])
        self.row_shape = tuple(int(s) for s in header["row_shape"])
        self.dtype = np.dtype(header["dtype"])
        self.metadata = header.get("metadata", {})
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        expected = self.num_rows * self.row_bytes
        actual = (self.path / STORE_DATA).stat().st_size
        if actual != expected:
            raise ValueError(f"{self.path / STORE_DATA} holds {actual} bytes, its header says {expected}.")
        self._fd, self._pid = None, None

    def _descriptor(self) -> int:
        # One descriptor per process: a forked worker must not share the parent's (preadv has no shared offset, but
        # a descriptor closed by one process would vanish under the other).
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path / STORE_DATA, os.O_RDONLY), os.getpid()
        return self._fd

    def __len__(self) -> int:
        return self.num_rows

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self):
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The rows `rows` (any order, repeats allowed) as one array `(len(rows), *row_shape)`.

        Consecutive rows are read with one call, so a block of neighbours costs one read.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_rows):
            raise IndexError(f"Row index out of range for a store of {self.num_rows} rows.")
        unique, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((unique.size, *self.row_shape), dtype=self.dtype)
        flat = out.reshape(unique.size, -1).view(np.uint8)
        fd = self._descriptor()
        breaks = np.flatnonzero(np.diff(unique) != 1) + 1
        for start, stop in zip(np.r_[0, breaks], np.r_[breaks, unique.size], strict=True):
            target = memoryview(flat[start:stop]).cast("B")
            offset = int(unique[start]) * self.row_bytes
            while target.nbytes:  # preadv may return fewer bytes than asked (large reads)
                done = os.preadv(fd, [target], offset)
                if done == 0:
                    raise OSError(f"Unexpected end of {self.path / STORE_DATA}.")
                target, offset = target[done:], offset + done
        return out if unique.size == rows.size and np.array_equal(unique, rows) else out[inverse]

    def blocks(self, block_rows: int = SCAN_ROWS) -> Iterator[np.ndarray]:
        """Every row in order, `block_rows` at a time."""
        for start in range(0, self.num_rows, block_rows):
            yield self.read(np.arange(start, min(start + block_rows, self.num_rows)))


class RowStoreWriter:
    """Writes a [`RowStore`] under a temporary name beside `path` and renames it into place on [`commit`], so a
    reader (or a run killed mid-write) finds the whole store or none.

    Args:
        path (`str` or `os.PathLike`): The store's folder (must not exist yet).
        row_shape (`tuple[int, ...]`), dtype (`np.dtype`): Of every row.
    """

    def __init__(self, path: str | os.PathLike, row_shape: tuple[int, ...], dtype):
        self.path = Path(path)
        self.row_shape, self.dtype = tuple(int(s) for s in row_shape), np.dtype(dtype)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self._file = open(self.tmp / STORE_DATA, "wb")  # noqa: SIM115 - closed by commit/abort
        self.num_rows = 0

    def append(self, rows: np.ndarray) -> None:
        """Append rows `(n, *row_shape)` (cast to the store's dtype)."""
        if tuple(rows.shape[1:]) != self.row_shape:
            raise ValueError(f"Rows of shape {tuple(rows.shape[1:])} cannot go into a store of {self.row_shape}.")
        self._file.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.num_rows += rows.shape[0]

    def written(self, block_rows: int = SCAN_ROWS) -> Iterator[np.ndarray]:
        """The rows appended so far, in order (to copy them into a store of another dtype)."""
        self._file.flush()
        row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        with open(self.tmp / STORE_DATA, "rb") as file:
            for start in range(0, self.num_rows, block_rows):
                count = min(block_rows, self.num_rows - start)
                data = file.read(count * row_bytes)
                yield np.frombuffer(data, dtype=self.dtype).reshape(count, *self.row_shape)

    def convert(self, dtype, function: Callable[[np.ndarray], np.ndarray]) -> None:
        """Rewrite the rows appended so far as `function(rows)` in `dtype` (e.g. `uint8` pixels to floats, when a
        later row needs them); later rows are appended in `dtype`."""
        converted = self.tmp / f"{STORE_DATA}.converting"
        with open(converted, "wb") as out:
            for block in self.written():
                out.write(np.ascontiguousarray(function(block), dtype=dtype).tobytes())
        self._file.close()
        os.replace(converted, self.tmp / STORE_DATA)
        self._file = open(self.tmp / STORE_DATA, "ab")  # noqa: SIM115 - closed by commit/abort
        self.dtype = np.dtype(dtype)

    def commit(self, metadata: dict | None = None) -> RowStore:
        """Flush, write the header, rename into place; returns the store."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        header = {
            "num_rows": self.num_rows,
            "row_shape": list(self.row_shape),
            "dtype": self.dtype.str,
            "metadata": metadata or {},
        }
        (self.tmp / STORE_HEADER).write_text(json.dumps(header, indent=2) + "\n")
        if self.path.exists():  # another process finished the same store first: theirs is as good
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)
        return RowStore(self.path)

    def abort(self) -> None:
        """Drop what was written."""
        self._file.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class RowsOnDisk:
    """A read-only `(N, *row_shape)` float source over a [`RowStore`] that code written for tensors can index:
    `rows_on_disk[indices]` (a `LongTensor`, a boolean mask, a list, a slice or an int) reads just those rows and
    returns a tensor on `device`, after `transform` (raw array -> tensor, e.g. the images' normalisation).

    Only what the training loops and methods use is offered (`shape`, `ndim`, `dtype`, `device`, `len`, indexing,
    `split`, `to`); anything else (arithmetic on the whole split, `.numpy()`, ...) raises an error that says the split
    is on disk.

    Args:
        store ([`RowStore`]): The rows.
        transform (`Callable[[np.ndarray], torch.Tensor]`): Raw rows -> float tensor of the same leading size.
        row_shape (`tuple[int, ...]`, *optional*): The shape of one transformed row (default: the store's).
        device (`torch.device`, *optional*): Where indexed rows are put (default: CPU).
    """

    def __init__(
        self,
        store: RowStore,
        transform: Callable[[np.ndarray], torch.Tensor],
        row_shape: tuple[int, ...] | None = None,
        device: torch.device | str | None = None,
    ):
        self.store, self.transform = store, transform
        self.shape = torch.Size((store.num_rows, *(row_shape or store.row_shape)))
        self.device = torch.device(device or "cpu")
        self.dtype = torch.float32

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return self.ndim

    def __len__(self) -> int:
        return self.shape[0]

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def to(self, device: torch.device | str | None = None, *args, **kwargs) -> RowsOnDisk:
        """The same rows, indexed onto `device` (no data moves now)."""
        if device is None or isinstance(device, torch.dtype):
            return self
        return RowsOnDisk(self.store, self.transform, tuple(self.shape[1:]), device)

    def _rows(self, index) -> np.ndarray:
        if isinstance(index, slice):
            return np.arange(len(self))[index]
        if isinstance(index, int | np.integer):
            return np.asarray([index if index >= 0 else len(self) + index])
        index = torch.as_tensor(np.asarray(index)) if not isinstance(index, torch.Tensor) else index
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise IndexError(f"A boolean mask must have shape ({len(self)},), got {tuple(index.shape)}.")
            index = index.nonzero().reshape(-1)
        return index.detach().cpu().long().numpy()

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, tuple):
            raise IndexError("A split on disk is indexed by rows only (one index, not a tuple).")
        tensor = self.transform(self.store.read(self._rows(index)))
        if isinstance(index, int | np.integer):
            tensor = tensor[0]
        return tensor.to(self.device)

    def split(self, split_size: int) -> Iterator[torch.Tensor]:
        """Consecutive blocks of `split_size` rows, read one at a time (as `torch.Tensor.split` yields them)."""
        for start in range(0, len(self), split_size):
            yield self[start : start + split_size]

    def __getattr__(self, name: str):
        raise AttributeError(
            f"{name!r} needs the whole split in memory, but this split is kept on disk ({self.store.path}); only its "
            "rows are read, by index. Prepare the data in memory (data_on_disk=False) for this use."
        )

    def __repr__(self) -> str:
        return f"RowsOnDisk(shape={tuple(self.shape)}, store={str(self.store.path)!r}, device={self.device})"
