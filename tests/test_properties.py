"""Property-based test: random small CNNs, random channel deletions, the dead-channel oracle.

hypothesis draws a model (conv blocks, BatchNorm, concatenated branches, residual
Adds, either data format, Flatten or global pooling heads) and deletions on its
convolutions (the same ones on both members of an Add); kgraph must lower a model
whose outputs equal those of a copy where the deleted channels are dead, pass
`Graph.verify()`, and leave the original untouched.
"""

from __future__ import annotations

import keras
from helpers import GENERATED_CASES, check_dead_channels
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

L = keras.layers


@st.composite
def programs(draw: st.DrawFn) -> dict:
    data_format = draw(st.sampled_from(["channels_last", "channels_first"]))
    blocks = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["conv", "conv_bn_relu", "concat", "residual", "pool"]),
                st.integers(2, 5),  # filters
                st.integers(1, 2),  # kernel size
            ),
            min_size=1,
            max_size=4,
        )
    )
    # Keras' TensorFlow backend adds a channels_first bias along the last spatial
    # axis when that axis is as long as the channels are many; keep every feature
    # map wider than any layer's channels (at most one pooling: 14 -> 7 > 6).
    pools = [i for i, block in enumerate(blocks) if block[0] == "pool"]
    blocks = [b for i, b in enumerate(blocks) if b[0] != "pool" or i == pools[0]]
    head = draw(st.sampled_from(["flatten", "gap"]))
    return {"data_format": data_format, "blocks": blocks, "head": head}


def build(program: dict) -> tuple[keras.Model, list[list[str]], dict[str, str]]:
    """The model, its groups of convs that must lose the same channels, and BN per conv."""
    df = program["data_format"]
    axis = 1 if df == "channels_first" else -1
    shape = (3, 14, 14) if df == "channels_first" else (14, 14, 3)
    x = keras.Input(shape, name="x")
    y = x
    groups: list[list[str]] = []
    batchnorm: dict[str, str] = {}

    def conv(name: str, filters: int, kernel: int, source):
        return L.Conv2D(filters, kernel, padding="same", data_format=df, name=name)(source)

    for i, (kind, filters, kernel) in enumerate(program["blocks"]):
        if kind == "conv":
            y = conv(f"c{i}", filters, kernel, y)
            groups.append([f"c{i}"])
        elif kind == "conv_bn_relu":
            y = conv(f"c{i}", filters, kernel, y)
            y = L.BatchNormalization(axis=axis, name=f"bn{i}")(y)
            y = L.ReLU(name=f"relu{i}")(y)
            groups.append([f"c{i}"])
            batchnorm[f"c{i}"] = f"bn{i}"
        elif kind == "concat":
            a = conv(f"c{i}a", filters, kernel, y)
            b = conv(f"c{i}b", filters + 1, 1, y)
            y = L.Concatenate(axis=axis, name=f"cat{i}")([a, b])
            groups += [[f"c{i}a"], [f"c{i}b"]]
        elif kind == "residual":
            a = conv(f"c{i}a", filters, kernel, y)
            b = conv(f"c{i}b", filters, 1, y)
            y = L.Add(name=f"add{i}")([a, b])
            groups.append([f"c{i}a", f"c{i}b"])
        else:
            y = L.MaxPooling2D(2, padding="same", data_format=df, name=f"pool{i}")(y)
    if program["head"] == "flatten":
        y = L.Flatten(data_format=df, name="flatten")(y)
    else:
        y = L.GlobalAveragePooling2D(data_format=df, name="gap")(y)
    y = L.Dense(3, name="head")(y)
    return keras.Model(x, y, name="random_cnn"), groups, batchnorm


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(program=programs(), data=st.data())
def test_random_models_and_deletions(program: dict, data: st.DataObject) -> None:
    keras.backend.clear_session()
    model, groups, batchnorm = build(program)
    deletions: dict[str, list[int]] = {}
    for group in groups:
        width = model.get_layer(group[0]).filters
        channels = data.draw(
            st.lists(st.integers(0, width - 1), unique=True, max_size=width - 1), label=group[0]
        )
        for name in group:
            if channels:
                deletions[name] = channels
    bns = {batchnorm[name]: ch for name, ch in deletions.items() if name in batchnorm}
    pruned = check_dead_channels(model, deletions, bns)
    for name, channels in deletions.items():
        assert pruned.get_layer(name).filters == model.get_layer(name).filters - len(channels)
    GENERATED_CASES["random_models_and_deletions"] += 1
