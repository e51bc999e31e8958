"""TensorFlow is optional: on JAX and PyTorch, kgraph works with TensorFlow absent.

A fresh interpreter marks TensorFlow (and its satellites) as not installed, then lifts,
prunes with recalibration, saves and loads, dumps and counts a model. Each backend's
check runs in that backend's suite (`tests/run_backends.py`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import pytest

SCRIPT = """
import sys
for blocked in ("tensorflow", "tf_keras", "tensorboard"):
    sys.modules[blocked] = None  # as if not installed: importing it raises ImportError

import numpy as np, keras, kgraph
x = keras.Input((8, 8, 3))
y = keras.layers.Conv2D(8, 3, name="conv")(x)
y = keras.layers.BatchNormalization(name="bn")(y)
y = keras.layers.GlobalAveragePooling2D()(y)
model = keras.Model(x, keras.layers.Dense(2, name="head")(y))
data = np.random.default_rng(0).random((16, 8, 8, 3)).astype("float32")
small = kgraph.prune(model, 0.5, "taylor", data=(data, np.zeros(16)),
                     loss="sparse_categorical_crossentropy", calibrate=data)
small.save(sys.argv[1])
loaded = keras.saving.load_model(sys.argv[1])
kgraph.lift(loaded).dump(sys.argv[1] + ".html")
print(keras.backend.backend(), loaded.get_layer("conv").filters, kgraph.stats(loaded).params)
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_kgraph_runs_without_tensorflow(backend: str, tmp_path) -> None:
    if keras.backend.backend() != backend:
        pytest.skip(f"runs in the {backend} suite (KERAS_BACKEND={backend})")
    path = tmp_path / "small.keras"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": backend},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-3:] == [backend, "4", "138"]
    assert (tmp_path / "small.keras.html").read_text().startswith("<!DOCTYPE html>")
