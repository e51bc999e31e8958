"""Dtype policies and distribution: what a lowered model keeps of how the original ran.

- a mixed-precision model keeps its policy (so `compile` adds loss scaling), also
  when it was loaded under float32, as the command line loads it;
- surgery inside `tf.distribute.MirroredStrategy` (2 logical CPUs) and inside
  `keras.distribution.DataParallel` on JAX (2 host devices) gives a model that fits;
- `round_to` keeps channel counts divisible by a mesh axis, and a layout map whose axis
  does not divide a pruned dimension is a `LowerError` that says so.

The distribution tests run in a fresh interpreter: the device count must be set
before the backend starts. Each runs on the suite of its own backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import kgraph
from kgraph.errors import ChannelError

BACKEND = keras.backend.backend()


def _mixed_model() -> keras.Model:
    """Dense layers under mixed_float16, a float32 head, built with the policy global
    and the policy put back afterwards."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((8,))
        x = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
        x = keras.layers.Dense(16, activation="relu", name="hidden2")(x)
        outputs = keras.layers.Dense(2, dtype="float32", name="head")(x)
        return keras.Model(inputs, outputs)
    finally:
        keras.mixed_precision.set_global_policy(before)


def _policies(model: keras.Model) -> dict[str, str]:
    """The layers' policies (an InputLayer's policy computes nothing)."""
    return {
        layer.name: layer.dtype_policy.name
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    }


def test_mixed_precision_model_keeps_its_policy_and_loss_scaling():
    model = _mixed_model()
    assert keras.mixed_precision.global_policy().name == "float32"
    pruned = kgraph.lift(model).apply(kgraph.DeleteChannels("hidden", [0, 3])).lower()
    assert pruned.dtype_policy.name == "mixed_float16"
    assert _policies(pruned) == _policies(model)
    assert pruned.get_layer("hidden").compute_dtype == "float16"
    pruned.compile("adam", "mse")
    assert isinstance(pruned.optimizer, keras.optimizers.LossScaleOptimizer)


def test_mixed_model_loaded_under_float32_still_compiles_with_loss_scaling(tmp_path):
    path = tmp_path / "mixed.keras"
    _mixed_model().save(path)
    loaded = keras.saving.load_model(path)  # as the command line loads it
    assert loaded.dtype_policy.name == "float32"  # Keras keeps only the layers' policies
    pruned = kgraph.prune(loaded, 0.25)
    assert pruned.get_layer("hidden").units == 12
    assert pruned.dtype_policy.name == "mixed_float16"
    assert _policies(pruned) == _policies(loaded)
    pruned.compile("adam", "mse")
    assert isinstance(pruned.optimizer, keras.optimizers.LossScaleOptimizer)
    x = np.random.rand(16, 8).astype("float32")
    history = pruned.fit(x, np.zeros((16, 2)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_float32_model_stays_float32():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="d")(inputs))
    lowered = kgraph.lift(model).lower()
    assert lowered.dtype_policy.name == "float32"
    lowered.compile("adam", "mse")
    assert not isinstance(lowered.optimizer, keras.optimizers.LossScaleOptimizer)


def _two_dense() -> keras.Model:
    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, activation="relu", name="d1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4, name="d2")(x))


def test_delete_channels_round_to_refuses_counts_off_the_multiple():
    model = _two_dense()
    graph = kgraph.lift(model)
    with pytest.raises(
        ChannelError,
        match=r"leaves 13, not a multiple of round_to=8; delete 5 "
        r"more or 3 fewer",
    ):
        graph.apply(kgraph.DeleteChannels("d1", [0, 1, 2], round_to=8))
    pruned = graph.apply(kgraph.DeleteChannels("d1", range(8), round_to=8)).lower()
    assert pruned.get_layer("d1").units == 8
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(pruned.get_layer("d2").kernel),
        np.delete(keras.ops.convert_to_numpy(model.get_layer("d2").kernel), range(8), axis=0),
    )


@pytest.mark.parametrize("bad", [0, -2, 2.0, True, "8"])
def test_delete_channels_round_to_must_be_positive_integer(bad):
    with pytest.raises(ChannelError, match="round_to must be a positive integer"):
        kgraph.DeleteChannels("d1", [0], round_to=bad)


def test_prune_round_to_keeps_multiples():
    model = _two_dense()
    pruned = kgraph.prune(model, 0.3, round_to=4)  # 16 * 0.7 = 11.2 -> 12
    assert pruned.get_layer("d1").units == 12


def _run(parts: list[str], backend: str, **env: str) -> str:
    """Run the script made of `parts` in a fresh interpreter on `backend`; its stdout."""
    script = "\n".join(textwrap.dedent(part) for part in parts)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


_FIT_PRUNED = """
    import numpy as np, keras, kgraph
    def build():
        inputs = keras.Input((8,))
        x = keras.layers.Dense(16, activation="relu", name="d1")(inputs)
        return keras.Model(inputs, keras.layers.Dense(4, name="d2")(x))
    x = np.random.default_rng(0).random((64, 8)).astype("float32")
    y = np.random.default_rng(1).random((64, 4)).astype("float32")
    def check(model, pruned):
        dead = keras.ops.convert_to_numpy(pruned.get_layer("d1").kernel)
        want = np.delete(keras.ops.convert_to_numpy(model.get_layer("d1").kernel), [0, 1], 1)
        assert np.array_equal(dead, want)
        pruned.compile("sgd", "mse")
        loss = pruned.fit(x, y, batch_size=16, epochs=1, verbose=0).history["loss"][0]
        assert np.isfinite(loss)
        print("units", pruned.get_layer("d1").units, "l1", kgraph.prune(model, 0.5)
              .get_layer("d1").units)
"""


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute needs the TensorFlow backend")
def test_surgery_and_fit_inside_mirrored_strategy():
    out = _run(
        [
            """
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        """,
            _FIT_PRUNED,
            """
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
    model = build()
    pruned = kgraph.lift(model).apply(kgraph.DeleteChannels("d1", [0, 1])).lower()
    assert isinstance(pruned.get_layer("d1").kernel.value, tf.distribute.DistributedValues)
    check(model, pruned)
""",
        ],
        "tensorflow",
    )
    assert "units 14 l1 8" in out


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution runs on the JAX backend")
def test_surgery_and_fit_inside_jax_data_parallel():
    out = _run(
        [
            _FIT_PRUNED,
            """
devices = keras.distribution.list_devices()
assert len(devices) == 2, devices
distribution = keras.distribution.DataParallel(devices=devices)
with distribution.scope():
    model = build()
    pruned = kgraph.lift(model).apply(kgraph.DeleteChannels("d1", [0, 1])).lower()
    sharding = pruned.get_layer("d1").kernel.value.sharding
    assert len(sharding.device_set) == 2, sharding
    check(model, pruned)
""",
        ],
        "jax",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    assert "units 14 l1 8" in out


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution runs on the JAX backend")
def test_layout_map_axis_that_does_not_divide_is_a_lower_error():
    out = _run(
        [
            """
        import keras, kgraph
        inputs = keras.Input((8,))
        x = keras.layers.Dense(16, name="d1")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(4, name="d2")(x))
        mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"])
        layout = keras.distribution.LayoutMap(mesh)
        layout["d1/kernel"] = (None, "model")
        layout["d1/bias"] = ("model",)
        parallel = keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="batch")
        with parallel.scope():
            graph = kgraph.lift(model)
            try:
                graph.apply(kgraph.DeleteChannels("d1", [0, 1, 2])).lower()
            except kgraph.LowerError as error:
                print("error:", error)
            kept = graph.apply(kgraph.DeleteChannels("d1", [0, 1], round_to=2)).lower()
            print("sharded", len(kept.get_layer("d1").kernel.value.sharding.device_set))
        """
        ],
        "jax",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    assert "error: weights of 'd1' (Dense) do not fit the layer" in out
    assert "round_to=<axis size>" in out
    assert "sharded 2" in out
