"""The rules kgraph ships: one declarative table from Keras classes to rules.

Each entry names classes as `"module:Name"` (several names separated by spaces).
`builtin_rules()` resolves the names of Keras' own classes (classes this Keras does
not have are skipped) and keeps the others — keras-hub's, kgraph's traced ops — as
names, so that no optional package is imported; `kgraph.rules.DEFAULT_RULES` is
built from it. `REFUSED` lists the layers of
`keras.layers` that have no rule on purpose, with the reason (docs/rules.md shows
both tables; a test keeps them complete).
"""

from __future__ import annotations

import importlib

from kgraph.rules.attention import DotAttentionRule, MultiHeadAttentionRule
from kgraph.rules.base import Rule
from kgraph.rules.channelwise import PassThroughRule, PerChannelRule, SpatialRule
from kgraph.rules.contraction import DotRule, EinsumDenseRule
from kgraph.rules.conv import ConvRule
from kgraph.rules.conv_variants import ConvTransposeRule, DepthwiseConvRule, SeparableConvRule
from kgraph.rules.dense import DenseRule, EmbeddingRule
from kgraph.rules.merge import ConcatenateRule, ElementwiseMergeRule
from kgraph.rules.normalization import (
    AxisNormRule,
    CustomScaleRule,
    GroupNormalizationRule,
    LayerScaleRule,
    NormalizationRule,
    PReLURule,
    RescalingRule,
)
from kgraph.rules.ops import ELEMENTWISE_OPS, REDUCE_OPS, UNARY_OPS, ElementwiseOpRule, ReduceOpRule
from kgraph.rules.recurrent import ConvLSTMRule, RecurrentRule
from kgraph.rules.reshape import (
    FlattenRule,
    GlobalPoolingRule,
    PermuteRule,
    RepeatVectorRule,
    ReshapeRule,
)
from kgraph.rules.transformers import (
    GetItemRule,
    GroupedQueryAttentionRule,
    LayerMethodRule,
    PatchEmbeddingRule,
    PositionEmbeddingRule,
    ReversibleEmbeddingRule,
    RotaryEmbeddingRule,
)
from kgraph.rules.wrappers import BidirectionalRule, TimeDistributedRule

__all__ = ["BUILTIN", "REFUSED", "BatchNormalizationRule", "builtin_rules"]


class BatchNormalizationRule(PerChannelRule):
    """BatchNormalization: gamma, beta, moving_mean, moving_variance along its axis."""

    per_channel = ("gamma", "beta", "moving_mean", "moving_variance")


def _layers(names: str) -> str:
    return " ".join(f"keras.layers:{name}" for name in names.split())


def _hub(names: str) -> str:
    return " ".join(f"keras_hub.src.{name}" for name in names.split())


def _ops(table: dict[str, list[str]]) -> str:
    return " ".join(f"{module}:{name}" for module, names in table.items() for name in names)


_SPATIAL = " ".join(
    f"{kind}{d}D"
    for kind in (
        "MaxPooling AveragePooling AdaptiveMaxPooling AdaptiveAveragePooling Cropping "
        "ZeroPadding UpSampling"
    ).split()
    for d in (1, 2, 3)
)

BUILTIN: tuple[tuple[str, Rule], ...] = (
    (_layers("Dense"), DenseRule()),
    (_layers("Embedding"), EmbeddingRule()),
    (_layers("EinsumDense"), EinsumDenseRule()),
    (_layers("Conv1D Conv2D Conv3D"), ConvRule()),
    (_layers("DepthwiseConv1D DepthwiseConv2D"), DepthwiseConvRule()),
    (_layers("SeparableConv1D SeparableConv2D"), SeparableConvRule()),
    (_layers("Conv1DTranspose Conv2DTranspose Conv3DTranspose"), ConvTransposeRule()),
    (_layers("BatchNormalization"), BatchNormalizationRule()),
    (_layers("LayerNormalization"), AxisNormRule(("gamma", "beta"))),
    (_layers("RMSNormalization"), AxisNormRule(("scale",))),
    (_layers("GroupNormalization"), GroupNormalizationRule()),
    (_layers("PReLU"), PReLURule()),
    (_layers("Rescaling"), RescalingRule()),
    (_layers("Normalization"), NormalizationRule()),
    (_layers("Flatten"), FlattenRule()),
    (_layers("Reshape"), ReshapeRule()),
    (_layers("Permute"), PermuteRule()),
    (_layers("RepeatVector"), RepeatVectorRule()),
    (
        _layers(
            "Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D GaussianNoise "
            "GaussianDropout AlphaDropout ActivityRegularization Masking Activation ReLU "
            "LeakyReLU ELU Softmax Identity UnitNormalization"
        ),
        PassThroughRule(),
    ),
    (
        _layers(
            _SPATIAL + " Resizing CenterCrop RandomCrop RandomFlip RandomRotation "
            "RandomTranslation RandomZoom RandomShear RandomPerspective"
        ),
        SpatialRule(),  # geometric image layers: each channel is moved the same way
    ),
    (
        _layers(" ".join(f"Global{k}Pooling{d}D" for k in ("Max", "Average") for d in (1, 2, 3))),
        GlobalPoolingRule(),
    ),
    (_layers("Add Subtract Multiply Average Maximum Minimum"), ElementwiseMergeRule()),
    (_layers("Concatenate"), ConcatenateRule()),
    (_layers("Dot"), DotRule()),
    (_layers("SimpleRNN"), RecurrentRule(gates=1)),
    (_layers("GRU"), RecurrentRule(gates=3)),
    (_layers("LSTM"), RecurrentRule(gates=4)),
    (_layers("ConvLSTM1D ConvLSTM2D ConvLSTM3D"), ConvLSTMRule()),
    (_layers("MultiHeadAttention"), MultiHeadAttentionRule()),
    (_layers("Attention AdditiveAttention"), DotAttentionRule()),
    (_layers("TimeDistributed"), TimeDistributedRule()),
    (_layers("Bidirectional"), BidirectionalRule()),
    (_layers("GroupQueryAttention"), GroupedQueryAttentionRule(self_attention=False)),
    (_layers("ReversibleEmbedding"), ReversibleEmbeddingRule()),
    ("keras.src.ops.numpy:GetItem", GetItemRule()),
    ("kgraph.trace:LayerMethod", LayerMethodRule()),
    # keras-hub (named, not imported): attention layers kept whole, embeddings, norms
    (
        _hub("models.mistral.mistral_attention:CachedMistralAttention"),
        GroupedQueryAttentionRule(heads_axis=1),
    ),
    (
        _hub(
            "models.llama.llama_attention:LlamaAttention models.qwen.qwen_attention:QwenAttention"
        ),
        GroupedQueryAttentionRule(heads_axis=1, derived_head_dim=True),
    ),
    (_hub("models.gemma.gemma_attention:CachedGemmaAttention"), GroupedQueryAttentionRule(0)),
    (_hub("layers.modeling.reversible_embedding:ReversibleEmbedding"), ReversibleEmbeddingRule()),
    (_hub("layers.modeling.position_embedding:PositionEmbedding"), PositionEmbeddingRule()),
    (_hub("layers.modeling.rotary_embedding:RotaryEmbedding"), RotaryEmbeddingRule()),
    (_hub("models.vit.vit_layers:ViTPatchingAndEmbedding"), PatchEmbeddingRule()),
    (
        _hub(
            "models.llama.llama_layernorm:LlamaLayerNorm "
            "models.mistral.mistral_layer_norm:MistralLayerNormalization "
            "models.qwen.qwen_layernorm:QwenLayerNorm "
            "models.gemma.rms_normalization:RMSNormalization"
        ),
        AxisNormRule(("scale",)),
    ),
    ("keras.src.applications.convnext:LayerScale", LayerScaleRule()),
    ("keras.src.applications.inception_resnet_v2:CustomScaleLayer", CustomScaleRule()),
    (_ops(UNARY_OPS), PassThroughRule()),
    (_ops(ELEMENTWISE_OPS), ElementwiseOpRule()),
    (_ops(REDUCE_OPS), ReduceOpRule()),
    ("keras.src.ops.numpy:Clip", ElementwiseOpRule(config_operands=("x_min", "x_max"))),
)


def _resolve(name: str) -> type | None:
    module, _, attribute = name.partition(":")
    try:
        found = getattr(importlib.import_module(module), attribute, None)
    except ImportError:
        return None
    return found if isinstance(found, type) else None


def builtin_rules() -> dict[type | str, Rule]:
    """The `BUILTIN` table, Keras' class names resolved to the classes this Keras has."""
    table: dict[type | str, Rule] = {}
    for names, rule in BUILTIN:
        for name in names.split():
            if not name.startswith("keras."):
                table[name] = rule  # a class of an optional package: matched by name
                continue
            cls = _resolve(name)
            if cls is not None:
                table[cls] = rule
    return table


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
    (
        ("SpectralNormalization",),
        "slicing the wrapped kernel changes its spectral norm, so no deletion preserves the "
        "function; remove the wrapper first",
    ),
)
