"""Sensitivity analysis: each group pruned alone, the metric measured, a report."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import kgraph
from kgraph.passes import DeleteChannels

L = keras.layers


def model_and_data() -> tuple[keras.Model, np.ndarray]:
    x = keras.Input((6,), name="x")
    a = L.Dense(8, activation="relu", name="a")(x)
    b = L.Dense(8, activation="relu", name="b")(a)
    model = keras.Model(x, L.Dense(3, name="head")(b))
    data = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    return model, data


def closeness(reference: np.ndarray, data: np.ndarray):
    def metric(model: keras.Model) -> float:
        out = keras.ops.convert_to_numpy(model(data))
        return -float(np.mean(np.abs(out - reference)))

    return metric


def lowest_l1(model: keras.Model, layer: str, count: int) -> list[int]:
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in model.get_layer(layer).weights)
    norms = np.abs(kernel).sum(axis=0) + np.abs(bias)
    return sorted(np.argsort(norms, kind="stable")[:count].tolist())


def test_each_group_is_pruned_alone_at_each_ratio() -> None:
    model, data = model_and_data()
    reference = keras.ops.convert_to_numpy(model(data))
    metric = closeness(reference, data)
    calls = []
    report = kgraph.sensitivity(
        model, metric, ratios=(0.25, 0.5), progress=lambda done, total: calls.append(done)
    )
    assert report.baseline == pytest.approx(0.0, abs=1e-6)
    assert report.ratios == (0.25, 0.5)
    assert set(report.rows) == {"a", "b"} and report.widths == {"a": 8, "b": 8}
    assert calls == [1, 2, 3, 4]
    graph = kgraph.lift(model)
    for layer in ("a", "b"):
        for index, ratio in enumerate(report.ratios):
            gone = lowest_l1(model, layer, int(8 * ratio))
            expected = metric(graph.apply(DeleteChannels(layer, gone)).lower())
            assert report.rows[layer][index] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert all(v <= 0 for values in report.rows.values() for v in values)


def test_the_report_gives_ratios_prune_takes_and_plain_data() -> None:
    model, data = model_and_data()
    report = kgraph.sensitivity(model, closeness(keras.ops.convert_to_numpy(model(data)), data))
    limits = report.ratios_for(max_drop=0.05)
    for owner, ratio in limits.items():
        index = report.ratios.index(ratio)
        assert report.drop(owner, index) <= 0.05
        later = [i for i, r in enumerate(report.ratios) if r > ratio]
        assert all(report.drop(owner, i) > 0.05 for i in later)
    small = kgraph.prune(model, 0.5, ratios=limits) if limits else None
    if small is not None:
        for owner, ratio in limits.items():
            assert small.get_layer(owner).units == 8 - int(8 * ratio)
    plain = json.loads(json.dumps(report.to_dict()))
    assert plain["ratios"] == [0.1, 0.3, 0.5]
    assert [g["owner"] for g in plain["groups"]] == ["a", "b"]
    assert "sensitivity of" in str(report) and "30%" in str(report)


def test_plots_are_written_in_three_formats(tmp_path) -> None:
    model, data = model_and_data()
    report = kgraph.sensitivity(model, closeness(keras.ops.convert_to_numpy(model(data)), data))
    png = report.plot(tmp_path / "s.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "<svg" in report.plot(tmp_path / "s.svg").read_text()
    page = report.plot(tmp_path / "s.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    with pytest.raises(kgraph.KGraphError, match=r"\.png, \.svg or \.html"):
        report.plot(tmp_path / "s.jpg")


def test_a_keras_metric_by_name_and_bad_options() -> None:
    model, data = model_and_data()
    labels = np.argmax(keras.ops.convert_to_numpy(model(data)), axis=1)
    report = kgraph.sensitivity(model, "accuracy", data=(data, labels), ratios=(0.5,))
    assert report.baseline == pytest.approx(1.0)
    assert all(0.0 <= v <= 1.0 for values in report.rows.values() for v in values)
    with pytest.raises(kgraph.PruningError, match=r"ratios must be numbers in \(0, 1\)"):
        kgraph.sensitivity(model, "accuracy", data=(data, labels), ratios=(0.5, 1.0))
    with pytest.raises(kgraph.PruningError, match="metric must be a callable"):
        kgraph.sensitivity(model, "accuracy")
