"""Surgery time and pruned-model speed on every Keras backend, side by side.

Runs `benchmarks/run.py` once per backend (TensorFlow, JAX, PyTorch), each in its own
process (Keras picks its backend once per process), one after the other so they do not
compete for the CPU, and writes one table: per model, surgery / `from_config` and the
pruned model's latency speedup at batch 1 and 32 for each backend, next to the FLOPs
ratio. Every figure is a ratio measured within one backend's run.

Usage:
    python benchmarks/backends.py --models ResNet50 MobileNetV2 --rounds 3 \
        --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BACKENDS = ("tensorflow", "jax", "torch")
BEGIN, END = "<!-- backend results: begin -->", "<!-- backend results: end -->"


def measure(backend: str, models: list[str], rounds: int, repeats: int) -> dict[str, Any]:
    """benchmarks/run.py's JSON results for `models` on `backend`."""
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "results.json"
        command = [sys.executable, str(HERE / "run.py"), "--models", *models, "--scaling"]
        command += ["--rounds", str(rounds), "--repeats", str(repeats), "--no-targets"]
        command += ["--out", str(out)]
        print(f"== {backend}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        env = {**os.environ, "KERAS_BACKEND": backend}
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def table(runs: dict[str, dict[str, Any]]) -> str:
    """One Markdown table: a column per backend for each ratio."""
    backends = list(runs)
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for backend, run in runs.items():
        for row in run["models"]:
            by_model.setdefault(row["model"], {})[backend] = row
    header = ["model", "FLOPs after / before"]
    header += [f"surgery / from_config, {b}" for b in backends]
    header += [f"speedup b1, {b}" for b in backends]
    header += [f"speedup b32, {b}" for b in backends]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for model, rows in by_model.items():
        first = next(iter(rows.values()))
        cells = [model, f"{first['flops_after'] / first['flops_before']:.2f}"]
        for key in ("surgery_vs_from_config", "speedup_b1", "speedup_b32"):
            cells += [f"{rows[b][key]:.2f}x" if b in rows else "-" for b in backends]
        lines.append("| " + " | ".join(cells) + " |")
    modes = [f"{b}: {runs[b]['models'][0]['latency_mode']}" for b in backends if runs[b]["models"]]
    return "\n".join([*lines, "", "Latency runs: " + "; ".join(modes) + "."])


def write(path: Path, report: str) -> None:
    """`report` between the BEGIN/END markers of `path` (appended with them if absent)."""
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = f"{head}{BEGIN}\n{report}\n{END}{rest.split(END, 1)[1]}"
    else:
        text = f"{text.rstrip()}\n\n{BEGIN}\n{report}\n{END}\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["ResNet50", "MobileNetV2"])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--markdown", type=Path, help="write the table between its markers")
    args = parser.parse_args(argv)
    missing = [b for b in args.backends if importlib.util.find_spec(b) is None]
    if missing:
        parser.error(f"not installed: {', '.join(missing)} (pip install 'kgraph[{missing[0]}]')")
    runs = {b: measure(b, args.models, args.rounds, args.repeats) for b in args.backends}
    report = table(runs)
    print(report)
    if args.markdown:
        write(args.markdown, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
