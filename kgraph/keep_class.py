"""`keep_class`: a pruned keras-hub model as its own class, not a plain functional model.

When every block was pruned alike (`kgraph.prune(..., uniform=True)`), the result is
expressible by the model's own config: fewer heads, FFN units or hidden channels.
`keep_class` scales those config entries (`num_heads`, `num_query_heads`,
`num_key_value_heads`, `intermediate_dim`, `mlp_dim`, `hidden_dim`) by what the
pruned graph kept, rebuilds the model with its class's `from_config` (a task model,
such as `GemmaCausalLM`, with its backbone's config updated and its preprocessor),
copies the sliced weights in, and checks that it computes what the pruned graph
computes. The result saves and loads like the original (`.keras`,
`save_to_preset`), and a causal LM still generates.

Example:
    >>> small = kgraph.prune(gemma_lm, 0.5, heads=0.5, uniform=True)
    >>> type(small) is type(gemma_lm)
    True
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from kgraph.errors import KGraphError, keras_message
from kgraph.graph import Graph
from kgraph.groups import channel_groups
from kgraph.rules.capabilities import HasHeads
from kgraph.weight_feed import build_layer

__all__ = ["KeepClassError", "keep_class", "scaled_config"]

log = logging.getLogger(__name__)

HEAD_KEYS = ("num_heads", "num_query_heads")
KV_KEYS = ("num_key_value_heads",)
FFN_KEYS = ("intermediate_dim", "mlp_dim")
HIDDEN_KEYS = ("hidden_dim",)


class KeepClassError(KGraphError):
    """The pruned model cannot be expressed by its own class's config."""


def _is_hub(model: keras.Model) -> bool:
    return type(model).__module__.startswith("keras_hub.")


def _uniform(values: list[tuple[int, int]], what: str) -> tuple[int, int] | None:
    """The one (kept, lifted) pair of `values`, None when there is none."""
    found = set(values)
    if len(found) > 1:
        raise KeepClassError(
            f"the blocks keep different numbers of {what} ({sorted(found)}), which the "
            "model's config cannot express; prune with uniform=True, or use the functional "
            "model (graph.lower())"
        )
    return found.pop() if found else None


def _sizes(graph: Graph) -> dict[str, tuple[int, int]]:
    """(kept, lifted) of heads, key/value heads, FFN units and hidden channels."""
    heads, kv, head_dims = [], [], []
    for node in graph.nodes():
        rule = graph.rules.rule_for(node)
        if isinstance(rule, HasHeads) and node.call_index == 0:
            masks = rule.head_masks(node)
            heads.append((int(masks.query.sum()), int(masks.query.size)))
            if masks.kv is not None:
                kv.append((int(masks.kv.sum()), int(masks.kv.size)))
            if node.has_weight("query/kernel"):
                size = node.weight_shape("query/kernel")[-1]
                head_dims.append((size, size))
    groups = [g for g in channel_groups(graph) if g.owners]
    hidden = next((g for g in groups if g.hidden), None)
    ffn = [
        (g.kept, g.channels)
        for g in groups
        if g is not hidden
        and g.prunable
        and all(graph.node(o).class_name in ("Dense", "EinsumDense") for o in g.owners)
    ]
    found = {}
    for key, values in (("heads", heads), ("kv_heads", kv), ("ffn", ffn), ("head_dim", head_dims)):
        pair = _uniform(values, key.replace("_", " "))
        if pair is not None:
            found[key] = pair
    if hidden is not None:
        found["hidden"] = (hidden.kept, hidden.channels)
    return found


def _scale(value: int, kept: int, lifted: int, key: str) -> int:
    scaled, rest = divmod(value * kept, lifted)
    if rest:
        raise KeepClassError(
            f"config entry {key}={value} cannot be scaled by {kept}/{lifted} to a whole number"
        )
    return scaled


def scaled_config(config: Mapping[str, Any], sizes: Mapping[str, tuple[int, int]]) -> dict:
    """`config` with its head, FFN and hidden sizes scaled by `sizes` (kept, lifted)."""
    new = dict(config)
    for keys, size in (
        (HEAD_KEYS, "heads"),
        (KV_KEYS, "kv_heads"),
        (FFN_KEYS, "ffn"),
        (HIDDEN_KEYS, "hidden"),
    ):
        if size not in sizes:
            continue
        kept, lifted = sizes[size]
        for key in keys:
            if isinstance(new.get(key), int) and kept != lifted:
                new[key] = _scale(new[key], kept, lifted, key)
    heads = sizes.get("heads")
    if "head_dim" in new and new["head_dim"] is None and heads and heads[0] != heads[1]:
        # a backbone that derives head_dim from hidden_dim // heads (Mistral) keeps it
        new["head_dim"] = sizes["head_dim"][0]
    return new


def _values_by_variable(graph: Graph) -> dict[int, Any]:
    """`id(variable)` of the lifted model's variables -> the pruned graph's values, as
    stored (a deferred slice is gathered once, straight into the new variable)."""
    values: dict[int, Any] = {}
    for node in graph.nodes():
        layer = node.origin() if node.origin is not None else None
        if layer is None or not node.weight_names:
            continue
        for variable, value in zip(layer.weights, node.stored_weights):
            values[id(variable)] = value
    return values


def _rebuild(model: keras.Model, sizes: Mapping[str, tuple[int, int]]) -> keras.Model:
    backbone = getattr(model, "backbone", None)
    if backbone is not None and backbone is not model:  # a task model
        config = copy.deepcopy(model.get_config())
        inner = config.get("backbone")
        if not isinstance(inner, dict) or "config" not in inner:
            raise KeepClassError(f"{type(model).__name__}'s config holds no backbone config")
        inner["config"] = scaled_config(inner["config"], sizes)
        return type(model).from_config(config)
    return type(model).from_config(scaled_config(model.get_config(), sizes))


def keep_class(model: keras.Model, graph: Graph, *, check: bool | None = None) -> keras.Model:
    """`model`'s own class with the sizes and weights of `graph`, a pruned lift of it.

    The new model's variables start from the pruned weights (no initialiser runs).
    `check` runs it against the pruned graph's functional model on random inputs
    (default: for models under 100 M parameters, since it lowers the graph once
    more). A model that is not a keras-hub model comes back as `graph.lower()`.
    Raises `KeepClassError` when the class's config cannot express the pruned model
    (blocks pruned differently, a size that does not scale).
    """
    if not _is_hub(model):
        log.info("%s is not a keras-hub model: returning the functional model", model.name)
        return graph.lower()
    sizes = _sizes(graph)
    values = _values_by_variable(graph)
    old = model.weights

    def weights_for(new: keras.Model) -> list[Any]:
        fresh = new.weights
        if len(old) != len(fresh):
            raise KeepClassError(
                f"the rebuilt {type(model).__name__} has {len(fresh)} weights, the "
                f"original {len(old)}"
            )
        found = []
        for before, after in zip(old, fresh):
            value = values.get(id(before))
            if value is None:
                value = keras.ops.convert_to_numpy(before)
            if tuple(after.shape) != tuple(value.shape):
                raise _mismatch(model, sizes, after, value)
            found.append(value)
        return found

    try:
        try:  # variables deferred, then started from the pruned weights
            new = build_layer(lambda: _rebuild(model, sizes), lambda m: None, weights_for).layer
        except ValueError as error:
            if "stateless scope" not in str(error):
                raise
            # a class that makes a variable from a value while it builds: build it
            # plainly (initialisers run), then assign
            new = _rebuild(model, sizes)
            for variable, value in zip(new.weights, weights_for(new)):
                variable.assign(value)
    except KeepClassError:
        raise
    except Exception as error:  # the class's constructor refusing the new config
        raise KeepClassError(
            f"{type(model).__name__} cannot be built with the pruned sizes {sizes}: "
            f"{keras_message(error)}"
        ) from error
    if check if check is not None else model.count_params() < 100_000_000:
        _check_same(new, graph)
    return new


def _mismatch(
    model: keras.Model, sizes: Mapping[str, tuple[int, int]], after: Any, value: Any
) -> KeepClassError:
    heads = sizes.get("heads", (0, 0))
    if heads[0] != heads[1] and after.path.endswith(("query/kernel", "key/kernel", "value/kernel")):
        return KeepClassError(
            f"{type(model).__name__} sizes each attention head as hidden_dim // num_heads, "
            "so fewer heads of the same size cannot be expressed by its config "
            f"({after.path}: {tuple(after.shape)} vs {tuple(value.shape)}); prune heads "
            "without uniform=True (a functional model), or keep_class with FFN units only"
        )
    return KeepClassError(
        f"weight {after.path} of the rebuilt {type(model).__name__} has shape "
        f"{tuple(after.shape)}, the pruned model's {tuple(value.shape)}: its config cannot "
        "express this pruning (use the functional model, graph.lower())"
    )


def _check_same(new: keras.Model, graph: Graph) -> None:
    """The rebuilt model must compute what the pruned graph computes."""
    lowered = graph.lower()
    rng = np.random.default_rng(0)

    def sample(tensor: Any) -> np.ndarray:
        shape = [2, *(d if d is not None else 5 for d in tensor.shape[1:])]
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if "int" in dtype:
            return np.ones(shape, dtype)
        return rng.normal(size=shape).astype(dtype)

    inputs = keras.tree.map_structure(sample, lowered._inputs_struct)
    for a, b in zip(
        keras.tree.flatten(new(inputs, training=False)),
        keras.tree.flatten(lowered(inputs, training=False)),
    ):
        x, y = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        if x.shape != y.shape or not np.allclose(x, y, rtol=1e-3, atol=1e-4):
            raise KeepClassError(
                f"the rebuilt {type(new).__name__} does not compute what the pruned model "
                "computes; use the functional model (graph.lower())"
            )
