"""Rules for the convolutions Conv1D, Conv2D and Conv3D (both data formats, any groups)."""

from __future__ import annotations

import attrs
import numpy as np

from kgraph.errors import ChannelError
from kgraph.ir import Node, seal
from kgraph.rules.base import take
from kgraph.rules.channelwise import data_format_axis
from kgraph.rules.producer import ProducerRule

__all__ = ["ConvRule", "input_channels"]


def input_channels(node: Node) -> int | None:
    """Channels of input 0 on the axis the layer reads (None when they sit elsewhere)."""
    if not node.inputs:
        return None
    source = node.inputs[0]
    if source.axis is None or source.axis != data_format_axis(node, len(source.shape)):
        return None
    return source.channels


def _per_group(deleted: np.ndarray, groups: int) -> np.ndarray:
    """How many of `deleted` (boolean, contiguous groups) fall in each group."""
    return deleted.reshape(groups, -1).sum(axis=1)


class ConvRule(ProducerRule):
    """Conv1D/2D/3D with any `groups`: kernel (*k, in / groups, filters), bias (filters,).

    With G groups, input channels split into G contiguous groups of in / G and filters
    into G groups of filters / G; output group g reads input group g only. Keras needs
    equal groups, so:

    - input deletions must take the same number of channels from every group; each
      group loses its own kernel rows (the kernel slice under its filters);
    - an input group deleted entirely takes its output group along (those filters
      would read nothing and output only their bias, like a depthwise conv's outputs),
      and `groups` decreases; the remaining groups must again lose equal counts;
    - `DeleteChannels` must take the same number of filters from every group; a whole
      output group cannot go alone (its input group would stay), so it is refused.

    Keras keeps this kernel layout in both data formats; only the tensors' channel
    axis moves (1 for channels_first, last for channels_last).
    """

    channels_key = "filters"
    known_weights = ("kernel", "bias")

    def output_axis(self, node: Node, rank: int) -> int:
        return data_format_axis(node, rank)

    def input_axis(self, node: Node, rank: int) -> int:
        return data_format_axis(node, rank)

    def groups(self, node: Node) -> int:
        return int(node.config.get("groups", 1) or 1)

    def slice_input_weights(self, node: Node, keep: np.ndarray) -> Node:
        groups = self.groups(node)
        kernel = node.weight("kernel")
        if groups == 1:
            return node.with_weights(kernel=take(kernel, keep, kernel.ndim - 2))
        size, filters = keep.size // groups, kernel.shape[-1]
        per_group = filters // groups
        rows = keep.reshape(groups, size)
        deleted = _per_group(~keep, groups)
        gone = deleted == size
        if len(set(deleted[~gone].tolist())) > 1:
            raise ChannelError(
                f"channels deleted upstream reach {node.describe()}, which has groups={groups} "
                f"(input groups of {size} channels): every group must keep the same number of "
                f"channels, but the deletion takes {deleted.tolist()} channels per group. "
                "Delete the same number of channels from each group, or whole groups"
            )
        parts = [
            take(kernel[..., g * per_group : (g + 1) * per_group], rows[g], kernel.ndim - 2)
            for g in range(groups)
            if not gone[g]
        ]
        node = node.with_weights(kernel=np.concatenate(parts, axis=-1))
        if gone.any():
            node = self._drop_groups(node, gone, per_group)
        return node

    def _drop_groups(self, node: Node, gone: np.ndarray, per_group: int) -> Node:
        """`node` without the output groups `gone` (their inputs were all deleted)."""
        out = node.outputs[0]
        if out.mask is None:
            raise ChannelError(
                f"a whole input group of {node.describe()} was deleted, which would remove its "
                "output group, but kgraph does not track the channels of its output"
            )
        keep = np.repeat(~gone, per_group)
        if node.has_weight("bias"):
            node = node.with_weights(bias=take(node.weight("bias"), keep, 0))
        lifted = out.mask.copy()
        lifted[np.flatnonzero(out.mask)[~keep]] = False
        node = node.with_config(groups=int(gone.size - gone.sum()), filters=int(keep.sum()))
        return attrs.evolve(node, outputs=(out.with_mask(seal(lifted)), *node.outputs[1:]))

    def delete_channels(self, node: Node, mask: np.ndarray) -> Node:
        groups = self.groups(node)
        old = node.outputs[0]
        keep = mask[old.mask]
        if groups > 1 and not keep.all():
            size = keep.size // groups
            deleted = _per_group(~keep, groups)
            if len(set(deleted.tolist())) > 1:
                hint = ""
                if (deleted == size).any():
                    hint = (
                        "; a whole group goes only with its input channels: delete input "
                        "group g's channels upstream and output group g goes with them"
                    )
                raise ChannelError(
                    f"cannot delete those filters of {node.describe()}, which has "
                    f"groups={groups} (output groups of {size} filters): every group must keep "
                    f"the same number of filters, but the deletion takes {deleted.tolist()} "
                    f"filters per group. Delete the same number from each group{hint}"
                )
        return super().delete_channels(node, mask)

    def slice_output_weights(self, node: Node, keep: np.ndarray) -> Node:
        kernel = node.weight("kernel")
        updates = {"kernel": take(kernel, keep, kernel.ndim - 1)}
        if node.has_weight("bias"):
            updates["bias"] = take(node.weight("bias"), keep, 0)
        return node.with_weights(**updates)

    def check(self, node: Node) -> list[str]:
        problems = super().check(node)
        groups = self.groups(node)
        filters = node.config.get("filters")
        if isinstance(filters, int) and filters % groups:
            problems.append(f"has filters={filters} not divisible by groups={groups}")
        channels = input_channels(node)
        if channels is not None and node.has_weight("kernel"):
            kernel = node.weight("kernel")
            if kernel.shape[-2] * groups != channels:
                problems.append(
                    f"has kernel {kernel.shape} with groups={groups} for {channels} input channels"
                )
        return problems
