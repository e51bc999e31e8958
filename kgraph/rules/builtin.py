"""The rules kgraph ships for Keras' own layers and `keras.ops` operations."""

from __future__ import annotations

import keras

from kgraph.rules import contraction, conv_variants, normalization, wrappers
from kgraph.rules.attention import MultiHeadAttentionRule
from kgraph.rules.base import register_rule
from kgraph.rules.channelwise import PassThroughRule, PerChannelRule, SpatialRule
from kgraph.rules.conv import ConvRule
from kgraph.rules.dense import DenseRule, EmbeddingRule
from kgraph.rules.merge import ConcatenateRule, ElementwiseMergeRule
from kgraph.rules.ops import register_op_rules
from kgraph.rules.recurrent import RecurrentRule
from kgraph.rules.reshape import (
    FlattenRule,
    GlobalPoolingRule,
    PermuteRule,
    RepeatVectorRule,
    ReshapeRule,
)

__all__ = ["BatchNormalizationRule", "register_builtin_rules"]


class BatchNormalizationRule(PerChannelRule):
    """BatchNormalization: gamma, beta, moving_mean, moving_variance along its axis."""

    per_channel = ("gamma", "beta", "moving_mean", "moving_variance")


PASS_THROUGH = [
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Masking",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "Softmax",
    "Identity",
]
SPATIAL = [
    f"{kind}{d}D"
    for kind in ("MaxPooling", "AveragePooling", "Cropping", "ZeroPadding", "UpSampling")
    for d in (1, 2, 3)
]
GLOBAL_POOLING = [f"Global{kind}Pooling{d}D" for kind in ("Max", "Average") for d in (1, 2, 3)]
MERGES = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"]


def register_builtin_rules() -> None:
    """Register every built-in rule (idempotent)."""
    layers = keras.layers
    table = [
        (("Dense",), DenseRule()),
        (("Embedding",), EmbeddingRule()),
        (("Conv1D", "Conv2D", "Conv3D"), ConvRule()),
        (("BatchNormalization",), BatchNormalizationRule()),
        (("Flatten",), FlattenRule()),
        (("Reshape",), ReshapeRule()),
        (("Permute",), PermuteRule()),
        (("RepeatVector",), RepeatVectorRule()),
        (tuple(PASS_THROUGH), PassThroughRule()),
        (tuple(SPATIAL), SpatialRule()),
        (tuple(GLOBAL_POOLING), GlobalPoolingRule()),
        (tuple(MERGES), ElementwiseMergeRule()),
        (("Concatenate",), ConcatenateRule()),
        (("SimpleRNN",), RecurrentRule(gates=1)),
        (("GRU",), RecurrentRule(gates=3)),
        (("LSTM",), RecurrentRule(gates=4)),
        (("MultiHeadAttention",), MultiHeadAttentionRule()),
    ]
    for names, rule in table:
        for name in names:
            cls = getattr(layers, name, None)
            if cls is not None:
                register_rule(cls, rule)
    register_op_rules(register_rule)
    for module in (conv_variants, normalization, contraction, wrappers):
        module.register()
