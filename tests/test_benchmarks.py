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
    args = ["--models", "MobileNetV3Small", "--scaling", "10", "20", "--repeats", "1"]
    code = script.main([*args, "--no-targets", "--out", str(out), "--markdown", str(report)])
    assert code == 0
    results = json.loads(out.read_text())
    (model,) = results["models"]
    assert model["model"] == "MobileNetV3Small"
    for key in ("lift_s", "apply_s", "lower_s", "from_config_s", "clone_set_weights_s"):
        assert model[key] > 0
    assert model["params_after"] < model["params_before"]
    assert model["flops_after"] < model["flops_before"]
    assert model["latency_b32_after_s"] > 0 and model["new_layer_classes"] == []
    assert [row["layers"] for row in results["scaling"]] == [10, 20]
    text = report.read_text()
    assert "| MobileNetV3Small |" in text and "Targets:" in text
    assert len(results["checks"]) == 4  # surgery time, memory, layer classes, scaling
