"""The code base stays ruff clean and free of library prints and asserts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.fail("ruff is part of the test extras: pip install -e '.[test]'")
    result = subprocess.run(
        [ruff, "check", "kgraph", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_library_neither_prints_nor_asserts() -> None:
    offenders = []
    for path in (ROOT / "kgraph").rglob("*.py"):
        if "examples" in path.parts:
            continue  # examples and the CLI talk to a person
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.match(r"\s*(print\(|assert )", line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
