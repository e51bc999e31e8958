"""Hypothesis profiles of the fuzz suite.

- `kgraph-fuzz-ci` (default): a few hundred cases in all, derandomized so CI is
  reproducible, well under two minutes on two cores.
- `kgraph-fuzz-long` (`KGRAPH_FUZZ=long`): at least 10,000 cases in all, from a random
  seed printed in the report header (set `KGRAPH_FUZZ_SEED` to replay a run); failing
  examples are printed with their `@reproduce_failure` blob and kept in the example
  database (.hypothesis/).

Each test takes its share of the profile's `max_examples` (`oracles.fuzz_settings`);
the counts reach the summary line through `helpers.GENERATED_CASES`.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, Phase, settings

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "kgraph-fuzz-ci",
    max_examples=110,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=_SLOW,
)
settings.register_profile(
    "kgraph-fuzz-long",
    max_examples=10_400,
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=_SLOW,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)

if os.environ.get("KGRAPH_FUZZ") == "long":
    # One seed for the whole run, chosen here unless given, so a run can be replayed.
    os.environ.setdefault("KGRAPH_FUZZ_SEED", str(random.SystemRandom().randrange(2**32)))


def pytest_report_header(config: pytest.Config) -> str:
    if os.environ.get("KGRAPH_FUZZ") == "long":
        return f"kgraph fuzz: long profile, seed {os.environ['KGRAPH_FUZZ_SEED']}"
    return "kgraph fuzz: CI profile (derandomized; KGRAPH_FUZZ=long for the long run)"


def pytest_terminal_summary(terminalreporter) -> None:
    if os.environ.get("KGRAPH_FUZZ") == "long":
        seed = os.environ["KGRAPH_FUZZ_SEED"]
        terminalreporter.write_line(f"kgraph fuzz: long profile, seed {seed}")
