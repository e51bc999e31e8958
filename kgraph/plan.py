"""`PruningPlan`: what a prune deletes, as data you can print, save and replay.

A plan lists channel cuts (channels of a channel group, in the group's lifted
coordinates, named by the group's first owner) and head cuts (query and key/value
heads of an attention layer). It refers to layers by name and to channels by their
index in the lifted model, so it applies to any model of the same architecture: the
model it was made for, a retrained copy, the same model reloaded. Applying it
checks that each named group or layer is there with the same number of channels.

Example:
    >>> plan = kgraph.plan(model, 0.5, "l1")
    >>> print(plan)                 # a table: group, members, channels before -> after
    >>> plan.save("plan.json")
    >>> small = kgraph.PruningPlan.load("plan.json").apply(retrained_model)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import keras
import numpy as np

from kgraph.errors import LayerNotFoundError, PruningError
from kgraph.graph import Graph
from kgraph.graph_data import GraphData
from kgraph.groups import group_of
from kgraph.lift import lift
from kgraph.passes.base import Pass
from kgraph.passes.delete_group_channels import DeleteGroupChannels
from kgraph.passes.delete_heads import DeleteHeads
from kgraph.rules.capabilities import HasHeads
from kgraph.tables import table

__all__ = ["ChannelCut", "HeadCut", "PlanError", "PruningPlan", "cuts_of"]

FORMAT = "kgraph-pruning-plan"
VERSION = 1
_SCALAR = r'(?:-?[0-9][0-9.eE+-]*|"(?:[^"\\]|\\.)*")'  # a number or a JSON string
_SCALAR_LIST = re.compile(rf"\[\s*({_SCALAR}(?:,\s*{_SCALAR})*)\s*\]")


class PlanError(PruningError):
    """A plan cannot be read, or does not fit the model it is applied to."""


def _indices(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


@attrs.frozen
class ChannelCut:
    """Channels to delete from one channel group.

    Attributes:
        owner: the group's first owner (a node name: `conv1`, or `dense@1`).
        channels: the group's lifted channels to delete, ascending.
        width: how many lifted channels the group has.
        members: the group's members, for people (not checked on replay).
        scores: the criterion's scores of the deleted channels (same order), if known.
    """

    owner: str
    channels: tuple[int, ...] = attrs.field(converter=_indices)
    width: int
    members: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "channels": list(self.channels),
            "width": self.width,
            "members": list(self.members),
            "scores": [float(s) for s in self.scores],
        }


@attrs.frozen
class HeadCut:
    """Attention heads to delete from one attention layer.

    Attributes:
        layer: the attention layer's name.
        heads: lifted query heads to delete.
        kv_heads: lifted key/value heads to delete (grouped-query attention), each
            with its query heads.
        count: how many (query) heads the layer has.
    """

    layer: str
    heads: tuple[int, ...] = attrs.field(converter=_indices)
    count: int
    kv_heads: tuple[int, ...] = attrs.field(default=(), converter=_indices)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "heads": list(self.heads),
            "kv_heads": list(self.kv_heads),
            "count": self.count,
        }


@attrs.frozen
class PruningPlan:
    """Channel and head cuts for one architecture (see the module docstring).

    Attributes:
        model: the name of the model it was made for.
        channels: the channel cuts.
        heads: the head cuts.
        description: how it was made (criterion, ratio, ...), for people.
    """

    model: str
    channels: tuple[ChannelCut, ...] = ()
    heads: tuple[HeadCut, ...] = ()
    description: str = ""

    # -- applying ------------------------------------------------------------------------

    def passes(self) -> list[Pass]:
        """The passes that carry the plan out."""
        found: list[Pass] = [DeleteGroupChannels(c.owner, c.channels) for c in self.channels]
        found += [DeleteHeads(h.layer, h.heads, kv_heads=h.kv_heads) for h in self.heads]
        return found

    def check(self, graph: GraphData) -> None:
        """Raise `PlanError` unless every cut fits `graph` (same groups, same widths)."""
        for cut in self.channels:
            if cut.owner not in graph:
                raise PlanError(
                    f"the plan cuts the channel group of {cut.owner!r}, which model "
                    f"{graph.name!r} does not have; a plan applies to models of the same "
                    f"architecture as {self.model!r}"
                )
            group = group_of(graph, cut.owner)
            if group is None or group.channels != cut.width:
                width = None if group is None else group.channels
                raise PlanError(
                    f"the channel group of {cut.owner!r} has {width} channels in model "
                    f"{graph.name!r} but {cut.width} in the plan (made for {self.model!r})"
                )
        for cut in self.heads:
            try:
                node = graph.node(graph.find(cut.layer)[0])
            except LayerNotFoundError:
                raise PlanError(
                    f"model {graph.name!r} has no attention layer {cut.layer!r}"
                ) from None
            rule = graph.rules.rule_for(node)
            count = rule.head_masks(node).query.size if isinstance(rule, HasHeads) else None
            if count != cut.count:
                raise PlanError(
                    f"attention layer {cut.layer!r} has {count} heads in model {graph.name!r} "
                    f"but {cut.count} in the plan (made for {self.model!r})"
                )

    def apply_to_graph(self, graph: Graph) -> Graph:
        """`graph` with the plan carried out (checked first)."""
        self.check(graph)
        return graph.apply(*self.passes())

    def apply(self, model_or_graph: keras.Model | Graph) -> keras.Model:
        """A pruned copy of `model_or_graph` (a Keras model of the plan's architecture,
        or its lifted graph); the model is not changed."""
        graph = model_or_graph if isinstance(model_or_graph, Graph) else lift(model_or_graph)
        return self.apply_to_graph(graph).lower()

    # -- reading -------------------------------------------------------------------------

    @property
    def deleted_channels(self) -> int:
        return sum(len(c.channels) for c in self.channels)

    @property
    def deleted_heads(self) -> int:
        return sum(len(c.heads) for c in self.heads)

    def __len__(self) -> int:
        return len(self.channels) + len(self.heads)

    def __str__(self) -> str:
        about = f" ({self.description})" if self.description else ""
        parts = [f"pruning plan for {self.model!r}{about}"]
        if self.channels:
            rows = [
                [
                    cut.owner,
                    len(cut.members),
                    f"{cut.width} -> {cut.width - len(cut.channels)}",
                    f"{min(cut.scores):.3g}..{max(cut.scores):.3g}" if cut.scores else "-",
                ]
                for cut in self.channels
            ]
            header = ["channel group", "members", "channels", "scores of deleted"]
            parts.append(table(header, rows, align="lrrl"))
        if self.heads:
            rows = [
                [
                    cut.layer,
                    f"{cut.count} -> {cut.count - len(cut.heads)}",
                    ", ".join(map(str, cut.kv_heads)) or "-",
                ]
                for cut in self.heads
            ]
            header = ["attention layer", "heads", "key/value heads deleted"]
            parts.append(table(header, rows, align="lrl"))
        parts.append(
            f"total: {self.deleted_channels} channels from {len(self.channels)} groups, "
            f"{self.deleted_heads} heads from {len(self.heads)} attention layers"
        )
        return "\n".join(parts)

    # -- saving --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model,
            "description": self.description,
            "channels": [c.to_dict() for c in self.channels],
            "heads": [c.to_dict() for c in self.heads],
        }

    def to_json(self) -> str:
        """The plan as JSON, one cut per few lines (each list of numbers or names on one)."""
        text = json.dumps(self.to_dict(), indent=1)
        return _SCALAR_LIST.sub(lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", text)

    @classmethod
    def from_dict(cls, data: Any) -> PruningPlan:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PlanError(f'not a kgraph pruning plan (no "format": {FORMAT!r})')
        if data.get("version") != VERSION:
            raise PlanError(f"pruning plan version {data.get('version')!r} is not {VERSION}")
        try:
            channels = tuple(
                ChannelCut(
                    c["owner"],
                    c["channels"],
                    int(c["width"]),
                    tuple(c.get("members", ())),
                    tuple(float(s) for s in c.get("scores", ())),
                )
                for c in data.get("channels", [])
            )
            heads = tuple(
                HeadCut(c["layer"], c["heads"], int(c["count"]), c.get("kv_heads", ()))
                for c in data.get("heads", [])
            )
        except (KeyError, TypeError, ValueError) as error:
            raise PlanError(f"malformed pruning plan: {error!r}") from error
        return cls(str(data.get("model", "")), channels, heads, str(data.get("description", "")))

    @classmethod
    def from_json(cls, text: str) -> PruningPlan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise PlanError(f"a pruning plan must be JSON: {error}") from error
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the plan as JSON (atomically); return the path."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.kgraph-{os.getpid()}")
        try:
            temporary.write_text(self.to_json() + "\n", encoding="utf-8")
            os.replace(temporary, path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise PlanError(f"cannot write the pruning plan to {str(path)!r}: {error}") from error
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PruningPlan:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise PlanError(f"cannot read the pruning plan {str(path)!r}: {error}") from error
        return cls.from_json(text)


def cuts_of(
    groups: Sequence[Any], chosen: Sequence[Sequence[int]], scores: Sequence[np.ndarray]
) -> tuple[ChannelCut, ...]:
    """Channel cuts for `groups`, deleting `chosen[i]` (scored `scores[i]`) from group i."""
    return tuple(
        ChannelCut(
            g.owners[0],
            sorted(ch),
            g.channels,
            tuple(g.members),
            tuple(float(s[c]) for c in sorted(ch)),
        )
        for g, ch, s in zip(groups, chosen, scores)
        if len(ch)
    )
