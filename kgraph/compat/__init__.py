"""Compatibility layers: other network-surgery libraries' APIs, implemented with kgraph.

Each subpackage mirrors one library's public API so that code written for it
needs only its import changed.

Example:
    >>> # before: from kerassurgeon.operations import delete_channels
    >>> from kgraph.compat.kerassurgeon.operations import delete_channels
    >>> smaller = delete_channels(model, model.get_layer("conv1"), [0, 3])
"""

__all__: list[str] = []
