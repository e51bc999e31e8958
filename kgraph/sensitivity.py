"""Sensitivity analysis: how much each channel group can lose on its own.

`kgraph.sensitivity(model, metric, ratios=(0.1, 0.3, 0.5))` prunes each prunable
channel group alone at each ratio (its lowest-scoring channels, by the criterion)
and evaluates `metric` on the pruned model. The report prints as a table, converts
to plain data, draws a plot, and tells the largest ratio each group bears within an
allowed drop — ratios `kgraph.prune(..., ratios=...)` takes:

Example:
    >>> report = kgraph.sensitivity(model, lambda m: accuracy(m, x_val, y_val))
    >>> print(report)
    >>> report.plot("sensitivity.png")
    >>> small = kgraph.prune(model, 0.5, ratios=report.ratios(max_drop=0.01))
"""

from __future__ import annotations

import html
import io
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import keras
import numpy as np

from kgraph.errors import KGraphError, PruningError
from kgraph.graph import Graph
from kgraph.groups import alive, channel_groups
from kgraph.importance import importance
from kgraph.lift import lift
from kgraph.passes.delete_group_channels import DeleteGroupChannels
from kgraph.tables import table

__all__ = ["SensitivityReport", "sensitivity"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@attrs.frozen
class SensitivityReport:
    """The metric after pruning each group alone at each ratio.

    Attributes:
        model: the model's name.
        baseline: the metric of the unpruned model.
        ratios: the ratios tried, ascending.
        rows: `group owner -> metric at each ratio` (same order as `ratios`).
        widths: `group owner -> its channel count`.
        higher_is_better: whether a larger metric is better (accuracy) or worse (loss).
        metric: the metric's name, for people.
    """

    model: str
    baseline: float
    ratios: tuple[float, ...]
    rows: dict[str, tuple[float, ...]]
    widths: dict[str, int]
    higher_is_better: bool = True
    metric: str = "metric"

    def drop(self, owner: str, index: int) -> float:
        """How much worse than the baseline group `owner` is at `ratios[index]`."""
        value = self.rows[owner][index]
        return self.baseline - value if self.higher_is_better else value - self.baseline

    def ratios_for(self, max_drop: float) -> dict[str, float]:
        """Per group, the largest ratio tried whose drop stays within `max_drop` (groups
        that bear none are left out): `kgraph.prune(..., ratios=...)` takes this."""
        found = {}
        for owner in self.rows:
            bearable = [r for i, r in enumerate(self.ratios) if self.drop(owner, i) <= max_drop]
            if bearable:
                found[owner] = max(bearable)
        return found

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON or pandas): baseline, ratios, and one row per group."""
        return {
            "model": self.model,
            "baseline": self.baseline,
            "ratios": list(self.ratios),
            "higher_is_better": self.higher_is_better,
            "metric": self.metric,
            "groups": [
                {"owner": o, "channels": self.widths[o], "metric": list(values)}
                for o, values in self.rows.items()
            ],
        }

    def __str__(self) -> str:
        header = ["group", "channels", *(f"{r:.0%}" for r in self.ratios)]
        rows = [
            [owner, self.widths[owner], *(f"{v:.4g}" for v in values)]
            for owner, values in self.rows.items()
        ]
        title = f"sensitivity of {self.model!r}: {self.metric} (baseline {self.baseline:.4g})"
        return f"{title}\n{table(header, rows)}"

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Draw the metric against the ratio, one line per group, to `.png`, `.svg` or
        `.html` (the SVG in a page). Needs matplotlib (`pip install "kgraph[plot]"`)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".png", ".svg", ".html"):
            raise KGraphError(f"plot to .png, .svg or .html, not {str(path)!r}")
        try:
            from matplotlib.figure import Figure  # optional: only the plot needs it
        except ImportError as error:
            raise KGraphError('plotting needs matplotlib: pip install "kgraph[plot]"') from error
        figure = Figure(figsize=(8, 5), dpi=100)
        axes = figure.add_subplot()
        ratios = [0.0, *self.ratios]
        worst = sorted(self.rows, key=lambda o: -self.drop(o, len(self.ratios) - 1))
        for owner in worst:
            label = owner if worst.index(owner) < 10 else None  # the ten most sensitive
            axes.plot(ratios, [self.baseline, *self.rows[owner]], marker="o", label=label)
        axes.set_xlabel("fraction of the group's channels pruned")
        axes.set_ylabel(self.metric)
        axes.set_title(f"Sensitivity of {self.model} (baseline {self.baseline:.4g})")
        axes.grid(alpha=0.3)
        if self.rows:
            axes.legend(fontsize=7, loc="best")
        buffer = io.BytesIO() if suffix == ".png" else io.StringIO()
        figure.savefig(buffer, format="png" if suffix == ".png" else "svg")
        try:
            if suffix == ".png":
                path.write_bytes(buffer.getvalue())
            else:
                svg = buffer.getvalue()
                if suffix == ".html":
                    title = html.escape(f"Sensitivity of {self.model}")
                    svg = f"<!DOCTYPE html><meta charset='utf-8'><title>{title}</title>{svg}"
                path.write_text(svg, encoding="utf-8")
        except OSError as error:
            raise KGraphError(f"cannot write the plot to {str(path)!r}: {error}") from error
        return path


def _metric(metric: Any, data: Any) -> Callable[[keras.Model], float]:
    if callable(metric):
        return lambda model: float(metric(model))
    if isinstance(metric, str) and data is not None:
        x, y = data

        def evaluate(model: keras.Model) -> float:
            model.compile(loss="sparse_categorical_crossentropy", metrics=[metric])
            results = model.evaluate(x, y, verbose=0, return_dict=True)
            if metric not in results:
                raise PruningError(f"metric {metric!r} is not among {sorted(results)}")
            return float(results[metric])

        return evaluate
    raise PruningError(
        "metric must be a callable model -> number, or the name of a Keras metric with data=(x, y)"
    )


def sensitivity(
    model: keras.Model | Graph,
    metric: Callable[[keras.Model], float] | str,
    *,
    data: Any = None,
    ratios: Sequence[float] = (0.1, 0.3, 0.5),
    criterion: Any = "l1",
    groups: Sequence[str] | None = None,
    higher_is_better: bool = True,
    progress: bool | Progress = False,
    **scoring: Any,
) -> SensitivityReport:
    """Prune each prunable channel group alone at each of `ratios` and evaluate `metric`.

    Args:
        metric: `metric(model) -> number`, or the name of a Keras metric ("accuracy")
            evaluated on `data=(x, y)` (with a sparse categorical cross-entropy loss).
        ratios: fractions of each group's channels to delete, each in (0, 1).
        criterion: which channels go first (see `kgraph.importance`); `scoring` passes
            its data, loss, batch_size or seed.
        groups: the owners of the groups to analyse (default: every prunable group).
        higher_is_better: False when the metric is a loss.
        progress: True for a Keras progress bar, or `progress(done, total)`.
    """
    checked = sorted({float(r) for r in ratios})
    if not checked or any(not 0 < r < 1 for r in checked):
        raise PruningError(f"ratios must be numbers in (0, 1), got {list(ratios)!r}")
    evaluate = _metric(metric, data)
    graph = model if isinstance(model, Graph) else lift(model)
    chosen = [g for g in channel_groups(graph) if g.prunable and not g.hidden]
    if groups is not None:
        wanted = set(groups)
        chosen = [g for g in chosen if wanted & set(g.owners)]
    if not chosen:
        raise PruningError(f"{graph.name!r} has no prunable channel group to analyse")
    scores = importance(graph, chosen, criterion, **scoring)
    baseline = evaluate(graph.lower())
    total = len(chosen) * len(checked)
    bar = keras.utils.Progbar(total) if progress is True else None
    rows: dict[str, tuple[float, ...]] = {}
    done = 0
    for group, score in zip(chosen, scores):
        mask = alive(graph, group)
        candidates = np.flatnonzero(mask)
        order = candidates[np.argsort(score[candidates], kind="stable")]
        values = []
        for ratio in checked:
            count = min(math.floor(len(candidates) * ratio), len(candidates) - 1)
            if count <= 0:
                values.append(baseline)
            else:
                cut = DeleteGroupChannels(group.owners[0], sorted(order[:count].tolist()))
                values.append(evaluate(graph.apply(cut).lower()))
            done += 1
            if bar is not None:
                bar.update(done)
            elif callable(progress):
                progress(done, total)
        rows[group.owners[0]] = tuple(values)
        log.info("sensitivity: %s done (%d/%d)", group.owners[0], done, total)
    return SensitivityReport(
        graph.name,
        baseline,
        tuple(checked),
        rows,
        {g.owners[0]: g.channels for g in chosen},
        higher_is_better,
        metric if isinstance(metric, str) else getattr(metric, "__name__", "metric"),
    )
