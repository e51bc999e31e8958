"""Layer rules: how each Keras layer family slices its weights for channel masks.

See `kgraph.rules.base` for the protocol and `docs/rules.md` for writing one.
"""

from kgraph.rules.base import (
    OpaqueRule,
    Rule,
    carry,
    data_slots,
    fresh_output,
    register_rule,
    rule_for,
    take,
    take_weight,
    unregister_rule,
)
from kgraph.rules.builtin import register_builtin_rules
from kgraph.rules.channelwise import PassThroughRule, PerChannelRule, SpatialRule
from kgraph.rules.conv import ConvRule
from kgraph.rules.dense import DenseRule, EmbeddingRule
from kgraph.rules.merge import ConcatenateRule, ElementwiseMergeRule
from kgraph.rules.producer import ProducerRule
from kgraph.rules.recurrent import RecurrentRule
from kgraph.rules.reshape import (
    FlattenRule,
    GlobalPoolingRule,
    PermuteRule,
    RepeatVectorRule,
    ReshapeRule,
)

register_builtin_rules()

__all__ = [
    "ConcatenateRule",
    "ConvRule",
    "DenseRule",
    "ElementwiseMergeRule",
    "EmbeddingRule",
    "FlattenRule",
    "GlobalPoolingRule",
    "OpaqueRule",
    "PassThroughRule",
    "PerChannelRule",
    "PermuteRule",
    "ProducerRule",
    "RecurrentRule",
    "RepeatVectorRule",
    "ReshapeRule",
    "Rule",
    "SpatialRule",
    "carry",
    "data_slots",
    "fresh_output",
    "register_rule",
    "rule_for",
    "take",
    "take_weight",
    "unregister_rule",
]
