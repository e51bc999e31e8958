"""Run the test suite on every Keras backend: the README's test command and CI's.

The whole suite runs on TensorFlow, the non-slow suite on JAX and on PyTorch (the slow
tests build every keras.applications architecture and export files: TensorFlow covers
them). Each backend gets its own pytest process, since Keras chooses its backend once
per process. A backend that is not installed fails the run (pip install
"kgraph[jax]"), unless `--allow-missing` is given, which skips it with a line saying so.

Usage:
    python tests/run_backends.py                   # all three
    python tests/run_backends.py --backends jax -- -k prune
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = {"tensorflow": [], "jax": ["-m", "not slow"], "torch": ["-m", "not slow"]}
PARALLEL = ["-n", "2", "--dist", "loadgroup"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS))
    parser.add_argument("--allow-missing", action="store_true", help="skip absent backends")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed on to pytest")
    args = parser.parse_args(argv)
    results: list[tuple[str, str, float]] = []
    for backend in args.backends:
        if importlib.util.find_spec(backend) is None:
            verdict = "skipped (not installed)" if args.allow_missing else "MISSING"
            print(f"== {backend}: not installed: pip install 'kgraph[{backend}]'", flush=True)
            results.append((backend, verdict, 0.0))
            continue
        command = [sys.executable, "-m", "pytest", *PARALLEL, *BACKENDS[backend]]
        command += args.pytest_args
        print(f"== {backend}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        code = subprocess.call(command, cwd=ROOT, env={**os.environ, "KERAS_BACKEND": backend})
        seconds = time.perf_counter() - start
        results.append((backend, "passed" if code == 0 else f"FAILED (exit {code})", seconds))
    print("\n== summary")
    for backend, verdict, seconds in results:
        print(f"   {backend:<10}  {verdict:<24}  {seconds:6.0f} s")
    ok = all(v == "passed" or v.startswith("skipped") for _, v, _ in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
