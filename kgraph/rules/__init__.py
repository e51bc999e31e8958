"""Layer rules: how each Keras layer family slices its weights for channel masks.

See `kgraph.rules.base` for the protocol (a required core), `kgraph.rules.capabilities`
for the optional capabilities, `kgraph.rules.registry` for rule sets, and
`docs/rules.md` for writing one.

Example:
    >>> @kgraph.register_rule(MyScale)
    ... class MyScaleRule(kgraph.rules.PerChannelRule):
    ...     per_channel = ("scale",)
"""

from __future__ import annotations

from typing import Any

from kgraph.ir import Node
from kgraph.rules.base import (
    NestedRule,
    OpaqueRule,
    Rule,
    WeightlessRule,
    carry,
    data_slots,
    fresh_output,
    take,
    take_weight,
)
from kgraph.rules.builtin import builtin_rules
from kgraph.rules.capabilities import (
    CanDropInputs,
    ChecksWeights,
    CountsMacs,
    HasChannelNorms,
    HasCouplings,
    HasRestrictions,
)
from kgraph.rules.channelwise import PassThroughRule, PerChannelRule, SpatialRule
from kgraph.rules.conv import ConvRule
from kgraph.rules.dense import DenseRule, EmbeddingRule
from kgraph.rules.merge import ConcatenateRule, ElementwiseMergeRule
from kgraph.rules.producer import ProducerRule
from kgraph.rules.recurrent import RecurrentRule
from kgraph.rules.registry import RuleSet
from kgraph.rules.reshape import (
    FlattenRule,
    GlobalPoolingRule,
    PermuteRule,
    RepeatVectorRule,
    ReshapeRule,
)

#: The rules every graph uses unless `lift`/`apply` are given another `RuleSet`.
DEFAULT_RULES = RuleSet(builtin_rules())


def register_rule(layer_class: type, rule: Rule | type[Rule] | None = None) -> Any:
    """Use `rule` for `layer_class` and its subclasses in `DEFAULT_RULES` (a decorator
    when `rule` is None). For rules that only some graphs should see, pass
    `DEFAULT_RULES.extended({...})` to `kgraph.lift(..., rules=...)` instead.

    Example:
        >>> kgraph.register_rule(Swish, PassThroughRule())
    """
    return DEFAULT_RULES.register(layer_class, rule)


def unregister_rule(layer_class: type) -> None:
    """Forget the rule registered for exactly `layer_class` in `DEFAULT_RULES`."""
    DEFAULT_RULES.unregister(layer_class)


def rule_for(node: Node) -> Rule:
    """The rule `DEFAULT_RULES` gives `node` (library code asks `graph.rules`)."""
    return DEFAULT_RULES.rule_for(node)


__all__ = [
    "DEFAULT_RULES",
    "CanDropInputs",
    "ChecksWeights",
    "ConcatenateRule",
    "ConvRule",
    "CountsMacs",
    "DenseRule",
    "ElementwiseMergeRule",
    "EmbeddingRule",
    "FlattenRule",
    "GlobalPoolingRule",
    "HasChannelNorms",
    "HasCouplings",
    "HasRestrictions",
    "NestedRule",
    "OpaqueRule",
    "PassThroughRule",
    "PerChannelRule",
    "PermuteRule",
    "ProducerRule",
    "RecurrentRule",
    "RepeatVectorRule",
    "ReshapeRule",
    "Rule",
    "RuleSet",
    "SpatialRule",
    "WeightlessRule",
    "carry",
    "data_slots",
    "fresh_output",
    "register_rule",
    "rule_for",
    "take",
    "take_weight",
    "unregister_rule",
]
