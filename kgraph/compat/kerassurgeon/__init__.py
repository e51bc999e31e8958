"""kerassurgeon 0.2's API (`Surgeon`, `operations`, `identify`) on top of kgraph.

Change one import and kerassurgeon code runs on Keras 3 models:

    >>> from kgraph.compat.kerassurgeon import Surgeon, identify
    >>> from kgraph.compat.kerassurgeon.operations import delete_channels
    >>> apoz = identify.get_apoz(model, "conv1", x_val)
    >>> smaller = delete_channels(model, "conv1", identify.high_apoz(apoz))

Also `utils` (kerassurgeon's helpers, for Keras 3 nodes) and `prune(layer, threshold=...)`,
which zeroes a layer's smallest (or random) weights in place:

    >>> from kgraph.compat import kerassurgeon
    >>> kerassurgeon.prune(model.get_layer("conv1"), threshold=0.5)

Differences from kerassurgeon, all on purpose:

- Every operation returns an independent model and never modifies its input;
  the `copy` arguments are accepted and ignored.
- Bad input raises from the `kgraph.KGraphError` family (`KerasSurgeonError`
  and the core's errors, most of which are also `ValueError`s) instead of
  failing later or silently.
- `get_apoz` averages over all rows of all selected calls of a shared layer
  (kerassurgeon summed the per-call fractions).
"""

from kgraph.compat.kerassurgeon import identify, operations, utils
from kgraph.compat.kerassurgeon.magnitude import prunable, prune
from kgraph.compat.kerassurgeon.surgeon import KerasSurgeonError, Surgeon

__version__ = "0.2.0"  # the kerassurgeon release whose API this mirrors

__all__ = [
    "KerasSurgeonError",
    "Surgeon",
    "__version__",
    "identify",
    "operations",
    "prunable",
    "prune",
    "utils",
]
