"""Optional capabilities of a rule, each declared by deriving from one small class.

The required core of a rule (`kgraph.rules.Rule`) says what a layer outputs and how
it slices its weights. A rule that can say more derives from these as well:

- `HasCouplings`: tensors whose channels are tied position by position (an `Add`'s
  inputs, an RNN's units and its initial state) — used by `kgraph.channel_groups`;
- `HasRestrictions`: why its channels cannot lose an arbitrary subset (a grouped
  convolution) — the group is then not prunable;
- `CanDropInputs`: an input left without channels may leave the call (Concatenate);
- `HasChannelNorms`: the weight norm of each of its own output channels — the
  "l1"/"l2" importance criteria;
- `CountsMacs`: its multiply-adds, when the default count (each `*kernel` entry once
  per output position) is wrong;
- `ChecksWeights`: problems with its weights for its channels — `Graph.verify`;
- `HasHeads`: attention heads it can delete — `DeleteHeads` and head pruning.

Code that uses a capability asks through the functions below, which give the
neutral answer for rules without it.

Example:
    >>> class MyMergeRule(kgraph.rules.WeightlessRule, HasCouplings):
    ...     def couplings(self, node, inputs):
    ...         return [list(inputs)]
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from kgraph.ir import Node, Tensor
from kgraph.rules.base import Rule, kernel_entries, positions

__all__ = [
    "CanDropInputs",
    "ChecksWeights",
    "CountsMacs",
    "HasChannelNorms",
    "HasCouplings",
    "HasHeads",
    "HasRestrictions",
    "HeadMasks",
    "can_drop",
    "channel_norms",
    "couplings",
    "default_macs",
    "drop_inputs",
    "macs",
    "problems",
    "restriction",
]


class HasCouplings:
    """The rule knows tensors whose channels must stay the same."""

    def couplings(self, node: Node, inputs: Sequence[Tensor]) -> list[list[Tensor]]:
        """Sets of tensors (inputs or outputs) that must keep the same channels."""
        raise NotImplementedError


class HasRestrictions:
    """The rule knows why the channels it reads or owns cannot lose any subset."""

    def restricts(self, node: Node) -> str:
        """Why not ("" when they can)."""
        raise NotImplementedError


class CanDropInputs:
    """An input whose channels were all deleted can leave the call."""

    def can_drop(self, node: Node, tensor: Tensor) -> bool:
        """True when input `tensor`, left without channels, can leave the call."""
        raise NotImplementedError

    def drop_inputs(self, node: Node, slots: Sequence[int]) -> Node:
        """`node` about to lose the inputs on `slots`: what it must remember of them
        (the slots themselves are removed by `PropagateMasks`)."""
        raise NotImplementedError


class HasChannelNorms:
    """The rule can weigh each of the layer's own output channels."""

    def channel_norms(self, node: Node, order: int) -> np.ndarray | None:
        """The `order`-norm of the weights making each kept own channel (None: unknown)."""
        raise NotImplementedError


class CountsMacs:
    """The rule counts the layer's multiply-adds itself."""

    def macs(self, node: Node) -> int:
        """Multiply-adds of one call at batch size 1 (unknown dimensions count as 1)."""
        raise NotImplementedError


class ChecksWeights:
    """The rule can check the layer's weights and config against its channels."""

    def check(self, node: Node) -> list[str]:
        """Problems found (empty when consistent)."""
        raise NotImplementedError


@attrs.frozen
class HeadMasks:
    """Which lifted heads of an attention node are kept.

    Attributes:
        query: one entry per (query) head.
        kv: one entry per key/value head when heads come in groups (grouped-query
            attention: query head i reads key/value head i // group), else None.
    """

    query: np.ndarray
    kv: np.ndarray | None = None

    @property
    def group(self) -> int:
        """Query heads per key/value head, as lifted (1 without groups)."""
        return 1 if self.kv is None else self.query.size // self.kv.size


class HasHeads:
    """The rule knows the layer's attention heads and can delete some."""

    def head_masks(self, node: Node) -> HeadMasks:
        """The lifted heads `node` keeps."""
        raise NotImplementedError

    def delete_heads(self, node: Node, query: np.ndarray, kv: np.ndarray | None = None) -> Node:
        """`node` keeping the lifted (query) heads `query` and key/value heads `kv`."""
        raise NotImplementedError

    def head_norms(self, node: Node, order: int) -> np.ndarray:
        """The `order`-norm of the weights of each kept (query) head."""
        raise NotImplementedError


def couplings(rule: Rule, node: Node, inputs: Sequence[Tensor]) -> list[list[Tensor]]:
    """`rule`'s couplings for `node`, or none."""
    return rule.couplings(node, inputs) if isinstance(rule, HasCouplings) else []


def restriction(rule: Rule, node: Node) -> str:
    """Why `rule` restricts `node`'s channels, or ""."""
    return rule.restricts(node) if isinstance(rule, HasRestrictions) else ""


def can_drop(rule: Rule, node: Node, tensor: Tensor) -> bool:
    """Whether input `tensor` of `node` may leave the call (False without the capability)."""
    return isinstance(rule, CanDropInputs) and rule.can_drop(node, tensor)


def drop_inputs(rule: Rule, node: Node, slots: Sequence[int]) -> Node:
    """`node` prepared to lose the inputs on `slots`."""
    return rule.drop_inputs(node, slots) if isinstance(rule, CanDropInputs) else node


def channel_norms(rule: Rule, node: Node, order: int) -> np.ndarray | None:
    """`rule`'s channel norms for `node`, or None."""
    return rule.channel_norms(node, order) if isinstance(rule, HasChannelNorms) else None


def default_macs(node: Node) -> int:
    """Every element of a weight named `*kernel` used once per output position
    (right for Dense, EinsumDense and the convolutions)."""
    kernels = kernel_entries(node)
    if not kernels or not node.outputs:
        return 0
    return kernels * positions(node.outputs[0])


def macs(rule: Rule, node: Node) -> int:
    """Multiply-adds of one call of `node` at batch size 1."""
    return int(rule.macs(node)) if isinstance(rule, CountsMacs) else default_macs(node)


def problems(rule: Rule, node: Node) -> list[str]:
    """What `rule` finds wrong with `node`'s weights and config (none without the check)."""
    return rule.check(node) if isinstance(rule, ChecksWeights) else []
