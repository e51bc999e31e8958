"""tensorflow-model-optimization's pruning API on Keras 3: change one import.

    >>> # before: import tensorflow_model_optimization as tfmot
    >>> from kgraph.compat import tfmot
    >>> pruned = tfmot.sparsity.keras.prune_low_magnitude(model)

`tfmot.sparsity.keras` runs on TensorFlow, JAX and PyTorch, built on kgraph's masks
and schedules (`kgraph.sparse`). Quantization and clustering are not offered.
"""

from kgraph.compat.tfmot import sparsity
from kgraph.compat.tfmot.errors import PruningStepError, TfmotError

__all__ = ["PruningStepError", "TfmotError", "sparsity"]
