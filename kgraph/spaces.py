"""Channel spaces: the coordinate systems channel masks are written in.

A mask has one entry per channel its tensor had when its coordinates were made;
two masks are comparable only when their spaces are equal. There are four kinds:

- `Space`: new channels (a layer's own units or filters, a model input). Compared
  by identity: every `Space` is a coordinate system of its own. An `InputSpace` is
  the channels of a model input: never deleted.
- `ConcatSpace`: the channels of a Concatenate, its parts side by side.
- `MergeSpace`: the common channels of an element-wise merge of several spaces.
- `DerivedSpace`: channels computed from another space in a fixed way (a flatten,
  a depthwise multiplier, attention heads, the units of a Bidirectional layer);
  its `kind` says how.

Every space can say which spaces it is built from (`sources`), the base spaces
inside it (`bases()`), and the node whose channels it describes (`origin`, for
error messages). All are immutable and hashable.

Example:
    >>> a, b = Space("conv1#0"), Space("conv2#1")
    >>> cat = ConcatSpace("concat", (a, b), (16, 32))
    >>> cat.offset_of(b), [s.label for s in cat.bases()]
    ((16, 32), ['conv1#0', 'conv2#1'])
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import ClassVar

import attrs

__all__ = [
    "ChannelSpace",
    "ConcatSpace",
    "Derivation",
    "DerivedSpace",
    "InputSpace",
    "MergeSpace",
    "Space",
]


class ChannelSpace:
    """Base of the channel spaces (see the module docstring)."""

    __slots__ = ()

    #: True for the spaces channel groups are built from: `Space` and `MergeSpace`.
    element: ClassVar[bool] = False

    @property
    def origin(self) -> str:
        """The node whose channels these are (for messages)."""
        raise NotImplementedError

    @property
    def sources(self) -> tuple[ChannelSpace | None, ...]:
        """The spaces this one is built from (none for a `Space`)."""
        return ()

    def bases(self) -> Iterator[Space]:
        """The base spaces inside this one, depth first."""
        for source in self.sources:
            if source is not None:
                yield from source.bases()

    def derives_from(self, space: ChannelSpace | None) -> bool:
        """True when `space` is this space or one it is directly built from."""
        return space is not None and (space == self or space in self.sources)


class Space(ChannelSpace):
    """New channels: a coordinate system of its own (compared by identity).

    `label` is `"<node>#<number>"`; the node part names the space in messages.
    """

    __slots__ = ("label",)
    element = True

    def __init__(self, label: str) -> None:
        self.label = label

    @property
    def origin(self) -> str:
        return self.label.rsplit("#", 1)[0]

    def bases(self) -> Iterator[Space]:
        yield self

    def __repr__(self) -> str:
        return f"Space({self.label!r})"


class InputSpace(Space):
    """The channels of a model input (its name is the `origin`): never deleted."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"InputSpace({self.label!r})"


@attrs.frozen
class ConcatSpace(ChannelSpace):
    """The channels of Concatenate `node`: its `parts` side by side, `widths` wide.

    A part the Concatenate dropped (every channel deleted) stays here, so the
    coordinates do not change when it goes.
    """

    node: str
    parts: tuple[ChannelSpace | None, ...]
    widths: tuple[int, ...]

    @property
    def origin(self) -> str:
        return self.node

    @property
    def sources(self) -> tuple[ChannelSpace | None, ...]:
        return self.parts

    @property
    def width(self) -> int:
        return sum(self.widths)

    def pieces(self) -> list[tuple[ChannelSpace | None, int]]:
        """The `(part, width)` pieces in order."""
        return list(zip(self.parts, self.widths))

    def offset_of(self, part: ChannelSpace) -> tuple[int, int] | None:
        """`(offset, width)` of `part`'s channels here, looking into nested
        concatenations; None when `part` is not inside."""
        start = 0
        for sub, width in self.pieces():
            if sub == part:
                return start, width
            if isinstance(sub, ConcatSpace):
                inner = sub.offset_of(part)
                if inner is not None:
                    return start + inner[0], inner[1]
            start += width
        return None


@attrs.frozen
class MergeSpace(ChannelSpace):
    """The channels that an element-wise merge `node` of different spaces keeps in common."""

    node: str
    merged: tuple[ChannelSpace | None, ...]
    element: ClassVar[bool] = True

    @property
    def origin(self) -> str:
        return self.node

    @property
    def sources(self) -> tuple[ChannelSpace | None, ...]:
        return self.merged


class Derivation(enum.Enum):
    """How a `DerivedSpace` is computed from its source."""

    FLATTEN = "flatten"  # every position of the source's channels, flattened
    DEPTHWISE = "depthwise"  # `factor` filters per source channel, side by side
    HEADS = "heads"  # the attention heads of `node` (no source)
    FORWARD = "forward"  # a Bidirectional layer's forward units (of `source`)
    BACKWARD = "backward"  # its backward units
    BOTH_DIRECTIONS = "both directions"  # forward units, then backward units
    DIRECTION = "direction"  # one direction seen alone (`factor`: 0 forward, 1 backward)


@attrs.frozen
class DerivedSpace(ChannelSpace):
    """Channels computed from `source` as `kind` says, by node `node`."""

    kind: Derivation
    node: str
    source: ChannelSpace | None = None
    factor: int = 1

    @property
    def origin(self) -> str:
        return self.node

    @property
    def sources(self) -> tuple[ChannelSpace | None, ...]:
        return () if self.source is None else (self.source,)
