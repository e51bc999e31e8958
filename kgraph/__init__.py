"""kgraph: network surgery on trained Keras 3 models, built like a small compiler.

    lift(model) -> Graph --passes--> Graph --lower()--> keras.Model

Importing kgraph is cheap: its names load on first use (the `kgraph` command answers
`--help` without loading a Keras backend).

Example:
    >>> import kgraph
    >>> from kgraph.passes import DeleteChannels
    >>> smaller = kgraph.lift(model).apply(DeleteChannels("conv1", [0, 3])).lower()
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Blocker": "kgraph.groups",
    "Budget": "kgraph.budget",
    "CalibrationError": "kgraph.calibrate",
    "ChannelCut": "kgraph.plan",
    "ChannelError": "kgraph.errors",
    "ChannelGroup": "kgraph.groups",
    "ConstantSparsity": "kgraph.sparse",
    "DeleteChannels": "kgraph.passes",
    "DeleteHeads": "kgraph.passes",
    "DeleteLayer": "kgraph.passes",
    "DistillationError": "kgraph.distill",
    "EliminateDeadNodes": "kgraph.passes",
    "ExportError": "kgraph.export",
    "GradualPruning": "kgraph.sparse",
    "Graph": "kgraph.graph",
    "HeadCut": "kgraph.plan",
    "InsertLayer": "kgraph.passes",
    "KGraphError": "kgraph.errors",
    "KeepClassError": "kgraph.keep_class",
    "LayerNotFoundError": "kgraph.errors",
    "LiftError": "kgraph.errors",
    "LowerError": "kgraph.errors",
    "MaskConflictError": "kgraph.errors",
    "Node": "kgraph.ir",
    "Pass": "kgraph.passes",
    "PassResult": "kgraph.passes",
    "PlanError": "kgraph.plan",
    "PolynomialDecay": "kgraph.sparse",
    "PropagateMasks": "kgraph.passes",
    "PruneOptions": "kgraph.pruning",
    "PruningError": "kgraph.errors",
    "PruningPlan": "kgraph.plan",
    "ReplaceLayer": "kgraph.passes",
    "ReplaceMatching": "kgraph.passes",
    "Rule": "kgraph.rules",
    "RuleSet": "kgraph.rules",
    "SensitivityReport": "kgraph.sensitivity",
    "Slot": "kgraph.ir",
    "Sparsify": "kgraph.passes",
    "SparsityError": "kgraph.sparse",
    "Stats": "kgraph.stats",
    "SurgeryError": "kgraph.errors",
    "Tensor": "kgraph.ir",
    "UnsupportedLayerError": "kgraph.errors",
    "VerificationError": "kgraph.errors",
    "channel_groups": "kgraph.analysis",
    "distill": "kgraph.distill",
    "export": "kgraph.export",
    "importance": "kgraph.importance",
    "iterative_prune": "kgraph.pruning",
    "keep_class": "kgraph.keep_class",
    "lift": "kgraph.lift",
    "load_exported": "kgraph.export",
    "plan": "kgraph.pruning",
    "prune": "kgraph.pruning",
    "recalibrate": "kgraph.calibrate",
    "register_rule": "kgraph.rules",
    "sensitivity": "kgraph.sensitivity",
    "sparsity": "kgraph.analysis",
    "stats": "kgraph.analysis",
    "unregister_rule": "kgraph.rules",
}

__all__ = [
    "Blocker",
    "Budget",
    "CalibrationError",
    "ChannelCut",
    "ChannelError",
    "ChannelGroup",
    "ConstantSparsity",
    "DeleteChannels",
    "DeleteHeads",
    "DeleteLayer",
    "DistillationError",
    "EliminateDeadNodes",
    "ExportError",
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
    "distill",
    "export",
    "importance",
    "iterative_prune",
    "keep_class",
    "lift",
    "load_exported",
    "plan",
    "prune",
    "recalibrate",
    "register_rule",
    "sensitivity",
    "sparsity",
    "stats",
    "unregister_rule",
]


def _load() -> None:
    """Import every module the exports live in, then bind the exports.

    All at once: several exports share their name with a submodule (`kgraph.lift`,
    `kgraph.stats`, ...), and importing a submodule binds its name to the module; once
    every such module is imported, the functions are bound last and stay.
    """
    for module in dict.fromkeys(_EXPORTS.values()):
        importlib.import_module(module)
    for name, module in _EXPORTS.items():
        globals()[name] = getattr(importlib.import_module(module), name)


def __getattr__(name: str) -> Any:
    """Load the exports on first use (or a submodule, `kgraph.groups`)."""
    if name in _EXPORTS:
        _load()
        return globals()[name]
    try:
        return importlib.import_module(f"kgraph.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module 'kgraph' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """This package's module type: an export that shares its name with a submodule
    (`kgraph.stats`, `kgraph.lift`, ...) is the export even when the submodule was
    imported first (importing a submodule binds its name to the module)."""

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if isinstance(value, types.ModuleType) and name in _EXPORTS:
            _load()
            value = super().__getattribute__(name)
        return value


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # the same names, for type checkers and editors
    from kgraph.analysis import channel_groups, sparsity, stats
    from kgraph.budget import Budget
    from kgraph.calibrate import CalibrationError, recalibrate
    from kgraph.distill import DistillationError, distill
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
    from kgraph.export import ExportError, export, load_exported
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
