"""Keras-Prune's `identify`: kerassurgeon's `get_apoz` and `high_apoz`, same signatures.

Example:
    >>> from kgraph.compat.kerasprune import identify
    >>> apoz = identify.get_apoz(model, "conv_1", x_val)
    >>> neurons = identify.high_apoz(apoz, method="both")
"""

from kgraph.compat.kerassurgeon.identify import get_apoz, high_apoz

__all__ = ["get_apoz", "high_apoz"]
