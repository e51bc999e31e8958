"""Every layer in keras.layers has a rule or a deliberate, documented, tested refusal;
plus the rules added for that: adaptive pooling, geometric image layers, ConvLSTM,
Attention and AdditiveAttention."""

from __future__ import annotations

import inspect
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import (
    assert_same_outputs,
    check_dead_channels,
    copy_model,
    sample_inputs,
    weights_of,
    zero_outputs,
)

import kgraph
from kgraph.passes import DeleteChannels
from kgraph.rules import DEFAULT_RULES
from kgraph.rules.builtin import REFUSED

L = keras.layers
ROOT = Path(__file__).resolve().parents[1]
REFUSED_NAMES = {name for names, _ in REFUSED for name in names}


def layer_classes() -> dict[str, type]:
    return {
        name: cls
        for name, cls in vars(keras.layers).items()
        if inspect.isclass(cls) and issubclass(cls, keras.layers.Layer)
    }


def has_rule(cls: type) -> bool:
    return any(klass in DEFAULT_RULES for klass in cls.__mro__)


def test_every_keras_layer_has_a_rule_or_a_documented_refusal() -> None:
    undecided = sorted(
        name
        for name, cls in layer_classes().items()
        if not has_rule(cls) and name not in REFUSED_NAMES
    )
    assert not undecided, f"decide a rule or a refusal for {undecided}"
    both = sorted(n for n, cls in layer_classes().items() if has_rule(cls) and n in REFUSED_NAMES)
    assert not both, f"{both} have a rule and are listed as refused"
    docs = (ROOT / "docs" / "rules.md").read_text()
    undocumented = sorted(n for n in REFUSED_NAMES if f"`{n}`" not in docs)
    assert not undocumented, f"docs/rules.md does not list the refused {undocumented}"


REFUSAL_CASES = {
    "Lambda": lambda: L.Lambda(lambda t: t * 2.0),
    "RandomGrayscale": lambda: L.RandomGrayscale(),
    "SpectralNormalization": lambda: L.SpectralNormalization(L.Dense(3)),
    "RNN": lambda: L.RNN(L.LSTMCell(3)),
}


@pytest.mark.parametrize("name", sorted(REFUSAL_CASES))
def test_refused_layers_raise_a_clear_error(name: str) -> None:
    shape = (4, 4, 3) if name == "RandomGrayscale" else (5, 6)
    x = keras.Input(shape)
    y = (L.Conv2D(3, 1, name="producer") if len(shape) == 3 else L.Dense(6, name="producer"))(x)
    layer = REFUSAL_CASES[name]()
    y = layer(y)
    model = keras.Model(x, y)
    with pytest.raises(kgraph.UnsupportedLayerError, match=rf"\({type(layer).__name__}\)"):
        kgraph.lift(model).apply(DeleteChannels("producer", [0]))


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("kind", ["Max", "Average"])
def test_adaptive_pooling(rank: int, kind: str, data_format: str) -> None:
    spatial = {1: (8,), 2: (8, 8), 3: (6, 6, 6)}[rank]
    shape = (2, *spatial) if data_format == "channels_first" else (*spatial, 2)
    x = keras.Input(shape)
    y = getattr(L, f"Conv{rank}D")(4, 1, name="conv", data_format=data_format)(x)
    y = getattr(L, f"Adaptive{kind}Pooling{rank}D")(2, data_format=data_format)(y)
    y = L.Dense(2, name="dense")(L.Flatten(data_format=data_format)(y))
    check_dead_channels(keras.Model(x, y), {"conv": [0, 3]})


@pytest.mark.parametrize(
    "make",
    [
        lambda df: L.Resizing(6, 5, data_format=df),
        lambda df: L.CenterCrop(5, 5, data_format=df),
        lambda df: L.RandomFlip(data_format=df),
        lambda df: L.RandomZoom(0.2, data_format=df),
    ],
)
def test_geometric_image_layers_pass_channels(make, data_format: str) -> None:
    shape = (2, 8, 8) if data_format == "channels_first" else (8, 8, 2)
    x = keras.Input(shape)
    y = L.Conv2D(4, 1, name="conv", data_format=data_format)(x)
    y = L.Conv2D(2, 1, name="conv_2", data_format=data_format)(make(data_format)(y))
    model = keras.Model(x, y)
    pruned = check_dead_channels(model, {"conv": [1]})
    np.testing.assert_array_equal(
        weights_of(pruned, "conv_2")[0], np.delete(weights_of(model, "conv_2")[0], [1], 2)
    )


def zero_conv_lstm_filters(layer: keras.layers.Layer, filters: list[int]) -> None:
    kernel, recurrent, bias = (np.array(w) for w in layer.get_weights())
    cols = [g * layer.filters + f for g in range(4) for f in filters]
    kernel[..., cols], recurrent[..., cols], bias[cols] = 0, 0, 0
    layer.set_weights([kernel, recurrent, bias])


@pytest.mark.parametrize("return_sequences", [True, False])
def test_conv_lstm_filters(return_sequences: bool, data_format: str) -> None:
    shape = (3, 2, 7, 7) if data_format == "channels_first" else (3, 7, 7, 2)
    x = keras.Input(shape)
    y = L.ConvLSTM2D(
        4, 2, name="clstm", data_format=data_format, return_sequences=return_sequences
    )(x)
    if return_sequences:
        y = L.ConvLSTM2D(2, 2, name="clstm_2", data_format=data_format)(y)
    y = L.Dense(2, name="head")(L.Flatten(data_format=data_format)(y))
    model = keras.Model(x, y)
    dead = copy_model(model)
    zero_conv_lstm_filters(dead.get_layer("clstm"), [1, 2])
    pruned = kgraph.lift(dead).apply(DeleteChannels("clstm", [1, 2]), verify=True).lower()
    assert_same_outputs(pruned, dead, sample_inputs(model), rtol=1e-7, atol=1e-5)
    kernel, recurrent, bias = weights_of(model, "clstm")
    cols = [g * 4 + f for g in range(4) for f in (1, 2)]
    new_kernel, new_recurrent, new_bias = weights_of(pruned, "clstm")
    np.testing.assert_array_equal(new_kernel, np.delete(kernel, cols, -1))
    np.testing.assert_array_equal(
        new_recurrent, np.delete(np.delete(recurrent, cols, -1), [1, 2], -2)
    )
    np.testing.assert_array_equal(new_bias, np.delete(bias, cols))
    if return_sequences:
        np.testing.assert_array_equal(
            weights_of(pruned, "clstm_2")[0], np.delete(weights_of(model, "clstm_2")[0], [1, 2], -2)
        )


@pytest.mark.parametrize("kind", ["Attention", "AdditiveAttention"])
def test_dot_attention_layers(kind: str) -> None:
    q_in, v_in = keras.Input((3, 5), name="q"), keras.Input((4, 5), name="v")
    query = L.Dense(4, name="query")(q_in)
    key = L.Dense(4, name="key")(v_in)
    value = L.Dense(3, name="value")(v_in)
    y = getattr(L, kind)(name="attention", use_scale=True)([query, value, key])
    model = keras.Model([q_in, v_in], L.Dense(2, name="head")(y))
    if kind == "AdditiveAttention":
        layer = model.get_layer("attention")
        layer.set_weights([np.array([1.0, 2.0, 3.0, 4.0], "float32")])
    pruned = check_dead_channels(model, {"query": [1], "key": [1], "value": [0]})
    if kind == "AdditiveAttention":
        np.testing.assert_array_equal(weights_of(pruned, "attention")[0], [1.0, 3.0, 4.0])
    coupled = kgraph.lift(model).apply(DeleteChannels("query", [1])).lower()  # the key follows
    assert coupled.get_layer("key").units == 3


def test_zero_outputs_helper_is_used_by_the_oracle() -> None:
    """Guards the oracle itself: a dead Dense channel really outputs zero."""
    x = keras.Input((3,))
    model = keras.Model(x, L.Dense(4, name="d")(x))
    zero_outputs(model.get_layer("d"), [2])
    assert np.all(keras.ops.convert_to_numpy(model(np.ones((2, 3))))[:, 2] == 0)
