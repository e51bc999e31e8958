"""Shared test set-up: quiet TensorFlow, deterministic seeds, the test helpers."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)


@pytest.fixture(params=["channels_last", "channels_first"])
def data_format(request: pytest.FixtureRequest) -> str:
    return request.param


def pytest_terminal_summary(terminalreporter) -> None:
    from helpers import GENERATED_CASES

    for name, count in sorted(GENERATED_CASES.items()):
        terminalreporter.write_line(f"property test {name}: {count} generated cases checked")
