"""Rewrite passes: surgery passes state a change, the finalizing ones make it consistent.

Example:
    >>> from kgraph.passes import DeleteChannels, InsertLayer
    >>> graph.apply(DeleteChannels("conv1", [0, 1]), InsertLayer("dense", Dropout(0.1)))
"""

from kgraph.passes.base import Pass, PassResult
from kgraph.passes.delete_channels import DeleteChannels
from kgraph.passes.delete_group_channels import DeleteGroupChannels
from kgraph.passes.delete_heads import DeleteHeads
from kgraph.passes.delete_layer import DeleteLayer
from kgraph.passes.eliminate_dead_nodes import EliminateDeadNodes
from kgraph.passes.insert_layer import InsertLayer
from kgraph.passes.propagate_masks import PropagateMasks
from kgraph.passes.replace_layer import ReplaceLayer
from kgraph.passes.replace_matching import ReplaceMatching
from kgraph.passes.sparsify import Sparsify

__all__ = [
    "DeleteChannels",
    "DeleteGroupChannels",
    "DeleteHeads",
    "DeleteLayer",
    "EliminateDeadNodes",
    "InsertLayer",
    "Pass",
    "PassResult",
    "PropagateMasks",
    "ReplaceLayer",
    "ReplaceMatching",
    "Sparsify",
]
