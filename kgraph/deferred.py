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

from typing import Any

import numpy as np

__all__ = ["DeferredSlice", "resolve"]

_BLOCK_BYTES = 4 << 20  # how much of the base one gather step reads


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

    def values(self) -> np.ndarray:
        """The sliced array (read-only), built on first use and then kept."""
        if self._values is None:
            values = _gather(self.base, self.index, self.shape)
            if values is not self.base:
                values.setflags(write=False)
            self._values = values
        return self._values

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


def _gather(
    base: np.ndarray, index: tuple[np.ndarray | None, ...], shape: tuple[int, ...]
) -> np.ndarray:
    """`base` at the kept positions of every axis (`shape` in all), in one pass over it.

    The first sliced axis is walked in blocks of about `_BLOCK_BYTES` of `base`; each
    block is narrowed on the other sliced axes while it is still small.
    """
    axes = [axis for axis, kept in enumerate(index) if kept is not None]
    if not axes:
        return base
    if len(axes) == 1:
        return np.take(base, index[axes[0]], axis=axes[0])
    outer, rest = axes[0], axes[1:]
    out = np.empty(shape, dtype=base.dtype)
    bytes_per_position = max(1, base.nbytes // max(1, base.shape[outer]))
    step = max(1, _BLOCK_BYTES // bytes_per_position)
    positions = index[outer]
    before = (slice(None),) * outer
    for start in range(0, len(positions), step):
        block = np.take(base, positions[start : start + step], axis=outer)
        for axis in rest:
            block = np.take(block, index[axis], axis=axis)
        out[(*before, slice(start, start + step))] = block
    return out
