"""Rules for attention layers, and the head slicing behind `DeleteHeads`.

Attention and AdditiveAttention (`[query, value, key]`): the scores contract the
query's and the key's channels, so both must keep the same ones; the output
carries the value's channels. AdditiveAttention's per-channel `scale` is sliced.

MultiHeadAttention:

Weights (Keras 3): query/key/value kernels (in, heads, dim) with biases (heads, dim),
and attention_output kernel (heads, value_dim, out) with bias (out,).

- Deleted channels of the query, key or value input remove kernel rows.
- With `output_shape=None` the output is as wide as the query, so it carries the
  query's channels (the usual residual `x + mha(x, x)` stays consistent); with an
  explicit `output_shape` the output channels are the layer's own.
- Heads are deleted by `DeleteHeads`; the kept heads are remembered in
  `node.meta["heads"]` (lifted head indices), and the attention scores output
  (`return_attention_scores=True`) carries them on its axis 1.

Example:
    >>> graph.apply(DeleteHeads("mha", [0, 3]), DeleteChannels("dense", [2]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from kgraph.errors import ChannelError, UnsupportedLayerError
from kgraph.ir import Derivation, DerivedSpace, Node, Slot, Tensor, full_mask
from kgraph.rules.base import (
    Rule,
    carry,
    data_slots,
    expect_weights,
    fresh_output,
    positions,
    take_weight,
)
from kgraph.rules.capabilities import (
    ChecksWeights,
    CountsMacs,
    HasChannelNorms,
    HasCouplings,
    HasHeads,
    HeadMasks,
)
from kgraph.rules.merge import check_same_channels

__all__ = ["DotAttentionRule", "MultiHeadAttentionRule", "head_mask"]

PROJECTIONS = ("query", "key", "value")
KNOWN = (
    *(f"{p}/{w}" for p in PROJECTIONS for w in ("kernel", "bias")),
    "attention_output/kernel",
    "attention_output/bias",
)


def head_mask(node: Node) -> np.ndarray:
    """The lifted heads `node` keeps (all of them until `DeleteHeads` runs)."""
    heads = node.meta.get("heads")
    return heads if heads is not None else full_mask(int(node.config["num_heads"]))


def _roles(node: Node) -> dict[str, int]:
    """Input slot of the query, value and key (the key defaults to the value)."""
    positional = list(node.args)
    found: dict[str, Any] = {}
    for index, role in enumerate(("query", "value", "key")):
        value = positional[index] if index < len(positional) else node.kwargs.get(role)
        if isinstance(value, Slot):
            found[role] = value.index
    found.setdefault("key", found.get("value"))
    return {role: slot for role, slot in found.items() if slot is not None}


class MultiHeadAttentionRule(Rule, HasHeads, CountsMacs, HasChannelNorms, ChecksWeights):
    """MultiHeadAttention: absorbs its inputs' channels; owns its output with `output_shape`."""

    owns_channels = True

    def _output_width_is_own(self, node: Node) -> bool:
        shape = node.config.get("output_shape")
        return shape is not None

    def owned_output(self, node: Node) -> Tensor | None:
        if not self._output_width_is_own(node):
            return None
        return super().owned_output(node)

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        out = node.outputs[0]
        query = inputs[_roles(node)["query"]]
        if self._output_width_is_own(node):
            first = out if out.space is not None else fresh_output(node, out)
        elif query.axis == len(query.shape) - 1:
            first = carry(out, query, axis=len(out.shape) - 1)
        else:
            first = out if out.space is not None else fresh_output(node, out)
        outputs = [first]
        for scores in node.outputs[1:]:  # attention scores (batch, heads, ...)
            heads = head_mask(node)
            shape = (scores.shape[0], int(heads.sum()), *scores.shape[2:])
            outputs.append(
                attrs.evolve(
                    scores,
                    shape=shape,
                    axis=1,
                    mask=heads,
                    space=DerivedSpace(Derivation.HEADS, node.name),
                )
            )
        return tuple(outputs)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        roles = _roles(node)
        if not any(keeps[slot] is not None for slot in roles.values()):
            return node
        expect_weights(node, self, *KNOWN)
        updates: dict[str, np.ndarray] = {}
        for role, slot in roles.items():
            keep = keeps[slot]
            if keep is None:
                continue
            if inputs[slot].axis != len(inputs[slot].shape) - 1:
                raise self.unsupported(
                    node, inputs[slot], slot, "its channels are not the last axis"
                )
            updates[f"{role}/kernel"] = take_weight(node, f"{role}/kernel", keep, 0)
            if role == "query" and not self._output_width_is_own(node):
                updates.update(_slice_output(node, keep))
        return node.with_weights(**updates)

    def delete_channels(self, node: Node, mask: np.ndarray) -> Node:
        old = node.outputs[0]
        keep = mask[old.mask]
        shape = tuple(node.config["output_shape"])
        if len(shape) != 1:
            raise UnsupportedLayerError(
                f"{node.describe()} has output_shape {shape}; kgraph deletes channels only "
                "from a one-dimensional output_shape"
            )
        expect_weights(node, self, *KNOWN)
        node = node.with_weights(**_slice_output(node, keep))
        node = node.with_config(output_shape=(int(mask.sum()),))
        return attrs.evolve(node, outputs=(old.with_mask(mask), *node.outputs[1:]))

    def macs(self, node: Node) -> int:
        roles = _roles(node)
        steps = {r: positions(node.inputs[s]) for r, s in roles.items()}

        def size(name: str) -> int:
            return math.prod(node.weight_shape(name))

        total = sum(size(f"{r}/kernel") * steps[r] for r in PROJECTIONS if r in steps)
        total += size("attention_output/kernel") * steps["query"]
        heads, key_dim = node.weight_shape("key/kernel")[1:]
        value_dim = node.weight_shape("value/kernel")[2]
        return total + heads * steps["query"] * steps["key"] * (key_dim + value_dim)

    def channel_norms(self, node: Node, order: int) -> np.ndarray | None:
        if self.owned_output(node) is None:
            return None
        kernel = np.abs(np.asarray(node.weight("attention_output/kernel"), dtype=np.float64))
        total = (kernel.reshape(-1, kernel.shape[-1]) ** order).sum(axis=0)
        if node.has_weight("attention_output/bias"):
            total += np.abs(node.weight("attention_output/bias")) ** order
        return total ** (1.0 / order)

    def head_masks(self, node: Node) -> HeadMasks:
        return HeadMasks(head_mask(node))

    def head_norms(self, node: Node, order: int) -> np.ndarray:
        total = 0.0
        for role in PROJECTIONS:
            kernel = np.moveaxis(np.asarray(node.weight(f"{role}/kernel"), np.float64), 1, 0)
            total = total + (np.abs(kernel) ** order).reshape(kernel.shape[0], -1).sum(axis=1)
        output = np.asarray(node.weight("attention_output/kernel"), np.float64)
        total = total + (np.abs(output) ** order).reshape(output.shape[0], -1).sum(axis=1)
        return total ** (1.0 / order)

    def delete_heads(self, node: Node, query: np.ndarray, kv: np.ndarray | None = None) -> Node:
        """`node` keeping only the lifted heads `query` (a mask over the heads it was
        lifted with); MultiHeadAttention has no key/value head groups (`kv`)."""
        if kv is not None:
            raise ChannelError(
                f"{node.describe()} has no key/value head groups (every head has its own "
                "key and value); delete heads with heads=[...]"
            )
        heads = query
        old = head_mask(node)
        if not heads.any():
            raise ChannelError(f"cannot delete every head of {node.describe()}; keep at least one")
        keep = heads[old]
        if keep.all():
            return node
        expect_weights(node, self, *KNOWN)
        updates = {}
        for role in PROJECTIONS:
            updates[f"{role}/kernel"] = take_weight(node, f"{role}/kernel", keep, 1)
            if node.has_weight(f"{role}/bias"):
                updates[f"{role}/bias"] = take_weight(node, f"{role}/bias", keep, 0)
        updates["attention_output/kernel"] = take_weight(node, "attention_output/kernel", keep, 0)
        node = node.with_weights(**updates).with_config(num_heads=int(heads.sum()))
        node = attrs.evolve(node, meta={**node.meta, "heads": heads})
        return attrs.evolve(node, outputs=self.infer(node, node.inputs))

    def check(self, node: Node) -> list[str]:
        heads = int(node.config["num_heads"])
        return [
            f"has weight {name} of shape {node.weight(name).shape} for {heads} heads"
            for name, axis in (("query/kernel", 1), ("attention_output/kernel", 0))
            if node.has_weight(name) and node.weight(name).shape[axis] != heads
        ]


def _slice_output(node: Node, keep: np.ndarray) -> dict[str, np.ndarray]:
    updates = {"attention_output/kernel": take_weight(node, "attention_output/kernel", keep, -1)}
    if node.has_weight("attention_output/bias"):
        updates["attention_output/bias"] = take_weight(node, "attention_output/bias", keep, 0)
    return updates


class DotAttentionRule(Rule, HasCouplings):
    """Attention / AdditiveAttention: query and key agree, the output carries the value."""

    def _slots(self, node: Node) -> tuple[int, int, int]:
        slots = data_slots(node)
        query, value = slots[0], slots[1]
        return query, value, slots[2] if len(slots) > 2 else value

    def couplings(self, node: Node, inputs: Sequence[Tensor]) -> list[list[Tensor]]:
        query, _, key = self._slots(node)
        pair = [inputs[query], inputs[key]]
        return [pair] if query != key and all(t.mask is not None for t in pair) else []

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        query, value, key = self._slots(node)
        check_same_channels(node, [(query, inputs[query]), (key, inputs[key])])
        source, out = inputs[value], node.outputs[0]
        if source.axis == len(source.shape) - 1:
            first = carry(out, source, axis=len(out.shape) - 1)
        else:
            first = out if out.space is not None else fresh_output(node, out)
        rest = [o if o.space is not None else fresh_output(node, o) for o in node.outputs[1:]]
        return (first, *rest)  # the scores (batch, Tq, Tv) have no channels

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        query, _, key = self._slots(node)
        keep = keeps[query] if keeps[query] is not None else keeps[key]
        if keep is None or not node.has_weight("scale") or node.weight("scale").ndim == 0:
            return node
        return node.with_weights(scale=take_weight(node, "scale", keep, 0))
