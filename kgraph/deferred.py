"""Weight slices that are recorded when a pass asks for them and carried out once, later.

Deleting channels slices a weight once for the layer's own outputs and again for its
inputs: VGG16's fc1 kernel (25088 x 4096) loses half its columns, then half its rows.
Done eagerly, that copies the kernel twice, through a 205 MB intermediate. A
`DeferredSlice` instead records which positions of each axis survive, composes later
deletions into that record, and builds the result in one pass, block by block, the
first time the values are read (usually by `lower`). The result is cached and
read-only, like every weight of the IR.

Rules get deferred slices through `kgraph.rules.base.take_weight`; `Node.weights`
and `Node.weight()` always hand out plain arrays.

Example:
    >>> w = np.arange(12.0).reshape(3, 4)
    >>> d = DeferredSlice.of(w).take([True, False, True], 0).take([False, True, True, True], 1)
    >>> d.shape
    (2, 3)
    >>> d.values()
    array([[ 1.,  2.,  3.],
           [ 9., 10., 11.]])
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

__all__ = ["DeferredSlice", "aligned_empty", "resolve"]

_BLOCK_BYTES = 4 << 20  # how much of the base one gather step reads
_ALIGN = 64  # bytes; what TensorFlow (Eigen) requires of a buffer it adopts
_MAPPED_BYTES = 4 << 20  # arrays this large get their own memory map (see aligned_empty)
_MAP_FLAGS = (
    {"flags": mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)}
    if hasattr(mmap, "MAP_ANONYMOUS")
    else {}
)


class DeferredSlice:
    """`base` restricted to some positions on each axis, not yet copied out.

    Attributes:
        base: the read-only array the slice reads from.
        index: per axis, the kept positions of `base` (sorted), or None for all.
    """

    __slots__ = ("_values", "base", "index")

    def __init__(self, base: np.ndarray, index: tuple[np.ndarray | None, ...]) -> None:
        self.base = base
        self.index = index
        self._values: np.ndarray | None = None

    @classmethod
    def of(cls, array: Any) -> DeferredSlice:
        """`array` (a DeferredSlice or an array) as a DeferredSlice with nothing dropped yet."""
        if isinstance(array, DeferredSlice):
            return array
        array = np.asarray(array)
        return cls(array, (None,) * array.ndim)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(
            size if kept is None else len(kept) for size, kept in zip(self.base.shape, self.index)
        )

    @property
    def ndim(self) -> int:
        return self.base.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    def take(self, keep: Any, axis: int) -> DeferredSlice:
        """This slice without the positions of `axis` where `keep` (one bool each) is False."""
        keep = np.asarray(keep, dtype=bool)
        if not -self.ndim <= axis < self.ndim:
            raise ValueError(f"axis {axis} is out of range for a weight of shape {self.shape}")
        axis %= self.ndim
        if keep.shape != (self.shape[axis],):
            raise ValueError(
                f"cannot select with {keep.shape[0] if keep.ndim == 1 else keep.shape} flags "
                f"along axis {axis} of a weight of shape {self.shape}"
            )
        if keep.all():
            return self
        kept = self.index[axis]
        positions = np.flatnonzero(keep) if kept is None else kept[keep]
        index = (*self.index[:axis], positions, *self.index[axis + 1 :])
        return DeferredSlice(self.base, index)

    @property
    def carried_out(self) -> bool:
        """Whether `values()` has built (and kept) the sliced array already."""
        return self._values is not None

    def values(self) -> np.ndarray:
        """The sliced array (read-only), built on first use and then kept."""
        if self._values is None:
            if all(kept is None for kept in self.index):
                values = self.base
            else:
                values = self.gather()
                values.setflags(write=False)
            self._values = values
        return self._values

    def gather(self) -> np.ndarray:
        """The sliced values in a new writable array of the caller's own, not kept here.

        The array starts on a 64-byte boundary, so a backend can adopt it as a tensor
        without copying (see `kgraph.weight_feed`).
        """
        out = aligned_empty(self.shape, self.dtype)
        _gather(self.base, self.index, out)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self.values()
        if dtype is not None and np.dtype(dtype) != values.dtype:
            return values.astype(dtype)
        return values.copy() if copy else values

    def __repr__(self) -> str:
        return f"DeferredSlice(shape={self.shape}, dtype={self.dtype}, of {self.base.shape})"


def resolve(weight: np.ndarray | DeferredSlice) -> np.ndarray:
    """The values of a weight, whether it is an array or a DeferredSlice."""
    return weight.values() if isinstance(weight, DeferredSlice) else weight


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised, writable C-contiguous array starting on an `_ALIGN`-byte boundary.

    Arrays of `_MAPPED_BYTES` or more get pages of their own from an anonymous memory
    map (page-aligned, filled by the kernel at once). numpy would ask the kernel for huge
    pages for them, and a page fault then waits while memory is compacted: gathering
    VGG16's fc1 kernel took 0.6 s instead of 0.1 s in some rounds of a benchmark.
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size >= _MAPPED_BYTES:
        pages = mmap.mmap(-1, size, **_MAP_FLAGS)
        return np.frombuffer(pages, dtype=dtype).reshape(shape)
    raw = np.empty(size + _ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start : start + size].view(dtype).reshape(shape)


def _gather(base: np.ndarray, index: tuple[np.ndarray | None, ...], out: np.ndarray) -> None:
    """Write `base` at the kept positions of every axis into `out`, in one pass over it.

    The first sliced axis is walked in blocks of about `_BLOCK_BYTES` of `base`, taken
    into one reused buffer; each block is narrowed on the other sliced axes while it is
    still small, the last narrowing writing straight into `out`.
    """
    axes = [axis for axis, kept in enumerate(index) if kept is not None]
    if not axes:
        np.copyto(out, base)
        return
    # mode="clip": the positions are valid, and numpy buffers `out` under mode="raise".
    if len(axes) == 1:
        np.take(base, index[axes[0]], axis=axes[0], out=out, mode="clip")
        return
    outer, rest = axes[0], axes[1:]
    bytes_per_position = max(1, base.nbytes // max(1, base.shape[outer]))
    step = max(1, _BLOCK_BYTES // bytes_per_position)
    positions = index[outer]
    buffer = np.empty(
        (*base.shape[:outer], min(step, len(positions)), *base.shape[outer + 1 :]), base.dtype
    )
    before = (slice(None),) * outer
    for start in range(0, len(positions), step):
        chunk = positions[start : start + step]
        block = buffer[(*before, slice(0, len(chunk)))]
        np.take(base, chunk, axis=outer, out=block, mode="clip")
        for axis in rest[:-1]:
            block = np.take(block, index[axis], axis=axis, mode="clip")
        target = out[(*before, slice(start, start + len(chunk)))]
        np.take(block, index[rest[-1]], axis=rest[-1], out=target, mode="clip")
