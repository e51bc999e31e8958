"""Shared test set-up: quiet TensorFlow, deterministic seeds, the test helpers."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

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


@pytest.fixture(autouse=True)
def _count_generated_cases(request: pytest.FixtureRequest) -> Iterator[None]:
    """Attach the property tests' case counts to the test's report (which reaches the
    main process also when pytest-xdist runs the test in a worker)."""
    from helpers import GENERATED_CASES

    before = Counter(GENERATED_CASES)
    yield
    for name, count in (GENERATED_CASES - before).items():
        request.node.user_properties.append(("generated_cases", (name, count)))


_GENERATED_TOTALS: Counter[str] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        for key, value in report.user_properties:
            if key == "generated_cases":
                _GENERATED_TOTALS[value[0]] += value[1]


def pytest_terminal_summary(terminalreporter) -> None:
    for name, count in sorted(_GENERATED_TOTALS.items()):
        terminalreporter.write_line(f"property test {name}: {count} generated cases checked")
