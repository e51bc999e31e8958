"""Rules for Keras wrapper layers: TimeDistributed and Bidirectional.

A wrapper keeps the wrapped layer's config nested in its own (`layer`, and
`backward_layer` for Bidirectional, each a serialized Keras object) and the wrapped
layers' weights as its own. Both rules therefore build a `Node` record of the
wrapped call (`attrs.evolve` of the wrapper's node with the inner class, config,
weights and tensors), hand it to the wrapped layer's own rule, and map the answer
back into the wrapper's config, weights and tensors. Any wrapped layer with a rule
works; errors of the inner rule are re-raised naming the wrapper too.

- `TimeDistributedRule`: the inner layer sees the tensors without the time axis
  (axis 1), so `TimeDistributed(Dense)` on (batch, T, C) behaves like `Dense` on
  (batch, C) and deleting its channels deletes the inner layer's units or filters.
  Channels that sit on the time axis itself (after a Permute) are time steps for the
  inner layer: they pass through to the output's axis 1.
- `BidirectionalRule`: forward and backward layer (weights: forward then backward),
  each sliced by its own rule (`RecurrentRule`'s gate layout for SimpleRNN, GRU and
  LSTM). Deleted input channels slice both kernels. Channel indices of
  `DeleteChannels("bi", ...)`:

  - merge_mode "concat" or None: indices into the concatenation of the two
    directions, forward units `0..u-1` then backward units `u..2u-1` (with None the
    two outputs are separate tensors, but are addressed the same way). The two
    directions may lose different units, but Keras builds both with the same
    number of units, so both must lose as many (`ChannelError` otherwise);
    deleting `[j, u + j]` deletes unit j of both.
  - merge_mode "sum", "mul" or "ave": forward and backward unit j are combined
    element-wise into output channel j, so deleting channel j deletes unit j of
    both directions.

  With `return_state` the states of each direction follow that direction's units;
  initial states (the first half for the forward layer, the second half for the
  backward layer) must keep the same units as their direction.

Example:
    >>> x = keras.Input((6, 5))
    >>> y = keras.layers.TimeDistributed(keras.layers.Dense(4), name="td")(x)
    >>> y = keras.layers.Bidirectional(keras.layers.LSTM(3), name="bi")(y)
    >>> model = keras.Model(x, keras.layers.Dense(2, name="head")(y))
    >>> graph = kgraph.lift(model).apply(
    ...     DeleteChannels("td", [0]), DeleteChannels("bi", [1, 3 + 2])
    ... )
    >>> graph.lower().get_layer("bi").forward_layer.units
    2
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import keras
import numpy as np

from kgraph.errors import ChannelError, KGraphError, MaskConflictError
from kgraph.ir import (
    ChannelSpace,
    Derivation,
    DerivedSpace,
    Node,
    Slot,
    Tensor,
    freeze_array,
    full_mask,
)
from kgraph.rules.base import (
    NestedRule,
    Rule,
    carry,
    fresh_output,
    not_owner_error,
)
from kgraph.rules.capabilities import ChecksWeights, HasRestrictions, problems

__all__ = ["BidirectionalRule", "TimeDistributedRule", "wrapped_class"]


def wrapped_class(serialized: Mapping[str, Any]) -> type | None:
    """The class of a serialized Keras layer (the `layer` entry of a wrapper's config).

    Registered custom layers are found by their registered name, others by module
    and class name; None when the class cannot be found.
    """
    class_name = serialized.get("class_name")
    registered = serialized.get("registered_name")
    if registered:
        found = keras.saving.get_registered_object(registered)
        if isinstance(found, type):
            return found
    module = serialized.get("module")
    if module and class_name:
        try:
            found = getattr(importlib.import_module(module), class_name, None)
        except ImportError:
            found = None
        if isinstance(found, type):
            return found
    found = getattr(keras.layers, str(class_name), None)
    return found if isinstance(found, type) else None


@contextlib.contextmanager
def _inside(node: Node, inner: Node, where: str = "") -> Iterator[None]:
    """Re-raise an inner rule's error (same class) with the wrapper named too."""
    try:
        yield
    except KGraphError as error:
        part = f"{where} " if where else ""
        raise type(error)(
            f"{error} [in {node.describe()}, whose wrapped {part}layer is a {inner.class_name}]"
        ) from error


def _rewrapped(serialized: Mapping[str, Any], inner: Node, inputs_changed: bool) -> dict:
    """`serialized` (a nested layer config) holding `inner`'s config.

    When the inputs changed, the recorded build shape is stale: it is dropped, and
    the wrapper builds the inner layer for its new input when lowered.
    """
    new = {**serialized, "config": dict(inner.config)}
    if inputs_changed:
        new.pop("build_config", None)
    return new


# -- TimeDistributed ----------------------------------------------------------------


class _UnknownLayer(keras.layers.Layer):
    """Stands for a wrapped layer whose class kgraph cannot find (never instantiated)."""


def _drop_time(tensor: Tensor) -> Tensor:
    """`tensor` as the wrapped layer sees it: without the time axis 1."""
    shape = (tensor.shape[0], *tensor.shape[2:])
    if tensor.axis is None or tensor.axis == 1:
        return attrs.evolve(tensor, shape=shape, axis=None, mask=None)
    return attrs.evolve(tensor, shape=shape, axis=tensor.axis - 1)


def _add_time(tensor: Tensor, steps: int | None) -> Tensor:
    """An inner tensor as the wrapper outputs it: with `steps` on axis 1."""
    axis = None if tensor.axis is None else tensor.axis + 1
    return attrs.evolve(tensor, shape=(tensor.shape[0], steps, *tensor.shape[1:]), axis=axis)


def _on_time_axis(node: Node, inputs: Sequence[Tensor]) -> bool:
    return bool(inputs) and inputs[0].axis == 1


class TimeDistributedRule(NestedRule, ChecksWeights):
    """TimeDistributed(layer): the wrapped layer's rule on tensors without the time axis.

    Deleting channels of a `TimeDistributed(Dense)` or `TimeDistributed(Conv2D)`
    deletes the inner layer's units or filters (the nested config's `units` or
    `filters` follows); the output's channel axis is the inner layer's plus one.
    """

    owns_channels = True

    def inner(self, node: Node) -> tuple[Node, Rule]:
        """The record of the wrapped call (tensors without the time axis) and its rule."""
        serialized = node.config["layer"]
        cls = wrapped_class(serialized)
        inner = attrs.evolve(
            node,
            cls=cls or _UnknownLayer,
            config=serialized.get("config", {}),
            inputs=tuple(_drop_time(t) for t in node.inputs),
            outputs=tuple(_drop_time(t) for t in node.outputs),
        )
        return inner, self.rule_of(inner)

    def _refuse_unknown(self, node: Node, tensor: Tensor) -> None:
        if wrapped_class(node.config["layer"]) is None:
            name = node.config["layer"].get("class_name")
            raise self.unsupported(
                node, tensor, 0, f"kgraph cannot find the class {name!r} of its wrapped layer"
            )

    def _outputs(self, node: Node, inner_outputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """The inner outputs with the time axis back (the old record when unchanged)."""
        result = []
        for old, new in zip(node.outputs, inner_outputs, strict=True):
            new = _add_time(new, old.shape[1])
            result.append(old if new.same_as(old) else new)
        return tuple(result)

    def _rewrap(self, node: Node, inner: Node, inputs_changed: bool) -> Node:
        layer = _rewrapped(node.config["layer"], inner, inputs_changed)
        return attrs.evolve(node, config={**node.config, "layer": layer}, weights=inner.weights)

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if _on_time_axis(node, inputs):  # deleted time steps are never computed
            return (carry(node.outputs[0], inputs[0], axis=1), *node.outputs[1:])
        inner, rule = self.inner(node)
        with _inside(node, inner):
            outputs = rule.infer(inner, [_drop_time(t) for t in inputs])
        return self._outputs(node, outputs)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        if _on_time_axis(node, inputs):
            return node  # time steps, not features: nothing reads them
        self._refuse_unknown(node, inputs[0])
        inner, rule = self.inner(node)
        with _inside(node, inner):
            new = rule.slice_inputs(inner, [_drop_time(t) for t in inputs], keeps)
        return node if new is inner else self._rewrap(node, new, inputs_changed=True)

    def owned_output(self, node: Node) -> Tensor | None:
        if not node.outputs or _on_time_axis(node, node.inputs):
            return None
        inner, rule = self.inner(node)
        own = rule.owned_output(inner)
        return None if own is None else _add_time(own, node.outputs[0].shape[1])

    def delete_channels(self, node: Node, mask: np.ndarray) -> Node:
        self._refuse_unknown(node, node.outputs[0])
        if self.owned_output(node) is None:
            raise not_owner_error(node)
        inner, rule = self.inner(node)
        with _inside(node, inner):
            new = rule.delete_channels(inner, mask)
        if new is inner:
            return node
        node = self._rewrap(node, new, inputs_changed=False)
        return attrs.evolve(node, outputs=self._outputs(node, new.outputs))

    def check(self, node: Node) -> list[str]:
        if _on_time_axis(node, node.inputs):
            return []
        inner, rule = self.inner(node)
        return [f"wraps a {inner.class_name} that {p}" for p in problems(rule, inner)]


# -- Bidirectional ------------------------------------------------------------------

_COUPLED = ("sum", "mul", "ave")
_DIRECTIONS = (("layer", "forward"), ("backward_layer", "backward"))


def _with_units(tensor: Tensor, mask: np.ndarray, space: ChannelSpace | None) -> Tensor:
    """`tensor` carrying units `mask` on its last axis, in coordinates `space`."""
    shape = (*tensor.shape[:-1], int(mask.sum()))
    new = attrs.evolve(tensor, shape=shape, axis=len(shape) - 1, mask=mask, space=space)
    return tensor if new.same_as(tensor) else new


def _state_slots(node: Node) -> tuple[list[int], list[int]]:
    """Input slots of the initial states: (forward ones, backward ones)."""
    states = node.kwargs.get("initial_state")
    slots = [s.index for s in keras.tree.flatten(states) if isinstance(s, Slot)] if states else []
    half = len(slots) // 2
    return slots[:half], slots[half:]


def _kept(mask: np.ndarray) -> str:
    return f"{int(mask.sum())}/{mask.size} (deleted {np.flatnonzero(~mask).tolist()})"


class BidirectionalRule(NestedRule, ChecksWeights, HasRestrictions):
    """Bidirectional(SimpleRNN/GRU/LSTM, or any layer whose rule owns its channels).

    See the module docstring for what channel indices mean in each merge_mode.
    """

    owns_channels = True

    def restricts(self, node: Node) -> str:
        if node.config.get("merge_mode") not in ("concat", None):
            return ""
        return (
            f"{node.describe()} concatenates its forward and backward units, and both must "
            "lose as many, which pruning cannot promise; delete them with DeleteChannels "
            "([j, j + units] deletes unit j of both directions)"
        )

    # -- the two directions -------------------------------------------------------

    def problem(self, node: Node) -> str | None:
        """Why kgraph cannot follow this Bidirectional layer (None when it can)."""
        config = node.config
        if "layer" not in config or "backward_layer" not in config:
            return "its config does not hold both the forward and the backward layer"
        forward, backward = (wrapped_class(config[key]) for key, _ in _DIRECTIONS)
        if forward is None or backward is None:
            return "kgraph cannot find the class of its wrapped layers"
        if forward is not backward or len(node.weights) % 2:
            return "its forward and backward layers are of different kinds"
        key = self.rule_of(attrs.evolve(node, cls=forward)).channels_key or "units"
        sizes = {config[k]["config"].get(key) for k, _ in _DIRECTIONS}
        if len(sizes) != 1:
            return f"its forward and backward layers have different {key} ({sorted(sizes)})"
        return None

    def _refuse(self, node: Node, slot: int = 0) -> None:
        why = self.problem(node)
        if why is not None:
            tensor = node.inputs[slot] if node.inputs else node.outputs[0]
            raise self.unsupported(node, tensor, slot, why)

    def direction(self, node: Node, which: int, units: np.ndarray | None) -> tuple[Node, Rule]:
        """The record of the forward (0) or backward (1) layer and its rule.

        Its output 0 carries `units` (that direction's unit mask) on the last axis.
        """
        key, _ = _DIRECTIONS[which]
        half = len(node.weights) // 2
        part = slice(0, half) if which == 0 else slice(half, None)
        outputs = node.outputs[:1]
        if units is not None:
            outputs = (
                _with_units(
                    node.outputs[0], units, DerivedSpace(Derivation.DIRECTION, "", None, which)
                ),
            )
        inner = attrs.evolve(
            node,
            cls=wrapped_class(node.config[key]),
            config=node.config[key].get("config", {}),
            weights=node.weights[part],
            weight_names=tuple(name.rsplit("/", 1)[-1] for name in node.weight_names[part]),
            outputs=outputs,
        )
        return inner, self.rule_of(inner)

    def _rewrap(self, node: Node, inners: Sequence[Node], inputs_changed: bool) -> Node:
        config = dict(node.config)
        for (key, _), inner in zip(_DIRECTIONS, inners):
            config[key] = _rewrapped(node.config[key], inner, inputs_changed)
        weights = inners[0].weights + inners[1].weights
        return attrs.evolve(node, config=config, weights=weights)

    # -- unit masks and output tensors ---------------------------------------------

    def unit_masks(self, node: Node) -> tuple[np.ndarray, np.ndarray] | None:
        """The lifted unit masks (forward, backward), None when untracked."""
        first = node.outputs[0]
        if first.mask is None or first.space is None:
            return None
        mode = node.config.get("merge_mode")
        if mode == "concat":
            half = first.mask.size // 2
            return first.mask[:half], first.mask[half:]
        if mode is None:
            return first.mask, node.outputs[1].mask
        return first.mask, first.mask

    def _outputs(
        self, node: Node, space: ChannelSpace | None, forward: np.ndarray, backward: np.ndarray
    ) -> tuple[Tensor, ...]:
        mode = node.config.get("merge_mode")
        outs = node.outputs
        forward_space = DerivedSpace(Derivation.FORWARD, node.name, space)
        backward_space = DerivedSpace(Derivation.BACKWARD, node.name, space)
        if mode == "concat":
            main = [_with_units(outs[0], freeze_array(np.concatenate([forward, backward])), space)]
        elif mode is None:  # two outputs: forward (the layer's own space), then backward
            main = [
                _with_units(outs[0], forward, space),
                _with_units(outs[1], backward, backward_space),
            ]
            forward_space = space
        else:
            main = [_with_units(outs[0], forward, space)]
            forward_space = backward_space = space
        states = outs[len(main) :]
        half = len(states) // 2
        return (
            *main,
            *(_with_units(s, forward, forward_space) for s in states[:half]),
            *(_with_units(s, backward, backward_space) for s in states[half:]),
        )

    # -- Rule -----------------------------------------------------------------------

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if self.problem(node) is not None:  # untracked: no channels to delete here
            return tuple(fresh_output(node, out, axis=None) for out in node.outputs)
        masks = self.unit_masks(node)
        if masks is None:  # lifting: the units are new channels
            first = node.outputs[0]
            space = fresh_output(node, first, len(first.shape) - 1).space
            units = first.shape[-1] // (2 if node.config.get("merge_mode") == "concat" else 1)
            outputs = self._outputs(node, space, full_mask(units), full_mask(units))
        else:
            outputs = node.outputs
            self._check_states(node, inputs, masks)
        return outputs

    def _check_states(
        self, node: Node, inputs: Sequence[Tensor], masks: tuple[np.ndarray, np.ndarray]
    ) -> None:
        for (_, label), slots, units in zip(_DIRECTIONS, _state_slots(node), masks):
            for slot in slots:
                state = inputs[slot]
                if state.mask is None:
                    continue
                if state.mask.size != units.size or not np.array_equal(state.mask, units):
                    raise MaskConflictError(
                        f"the {label} layer of {node.describe()} keeps units {_kept(units)} but "
                        f"its initial state (input {slot}, from {state.origin!r}) keeps "
                        f"{_kept(state.mask)}; delete the same units from the {label} direction "
                        "and from the layer producing its state"
                    )

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        forward_slots, backward_slots = _state_slots(node)
        states = set(forward_slots + backward_slots)
        # Initial states hold units, not features: no weight reads them (`infer`
        # checks that they keep the units of their direction).
        data_keeps = [None if slot in states else keep for slot, keep in enumerate(keeps)]
        if all(keep is None for keep in data_keeps):
            return node
        self._refuse(node, next(s for s, k in enumerate(data_keeps) if k is not None))
        masks = self.unit_masks(node)
        inners = []
        for which, (_, label) in enumerate(_DIRECTIONS):
            inner, rule = self.direction(node, which, None if masks is None else masks[which])
            with _inside(node, inner, label):
                inners.append(rule.slice_inputs(inner, inputs, data_keeps))
        return self._rewrap(node, inners, inputs_changed=True)

    def owned_output(self, node: Node) -> Tensor | None:
        masks = self.unit_masks(node)
        if masks is None or self.problem(node) is not None:
            return None
        if not self.direction(node, 0, masks[0])[1].owns_channels:
            return None  # e.g. a wrapped layer without a rule
        first = node.outputs[0]
        if node.config.get("merge_mode") is not None:
            return first
        both = freeze_array(np.concatenate(masks))  # forward units, then backward units
        return _with_units(
            first, both, DerivedSpace(Derivation.BOTH_DIRECTIONS, node.name, first.space)
        )

    def delete_channels(self, node: Node, mask: np.ndarray) -> Node:
        self._refuse(node)
        masks = self.unit_masks(node)
        if masks is None:
            raise not_owner_error(node)
        mode = node.config.get("merge_mode")
        if mode in _COUPLED:
            new = (mask, mask)
        else:
            half = mask.size // 2
            new = (freeze_array(mask[:half]), freeze_array(mask[half:]))
            if new[0].sum() != new[1].sum():
                raise ChannelError(
                    f"deleting these channels of {node.describe()} (merge_mode={mode!r}) would "
                    f"keep {int(new[0].sum())} forward units but {int(new[1].sum())} backward "
                    "units, and Keras builds both directions with the same number of units. "
                    f"Channels 0..{half - 1} are forward units and {half}..{2 * half - 1} "
                    f"backward units: delete as many of each (e.g. [j, j + {half}] deletes "
                    "unit j of both directions)"
                )
        if all(np.array_equal(a, b) for a, b in zip(new, masks)):
            return node
        inners = []
        for which, (_, label) in enumerate(_DIRECTIONS):
            inner, rule = self.direction(node, which, masks[which])
            with _inside(node, inner, label):
                inners.append(rule.delete_channels(inner, new[which]))
        node = self._rewrap(node, inners, inputs_changed=False)
        space = node.outputs[0].space
        return attrs.evolve(node, outputs=self._outputs(node, space, *new))

    def check(self, node: Node) -> list[str]:
        masks = self.unit_masks(node)
        if masks is None:
            return []
        found = []
        for which, (_, label) in enumerate(_DIRECTIONS):
            inner, rule = self.direction(node, which, masks[which])
            found += [f"has a {label} {inner.class_name} that {p}" for p in problems(rule, inner)]
        return found
