"""Compatibility layers: other libraries' APIs, implemented with kgraph, for Keras 3.

Each subpackage mirrors one library's public API so that code written for it
needs only its import changed:

- `kerassurgeon`: kerassurgeon 0.2 (`Surgeon`, `operations`, `identify`, `utils`),
  plus `prune(layer, ...)`, which zeroes a layer's smallest weights in place;
- `kerasprune`: Keras-Prune, kerassurgeon's first name (`prune.delete_neurons`);
- `tfmot`: tensorflow-model-optimization's pruning API (`tfmot.sparsity.keras`), on
  TensorFlow, JAX and PyTorch.

Example:
    >>> # before: from kerassurgeon.operations import delete_channels
    >>> from kgraph.compat.kerassurgeon.operations import delete_channels
    >>> smaller = delete_channels(model, model.get_layer("conv1"), [0, 3])
    >>> from kgraph.compat import tfmot  # before: import tensorflow_model_optimization as tfmot
"""

__all__: list[str] = []
