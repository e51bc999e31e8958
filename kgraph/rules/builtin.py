"""The rules kgraph ships for Keras' own layers and `keras.ops` operations."""

from __future__ import annotations

import keras

from kgraph.rules import contraction, conv_variants, normalization, wrappers
from kgraph.rules.attention import DotAttentionRule, MultiHeadAttentionRule
from kgraph.rules.base import register_rule
from kgraph.rules.channelwise import PassThroughRule, PerChannelRule, SpatialRule
from kgraph.rules.conv import ConvRule
from kgraph.rules.dense import DenseRule, EmbeddingRule
from kgraph.rules.merge import ConcatenateRule, ElementwiseMergeRule
from kgraph.rules.ops import register_op_rules
from kgraph.rules.recurrent import ConvLSTMRule, RecurrentRule
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


PASS_THROUGH = (
    "Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D GaussianNoise GaussianDropout "
    "AlphaDropout ActivityRegularization Masking Activation ReLU LeakyReLU ELU Softmax "
    "Identity"
).split()
SPATIAL = [
    f"{kind}{d}D"
    for kind in (
        "MaxPooling AveragePooling AdaptiveMaxPooling AdaptiveAveragePooling Cropping ZeroPadding "
        "UpSampling"
    ).split()
    for d in (1, 2, 3)
] + (  # geometric image layers: each channel is moved the same way
    "Resizing CenterCrop RandomCrop RandomFlip RandomRotation RandomTranslation RandomZoom "
    "RandomShear RandomPerspective"
).split()
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
        (("Attention", "AdditiveAttention"), DotAttentionRule()),
        (("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"), ConvLSTMRule()),
    ]
    for names, rule in table:
        for name in names:
            cls = getattr(layers, name, None)
            if cls is not None:
                register_rule(cls, rule)
    register_op_rules(register_rule)
    for module in (conv_variants, normalization, contraction, wrappers):
        module.register()


# Layers of keras.layers without a rule, on purpose: a channel change reaching one
# raises UnsupportedLayerError (docs/rules.md lists them with these reasons).
REFUSED: tuple[tuple[tuple[str, ...], str], ...] = (
    (("Layer", "Wrapper", "InputLayer"), "base classes and model inputs, never a consumer"),
    (("Lambda",), "arbitrary Python code: register a rule for what it computes"),
    (
        ("TFSMLayer", "JaxLayer", "FlaxLayer", "TorchModuleWrapper"),
        "foreign code whose weights kgraph cannot read",
    ),
    (
        (
            "AugMix AutoContrast ContrastLimitedAdaptiveHistogramEqualization CutMix "
            "Equalization MixUp RandAugment RandomBrightness RandomColorDegeneration "
            "RandomColorJitter RandomContrast RandomElasticTransform RandomErasing "
            "RandomGaussianBlur RandomGrayscale RandomHue RandomInvert RandomPosterization "
            "RandomSaturation RandomSharpness Solarization MaxNumBoundingBoxes Pipeline"
        ).split(),
        "image augmentation and colour operations meant for RGB model inputs, whose "
        "channels kgraph never deletes",
    ),
    (
        (
            "CategoryEncoding Discretization HashedCrossing Hashing IntegerLookup StringLookup "
            "TextVectorization"
        ).split(),
        "their inputs are ids, strings or values to bucket, not channels",
    ),
    (("MelSpectrogram", "STFTSpectrogram"), "audio front-ends on model inputs"),
    (
        ("RNN", "StackedRNNCells", "SimpleRNNCell", "GRUCell", "LSTMCell"),
        "a generic RNN over cells: use the SimpleRNN, GRU and LSTM layers, whose rules "
        "know the gate layout",
    ),
    (("GroupQueryAttention",), "not supported yet (MultiHeadAttention is)"),
    (
        ("SpectralNormalization",),
        "slicing the wrapped kernel changes its spectral norm, so no deletion preserves the "
        "function; remove the wrapper first",
    ),
)
