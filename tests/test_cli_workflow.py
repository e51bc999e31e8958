"""The command line beyond the basics: start-up without a backend, signals, early output
checks, budgets, plans, heads, reports, exports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from test_cli import one_error_line, run, tiny_model

import kgraph

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    tiny_model().save(path)
    return path


def kgraph_process(*argv: object, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "kgraph", *map(str, argv)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kwargs
    )


def test_help_version_and_argument_errors_load_no_backend() -> None:
    code = (
        "import sys\n"
        "from kgraph import cli\n"
        "assert cli.main(['--help']) == 0\n"
        "assert cli.main(['--version']) == 0\n"
        "assert cli.main(['prune', '--help']) == 0\n"
        "assert cli.main(['prune', 'm.keras', '--ratio', '3']) == 2\n"
        "assert cli.main(['prune', 'm.keras', '--target', 'speed=2']) == 2\n"
        "loaded = [m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--target" in done.stdout and "--dry-run" in done.stdout
    assert "must be a number in [0, 1), got '3'" in done.stderr


def test_a_command_prints_no_backend_chatter(saved: Path) -> None:
    process = kgraph_process("inspect", saved)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert err == ""  # no absl/oneDNN/CUDA lines
    assert "channel groups" in out


@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_termination_leaves_no_partial_file(tmp_path: Path, name: str, code: int) -> None:
    big = tmp_path / "big.keras"
    keras.applications.MobileNetV2(weights=None).save(big)
    output = tmp_path / "small.keras"
    output.write_text("the previous version")
    process = kgraph_process("prune", big, "-o", output, "--progress")
    deadline = time.time() + 240
    seen = ""
    while time.time() < deadline:  # wait until the work has begun
        line = process.stderr.readline()
        seen += line
        if "lifting" in line or not line:
            break
    process.send_signal(getattr(signal, name))
    _, err = process.communicate(timeout=240)
    assert process.returncode == code, seen + err
    assert "kgraph: terminated" in err
    assert output.read_text() == "the previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.keras", "small.keras"]


def test_an_unwritable_output_is_refused_before_any_work(capsys, saved: Path) -> None:
    code, _, err = run(capsys, "prune", saved, "-o", "/proc/x.keras", "--progress")
    assert code == 1
    assert one_error_line(err).startswith("kgraph: error: cannot write '/proc/x.keras': folder")
    assert "loading" not in err  # nothing was loaded


def test_an_unregistered_custom_layer_is_named(capsys, tmp_path: Path) -> None:
    @keras.saving.register_keras_serializable(package="kgraph_cli_test")
    class Doubling(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    x = keras.Input((3,))
    path = tmp_path / "custom.keras"
    keras.Model(x, Doubling(name="double")(keras.layers.Dense(3)(x))).save(path)
    keras.saving.get_custom_objects().pop("kgraph_cli_test>Doubling")  # a fresh process
    code, _, err = run(capsys, "inspect", path)
    assert code == 1
    line = one_error_line(err)
    assert "custom class" in line and "Doubling" in line


def test_dry_run_prints_the_plan_and_writes_nothing(capsys, saved: Path, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "prune", saved, "--dry-run", "--ratio", "0.5")
    assert code == 0
    assert out.startswith("pruning plan for 'tiny'") and "conv1" in out
    assert list(tmp_path.iterdir()) == []


def test_a_saved_plan_replays_to_the_same_weights(capsys, saved: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    direct = tmp_path / "direct.keras"
    code, _, _ = run(capsys, "prune", saved, "-o", direct, "--plan-out", plan, "--ratio", "0.5")
    assert code == 0
    data = json.loads(plan.read_text())
    assert data["format"] == "kgraph-pruning-plan" and data["channels"]
    replayed = tmp_path / "replayed.keras"
    code, out, _ = run(capsys, "prune", saved, "-o", replayed, "--plan", plan)
    assert code == 0 and f"(replayed {plan}: criterion l1" in out
    a, b = keras.saving.load_model(direct), keras.saving.load_model(replayed)
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y))


def test_a_plan_for_another_architecture_is_refused(capsys, saved: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.keras"
    x = keras.Input((4,))
    keras.Model(x, keras.layers.Dense(2, name="d")(keras.layers.Dense(5, name="c")(x))).save(other)
    plan = tmp_path / "plan.json"
    assert run(capsys, "prune", saved, "--dry-run", "--plan-out", plan)[0] == 0
    code, _, err = run(capsys, "prune", other, "-o", tmp_path / "o.keras", "--plan", plan)
    assert code == 1 and "same architecture as 'tiny'" in one_error_line(err)


def test_per_layer_ratios_and_a_budget(capsys, saved: Path, tmp_path: Path) -> None:
    output = tmp_path / "small.keras"
    code, _, _ = run(capsys, "prune", saved, "-o", output, "--ratios", "conv3=0.25,fc=0.5")
    assert code == 0
    small = keras.saving.load_model(output)
    assert small.get_layer("conv3").filters == 12 and small.get_layer("fc").units == 6
    code, out, _ = run(capsys, "prune", saved, "-o", output, "--target", "flops=0.5")
    assert code == 0 and "target flops=0.5" in out
    original = kgraph.stats(keras.saving.load_model(saved)).flops
    assert kgraph.stats(keras.saving.load_model(output)).flops <= 0.5 * original * 1.05


def test_a_report_page_compares_the_pruned_graph(capsys, saved: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    code, out, _ = run(capsys, "prune", saved, "-o", tmp_path / "s.keras", "--report", report)
    assert code == 0 and str(report) in out
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and "conv3" in page
    diff = tmp_path / "diff.html"
    code, _, _ = run(capsys, "dump", saved, "--compare", tmp_path / "s.keras", "-o", diff)
    assert code == 0 and "conv3" in diff.read_text()


def test_quantize_needs_a_litert_output_and_data(capsys, saved: Path, tmp_path: Path) -> None:
    code, _, err = run(capsys, "prune", saved, "-o", tmp_path / "s.keras", "--quantize", "int8")
    assert code == 2 and "applies to a LiteRT output" in one_error_line(err)
    code, _, err = run(capsys, "prune", saved, "-o", tmp_path / "s.tflite", "--quantize", "int8")
    assert code == 2 and "give --data" in one_error_line(err)


def test_calibrate_needs_data(capsys, saved: Path, tmp_path: Path) -> None:
    code, _, err = run(capsys, "prune", saved, "-o", tmp_path / "s.keras", "--calibrate")
    assert code == 2 and "--calibrate" in one_error_line(err)
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).normal(size=(16, 10, 10, 3)).astype("float32"))
    code, _, _ = run(capsys, "prune", saved, "-o", tmp_path / "s.keras", "--calibrate", "--data", x)
    assert code == 0
    small = keras.saving.load_model(tmp_path / "s.keras")
    assert small.get_layer("bn2").moving_mean.shape[0] == 4
    data = np.load(x)
    expected = kgraph.prune(keras.saving.load_model(saved), 0.5, calibrate=data)
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(getattr(small.get_layer("bn2"), name)),
            keras.ops.convert_to_numpy(getattr(expected.get_layer("bn2"), name)),
            rtol=1e-5,
        )
    stale = kgraph.prune(keras.saving.load_model(saved), 0.5)  # without --calibrate
    assert not np.allclose(
        keras.ops.convert_to_numpy(stale.get_layer("bn2").moving_mean),
        keras.ops.convert_to_numpy(small.get_layer("bn2").moving_mean),
    )


# Off TensorFlow an export converts in a TensorFlow subprocess (10-60 s): the slow suite.
EXPORT_SPEED = [pytest.mark.slow] if keras.backend.backend() != "tensorflow" else []


@pytest.mark.parametrize(
    "suffix", [pytest.param(s, marks=EXPORT_SPEED) for s in (".tflite", ".onnx")]
)
def test_prune_writes_a_deployable_file(capsys, saved: Path, tmp_path: Path, suffix: str) -> None:
    """-o small.tflite / small.onnx: the file runs in LiteRT / ONNX Runtime and computes
    what the same pruning saved as .keras computes."""
    pytest.importorskip("ai_edge_litert" if suffix == ".tflite" else "onnxruntime")
    from kgraph.export import load_exported

    assert run(capsys, "prune", saved, "-o", tmp_path / "s.keras", "--ratio", "0.5")[0] == 0
    code, out, _ = run(capsys, "prune", saved, "-o", tmp_path / f"s{suffix}", "--ratio", "0.5")
    assert code == 0 and f"wrote {tmp_path / f's{suffix}'}" in out
    reference = keras.saving.load_model(tmp_path / "s.keras")
    x = np.random.default_rng(0).normal(size=(1, 10, 10, 3)).astype("float32")
    (exported,) = load_exported(tmp_path / f"s{suffix}")(x)
    np.testing.assert_allclose(
        exported, keras.ops.convert_to_numpy(reference(x)), rtol=1e-4, atol=1e-5
    )
    assert not list(tmp_path.glob(".*"))  # no temporary left beside the output
