"""Smoke test: the benchmark script runs end to end on one small model (not a timing test)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location(
        "kgraph_benchmarks", ROOT / "benchmarks" / "run.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_script_measures_and_reports(tmp_path) -> None:
    script = load_script()
    out, report = tmp_path / "results.json", tmp_path / "benchmarks.md"
    report.write_text(f"# Benchmarks\n\nprose\n\n{script.BEGIN}\nold\n{script.END}\n\nmore prose\n")
    args = ["--models", "MobileNetV3Small", "--scaling", "10", "20", "--repeats", "1"]
    args += ["--rounds", "2", "--no-targets", "--out", str(out), "--markdown", str(report)]
    assert script.main(args) == 0
    results = json.loads(out.read_text())
    (model,) = results["models"]
    assert model["model"] == "MobileNetV3Small"
    # every step measured in every round; the reported time is the fastest round
    assert len(model["rounds"]) == 2
    steps = ("lift_s", "plan_s", "apply_s", "lower_s", "from_config_s", "clone_set_weights_s")
    for key in steps:
        assert 0 < model[key] == min(r[key] for r in model["rounds"])
    for r in model["rounds"]:
        parts = r["lift_s"] + r["plan_s"] + r["apply_s"] + r["lower_s"]
        assert abs(r["surgery_s"] - parts) < 1e-3
    assert model["surgery_first_s"] == model["rounds"][0]["surgery_s"]
    assert model["surgery_vs_from_config"] == model["surgery_s"] / model["from_config_s"]
    # lowering took every weight from the IR; memory and sizes are plausible
    assert model["initialised_weights"] == 0
    assert 0 < model["pruned_weights_bytes"] < model["original_weights_bytes"]
    assert 0 <= model["peak_memory_above_original_bytes"] < 2**30
    assert model["params_after"] < model["params_before"]
    assert model["flops_after"] < model["flops_before"]
    assert model["latency_b32_after_s"] > 0 and model["new_layer_classes"] == []
    assert [row["layers"] for row in results["scaling"]] == [10, 20]
    assert all(row["seconds_per_layer"] > 0 for row in results["scaling"])
    # one check per target: time, initialisers, memory, layer classes (x1 model), scaling
    assert len(results["checks"]) == 5
    assert all(c.startswith(("met: ", "MISSED: ")) for c in results["checks"])
    # the report replaced only the part between the markers
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nprose\n") and text.endswith("more prose\n")
    assert "old" not in text and "| MobileNetV3Small |" in text and "- met: " in text


def test_spy_counts_keras_initialisers() -> None:
    """The initialiser check is not vacuous: Keras' own rebuild is counted."""
    import keras

    script = load_script()
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    with script.initializer_spy() as filled:
        copy = keras.Model.from_config(model.get_config())
    assert {id(v) for v in filled} >= {id(w) for w in copy.weights} and len(copy.weights) == 2


def test_backend_table_puts_each_backend_in_its_own_column(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location(
        "kgraph_backends", ROOT / "benchmarks" / "backends.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def run(surgery: float, b32: float, mode: str) -> dict:
        row = {"model": "ResNet50", "flops_before": 4.0, "flops_after": 1.0}
        row |= {"surgery_vs_from_config": surgery, "speedup_b1": 1.5, "speedup_b32": b32}
        return {"models": [row | {"latency_mode": mode}]}

    report = script.table({"tensorflow": run(1.0, 3.0, "graph"), "jax": run(0.5, 2.0, "jit")})
    header, _rule, row, _, modes = report.splitlines()
    assert header.split(" | ")[2:4] == [
        "surgery / from_config, tensorflow",
        "surgery / from_config, jax",
    ]
    assert row == "| ResNet50 | 0.25 | 1.00x | 0.50x | 1.50x | 1.50x | 3.00x | 2.00x |"
    assert modes == "Latency runs: tensorflow: graph; jax: jit."
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# B\n\n{script.BEGIN}\nold\n{script.END}\ntail\n")
    script.write(page, report)
    assert page.read_text() == f"# B\n\n{script.BEGIN}\n{report}\n{script.END}\ntail\n"
