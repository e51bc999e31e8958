"""The built-in importance criteria by name: what each scores and what it needs.

Plain data (no Keras), so that the command line can list them without loading a
backend; `kgraph.importance` attaches the scoring functions to these names.

Example:
    >>> BUILTIN["taylor"].needs_loss
    True
"""

from __future__ import annotations

import dataclasses

__all__ = ["BUILTIN", "CriterionInfo"]


@dataclasses.dataclass(frozen=True)
class CriterionInfo:
    """A criterion's name, a one-line summary, and what it needs besides the model."""

    name: str
    summary: str
    needs_data: bool = False
    needs_loss: bool = False


BUILTIN: dict[str, CriterionInfo] = {
    info.name: info
    for info in (
        CriterionInfo("l1", "L1 norm of the weights making each channel (Li et al. 2017)"),
        CriterionInfo("l2", "L2 norm of the weights making each channel"),
        CriterionInfo(
            "bn_scale", "|gamma| of the BatchNormalization layers of the group (network slimming)"
        ),
        CriterionInfo(
            "apoz",
            "1 - average percentage of zeros of the activations on data (Hu et al. 2016)",
            needs_data=True,
        ),
        CriterionInfo(
            "taylor",
            "|activation x gradient of the loss| on data with targets (Molchanov et al. 2017)",
            needs_data=True,
            needs_loss=True,
        ),
        CriterionInfo("random", "uniform random scores (seeded): a baseline"),
    )
}
