"""`prune`: structured pruning in one call, on top of channel groups and importance.

Every prunable channel group is scored by a criterion; the lowest-scoring channels
are deleted from the whole group (so residual branches stay consistent), and the
model is lowered once.

- `scope="local"`: each group loses `ratio` of its channels;
- `scope="global"`: scores are normalised by their group's mean and the lowest
  `ratio` of all channels go, wherever they are;
- `round_to` rounds every kept count up to a multiple (e.g. 8 for fast kernels),
  `min_channels` keeps at least that many, `ignore` leaves groups alone, and
  `ratios` sets a ratio per layer (for its whole group);
- `heads` deletes that fraction of every attention layer's heads (evenly per
  key/value group under grouped-query attention); `hidden=True` also prunes groups
  that reach a model output (a transformer's hidden size; output shapes change);
- `uniform=True` cuts the same number of channels or heads from every block and
  gives back the model's own keras-hub class (`kgraph.keep_class`).

`plan_pruning` returns the `PruningPlan` (printable, savable, replayable) that
`prune` carries out.

Example:
    >>> small = kgraph.prune(model, ratio=0.5, criterion="l1", round_to=8)
    >>> print(kgraph.stats(model).compare(kgraph.stats(small)))
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import keras
import numpy as np

from kgraph.budget import Budget, bisect, measure, order_by_priority
from kgraph.calibrate import recalibrate
from kgraph.errors import PruningError
from kgraph.graph import Graph
from kgraph.graph_data import GraphData, LayerRef
from kgraph.groups import Blocker, ChannelGroup, channel_groups, group_of
from kgraph.importance import CRITERIA, Criterion, alive, head_importance, importance
from kgraph.keep_class import keep_class
from kgraph.lift import lift
from kgraph.passes.delete_group_channels import DeleteGroupChannels
from kgraph.passes.pipeline import run_pipeline
from kgraph.plan import ChannelCut, HeadCut, PruningPlan, cuts_of
from kgraph.rules.capabilities import HasHeads, restriction

__all__ = [
    "PruneOptions",
    "apply_plan",
    "iterative_prune",
    "plan",
    "plan_pruning",
    "prune",
    "prune_graph",
]

log = logging.getLogger(__name__)


def _check_ratio(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise PruningError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)


def _positive(name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        kind = "a positive integer or None" if optional else "a positive integer"
        raise PruningError(f"{name} must be {kind}, got {value!r}")


def _layer_list(value: Any) -> tuple[LayerRef, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return (value,)  # one layer (a bare name is not a list of letters)
    return tuple(value)


def _criterion(value: Any) -> Any:
    if isinstance(value, str) and value not in CRITERIA:
        raise PruningError(
            f"unknown criterion {value!r}; use one of {sorted(CRITERIA)}, a "
            "kgraph.importance.Criterion or a callable (graph, group) -> scores"
        )
    if not (isinstance(value, (str, Criterion)) or callable(value)):
        raise PruningError(f"criterion must be a name, a Criterion or a callable, got {value!r}")
    return value


@attrs.frozen
class PruneOptions:
    """How `prune`, `plan_pruning` and the CLI choose channels (everything but the ratio).

    Attributes:
        criterion: "l1", "l2", "bn_scale", "apoz", "taylor", "random" (see
            `kgraph.importance.CRITERIA`), a `Criterion` or a callable
            `(graph, group) -> scores`.
        scope: "local" (every group loses `ratio`) or "global" (scores normalised by
            their group's mean, ranked across groups).
        data, loss, batch_size: for the data-driven criteria ("apoz" needs data,
            "taylor" data with targets and a loss).
        round_to: round every kept count up to a multiple of this.
        min_channels: never keep fewer channels in a group.
        ignore: layers whose groups are left alone (one name or a list).
        ratios: per-layer ratios (for the layer's whole group), overriding `ratio`.
        seed: for the random criterion.
        strict: raise `PruningError` instead of logging a warning when nothing can
            be pruned.
        heads: fraction of each attention layer's heads to delete (None: none).
        heads_criterion: how heads are scored (default: `criterion` when it can
            score heads — l1, l2, taylor, random — else "l1").
        hidden: also prune a transformer's hidden size (groups whose channels run
            through attention layers, `ChannelGroup.hidden`), and groups that reach a
            model output (output shapes change). Off by default: neither is
            function-preserving.
        uniform: the same cut in every block (local scope), and the model's own class
            back when it is a keras-hub model (see `kgraph.keep_class`).
        target: a budget instead of a ratio (`kgraph.Budget`, or text such as
            "flops=0.5", "params=2M", "bytes=8MB"): channels go in order of score per
            unit of cost until the model fits (see `kgraph.budget`).
        calibrate: inputs (an array, `(x, y)`, a dataset or batches) to re-estimate
            every BatchNorm's statistics on after pruning (`kgraph.recalibrate`); a few
            hundred training samples recover most of the accuracy lost at small ratios.
    """

    criterion: Any = attrs.field(default="l1", converter=_criterion)
    scope: str = "local"
    data: Any = None
    loss: Any = None
    round_to: int | None = None
    min_channels: int = 1
    ignore: tuple[LayerRef, ...] = attrs.field(default=(), converter=_layer_list)
    ratios: Mapping[LayerRef, Any] = attrs.field(factory=dict, converter=lambda v: v or {})
    batch_size: int = 32
    seed: int = 0
    strict: bool = False
    heads: float | None = None
    heads_criterion: Any = None
    hidden: bool = False
    uniform: bool = False
    target: Budget | None = attrs.field(
        default=None, converter=lambda v: None if v is None else Budget.parse(v)
    )
    calibrate: Any = None

    def __attrs_post_init__(self) -> None:
        if self.scope not in ("local", "global"):
            raise PruningError(f"scope must be 'local' or 'global', got {self.scope!r}")
        _positive("round_to", self.round_to, optional=True)
        _positive("min_channels", self.min_channels)
        _positive("batch_size", self.batch_size)
        if not isinstance(self.ratios, Mapping):
            raise PruningError(f"ratios must map layer names to ratios, got {self.ratios!r}")
        for layer, value in self.ratios.items():
            _check_ratio(value, f"ratios[{layer!r}]")
        if self.heads is not None:
            _check_ratio(self.heads, "heads")
        if self.uniform and self.scope != "local":
            raise PruningError("uniform=True cuts every block alike: it needs scope='local'")
        if isinstance(self.criterion, str):
            needs = CRITERIA[self.criterion]
            if needs.needs_data and self.data is None:
                raise PruningError(
                    f"criterion {self.criterion!r} needs data: pass data=x"
                    f"{' with targets, data=(x, y), and a loss' if needs.needs_loss else ''}"
                )
            if needs.needs_loss and self.loss is None:
                raise PruningError(f"criterion {self.criterion!r} needs a loss: pass loss=...")


def _options(
    options: PruneOptions | None, criterion: Any, overrides: dict[str, Any]
) -> PruneOptions:
    if options is not None:
        if not isinstance(options, PruneOptions):
            raise PruningError(f"options must be a kgraph.PruneOptions, got {options!r}")
        return attrs.evolve(options, **overrides) if overrides else options
    unknown = sorted(set(overrides) - {f.name for f in attrs.fields(PruneOptions)})
    if unknown:
        raise PruningError(
            f"unknown pruning option(s) {unknown}; the options are "
            f"{[f.name for f in attrs.fields(PruneOptions)]}"
        )
    return PruneOptions(criterion=criterion, **overrides)


def _names(graph: GraphData, layers: Iterable[LayerRef]) -> set[str]:
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


def _nothing_to_prune(options: PruneOptions, why: str) -> None:
    message = f"nothing to prune: {why}"
    if options.strict:
        raise PruningError(message)
    log.warning("%s", message)


def _prunable(group: ChannelGroup, options: PruneOptions) -> bool:
    if group.hidden and not options.hidden:
        return False
    if group.prunable:
        return True
    return options.hidden and group.blockers == frozenset({Blocker.MODEL_OUTPUT})


def plan_pruning(
    graph: GraphData,
    ratio: float = 0.5,
    criterion: Any = "l1",
    *,
    options: PruneOptions | None = None,
    **overrides: Any,
) -> PruningPlan:
    """The `PruningPlan` `prune` would carry out (see `PruneOptions` for the options,
    given one by one or as `options=`).

    Example:
        >>> plan = plan_pruning(kgraph.lift(model), 0.5, "l2", round_to=8)
        >>> print(plan)
    """
    ratio = _check_ratio(ratio, "ratio")
    options = _options(options, criterion, overrides)
    skipped = _names(graph, options.ignore)
    all_groups = channel_groups(graph)
    groups = [
        g for g in all_groups if _prunable(g, options) and not skipped.intersection(g.members)
    ]
    if options.target is not None and groups:
        channel_cuts = _plan_budget(graph, groups, options)
    else:
        channel_cuts = _plan_channels(graph, groups, ratio, options) if groups else ()
    head_cuts = _plan_heads(graph, options, skipped) if options.heads else ()
    about = f"criterion {_criterion_name(options.criterion)}, {options.scope}, " + (
        f"target {options.target}" if options.target else f"ratio {ratio:g}"
    )
    if options.heads:
        about += f", heads {options.heads:g}"
    plan = PruningPlan(graph.name, channel_cuts, head_cuts, about)
    if not plan and (ratio > 0 or options.heads):
        if not groups:
            reasons = sorted({g.reason for g in all_groups if not g.prunable})
            why = "; ".join(reasons[:3]) if reasons else "the model has no layer with own channels"
            why = f"no channel group of {graph.name!r} can be pruned ({why})"
        elif not _scores_any(graph, groups, options):
            raise PruningError(
                f"criterion {_criterion_name(options.criterion)!r} scores none of the "
                f"{len(groups)} prunable groups of {graph.name!r}"
                + (
                    " (bn_scale reads BatchNormalization scales, and no group has one); "
                    "use 'l1', 'l2' or a data-driven criterion"
                    if options.criterion == "bn_scale"
                    else ""
                )
            )
        else:
            why = (
                f"ratio {ratio} deletes no channel of {len(groups)} prunable groups "
                f"(criterion {_criterion_name(options.criterion)}, min_channels="
                f"{options.min_channels}, round_to={options.round_to})"
            )
        _nothing_to_prune(options, why)
    return plan


def _scores_any(graph: GraphData, groups: list[ChannelGroup], options: PruneOptions) -> bool:
    scores = importance(
        graph,
        groups,
        options.criterion,
        data=options.data,
        loss=options.loss,
        batch_size=options.batch_size,
        seed=options.seed,
    )
    return any(not np.isnan(s).all() for s in scores)


def _criterion_name(criterion: Any) -> str:
    if isinstance(criterion, str):
        return criterion
    return getattr(criterion, "name", getattr(criterion, "__name__", repr(criterion)))


def _plan_channels(
    graph: GraphData, groups: list[ChannelGroup], ratio: float, options: PruneOptions
) -> tuple[ChannelCut, ...]:
    own_ratios = _group_ratios(graph, groups, ratio, options.ratios)
    scores = importance(
        graph,
        groups,
        options.criterion,
        data=options.data,
        loss=options.loss,
        batch_size=options.batch_size,
        seed=options.seed,
    )
    kept = [alive(graph, g) for g in groups]
    min_channels, round_to = options.min_channels, options.round_to
    plans: dict[int, list[int]] = {}
    pool = []
    unscored = []
    for i, (group, score, mask) in enumerate(zip(groups, scores, kept)):
        if np.isnan(score[mask]).any():
            unscored.append(group.owners[0])
            continue
        if options.scope == "local" or own_ratios[i] is not None:
            r = own_ratios[i] if own_ratios[i] is not None else ratio
            n = int(mask.sum())
            keep = _keep_count(n, math.floor(n * r), min_channels, round_to)
            plans[i] = _lowest(group, score, mask, n - keep, min_channels)
        else:
            mean = float(np.mean(score[mask]))
            normalised = score / mean if mean > 0 else score
            pool += [(normalised[c], i, c) for c in np.flatnonzero(mask)]
    if unscored:
        log.info("criterion %r has no scores for the groups of %s", options.criterion, unscored)
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
    order = sorted(plans)
    return cuts_of(
        [groups[i] for i in order], [plans[i] for i in order], [scores[i] for i in order]
    )


def _scores(graph: GraphData, groups: list[ChannelGroup], options: PruneOptions) -> list:
    return importance(
        graph,
        groups,
        options.criterion,
        data=options.data,
        loss=options.loss,
        batch_size=options.batch_size,
        seed=options.seed,
    )


def _plan_budget(
    graph: GraphData, groups: list[ChannelGroup], options: PruneOptions
) -> tuple[ChannelCut, ...]:
    """Channel cuts that bring `graph` to `options.target` (see `kgraph.budget`)."""
    budget = options.target
    scores = _scores(graph, groups, options)
    kept = [alive(graph, g) for g in groups]
    min_channels, round_to = options.min_channels, options.round_to
    cost_budget = budget if budget.metric != "latency" else Budget("flops", 0.5)
    original = measure(graph, budget)
    goal = budget.goal(original)
    base = measure(graph, cost_budget)
    costs = []
    for group, score, mask in zip(groups, scores, kept):
        alive_channels = np.flatnonzero(mask)
        if alive_channels.size < 2 or np.isnan(score[alive_channels]).any():
            costs.append(0.0)
            continue
        lowest = int(alive_channels[np.nanargmin(score[alive_channels])])
        single = run_pipeline(graph, [DeleteGroupChannels(group.owners[0], [lowest])]).graph
        costs.append(base - measure(single, cost_budget))
    limits = [int(m.sum()) - max(min_channels, 1) for m in kept]
    order = order_by_priority(scores, kept, costs, limits)

    def removals(count: int) -> dict[int, int]:
        removed: dict[int, int] = {}
        for g, _ in order[:count]:
            removed[g] = removed.get(g, 0) + 1
        return removed

    def cuts_for(removed: dict[int, int]) -> tuple[ChannelCut, ...]:
        chosen = {}
        for g, number in removed.items():
            n = int(kept[g].sum())
            keep = _keep_count(n, number, min_channels, round_to)
            chosen[g] = _lowest(groups[g], scores[g], kept[g], n - keep, min_channels)
        index = sorted(chosen)
        return cuts_of(
            [groups[g] for g in index], [chosen[g] for g in index], [scores[g] for g in index]
        )

    def amount_of(removed: dict[int, int]) -> float:
        cuts = cuts_for(removed)
        if not cuts:
            return original
        passes = [DeleteGroupChannels(c.owner, c.channels) for c in cuts]
        return measure(run_pipeline(graph, passes).graph, budget)

    count, reached = bisect(len(order), lambda k: amount_of(removals(k)), goal)
    best = removals(count)
    if count > 0 and abs(reached - goal) / goal > budget.tolerance:
        best, reached = _fill(removals(count - 1), best, reached, goal, amount_of, order, count)
    miss = abs(reached - goal) / goal
    if miss > budget.tolerance:
        log.warning(
            "budget %s (%.4g of %s) is not reachable within %.0f%%: the closest plan gives "
            "%.4g (%.1f%% off); %s",
            budget,
            goal,
            budget.metric,
            budget.tolerance * 100,
            reached,
            miss * 100,
            "min_channels and round_to keep channels, and unprunable layers stay"
            if reached > goal
            else "the channels come in steps of that size",
        )
    log.info("budget %s: %.4g -> %.4g (goal %.4g)", budget, original, reached, goal)
    return cuts_for(best)


def _fill(
    state: dict[int, int],
    best: dict[int, int],
    reached: float,
    goal: float,
    amount_of: Any,
    order: list[tuple[int, int]],
    count: int,
    evaluations: int = 300,
) -> tuple[dict[int, int], float]:
    """Get nearer the goal (from below) than `best` (`reached`) in steps finer than the
    order's next channel: from `state` (just above the goal) walk down by the smallest
    single-channel step, keeping the closest plan that lands below; then trade one
    channel of a group for one of another while that lands closer. At most
    `evaluations` plans are measured."""
    limit = {g: sum(1 for h, _ in order if h == g) for g, _ in order}
    candidates = sorted(limit)
    value = amount_of(state)

    def step(trial: dict[int, int]) -> float | None:
        nonlocal evaluations
        if evaluations <= 0 or any(n < 0 or n > limit.get(g, 0) for g, n in trial.items()):
            return None
        evaluations -= 1
        return amount_of(trial)

    while evaluations > 0:  # down, in the finest steps there are
        trials = [
            (found, trial)
            for g in candidates
            if (found := step(trial := {**state, g: state.get(g, 0) + 1})) is not None
        ]
        for found, trial in trials:
            if reached < found <= goal:
                best, reached = trial, found
        above = [t for t in trials if goal < t[0] < value]
        if not above:
            break
        value, state = max(above, key=lambda t: t[0])
    improved = True
    while improved and evaluations > 0:  # trades that land closer below the goal
        improved = False
        for give in [g for g, n in best.items() if n > 0]:
            for take in candidates:
                if take == give:
                    continue
                trial = {**best, give: best[give] - 1, take: best.get(take, 0) + 1}
                found = step(trial)
                if found is not None and reached < found <= goal:
                    best, reached, improved = trial, found, True
    return best, reached


def _plan_heads(graph: GraphData, options: PruneOptions, skipped: set[str]) -> tuple[HeadCut, ...]:
    """Head cuts: `options.heads` of every attention layer's heads, the lowest-scoring,
    the same number from each key/value group."""
    layers: dict[str, str] = {}
    for node in graph.nodes():
        rule = graph.rules.rule_for(node)
        if isinstance(rule, HasHeads) and node.layer not in layers and node.name not in skipped:
            why = restriction(rule, node)
            if why:
                log.info("not pruning the heads of %s: %s", node.describe(), why)
                continue
            layers[node.layer] = node.name
    if not layers:
        return ()
    criterion = options.heads_criterion
    if criterion is None:
        named = CRITERIA.get(options.criterion) if isinstance(options.criterion, str) else None
        criterion = named if named is not None and named.score_heads else "l1"
    names = list(layers.values())
    scores = head_importance(
        graph,
        names,
        criterion,
        data=options.data,
        loss=options.loss,
        batch_size=options.batch_size,
        seed=options.seed,
    )
    cuts = []
    for layer, name, score in zip(layers, names, scores):
        node = graph.node(name)
        masks = graph.rules.rule_for(node).head_masks(node)
        query = masks.query
        group = masks.group if masks.kv is not None else query.size  # evenly per group
        chosen: list[int] = []
        for start in range(0, query.size, group):
            members = [h for h in range(start, start + group) if query[h]]
            remove = min(math.floor(len(members) * options.heads), len(members) - 1)
            if remove <= 0:
                continue
            ranked = sorted(members, key=lambda h: (score[h], h))
            chosen += ranked[:remove]
        if chosen:
            cuts.append(HeadCut(layer, sorted(chosen), int(query.size)))
    return tuple(cuts)


def plan(
    model_or_graph: keras.Model | Graph,
    ratio: float = 0.5,
    criterion: Any = "l1",
    *,
    options: PruneOptions | None = None,
    **overrides: Any,
) -> PruningPlan:
    """The `PruningPlan` `kgraph.prune` would carry out for a model (or a lifted graph).

    Example:
        >>> plan = kgraph.plan(model, 0.5, "l1", round_to=8)
        >>> print(plan)
        >>> small = plan.apply(model)
    """
    graph = model_or_graph if isinstance(model_or_graph, Graph) else lift(model_or_graph)
    return plan_pruning(graph, ratio, criterion, options=options, **overrides)


def apply_plan(graph: Graph, plan: PruningPlan) -> Graph:
    """`graph` with `plan` carried out (see `PruningPlan.apply_to_graph`)."""
    return plan.apply_to_graph(graph)


def prune_graph(
    graph: Graph,
    ratio: float = 0.5,
    criterion: Any = "l1",
    *,
    options: PruneOptions | None = None,
    **overrides: Any,
) -> Graph:
    """`graph` with the channels and heads `plan_pruning` chooses deleted."""
    options = _options(options, criterion, overrides)
    plan = plan_pruning(graph, ratio, options=options)
    pruned = apply_plan(graph, plan)
    log.info(
        "pruned %d channels from %d groups and %d heads from %d layers (%s)",
        plan.deleted_channels,
        len(plan.channels),
        plan.deleted_heads,
        len(plan.heads),
        plan.description,
    )
    return pruned


def prune(
    model: keras.Model,
    ratio: float = 0.5,
    criterion: Any = "l1",
    *,
    options: PruneOptions | None = None,
    **overrides: Any,
) -> keras.Model:
    """A pruned copy of `model`: the lowest-scoring channels of every prunable group
    (and, with `heads=`, attention heads) deleted.

    Args:
        ratio: fraction of each group's channels to delete (local), or of all
            prunable channels (global).
        criterion: "l1", "l2", "bn_scale", "apoz", "taylor", "random" or a callable
            `(graph, group) -> scores` (see `kgraph.importance`).
        options, **overrides: the other options of `PruneOptions` (scope, data,
            loss, round_to, min_channels, ignore, ratios, batch_size, seed, strict,
            heads, heads_criterion, hidden, uniform, target, calibrate), as one record
            or one by one.

    The model is not changed; the result is lowered once and is not compiled. With
    `uniform=True` a keras-hub model comes back as its own class (`keep_class`). When
    nothing can be pruned, a WARNING says why (a `PruningError` with `strict=True`).

    Example:
        >>> small = kgraph.prune(model, 0.5, "l1", scope="global", round_to=8)
        >>> bert = kgraph.prune(bert_backbone, 0.5, heads=0.25, uniform=True)
    """
    options = _options(options, criterion, overrides)
    pruned = prune_graph(lift(model), ratio, options=options)
    smaller = keep_class(model, pruned) if options.uniform else pruned.lower()
    if options.calibrate is not None:
        recalibrate(smaller, options.calibrate, batch_size=options.batch_size, inplace=True)
    return smaller


def iterative_prune(
    model: keras.Model,
    steps: int,
    ratio: float,
    fit: Any,
    criterion: Any = "l1",
    **options: Any,
) -> keras.Model:
    """Delete `ratio` of the channels in `steps` rounds, fine-tuning after each.

    Each round prunes `1 - (1 - ratio) ** (1 / steps)` of what is left with
    `kgraph.prune(..., criterion, **options)`, then calls `fit(model, round)`,
    which trains the (uncompiled) model and may return a replacement. With
    `calibrate=data` the BatchNorm statistics are re-estimated after each prune and
    again after each fit (a short fine-tune leaves them stale).

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
        if options.get("calibrate") is not None:
            batch_size = options.get("batch_size", 32)
            recalibrate(model, options["calibrate"], batch_size=batch_size, inplace=True)
    return model
