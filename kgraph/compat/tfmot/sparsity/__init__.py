"""`tfmot.sparsity`: only its `keras` API (`tfmot.sparsity.keras`).

Example:
    >>> from kgraph.compat.tfmot.sparsity import keras as sparsity
    >>> pruned = sparsity.prune_low_magnitude(model)
"""

from kgraph.compat.tfmot.sparsity import keras

__all__ = ["keras"]
