"""Keras-Prune, kerassurgeon's first name (2017): `prune.delete_neurons` and `identify`.

Thin aliases of `kgraph.compat.kerassurgeon`, for code written against Keras-Prune:

    >>> # before: from kerasprune.prune import delete_neurons
    >>> from kgraph.compat.kerasprune.prune import delete_neurons
    >>> smaller = delete_neurons(model, model.get_layer("dense_1"), [0, 3])
"""

from kgraph.compat.kerasprune import identify, prune
from kgraph.compat.kerassurgeon.surgeon import KerasSurgeonError

__all__ = ["KerasSurgeonError", "identify", "prune"]
