"""Rules for the convolutions Conv1D, Conv2D and Conv3D (both data formats, any groups)."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from kgraph.errors import ChannelError
from kgraph.ir import Derivation, DerivedSpace, Node, Tensor, freeze_array, seal
from kgraph.rules.base import carry, take, take_weight
from kgraph.rules.capabilities import HasRestrictions
from kgraph.rules.channelwise import data_format_axis
from kgraph.rules.producer import ProducerRule

__all__ = ["ConvRule", "depthwise_output", "input_channels", "reads_channel_axis"]


def input_channels(node: Node) -> int | None:
    """Channels of input 0 on the axis the layer reads (None when they sit elsewhere)."""
    if not node.inputs:
        return None
    source = node.inputs[0]
    if source.axis is None or source.axis != data_format_axis(node, len(source.shape)):
        return None
    return source.channels


def reads_channel_axis(node: Node, source: Tensor) -> bool:
    """Whether `source` has tracked channels on the axis `node`'s data_format reads."""
    return source.mask is not None and source.axis == data_format_axis(node, len(source.shape))


def depthwise_output(node: Node, source: Tensor, out: Tensor, m: int) -> Tensor:
    """`out` of a depthwise convolution of `source` with `m` filters per input channel.

    Output channel `c * m + j` is filter j of input channel c, so the output's
    channels derive from the input's (with m = 1 they simply are the input's).
    """
    axis = data_format_axis(node, len(out.shape))
    if m == 1:
        return carry(out, source, axis=axis)
    mask = freeze_array(np.repeat(source.mask, m))
    shape = list(out.shape)
    shape[axis] = int(mask.sum())
    space = DerivedSpace(Derivation.DEPTHWISE, node.name, source.space, m)
    return attrs.evolve(out, shape=tuple(shape), axis=axis, mask=mask, space=space)


def _per_group(deleted: np.ndarray, groups: int) -> np.ndarray:
    """How many of `deleted` (boolean, contiguous groups) fall in each group."""
    return deleted.reshape(groups, -1).sum(axis=1)


class ConvRule(ProducerRule, HasRestrictions):
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

    When every group reads one input channel (`groups` = input channels, as in
    ConvNeXt's depthwise convolutions), the layer is a depthwise convolution and
    treated as one: it owns no channels, its outputs follow its input's channels
    (deleting input channel c deletes output group c), and channel groups couple
    them through it.

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

    def depthwise(self, node: Node) -> int | None:
        """Filters per group when each group reads one input channel tracked on the
        channel axis (a depthwise convolution), else None."""
        groups = self.groups(node)
        # A depthwise convolution left with one input channel has groups=1 and stays one.
        if groups == 1 and not node.meta.get("depthwise"):
            return None
        if not node.inputs or not node.has_weight("kernel"):
            return None
        if node.meta.get("grouped"):  # lifted with several channels per group
            return None
        kernel = node.weight("kernel")
        if kernel.shape[-2] != 1 or not reads_channel_axis(node, node.inputs[0]):
            return None
        return kernel.shape[-1] // groups

    def infer(self, node: Node, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        m = self.depthwise(attrs.evolve(node, inputs=tuple(inputs)))
        if m is None:
            return super().infer(node, inputs)
        return (depthwise_output(node, inputs[0], node.outputs[0], m),)

    def restricts(self, node: Node) -> str:
        groups = self.groups(node)
        if groups == 1 or self.depthwise(node) is not None:
            return ""
        return (
            f"{node.describe()} is a grouped convolution (groups={groups}): every group must "
            "lose as many channels as the others, which pruning cannot promise; delete them "
            "with DeleteChannels, the same number from each group"
        )

    def owned_output(self, node: Node) -> Tensor | None:
        return None if self.depthwise(node) is not None else super().owned_output(node)

    def slice_input_weights(self, node: Node, keep: np.ndarray) -> Node:
        groups = self.groups(node)
        if groups == 1:
            return node.with_weights(kernel=take_weight(node, "kernel", keep, -2))
        kernel = node.weight("kernel")
        if self.depthwise(node) is not None:
            return self._drop_depthwise_groups(node, keep, kernel.shape[-1] // groups)
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
        if node.weight("kernel").shape[-2] == 1:  # one channel per group left: its filters
            node = attrs.evolve(node, meta={**node.meta, "grouped": True})  # stay its own
        if gone.any():
            node = self._drop_groups(node, gone, per_group)
        return node

    def _drop_depthwise_groups(self, node: Node, keep: np.ndarray, per_group: int) -> Node:
        """A depthwise `node` without the groups of deleted input channels (`~keep`)."""
        outputs = np.repeat(keep, per_group)
        updates = {"kernel": take_weight(node, "kernel", outputs, -1)}
        if node.has_weight("bias"):
            updates["bias"] = take_weight(node, "bias", outputs, 0)
        node = node.with_weights(**updates)
        if keep.sum() == 1:  # groups=1 from here on, but still a depthwise convolution
            node = attrs.evolve(node, meta={**node.meta, "depthwise": True})
        return node.with_config(groups=int(keep.sum()), filters=int(outputs.sum()))

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
            node = node.with_weights(bias=take_weight(node, "bias", keep, 0))
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
