"""`prune`: structured pruning in one call, on top of channel groups and importance.

Every prunable channel group is scored by a criterion; the lowest-scoring channels
are deleted from the whole group (so residual branches stay consistent), and the
model is lowered once.

- `scope="local"`: each group loses `ratio` of its channels;
- `scope="global"`: scores are normalised by their group's mean and the lowest
  `ratio` of all channels go, wherever they are;
- `round_to` rounds every kept count up to a multiple (e.g. 8 for fast kernels),
  `min_channels` keeps at least that many, `ignore` leaves groups alone, and
  `ratios` sets a ratio per layer (for its whole group).

Example:
    >>> small = kgraph.prune(model, ratio=0.5, criterion="l1", round_to=8)
    >>> print(kgraph.stats(model).compare(kgraph.stats(small)))
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
import keras
import numpy as np

from kgraph.errors import PruningError
from kgraph.graph import Graph, LayerRef
from kgraph.groups import ChannelGroup, channel_groups, group_of
from kgraph.importance import Criterion, alive, importance
from kgraph.lift import lift
from kgraph.passes.base import Pass
from kgraph.passes.delete_channels import DeleteChannels

__all__ = ["DeleteGroupChannels", "iterative_prune", "plan_pruning", "prune", "prune_graph"]

log = logging.getLogger(__name__)


@attrs.frozen
class DeleteGroupChannels(Pass):
    """Delete channels of a group, given in the group's coordinates (see `ChannelGroup`)."""

    name: ClassVar[str] = "delete-group-channels"
    member: str
    channels: tuple[int, ...] = attrs.field(converter=tuple)

    def run(self, graph: Graph) -> bool:
        group = group_of(graph, self.member)
        if group is None:
            raise PruningError(f"{graph.node(self.member).describe()} is in no channel group")
        per_owner = group.owner_channels(self.channels)
        changed = [DeleteChannels.delete_own(graph, o, per_owner[o]) for o in group.owners]
        return any(changed)


def _check_ratio(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise PruningError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)


def _names(graph: Graph, layers: Iterable[LayerRef]) -> set[str]:
    return {name for layer in layers for name in graph.find(layer)}


def _group_ratios(
    graph: Graph, groups: Sequence[ChannelGroup], ratio: float, ratios: Mapping[LayerRef, Any]
) -> list[float | None]:
    """The ratio of each group: `ratios` for a listed member, else `ratio`; None: global."""
    chosen: dict[int, tuple[float, str]] = {}
    for layer, value in ratios.items():
        value = _check_ratio(value, f"ratios[{layer!r}]")
        for name in graph.find(layer):
            group = group_of(graph, name)
            if group is None or group not in groups:
                continue
            index = groups.index(group)
            if index in chosen and chosen[index][0] != value:
                raise PruningError(
                    f"ratios give {chosen[index][0]} to {chosen[index][1]!r} and {value} to "
                    f"{name!r}, which share a channel group; give them the same ratio"
                )
            chosen[index] = (value, name)
    return [chosen[i][0] if i in chosen else None for i in range(len(groups))]


def _keep_count(alive_count: int, remove: int, min_channels: int, round_to: int | None) -> int:
    keep = max(alive_count - remove, min_channels, 1)
    if round_to:
        keep = round_to * math.ceil(keep / round_to)
    return min(keep, alive_count)


def _lowest(
    group: ChannelGroup, scores: np.ndarray, kept: np.ndarray, count: int, min_channels: int
) -> list[int]:
    """The `count` lowest-scoring kept channels of `group`, skipping any whose deletion
    would leave one of its owners (a slice of the group when a Concatenate put owners
    side by side, as in InceptionResNetV2) with fewer than `min_channels` channels."""
    candidates = np.flatnonzero(kept)
    order = candidates[np.argsort(scores[candidates], kind="stable")]
    slices = list(zip(group.offsets, group.widths)) or [(0, kept.size)]
    left = [int(kept[start : start + width].sum()) for start, width in slices]
    chosen: list[int] = []
    for channel in order.tolist():
        if len(chosen) == count:
            break
        hit = [i for i, (start, width) in enumerate(slices) if start <= channel < start + width]
        if any(left[i] <= max(min_channels, 1) for i in hit):
            continue
        for i in hit:
            left[i] -= 1
        chosen.append(channel)
    return sorted(chosen)


def plan_pruning(
    graph: Graph,
    ratio: float = 0.5,
    criterion: Criterion = "l1",
    *,
    scope: str = "local",
    data: Any = None,
    loss: Any = None,
    round_to: int | None = None,
    min_channels: int = 1,
    ignore: Iterable[LayerRef] = (),
    ratios: Mapping[LayerRef, Any] | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> list[tuple[ChannelGroup, list[int]]]:
    """The channels `prune` would delete: `(group, channels in group coordinates)` pairs."""
    ratio = _check_ratio(ratio, "ratio")
    if scope not in ("local", "global"):
        raise PruningError(f"scope must be 'local' or 'global', got {scope!r}")
    if round_to is not None and (not isinstance(round_to, int) or round_to < 1):
        raise PruningError(f"round_to must be a positive integer or None, got {round_to!r}")
    if not isinstance(min_channels, int) or min_channels < 1:
        raise PruningError(f"min_channels must be a positive integer, got {min_channels!r}")
    skipped = _names(graph, ignore)
    groups = [
        g for g in channel_groups(graph) if g.prunable and not skipped.intersection(g.members)
    ]
    own_ratios = _group_ratios(graph, groups, ratio, ratios or {})
    scores = importance(
        graph, groups, criterion, data=data, loss=loss, batch_size=batch_size, seed=seed
    )
    kept = [alive(graph, g) for g in groups]
    plans: dict[int, list[int]] = {}
    pool = []
    for i, (group, score, mask) in enumerate(zip(groups, scores, kept)):
        if np.isnan(score[mask]).any():
            log.info("not pruning %s: criterion %r has no score for it", group.owners[0], criterion)
            continue
        if scope == "local" or own_ratios[i] is not None:
            r = own_ratios[i] if own_ratios[i] is not None else ratio
            n = int(mask.sum())
            keep = _keep_count(n, math.floor(n * r), min_channels, round_to)
            plans[i] = _lowest(group, score, mask, n - keep, min_channels)
        else:
            mean = float(np.mean(score[mask]))
            normalised = score / mean if mean > 0 else score
            pool += [(normalised[c], i, c) for c in np.flatnonzero(mask)]
    if pool:
        total = len(pool)
        pool.sort(key=lambda item: item[0])
        removed: dict[int, int] = {}
        limit = {i: int(kept[i].sum()) - max(min_channels, 1) for _, i, _ in pool}
        for _, i, _ in pool:
            if sum(removed.values()) >= math.floor(total * ratio):
                break
            if removed.get(i, 0) < limit[i]:
                removed[i] = removed.get(i, 0) + 1
        for i, count in removed.items():
            n = int(kept[i].sum())
            keep = _keep_count(n, count, min_channels, round_to)
            plans[i] = _lowest(groups[i], scores[i], kept[i], n - keep, min_channels)
    return [(groups[i], channels) for i, channels in sorted(plans.items()) if channels]


def prune_graph(
    graph: Graph, ratio: float = 0.5, criterion: Criterion = "l1", **options: Any
) -> Graph:
    """`graph` with the channels `plan_pruning` chooses deleted (see `prune` for options)."""
    plan = plan_pruning(graph, ratio, criterion, **options)
    passes = [DeleteGroupChannels(group.owners[0], channels) for group, channels in plan]
    pruned = graph.apply(*passes)
    removed = sum(len(ch) for _, ch in plan)
    log.info(
        "pruned %d channels from %d groups (%s, ratio %s)", removed, len(plan), criterion, ratio
    )
    return pruned


def prune(
    model: keras.Model,
    ratio: float = 0.5,
    criterion: Criterion = "l1",
    *,
    scope: str = "local",
    data: Any = None,
    loss: Any = None,
    round_to: int | None = None,
    min_channels: int = 1,
    ignore: Iterable[LayerRef] = (),
    ratios: Mapping[LayerRef, Any] | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> keras.Model:
    """A pruned copy of `model`: the lowest-scoring channels of every prunable group deleted.

    Args:
        ratio: fraction of each group's channels to delete (local), or of all
            prunable channels (global).
        criterion: "l1", "l2", "bn_scale", "apoz", "taylor", "random" or a callable
            `(graph, group) -> scores` (see `kgraph.importance`).
        scope: "local" (every group loses `ratio`) or "global" (scores normalised by
            their group's mean, ranked across groups).
        data, loss: for the data-driven criteria ("apoz" needs data, "taylor" data
            with targets and a loss).
        round_to: round every kept count up to a multiple of this.
        min_channels: never keep fewer channels in a group.
        ignore: layers whose groups are left alone.
        ratios: per-layer ratios (for the layer's whole group), overriding `ratio`.

    The model is not changed; the result is lowered once and is not compiled.
    """
    graph = lift(model)
    options = dict(
        scope=scope,
        data=data,
        loss=loss,
        round_to=round_to,
        min_channels=min_channels,
        ignore=ignore,
        ratios=ratios,
        batch_size=batch_size,
        seed=seed,
    )
    return prune_graph(graph, ratio, criterion, **options).lower()


def iterative_prune(
    model: keras.Model,
    steps: int,
    ratio: float,
    fit: Any,
    criterion: Criterion = "l1",
    **options: Any,
) -> keras.Model:
    """Delete `ratio` of the channels in `steps` rounds, fine-tuning after each.

    Each round prunes `1 - (1 - ratio) ** (1 / steps)` of what is left with
    `kgraph.prune(..., criterion, **options)`, then calls `fit(model, round)`,
    which trains the (uncompiled) model and may return a replacement.

    Example:
        >>> def fit(model, step):
        ...     model.compile("adam", "sparse_categorical_crossentropy")
        ...     model.fit(x, y, epochs=1, verbose=0)
        >>> small = kgraph.iterative_prune(model, steps=3, ratio=0.5, fit=fit)
    """
    if not isinstance(steps, int) or steps < 1:
        raise PruningError(f"steps must be a positive integer, got {steps!r}")
    ratio = _check_ratio(ratio, "ratio")
    if not callable(fit):
        raise PruningError(f"fit must be a callable fit(model, step), got {fit!r}")
    per_step = 1 - (1 - ratio) ** (1 / steps)
    for step in range(steps):
        model = prune(model, per_step, criterion, **options)
        log.info(
            "iterative pruning: round %d/%d pruned %.3f of the channels", step + 1, steps, per_step
        )
        result = fit(model, step)
        if isinstance(result, keras.Model):
            model = result
    return model
