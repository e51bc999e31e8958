"""Pruning to a budget: params, FLOPs, bytes, latency."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import fingerprint

import kgraph
from kgraph.budget import Budget, BudgetError

L = keras.layers


def small_cnn() -> keras.Model:
    x = keras.Input((16, 16, 3))
    y = L.Conv2D(16, 3, activation="relu", name="c1")(x)
    y = L.Conv2D(32, 3, activation="relu", name="c2")(y)
    y = L.Conv2D(32, 3, activation="relu", name="c3")(y)
    y = L.GlobalAveragePooling2D()(y)
    return keras.Model(x, L.Dense(4, name="head")(y))


@pytest.mark.parametrize(
    ("text", "metric", "value"),
    [
        ("flops=0.5", "flops", 0.5),
        ("params=2M", "params", 2e6),
        ("params = 250k", "params", 250e3),
        ("bytes=8MB", "bytes", 8 * 2**20),
        ("Bytes=1.5GB", "bytes", 1.5 * 2**30),
    ],
)
def test_budgets_read_from_text(text: str, metric: str, value: float) -> None:
    budget = Budget.parse(text)
    assert budget.metric == metric and budget.value == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("flops", "written metric=value"),
        ("speed=0.5", "unknown budget metric 'speed'"),
        ("params=lots", "not an amount"),
        ("params=0", "must be positive"),
        ("latency=2", "fraction of the original latency"),
        ("latency=0.5", "needs inputs"),
    ],
)
def test_bad_budgets_are_refused(text: str, message: str) -> None:
    with pytest.raises(BudgetError, match=message):
        Budget.parse(text)


@pytest.mark.parametrize("target", ["flops=0.5", "params=0.4", "bytes=0.3"])
def test_a_fractional_budget_is_met_within_two_percent(target: str) -> None:
    model = small_cnn()
    before = fingerprint(model)
    small = kgraph.prune(model, target=target)
    budget = Budget.parse(target)
    original, pruned = kgraph.stats(model), kgraph.stats(small)
    ratio = {
        "flops": pruned.flops / original.flops,
        "params": pruned.params / original.params,
        "bytes": pruned.params / original.params,  # float32 weights: 4 bytes each
    }[budget.metric]
    assert ratio == pytest.approx(budget.value, rel=0.02)
    assert fingerprint(model) == before


def test_round_to_still_holds_under_a_budget() -> None:
    model = small_cnn()
    small = kgraph.prune(model, target="flops=0.5", round_to=8)
    assert all(small.get_layer(n).filters % 8 == 0 for n in ("c1", "c2", "c3"))
    ratio = kgraph.stats(small).flops / kgraph.stats(model).flops
    assert ratio <= 0.5 or ratio == pytest.approx(0.5, rel=0.1)


def test_an_unreachable_budget_gives_the_closest_plan_and_warns(caplog) -> None:
    model = small_cnn()
    with caplog.at_level("WARNING", logger="kgraph"):
        small = kgraph.prune(model, target="params=10")
    assert "is not reachable" in caplog.text and "closest plan" in caplog.text
    assert all(small.get_layer(n).filters == 1 for n in ("c1", "c2", "c3"))


def test_a_latency_budget_times_the_pruned_models() -> None:
    model = small_cnn()
    reference = kgraph.stats(model).flops
    timed = []

    def seconds(candidate: keras.Model) -> float:  # a stand-in clock: FLOPs as time
        timed.append(candidate)
        return kgraph.stats(candidate).flops / reference

    small = kgraph.prune(model, target=Budget("latency", 0.6, inputs=seconds))
    assert len(timed) > 2  # the original and the bisection's candidates
    assert kgraph.stats(small).flops / reference == pytest.approx(0.6, rel=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ResNet50", "MobileNetV2"])
def test_applications_reach_flops_and_parameter_budgets(name: str) -> None:
    model = getattr(keras.applications, name)(weights=None)
    original = kgraph.stats(model)
    half = kgraph.stats(kgraph.prune(model, target="flops=0.5"))
    assert half.flops / original.flops == pytest.approx(0.5, rel=0.02)
    two_million = kgraph.stats(kgraph.prune(model, target="params=2M"))
    assert two_million.params == pytest.approx(2e6, rel=0.02)
    x = np.zeros((1, 224, 224, 3), "float32")
    assert keras.ops.convert_to_numpy(kgraph.prune(model, target="params=2M")(x)).shape == (
        1,
        1000,
    )
