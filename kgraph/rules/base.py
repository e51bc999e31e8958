"""The rule protocol: how a layer family reacts to channel masks.

A rule has a small **required core**, three questions about one node:

- `infer(node, inputs)`: which tensors (shape, channel axis, mask) does it output?
- `slice_inputs(node, inputs, keeps)`: how do its weights and config change when
  input channels are deleted (`keeps[i]`: boolean over the channels input slot i
  had before, None when that slot did not change)?
- `owned_output(node)` and `delete_channels(node, mask)`: are its output channels
  its own (units, filters), and how does it delete some of them?

Everything else is an **optional capability**, declared by also deriving from one
of the small classes of `kgraph.rules.capabilities` (`HasCouplings`,
`HasRestrictions`, `CanDropInputs`, `HasChannelNorms`, `CountsMacs`, `ChecksWeights`).

Rules are looked up in a `kgraph.rules.RuleSet` by the layer's class, walking its
MRO, so a subclass of `Dense` uses the Dense rule.

Example:
    >>> class ScaleRule(kgraph.rules.PerChannelRule):
    ...     per_channel = ("scale",)
    >>> kgraph.register_rule(MyScale, ScaleRule())
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import attrs
import numpy as np

from kgraph.deferred import DeferredSlice
from kgraph.errors import ChannelError, KGraphError, UnsupportedLayerError
from kgraph.ir import Node, Space, Tensor, full_mask, lifted_shape, seal, slots_in

if TYPE_CHECKING:
    from kgraph.rules.registry import RuleSet

__all__ = [
    "OPAQUE_REASON",
    "NestedRule",
    "OpaqueRule",
    "Rule",
    "WeightlessRule",
    "carry",
    "data_slots",
    "default_axis",
    "expect_weights",
    "fresh_output",
    "kernel_entries",
    "lifted_shape",
    "new_space",
    "normalize_axis",
    "not_owner_error",
    "positions",
    "take",
    "take_weight",
]

_space_ids = itertools.count()

#: meta key: why `lift` could not see inside a composite layer (it stays one node)
OPAQUE_REASON = "opaque_reason"


class Rule:
    """The required core of a rule. The base accepts no channel change at all.

    Attributes (declarations, read by the passes and the printer):
        owns_channels: True when `delete_channels` is supported (Dense, Conv, ...).
        any_channel_count: True when nothing in the layer depends on how many
            channels it reads (no per-channel weights), so a splice upstream may
            change the count freely; the first layer that does care reports it.
        channels_key: the config key counting the layer's own output channels
            ("units", "filters"), when it has one.
    """

    owns_channels: ClassVar[bool] = False
    any_channel_count: ClassVar[bool] = False
    channels_key: ClassVar[str | None] = None

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """The output tensors of `node` when it reads `inputs`."""
        return tuple(
            out if out.space is not None else fresh_output(node, out) for out in node.outputs
        )

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        """`node` adapted to inputs whose channels were partly deleted."""
        changed = [i for i, keep in enumerate(keeps) if keep is not None]
        if changed:
            raise self.unsupported(node, inputs[changed[0]], changed[0])
        return node

    def owned_output(self, node: Node) -> Tensor | None:
        """Output 0 when its channels are this node's own (deletable), else None."""
        if not self.owns_channels or not node.outputs or node.outputs[0].mask is None:
            return None
        return node.outputs[0]

    def delete_channels(self, node: Node, mask: np.ndarray) -> Node:
        """`node` with its own output channels reduced to `mask` (lifted coordinates)."""
        raise not_owner_error(node)

    def unsupported(self, node: Node, tensor: Tensor, slot: int, why: str = "") -> KGraphError:
        """The error for a channel change this rule cannot follow (raise it)."""
        reason = f": {why}" if why else ""
        return UnsupportedLayerError(
            f"channels deleted upstream reach input {slot} of {node.describe()}, "
            f"whose rule {type(self).__name__} cannot follow them{reason}. Keep those "
            f"channels, or register a rule with kgraph.register_rule({node.class_name}, rule)"
        )


class NestedRule(Rule):
    """Base of rules for wrappers (TimeDistributed, Bidirectional) that ask the rule of
    the layer they wrap. A `RuleSet` hands them out bound to itself (`rules`), so the
    wrapped layer's rule comes from the same set."""

    rules: RuleSet | None = None

    def within(self, rules: RuleSet) -> NestedRule:
        """A copy of this rule that looks up wrapped layers' rules in `rules`."""
        bound = copy.copy(self)
        bound.rules = rules
        return bound

    def rule_of(self, node: Node) -> Rule:
        """The rule of a wrapped layer's record (opaque when the class is unknown)."""
        if self.rules is None or node.cls is None:
            return OpaqueRule()
        return self.rules.rule_for(node)


class WeightlessRule(Rule):
    """Base of rules for layers with nothing to slice: any channel change passes through."""

    any_channel_count = True

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        return node


def positions(tensor: Tensor) -> int:
    """How many positions (batch 1) `tensor` has besides its channel axis."""
    dims = [d for i, d in enumerate(tensor.shape[1:], start=1) if i != tensor.axis]
    if tensor.axis is None and dims:
        dims = dims[:-1]  # untracked channels: take the last axis as them
    return int(np.prod([d or 1 for d in dims])) if dims else 1


def not_owner_error(node: Node) -> ChannelError:
    """The error for deleting channels from a layer that does not own its channels."""
    source = ""
    if node.outputs and node.outputs[0].mask is not None:
        origin = node.outputs[0].origin
        if origin != node.name:
            source = f" (they are the channels of {origin!r})"
    return ChannelError(
        f"{node.describe()} does not own its output channels{source}, so they cannot be "
        "deleted there; delete them from the layer that produces them (a Dense, Conv, RNN "
        "or Embedding layer upstream)"
    )


class OpaqueRule(Rule):
    """The rule of layers nobody registered one for: any channel change is an error."""

    def unsupported(self, node: Node, tensor: Tensor, slot: int, why: str = "") -> KGraphError:
        target = node.class_name if node.kind == "layer" else node.class_path
        inside = node.meta.get(OPAQUE_REASON)
        seen = f" kgraph could not see inside it either: {inside}." if inside else ""
        return UnsupportedLayerError(
            f"channels deleted upstream reach input {slot} of {node.describe()}, and kgraph "
            f"has no rule for {target}, so it cannot tell how to slice it.{seen} Register "
            f"one with kgraph.register_rule({target}, rule) (see docs/rules.md), or delete "
            "channels elsewhere"
        )


def new_space(label: str, kind: type[Space] = Space) -> Space:
    """A new coordinate system (of class `kind`) for the channels of node `label`."""
    return kind(f"{label}#{next(_space_ids)}")


def default_axis(shape: Sequence[int | None]) -> int | None:
    """The last axis, when the tensor has one besides the batch axis and its size is known."""
    if len(shape) < 2 or shape[-1] is None:
        return None
    return len(shape) - 1


def fresh_output(
    node: Node, tensor: Tensor, axis: int | None = -1, kind: type[Space] = Space
) -> Tensor:
    """`tensor` with new channel coordinates (all kept, a `kind` space) on `axis`
    (default: the last)."""
    if axis == -1:
        axis = default_axis(tensor.shape)
    space = new_space(node.name, kind)
    if axis is None or tensor.shape[axis] is None:
        return attrs.evolve(tensor, axis=None, mask=None, space=space)
    return attrs.evolve(tensor, axis=axis, mask=full_mask(tensor.shape[axis]), space=space)


def carry(out: Tensor, source: Tensor, axis: int | None = None) -> Tensor:
    """`out` carrying the channels of `source` (on `axis`, default: the same axis)."""
    axis = source.axis if axis is None else axis
    if source.mask is None or axis is None:
        return attrs.evolve(out, axis=None, mask=None, space=source.space)
    shape = list(out.shape)
    shape[axis] = int(source.mask.sum())
    return attrs.evolve(out, shape=tuple(shape), axis=axis, mask=source.mask, space=source.space)


def normalize_axis(axis: int, rank: int) -> int:
    """A possibly negative axis as a non-negative index into a shape of `rank`."""
    return axis + rank if axis < 0 else axis


def data_slots(node: Node) -> list[int]:
    """Input slots of the call's positional arguments (not `mask=`/`initial_state=`)."""
    return slots_in(node.args)


def take(array: np.ndarray, keep: np.ndarray, axis: int) -> np.ndarray:
    """The entries of `array` along `axis` where `keep` is True (a new read-only array)."""
    return seal(np.compress(keep, np.asarray(array), axis=axis))


def kernel_entries(node: Node) -> int:
    """How many entries the weights named `*kernel` of `node` hold (from their shapes)."""
    return sum(
        math.prod(shape)
        for name, shape in zip(node.weight_names, node.weight_shapes)
        if name.endswith("kernel")
    )


def take_weight(node: Node, name: str, keep: np.ndarray, axis: int) -> DeferredSlice:
    """Weight `name` of `node` without the entries of `axis` where `keep` is False.

    The slice is deferred: it joins the slices the weight already has and is carried
    out in one pass when the values are read (see `kgraph.deferred`). Store it with
    `node.with_weights(name=...)`.

    Example:
        >>> node = node.with_weights(kernel=take_weight(node, "kernel", keep, -1))
    """
    return DeferredSlice.of(node.stored_weight(name)).take(keep, axis)


def expect_weights(node: Node, rule: Rule, *allowed: str) -> None:
    """Refuse a subclass whose weights this rule does not know how to slice."""
    unknown = [w for w in node.weight_names if w not in allowed]
    if unknown:
        raise UnsupportedLayerError(
            f"{node.describe()} has weights {unknown} that {type(rule).__name__} does not "
            f"know how to slice (it knows {list(allowed)}): a subclass, a LoRA or quantized "
            "variant? Merge or remove those weights first, or register a rule for the class "
            "with kgraph.register_rule"
        )
