"""One check for "a list of distinct integer indices": channels, heads, calls.

Example:
    >>> check_indices([0, -1], 8, where="'conv1' (Conv2D), which has 8 channels")
    [0, 7]
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

from kgraph.errors import ChannelError, KGraphError

__all__ = ["check_indices"]


def check_indices(
    items: Any,
    count: int,
    *,
    where: str,
    what: str = "channel",
    negative: bool = True,
    error: type[KGraphError] = ChannelError,
) -> list[int]:
    """`items` as non-negative indices below `count`, or `error` naming the bad one.

    Booleans, floats, duplicates and indices out of range are refused; `where` says
    what they index (`"'conv1' (Conv2D), which has 8 channels"`), `what` names one item
    (`"channel"`, `"head"`, `"call"`). With `negative`, -1 is the last index.
    """
    context = f"(selecting from {where})" if what == "call" else f"(deleting from {where})"
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise error(f"{what}s must be a list of integers, got {items!r} for {where}")
    result = []
    for item in items:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Integral):
            raise error(f"{what} {item!r} is not an integer {context}")
        index = int(item) + count if negative and item < 0 else int(item)
        if not 0 <= index < count:
            raise error(f"{what} {int(item)} is out of range for {where} (0..{count - 1})")
        result.append(index)
    duplicates = sorted({i for i in result if result.count(i) > 1})
    if duplicates:
        raise error(f"{what}s {duplicates} are listed more than once {context}")
    return result
