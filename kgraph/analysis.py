"""What a model is made of, for a Keras model or a lifted graph: channel groups,
parameters and FLOPs, weight sparsity.

These are the public `kgraph.channel_groups`, `kgraph.stats` and `kgraph.sparsity`:
a Keras model is lifted first (and never changed); a graph is read as it is.

Example:
    >>> kgraph.stats(model).params
    25636712
    >>> [g.owners[0] for g in kgraph.channel_groups(model) if g.prunable][:2]
    ['conv1_conv', 'conv2_block1_1_conv']
"""

from __future__ import annotations

import keras

from kgraph import groups as _groups
from kgraph import stats as _stats
from kgraph.graph_data import GraphData
from kgraph.groups import ChannelGroup
from kgraph.lift import lift
from kgraph.sparse import report as _report
from kgraph.sparse.report import SparsityReport
from kgraph.stats import Stats

__all__ = ["as_graph", "channel_groups", "sparsity", "stats"]


def as_graph(model_or_graph: keras.Model | GraphData) -> GraphData:
    """`model_or_graph` itself when it is a graph, else the lifted model."""
    return model_or_graph if isinstance(model_or_graph, GraphData) else lift(model_or_graph)


def channel_groups(model_or_graph: keras.Model | GraphData) -> list[ChannelGroup]:
    """Every group of coupled channels that some layer owns, in topological order.

    Example:
        >>> for group in kgraph.channel_groups(model):
        ...     print(group.owners, group.channels, group.prunable or group.reason)
    """
    return _groups.channel_groups(as_graph(model_or_graph))


def stats(model_or_graph: keras.Model | GraphData) -> Stats:
    """Parameters and FLOPs (multiply-adds, batch 1) of every layer call and in total."""
    return _stats.stats(as_graph(model_or_graph))


def sparsity(model_or_graph: keras.Model | GraphData) -> SparsityReport:
    """The fraction of exactly-zero prunable weights, per layer (shared: once) and in total."""
    return _report.sparsity(as_graph(model_or_graph))
