"""kgraph: network surgery on trained Keras 3 models, built like a small compiler.

    lift(model) -> Graph --passes--> Graph --lower()--> keras.Model

Example:
    >>> import kgraph
    >>> from kgraph.passes import DeleteChannels
    >>> smaller = kgraph.lift(model).apply(DeleteChannels("conv1", [0, 3])).lower()
"""

from kgraph.analysis import channel_groups, sparsity, stats
from kgraph.budget import Budget
from kgraph.errors import (
    ChannelError,
    KGraphError,
    LayerNotFoundError,
    LiftError,
    LowerError,
    MaskConflictError,
    PruningError,
    SurgeryError,
    UnsupportedLayerError,
    VerificationError,
)
from kgraph.graph import Graph
from kgraph.groups import Blocker, ChannelGroup
from kgraph.importance import importance
from kgraph.ir import Node, Slot, Tensor
from kgraph.keep_class import KeepClassError, keep_class
from kgraph.lift import lift
from kgraph.passes import (
    DeleteChannels,
    DeleteHeads,
    DeleteLayer,
    EliminateDeadNodes,
    InsertLayer,
    Pass,
    PassResult,
    PropagateMasks,
    ReplaceLayer,
    ReplaceMatching,
    Sparsify,
)
from kgraph.plan import ChannelCut, HeadCut, PlanError, PruningPlan
from kgraph.pruning import PruneOptions, iterative_prune, plan, prune
from kgraph.rules import Rule, RuleSet, register_rule, unregister_rule
from kgraph.sensitivity import SensitivityReport, sensitivity
from kgraph.sparse import (
    ConstantSparsity,
    GradualPruning,
    PolynomialDecay,
    SparsityError,
)
from kgraph.stats import Stats

__version__ = "0.1.0"

__all__ = [
    "Blocker",
    "Budget",
    "ChannelCut",
    "ChannelError",
    "ChannelGroup",
    "ConstantSparsity",
    "DeleteChannels",
    "DeleteHeads",
    "DeleteLayer",
    "EliminateDeadNodes",
    "GradualPruning",
    "Graph",
    "HeadCut",
    "InsertLayer",
    "KGraphError",
    "KeepClassError",
    "LayerNotFoundError",
    "LiftError",
    "LowerError",
    "MaskConflictError",
    "Node",
    "Pass",
    "PassResult",
    "PlanError",
    "PolynomialDecay",
    "PropagateMasks",
    "PruneOptions",
    "PruningError",
    "PruningPlan",
    "ReplaceLayer",
    "ReplaceMatching",
    "Rule",
    "RuleSet",
    "SensitivityReport",
    "Slot",
    "Sparsify",
    "SparsityError",
    "Stats",
    "SurgeryError",
    "Tensor",
    "UnsupportedLayerError",
    "VerificationError",
    "channel_groups",
    "importance",
    "iterative_prune",
    "keep_class",
    "lift",
    "plan",
    "prune",
    "register_rule",
    "sensitivity",
    "sparsity",
    "stats",
    "unregister_rule",
]
