"""Rules for the layers transformers are made of (keras-hub and Keras).

`kgraph.lift` traces a transformer block's `call` into its sublayers (see
`kgraph.trace`), so most of a block is ordinary layers: Dense/EinsumDense
projections, norms, residual `Add`s. What is left needs the rules here:

- `GroupedQueryAttentionRule`: attention layers with query, key, value and output
  projections of shape (hidden, heads, head_dim) — Keras' `GroupQueryAttention` and
  keras-hub's Llama, Mistral, Qwen and Gemma attentions. They stay one node (their
  heads come in groups: query head i reads key/value head i // g), absorb deleted
  hidden channels on their input, carry the query's channels to their output like
  `MultiHeadAttention`, and delete heads with `DeleteHeads`: a key/value head takes
  its query heads with it, and every group must keep as many query heads.
- `ReversibleEmbeddingRule`: an embedding whose transposed table also maps hidden
  states back to the vocabulary (`reverse=True`, tied or untied output head).
- `PositionEmbeddingRule`: one learned vector per position, as wide as its input.
- `RotaryEmbeddingRule`: rotates pairs of features on its `feature_axis`: channels
  elsewhere (attention heads) pass, its features can never lose one.
- `GetItemRule`: `x[:, 0]` and friends keep the channels of an axis they keep whole.
- `LayerMethodRule`: the traced helper methods (`kgraph.trace.LayerMethod`, e.g. a
  causal mask); their outputs carry no channels and follow any input width.

Example:
    >>> graph = kgraph.lift(llama_backbone)
    >>> graph.apply(DeleteHeads("transformer_layer_0/self_attention", kv_heads=[1]))
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from kgraph.errors import ChannelError, UnsupportedLayerError
from kgraph.ir import Node, Slot, Tensor, full_mask
from kgraph.rules.base import (
    Rule,
    WeightlessRule,
    carry,
    data_slots,
    expect_weights,
    fresh_output,
    normalize_axis,
    positions,
    take_weight,
)
from kgraph.rules.capabilities import (
    ChecksWeights,
    CountsMacs,
    HasHeads,
    HasRestrictions,
    HeadMasks,
)
from kgraph.rules.dense import EmbeddingRule

__all__ = [
    "GetItemRule",
    "GroupedQueryAttentionRule",
    "LayerMethodRule",
    "PatchEmbeddingRule",
    "PositionEmbeddingRule",
    "ReversibleEmbeddingRule",
    "RotaryEmbeddingRule",
]

QUERY_HEADS = "heads"  # meta: lifted query heads kept (a boolean mask)
KV_HEADS = "kv_heads"  # meta: lifted key/value heads kept


# --------------------------------------------------------------------- attention


class GroupedQueryAttentionRule(Rule, HasHeads, HasRestrictions, CountsMacs, ChecksWeights):
    """Attention with grouped query heads (see the module docstring).

    Args:
        heads_axis: the axis of the heads in the query/key/value kernels (0 when
            they are (heads, hidden, head_dim), as in Gemma; else 1).
        self_attention: the layer attends over its first input only (keras-hub);
            False: it takes `(query, value, key)` like Keras' `GroupQueryAttention`.
        derived_head_dim: the layer computes head_dim as hidden_dim // num_query_heads
            when it builds (keras-hub's Llama and Qwen), so neither its heads nor the
            hidden size can change alone: both are refused, with that reason.
    """

    def __init__(
        self, heads_axis: int = 1, self_attention: bool = True, derived_head_dim: bool = False
    ) -> None:
        self.heads_axis = heads_axis
        self.hidden_axis = 1 - heads_axis
        self.self_attention = self_attention
        self.derived_head_dim = derived_head_dim

    def _derived(self, node: Node) -> str:
        return (
            f"{node.describe()} computes head_dim as hidden_dim // num_query_heads when it "
            "builds, so its heads and the hidden size it reads cannot change (only the FFN "
            "of its block can)"
        )

    def restricts(self, node: Node) -> str:
        return self._derived(node) if self.derived_head_dim else ""

    # -- reading the node ------------------------------------------------------------

    def roles(self, node: Node) -> dict[str, int]:
        """Input slot of the query, value and key."""
        if self.self_attention:
            slot = _first_argument(node)
            return {"query": slot, "value": slot, "key": slot}
        positional = list(node.args)
        found: dict[str, Any] = {}
        for index, role in enumerate(("query", "value", "key")):
            value = positional[index] if index < len(positional) else node.kwargs.get(role)
            if isinstance(value, Slot):
                found[role] = value.index
        found.setdefault("key", found.get("value"))
        return {role: slot for role, slot in found.items() if slot is not None}

    def head_masks(self, node: Node) -> HeadMasks:
        """The lifted query and key/value heads `node` keeps."""
        query = node.meta.get(QUERY_HEADS)
        kv = node.meta.get(KV_HEADS)
        if query is None:
            query = full_mask(int(node.config["num_query_heads"]))
        if kv is None:
            kv = full_mask(int(node.config["num_key_value_heads"]))
        return HeadMasks(query, kv)

    # -- Rule ------------------------------------------------------------------------

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        out = node.outputs[0]
        query = inputs[self.roles(node)["query"]]
        if query.axis == len(query.shape) - 1:
            first = carry(out, query, axis=len(out.shape) - 1)
        else:
            first = out if out.space is not None else fresh_output(node, out)
        rest = [o if o.space is not None else fresh_output(node, o) for o in node.outputs[1:]]
        return (first, *rest)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        roles = self.roles(node)
        if not any(keeps[slot] is not None for slot in roles.values()):
            return node  # the attention mask or another input without channels
        expect_weights(node, self, *_KNOWN)
        updates: dict[str, Any] = {}
        for role, slot in roles.items():
            keep = keeps[slot]
            if keep is None:
                continue
            if inputs[slot].axis != len(inputs[slot].shape) - 1:
                raise self.unsupported(
                    node, inputs[slot], slot, "its channels are not the last axis"
                )
            if self.derived_head_dim:
                raise self.unsupported(node, inputs[slot], slot, self._derived(node))
            updates[f"{role}/kernel"] = take_weight(node, f"{role}/kernel", keep, self.hidden_axis)
            if role == "query":
                updates["attention_output/kernel"] = take_weight(
                    node, "attention_output/kernel", keep, -1
                )
                if node.has_weight("attention_output/bias"):
                    updates["attention_output/bias"] = take_weight(
                        node, "attention_output/bias", keep, 0
                    )
        return node.with_weights(**updates)

    # -- heads -----------------------------------------------------------------------

    def delete_heads(self, node: Node, query: np.ndarray, kv: np.ndarray | None = None) -> Node:
        """`node` keeping the lifted query heads `query` and key/value heads `kv`.

        A deleted key/value head must take all its query heads with it, and every
        remaining group must keep as many query heads (`ChannelError` otherwise).
        """
        old = self.head_masks(node)
        kv = old.kv if kv is None else kv
        if self.derived_head_dim and not (
            np.array_equal(query, old.query) and np.array_equal(kv, old.kv)
        ):
            raise ChannelError(f"cannot delete heads: {self._derived(node)}")
        g = old.group
        groups = query.reshape(kv.size, g)
        orphans = [j for j in range(kv.size) if not kv[j] and groups[j].any()]
        if orphans:
            raise ChannelError(
                f"{node.describe()} would keep query heads of key/value heads {orphans} it "
                f"deletes; delete their query heads too (kv_heads=[...] does that)"
            )
        kept = {int(groups[j].sum()) for j in range(kv.size) if kv[j]}
        if not kv.any() or kept == {0}:
            raise ChannelError(f"cannot delete every head of {node.describe()}; keep at least one")
        if len(kept) != 1:
            per_group = [int(groups[j].sum()) for j in range(kv.size) if kv[j]]
            raise ChannelError(
                f"{node.describe()} has grouped-query attention ({kv.size} key/value heads, "
                f"{g} query heads each), and every group must keep as many query heads, but "
                f"these deletions keep {per_group} per group; delete the same number of query "
                f"heads from each group (query heads {g}*j .. {g}*j+{g - 1} share key/value "
                "head j), or delete whole key/value heads with kv_heads=[...]"
            )
        query_keep, kv_keep = query[old.query], kv[old.kv]
        if query_keep.all() and kv_keep.all():
            return node
        expect_weights(node, self, *_KNOWN)
        updates: dict[str, Any] = {}
        for role, keep in (("query", query_keep), ("key", kv_keep), ("value", kv_keep)):
            updates[f"{role}/kernel"] = take_weight(node, f"{role}/kernel", keep, self.heads_axis)
            if node.has_weight(f"{role}/bias"):
                updates[f"{role}/bias"] = take_weight(node, f"{role}/bias", keep, 0)
        updates["attention_output/kernel"] = take_weight(
            node, "attention_output/kernel", query_keep, 0
        )
        node = node.with_weights(**updates).with_config(
            num_query_heads=int(query.sum()), num_key_value_heads=int(kv.sum())
        )
        return attrs.evolve(node, meta={**node.meta, QUERY_HEADS: query, KV_HEADS: kv})

    def head_norms(self, node: Node, order: int) -> np.ndarray:
        """Per kept query head: the `order`-norm of its query and output weights."""
        query = np.moveaxis(np.asarray(node.weight("query/kernel"), np.float64), self.heads_axis, 0)
        output = np.asarray(node.weight("attention_output/kernel"), np.float64)
        total = (np.abs(query) ** order).reshape(query.shape[0], -1).sum(axis=1)
        total += (np.abs(output) ** order).reshape(output.shape[0], -1).sum(axis=1)
        return total ** (1.0 / order)

    # -- capabilities ----------------------------------------------------------------

    def macs(self, node: Node) -> int:
        roles = self.roles(node)
        steps = {r: positions(node.inputs[s]) for r, s in roles.items()}

        def size(name: str) -> int:
            return math.prod(node.weight_shape(name))

        total = sum(size(f"{r}/kernel") * steps[r] for r in ("query", "key", "value"))
        total += size("attention_output/kernel") * steps["query"]
        query_shape = node.weight_shape("query/kernel")
        heads, head_dim = query_shape[self.heads_axis], query_shape[2]
        return total + heads * steps["query"] * steps["key"] * 2 * head_dim

    def check(self, node: Node) -> list[str]:
        masks = self.head_masks(node)
        expected = {
            "query/kernel": (self.heads_axis, int(masks.query.sum())),
            "key/kernel": (self.heads_axis, int(masks.kv.sum())),
            "value/kernel": (self.heads_axis, int(masks.kv.sum())),
            "attention_output/kernel": (0, int(masks.query.sum())),
        }
        problems = []
        for name, (axis, count) in expected.items():
            if node.has_weight(name) and node.weight_shape(name)[axis] != count:
                problems.append(
                    f"has weight {name} of shape {node.weight_shape(name)} for {count} heads"
                )
        if int(node.config["num_query_heads"]) != int(masks.query.sum()):
            problems.append(f"has num_query_heads={node.config['num_query_heads']}")
        return problems


def _first_argument(node: Node) -> int:
    """The input slot of the first argument of the layer's `call` (hidden states),
    given by position or by name."""
    if node.args and isinstance(node.args[0], Slot):
        return node.args[0].index
    parameters = [p for p in inspect.signature(node.cls.call).parameters if p != "self"]
    value = node.kwargs.get(parameters[0]) if parameters else None
    if isinstance(value, Slot):
        return value.index
    slots = data_slots(node)
    if not slots:
        raise UnsupportedLayerError(
            f"kgraph cannot tell which input of {node.describe()} holds its hidden states"
        )
    return slots[0]


_KNOWN = (
    *(f"{p}/{w}" for p in ("query", "key", "value") for w in ("kernel", "bias")),
    "attention_output/kernel",
    "attention_output/bias",
)


# --------------------------------------------------------------------- embeddings


def _reverse(node: Node) -> bool:
    reverse = node.kwargs.get("reverse", False)
    if len(node.args) > 1 and isinstance(node.args[1], bool):
        reverse = node.args[1]
    return bool(reverse)


class ReversibleEmbeddingRule(EmbeddingRule):
    """ReversibleEmbedding: `embeddings` (vocabulary, hidden), and for an untied output
    head `reverse_embeddings` (hidden, vocabulary).

    A forward call owns the hidden channels (deleting them slices both tables along
    the hidden axis); a `reverse=True` call reads hidden channels and outputs logits
    over the vocabulary, so it slices the same axis when its input loses channels.
    Both calls of one layer then agree on the tables.
    """

    known_weights = ("embeddings", "reverse_embeddings")

    def output_weight_axes(self, node: Node) -> dict[str, int]:
        axes = {"embeddings": 1}
        if node.has_weight("reverse_embeddings"):
            axes["reverse_embeddings"] = 0
        return axes

    def owned_output(self, node: Node) -> Tensor | None:
        return None if _reverse(node) else super().owned_output(node)

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if _reverse(node):
            out = node.outputs[0]
            return (out if out.space is not None else fresh_output(node, out),)
        return super().infer(node, inputs)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        if not _reverse(node):
            return super().slice_inputs(node, inputs, keeps)
        keep = keeps[0]
        if keep is None:
            return node
        if inputs[0].axis != len(inputs[0].shape) - 1:
            raise self.unsupported(node, inputs[0], 0, "its hidden channels are not the last axis")
        expect_weights(node, self, *self.known_weights)
        node = node.with_weights(
            **{
                name: take_weight(node, name, keep, axis)
                for name, axis in self.output_weight_axes(node).items()
            }
        )
        return node.with_config(output_dim=int(keep.sum()))  # as the forward call has it

    def check(self, node: Node) -> list[str]:
        hidden = int(node.config.get("output_dim", 0))
        return [
            f"has weight {name} of shape {node.weight_shape(name)} for output_dim={hidden}"
            for name, axis in self.output_weight_axes(node).items()
            if node.weight_shape(name)[axis] != hidden
        ]


class PositionEmbeddingRule(Rule, ChecksWeights):
    """PositionEmbedding: `embeddings` (sequence_length, hidden) as wide as its input;
    its output carries the input's channels, and the table is sliced with them."""

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        return (carry(node.outputs[0], inputs[0]),)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        keep = keeps[0]
        if keep is None:
            return node
        if inputs[0].axis != len(inputs[0].shape) - 1:
            raise self.unsupported(node, inputs[0], 0, "its channels are not the last axis")
        expect_weights(node, self, "embeddings")
        return node.with_weights(embeddings=take_weight(node, "embeddings", keep, 1))

    def check(self, node: Node) -> list[str]:
        source = node.inputs[0] if node.inputs else None
        if source is None or source.axis != len(source.shape) - 1:
            return []
        width = node.weight_shape("embeddings")[1]
        return [] if width == source.channels else [f"has embeddings of width {width}"]


class RotaryEmbeddingRule(WeightlessRule, HasRestrictions):
    """RotaryEmbedding: rotates feature pairs along `feature_axis` at each position.

    Channels on another axis (a block's attention heads) pass through; the features
    themselves cannot lose any (rotation pairs feature i with i + d/2).
    """

    def _feature_axis(self, node: Node, rank: int) -> int:
        return normalize_axis(int(node.config.get("feature_axis", -1)), rank)

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        source = inputs[0]
        if source.axis is None or source.axis == self._feature_axis(node, len(source.shape)):
            out = node.outputs[0]
            return (out if out.space is not None else fresh_output(node, out, axis=None),)
        return (carry(node.outputs[0], source),)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        source = inputs[0]
        if keeps[0] is not None and source.axis == self._feature_axis(node, len(source.shape)):
            raise self.unsupported(
                node, source, 0, "rotary embeddings pair its features, which cannot lose any"
            )
        return node

    def restricts(self, node: Node) -> str:
        source = node.inputs[0] if node.inputs else None
        if source is not None and source.axis == self._feature_axis(node, len(source.shape)):
            return f"{node.describe()} rotates them in pairs (rotary embedding)"
        return ""


# --------------------------------------------------------------------- traced ops


def _index_map(key: Any, rank: int) -> dict[int, int] | None:
    """For `x[key]` of a `rank`-dimensional x: input axis -> output axis, for the axes
    kept whole (`:`); None when the key is not a plain index."""
    items = list(key) if isinstance(key, (tuple, list)) else [key]
    if sum(item is Ellipsis for item in items) > 1:
        return None
    consumed = sum(1 for item in items if item is not None and item is not Ellipsis)
    if Ellipsis not in items:
        items.append(Ellipsis)
    expanded: list[Any] = []
    for item in items:
        expanded += [slice(None)] * (rank - consumed) if item is Ellipsis else [item]
    mapping: dict[int, int] = {}
    axis = out = 0
    for item in expanded:
        if item is None:
            out += 1
        elif isinstance(item, (int, np.integer)):
            axis += 1
        elif isinstance(item, slice):
            if item == slice(None):
                mapping[axis] = out
            axis += 1
            out += 1
        else:
            return None
    return mapping


class GetItemRule(WeightlessRule):
    """`x[key]` (keras.ops indexing): channels on an axis the key keeps whole move to
    that axis of the output; indexing the channel axis itself is refused."""

    def _key(self, node: Node) -> Any:
        return node.args[1] if len(node.args) > 1 else node.kwargs.get("key")

    def _target(self, node: Node, source: Tensor) -> int | None:
        if source.axis is None:
            return None
        mapping = _index_map(self._key(node), len(source.shape))
        return None if mapping is None else mapping.get(source.axis)

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        source, out = inputs[0], node.outputs[0]
        target = self._target(node, source)
        if target is None:
            return (out if out.space is not None else fresh_output(node, out, axis=None),)
        return (carry(out, source, axis=target),)

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        if keeps[0] is not None and self._target(node, inputs[0]) is None:
            raise self.unsupported(node, inputs[0], 0, "it indexes the channel axis")
        return node


class LayerMethodRule(WeightlessRule):
    """A traced helper method kept as one op (`kgraph.trace.LayerMethod`), such as a
    causal mask: it recomputes from its inputs' shapes, so any input width is fine,
    and its outputs carry no channels."""

    any_channel_count = True

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        return tuple(
            out if out.space is not None else fresh_output(node, out, axis=None)
            for out in node.outputs
        )


class PatchEmbeddingRule(EmbeddingRule):
    """ViT's patching layer: a convolution of the image into `hidden_dim` channels, a
    class token and a position embedding, all as wide as the hidden size, which it
    owns (deleting hidden channels slices all four on their last axis)."""

    channels_key = "hidden_dim"
    known_weights = ("class_token", "kernel", "bias", "embeddings")

    def output_weight_axes(self, node: Node) -> dict[str, int]:
        return {name: -1 for name in self.known_weights if node.has_weight(name)}

    def slice_inputs(
        self, node: Node, inputs: Sequence[Tensor], keeps: Sequence[np.ndarray | None]
    ) -> Node:
        for slot, keep in enumerate(keeps):
            if keep is not None:
                raise self.unsupported(node, inputs[slot], slot, "its input is the image")
        return node

    def check(self, node: Node) -> list[str]:
        hidden = int(node.config.get("hidden_dim", 0))
        return [
            f"has weight {name} of shape {node.weight_shape(name)} for hidden_dim={hidden}"
            for name in self.known_weights
            if node.has_weight(name) and node.weight_shape(name)[-1] != hidden
        ]
