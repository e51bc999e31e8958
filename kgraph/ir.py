"""The records of the IR: tensors with channel masks, and layer calls.

Both are immutable: change one with `attrs.evolve` (or the helpers below), never
in place. Weight arrays are read-only numpy arrays shared between graphs.

A channel mask is a boolean array over the channels a tensor had when its
coordinates were created (`lifted` channels): True = kept. Its `space` names that
coordinate system (see `kgraph.spaces`), so two masks are comparable only when their
spaces are equal.

Example:
    >>> t = Tensor(shape=(None, 8), dtype="float32", axis=1, mask=full_mask(8), space=Space("d"))
    >>> t.with_mask(delete_from(t.mask, [0, 1])).shape
    (None, 6)
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import numpy as np

from kgraph.deferred import DeferredSlice, resolve
from kgraph.errors import KGraphError
from kgraph.spaces import (
    ChannelSpace,
    ConcatSpace,
    Derivation,
    DerivedSpace,
    InputSpace,
    MergeSpace,
    Space,
)

__all__ = [
    "LAMBDA_FUNCTION",
    "ChannelSpace",
    "ConcatSpace",
    "Derivation",
    "DerivedSpace",
    "InputSpace",
    "MergeSpace",
    "Node",
    "Slot",
    "Space",
    "Tensor",
    "delete_from",
    "freeze_array",
    "full_mask",
    "lifted_shape",
    "mask_summary",
    "remove_slot",
    "same_layer",
    "seal",
    "slots_in",
]


#: meta key: a lifted Lambda's own function object. Keras serialises a Lambda's
#: function as bytecode without its module's globals, so a Lambda rebuilt from its
#: config fails on names like `keras` or a module constant; lowering uses this instead.
LAMBDA_FUNCTION = "lambda_function"


def freeze_array(array: Any) -> np.ndarray:
    """`array` as a read-only numpy array: itself if it already is one, else a read-only copy.

    The caller's array is never changed (not even its flags).
    """
    array = np.asarray(array)
    if array.flags.writeable:
        array = array.copy()
        array.setflags(write=False)
    return array


def seal(array: np.ndarray) -> np.ndarray:
    """Mark an array the caller has just created (and shares with no one) read-only."""
    array.setflags(write=False)
    return array


def full_mask(channels: int) -> np.ndarray:
    """A read-only mask that keeps all `channels`."""
    return seal(np.ones(channels, dtype=bool))


def delete_from(mask: np.ndarray, channels: Iterable[int]) -> np.ndarray:
    """A copy of `mask` with the lifted `channels` set to False."""
    new = mask.copy()
    new[list(channels)] = False
    return seal(new)


def mask_summary(mask: np.ndarray | None) -> str:
    """`'48/64'` for a mask that keeps 48 of 64 channels, `'-'` for no mask."""
    if mask is None:
        return "-"
    return f"{int(mask.sum())}/{mask.size}"


@attrs.frozen(eq=False, repr=False)
class Tensor:
    """One tensor of the graph: its current shape and dtype, and its channel mask.

    `axis` is the channel axis (non-negative, counting the batch axis) or None when
    the tensor carries no channels kgraph can track. `mask` has one entry per lifted
    channel of `space`; `mask.sum()` equals `shape[axis]`.
    """

    shape: tuple[int | None, ...]
    dtype: str
    axis: int | None = None
    mask: np.ndarray | None = None
    space: ChannelSpace | None = None

    @property
    def channels(self) -> int | None:
        """The current number of channels (None when untracked)."""
        return None if self.axis is None else self.shape[self.axis]

    @property
    def origin(self) -> str:
        """The node whose channels this tensor carries (for messages)."""
        return "?" if self.space is None else self.space.origin

    @property
    def empty(self) -> bool:
        """True when every channel of this tensor has been deleted."""
        return self.mask is not None and not self.mask.any()

    def with_mask(self, mask: np.ndarray, space: ChannelSpace | None = None) -> Tensor:
        """This tensor with another mask (and space), its shape following the mask."""
        shape = list(self.shape)
        shape[self.axis] = int(mask.sum())
        return attrs.evolve(
            self, shape=tuple(shape), mask=mask, space=self.space if space is None else space
        )

    def same_as(self, other: Tensor) -> bool:
        """True when both describe the same channels, shape and dtype."""
        if self is other:
            return True
        return (
            self.shape == other.shape
            and self.dtype == other.dtype
            and self.axis == other.axis
            and self.space == other.space
            and _same_mask(self.mask, other.mask)
        )

    def __repr__(self) -> str:
        return (
            f"Tensor({self.shape}, {self.dtype}, axis={self.axis}, mask {mask_summary(self.mask)})"
        )


def lifted_shape(tensor: Tensor) -> tuple[int | None, ...]:
    """The shape `tensor` would have with every lifted channel kept."""
    if tensor.mask is None:
        return tensor.shape
    shape = list(tensor.shape)
    shape[tensor.axis] = tensor.mask.size
    return tuple(shape)


def _same_mask(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return a is b or (a.shape == b.shape and bool(np.array_equal(a, b)))


@attrs.frozen
class Slot:
    """Placeholder for the tensor in input slot `index` inside a call template."""

    index: int

    def __repr__(self) -> str:
        return f"Slot({self.index})"


def _freeze_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return value if isinstance(value, MappingProxyType) else MappingProxyType(dict(value))


def _freeze_weights(value: Iterable[Any]) -> tuple[np.ndarray | DeferredSlice, ...]:
    return tuple(w if isinstance(w, DeferredSlice) else freeze_array(w) for w in value)


@attrs.frozen(eq=False, repr=False)
class Node:
    """One call of a Keras layer or `keras.ops` operation (or a graph input/output).

    Attributes:
        name: unique node name in the graph (`dense`, or `dense@1` for a second call).
        kind: "input", "layer", "op" or "output".
        cls: the Keras class lowered to (None for outputs).
        config: the layer's `get_config()`, as updated by passes.
        layer: name of the Keras layer this call lowers to; calls of a shared layer
            share it (and must agree on config and weights).
        call_index: which call of `layer` this is (0 for unshared layers).
        args, kwargs: the call's arguments, tensors replaced by `Slot(i)`.
        weights: the layer's weights in `layer.weights` order (read-only arrays). Passes
            may store `DeferredSlice`s (`kgraph.rules.base.take_weight`); reading
            `weights` or `weight()` carries them out.
        weight_names: their names relative to the layer (`kernel`, `lstm_cell/bias`).
        inputs: the input tensors this node was last computed for, one per slot.
        outputs: the node's output tensors, one per output slot.
        origin: a weak reference to the Keras layer it was lifted from (None for new
            layers): `Graph.find` accepts that layer object while it lives.
        path: where the layer sat in the original model (`backbone/conv1`).
        meta: what passes remember about the node beyond Keras' config (e.g. the
            mask of attention heads kept, in lifted coordinates).
    """

    name: str
    kind: str
    cls: type | None
    config: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)
    layer: str = ""
    call_index: int = 0
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)
    _weights: tuple[np.ndarray | DeferredSlice, ...] = attrs.field(
        default=(), converter=_freeze_weights, alias="weights"
    )
    weight_names: tuple[str, ...] = ()
    inputs: tuple[Tensor, ...] = ()
    outputs: tuple[Tensor, ...] = ()
    origin: weakref.ref | None = None
    path: str = ""
    meta: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)

    @property
    def class_name(self) -> str:
        return "Output" if self.cls is None else self.cls.__name__

    @property
    def class_path(self) -> str:
        """The class with its module (`keras.src.ops.numpy.Add`), for classes of ops."""
        return "Output" if self.cls is None else f"{self.cls.__module__}.{self.cls.__qualname__}"

    def _index(self, name: str) -> int:
        if name not in self.weight_names:
            raise KGraphError(
                f"{self.describe()} has no weight {name!r}; it has {list(self.weight_names)}"
            )
        return self.weight_names.index(name)

    @property
    def weights(self) -> tuple[np.ndarray, ...]:
        """The weights' values (deferred slices carried out, once)."""
        return tuple(resolve(w) for w in self._weights)

    @property
    def stored_weights(self) -> tuple[np.ndarray | DeferredSlice, ...]:
        """The weights as stored: arrays, or DeferredSlices not yet carried out."""
        return self._weights

    @property
    def weight_shapes(self) -> tuple[tuple[int, ...], ...]:
        """The weights' shapes, without carrying out deferred slices."""
        return tuple(tuple(w.shape) for w in self._weights)

    def weight_shape(self, name: str) -> tuple[int, ...]:
        """The shape of the weight called `name`, without carrying out a deferred slice."""
        return tuple(self._weights[self._index(name)].shape)

    def weight(self, name: str) -> np.ndarray:
        """The weight called `name` (e.g. "kernel")."""
        return resolve(self._weights[self._index(name)])

    def stored_weight(self, name: str) -> np.ndarray | DeferredSlice:
        """The weight called `name` as stored: an array or a DeferredSlice not yet carried out."""
        return self._weights[self._index(name)]

    def has_weight(self, name: str) -> bool:
        return name in self.weight_names

    def with_weights(self, **updates: np.ndarray | DeferredSlice) -> Node:
        """A copy with the named weights replaced (arrays are copied unless read-only)."""
        weights = list(self._weights)
        for name, value in updates.items():
            weights[self._index(name)] = value
        return attrs.evolve(self, weights=tuple(weights))

    def with_config(self, **updates: Any) -> Node:
        """A copy with some config entries replaced."""
        return attrs.evolve(self, config={**self.config, **updates})

    def describe(self) -> str:
        """`"'conv1' (Conv2D)"`: how error messages name a node."""
        if self.kind == "output":
            return f"model output {self.name!r}"
        return f"{self.name!r} ({self.class_name})"

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.class_name})"


def _leaves(template: Any) -> Iterator[Any]:
    """The leaves of nested lists, tuples and mappings (mappings by sorted key, as Keras
    flattens them)."""
    if isinstance(template, (list, tuple)):
        for item in template:
            yield from _leaves(item)
    elif isinstance(template, Mapping):
        for key in sorted(template):
            yield from _leaves(template[key])
    else:
        yield template


def slots_in(template: Any) -> list[int]:
    """Indices of the `Slot` placeholders in (part of) a call template, in order."""
    return [leaf.index for leaf in _leaves(template) if isinstance(leaf, Slot)]


def same_layer(first: Node, other: Node) -> bool:
    """True when two calls of one layer agree on config and weights (one layer serves both)."""
    if dict(first.config) != dict(other.config) or len(first.weights) != len(other.weights):
        return False
    return all(a is b or np.array_equal(a, b) for a, b in zip(first.weights, other.weights))


def remove_slot(template: Any, slot: int) -> Any:
    """`template` without the `Slot(slot)` entry of a list, later slots renumbered.

    Example:
        >>> remove_slot(([Slot(0), Slot(1), Slot(2)],), 1)
        ([Slot(0), Slot(1)],)
    """
    if isinstance(template, Slot):
        return Slot(template.index - 1) if template.index > slot else template
    if isinstance(template, (list, tuple)):
        items = [
            remove_slot(v, slot) for v in template if not (isinstance(v, Slot) and v.index == slot)
        ]
        return type(template)(items)
    if isinstance(template, Mapping):
        return {k: remove_slot(v, slot) for k, v in template.items()}
    return template
