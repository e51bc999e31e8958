"""Trace a composite layer's `call` into a functional graph of its sublayer calls.

keras-hub models are functional graphs of *composite* layers: a transformer
block is one custom layer whose attention, Dense/EinsumDense and norm layers
are attributes, so the model's graph shows one opaque node per block.
`trace_layer(layer, args, kwargs)` runs the layer's own `call` (not
`__call__`, which would hide the sublayer calls inside `compute_output_spec`)
on fresh symbolic `keras.KerasTensor`s standing for the tensor arguments of
one call. Every sublayer call and every `keras.ops` operation on those tensors
records a Keras node, and the result is wrapped into a `keras.Model(inputs,
outputs)` named after the layer: a Functional that `kgraph.lift` can inline
like any nested model, its sublayers addressed as `block/sublayer`.

Design:

- **The original objects are traced.** The layer's own `get_config()` is never
  used (LlamaTransformerDecoder's raises, ViTPatchingAndEmbedding's does not
  round-trip); its sublayers are the user's own objects, whose configs and
  weights a later rebuild uses. The trace calls `type(layer).call` on a
  *proxy*: a new instance of the layer's class whose `__dict__` is a shallow
  copy of the layer's, so the call's code finds the same sublayers, while
  attribute writes and the substitutions below stay private to this trace.
  Neither the layer nor its class is changed.
- **Composite sublayers are traced recursively** (`expand`, by default
  `is_composite`: a layer with sublayers that does not derive from a built-in
  Keras layer such as `MultiHeadAttention`, so keras-hub's
  `CachedMultiHeadAttention`, Dense, EinsumDense, LayerNormalization, Embedding
  or Dropout stay single nodes). In the proxy such a sublayer is replaced by a
  stand-in whose call traces it into its own Functional (named after it) and
  calls that; a sublayer that cannot be traced stays one node (`whole`).
- **Symbolic sizes stay symbolic.** The inputs keep the argument's shape,
  `None` axes included, so the graph is valid for any batch and sequence
  length (they are dense: Keras 3.15 wrongly marks `x * 2.0` sparse). Keras
  has no symbolic shape operation: `keras.ops.shape` of a KerasTensor is a
  tuple holding `None`, and code that builds `ops.arange`, causal masks or
  position ids from it cannot run symbolically (tracing at a concrete length
  instead bakes that length into the graph as constants). When such
  code raises inside a *helper method* of the traced layer (keras-hub computes
  its causal masks in `_compute_self_attention_mask` or
  `_compute_attention_mask`), the trace is repeated with that method kept as
  one `LayerMethod` operation: an op whose call runs the method on real (or
  backend-symbolic) tensors, where shapes are known, and whose config (the
  class, the method name, the layer's plain attributes and dtype policy)
  rebuilds it without the layer object. `opaque=` forces methods to be kept
  that way from the start.
- **Every trace is checked.** Code that runs symbolically but bakes a `None`
  size into an argument (`ops.reshape(x, ops.shape(y))`) only fails at run
  time, so the traced Functional is run against the layer itself on random
  inputs at two batch and sequence sizes (`validate=True`); a mismatch makes
  the trace fail (a composite sublayer then stays one node).
- **Calls are recorded as the code makes them**, with two adjustments: float
  inputs are cast to the layer's compute dtype (as `__call__` does), and a
  sublayer that refuses a symbolic call with keyword arguments that merely
  repeat its `call()` defaults (CachedMultiHeadAttention and `cache=None`) is
  called without them.
- **The user's model is not changed.** Recording Keras nodes appends to the
  sublayers' `_inbound_nodes`/`_outbound_nodes`; those lists are restored in
  place when the trace ends. Inside `with tracing(...) as traced:` the nodes
  are still there (`kgraph.lift` may index them); after it, the traced
  Functionals stay callable but their nodes are no longer listed on the
  original sublayers.

What cannot be traced raises `LiftError`: a layer that reads its own weights in
`call` (a functional graph holds weights only inside layers), code outside a
helper method that fails on symbolic tensors (backend-specific functions,
Python control flow on tensor values), arguments carrying implicit Keras masks
(sublayers read those from the run-time tensors), and outputs that are not
tensors. Such a layer stays one node and needs a kgraph rule.

Example:
    >>> block = gpt2_backbone.get_layer("transformer_layer_0")
    >>> node = block._inbound_nodes[0]           # the block's call in the backbone
    >>> traced = trace_layer(block, node.arguments.args, node.arguments.kwargs)
    >>> traced.inputs, traced.opaque
    ((TracedInput(path=(0,)), TracedInput(path=('decoder_padding_mask',))),
     ('transformer_layer_0._compute_self_attention_mask',))
    >>> sorted(type(op).__name__ for op in traced.model.operations)[:4]
    ['Add', 'Add', 'CachedMultiHeadAttention', 'Dense']
    >>> y = traced.model([x, padding_mask])      # == block(x, decoder_padding_mask=padding_mask)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import math
import traceback
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

import keras
import numpy as np

from kgraph.errors import LiftError, keras_message

__all__ = [
    "LayerMethod",
    "TracedCall",
    "TracedInput",
    "is_composite",
    "trace_layer",
    "tracing",
]

_Path = tuple[int | str, ...]

# Attributes of a Keras layer that the proxy copies as they are.
_BOOKKEEPING = frozenset({"_layers", "_tracker", "_inbound_nodes", "_outbound_nodes"})
# (batch size, size of every other unknown axis) of the two validation runs.
_PROBE_SIZES = ((2, 5), (3, 11))
_MAX_HELPERS = 8


@dataclasses.dataclass(frozen=True)
class TracedInput:
    """Where one input of a traced Functional comes from in the layer's call.

    `path[0]` is the position (int) or keyword (str) of the argument; further
    entries index into a list, tuple or dict argument.
    """

    path: _Path


@dataclasses.dataclass(frozen=True)
class TracedCall:
    """One traced call of `layer`: the Functional and how to feed it.

    Attributes:
        layer: the traced layer (the user's object, unchanged).
        model: a Functional named `layer.name`; its inputs are `inputs`, in order,
            and its outputs have the structure of the call's outputs. Composite
            sublayers appear in it as nested Functionals named after them.
        inputs: for each model input, the argument of the call it stands for.
        expanded: paths (`block/attention`) of composite sublayers traced inside.
        whole: composite sublayers kept as one node, path -> why.
        opaque: helper methods kept as one `LayerMethod` op (`block._compute_mask`).
        unused: paths of sublayers owning weights that no node of the graph calls
            (not used by this call, or called on constants, so baked in).
        validated: whether the Functional was checked against the layer on
            random inputs (False when the layer itself could not run on them).

    Example:
        >>> traced = trace_layer(block, (x,), {"padding_mask": mask})
        >>> traced.inputs
        (TracedInput(path=(0,)), TracedInput(path=('padding_mask',)))
    """

    layer: keras.layers.Layer
    model: keras.Model
    inputs: tuple[TracedInput, ...]
    expanded: tuple[str, ...] = ()
    whole: Mapping[str, str] = dataclasses.field(default_factory=dict)
    opaque: tuple[str, ...] = ()
    unused: tuple[str, ...] = ()
    validated: bool = False

    def input_values(self, args: Any = (), kwargs: Mapping[str, Any] | None = None) -> list[Any]:
        """The values to feed `model` for a call `layer(*args, **kwargs)`.

        Example:
            >>> traced.model(traced.input_values((x,), {"padding_mask": mask}))
        """
        return [_at(tuple(args), dict(kwargs or {}), s.path) for s in self.inputs]


def is_composite(layer: Any) -> bool:
    """Whether `layer` is a custom layer built of sublayers (traced by default).

    Built-in Keras layers and their subclasses (`MultiHeadAttention` and
    keras-hub's `CachedMultiHeadAttention`, `Bidirectional`, ...) and
    Functional or Sequential models (which `kgraph.lift` inlines) are not.

    Example:
        >>> encoder = keras_hub.layers.TransformerEncoder(32, 2)
        >>> encoder.build((None, None, 16))          # its sublayers exist once built
        >>> is_composite(encoder), is_composite(encoder._self_attention_layer)
        (True, False)
    """
    if not isinstance(layer, keras.layers.Layer) or _is_graph_model(layer):
        return False
    for cls in type(layer).__mro__:
        if cls is not keras.layers.Layer and cls.__module__.startswith("keras.src.layers."):
            return False
    return bool(layer._flatten_layers(include_self=False, recursive=False))


@contextlib.contextmanager
def tracing(
    layer: keras.layers.Layer,
    args: Any = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    expand: Callable[[keras.layers.Layer], bool] = is_composite,
    opaque: Collection[str] = (),
    validate: bool = True,
) -> Iterator[TracedCall]:
    """Trace one call of `layer`; the trace's Keras nodes live until the block ends.

    `args` and `kwargs` are the call's arguments (KerasTensors, e.g. a Keras
    node's `arguments.args`/`.kwargs`, or any other values, kept as constants).
    `expand(sublayer)` says which sublayers to trace recursively; `opaque` names
    helper methods to keep as single `LayerMethod` ops from the start (in every
    traced layer whose class has them). `validate` runs the result against the
    layer on random inputs.

    Raises `LiftError` when the call cannot be traced.

    Example:
        >>> with tracing(block, (x,), {"padding_mask": mask}) as traced:
        ...     graph = lift(traced.model)   # nodes still on the sublayers here
    """
    tracer = _Tracer(layer, expand, frozenset(opaque), validate)
    try:
        yield tracer.trace(layer, tuple(args), dict(kwargs or {}), getattr(layer, "name", ""))
    finally:
        tracer.restore()


def trace_layer(
    layer: keras.layers.Layer,
    args: Any = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    expand: Callable[[keras.layers.Layer], bool] = is_composite,
    opaque: Collection[str] = (),
    validate: bool = True,
) -> TracedCall:
    """Trace one call of `layer` into a Functional (see `tracing`), nodes removed.

    Example:
        >>> node = block._inbound_nodes[0]
        >>> traced = trace_layer(block, node.arguments.args, node.arguments.kwargs)
        >>> y = traced.model(traced.input_values(args, kwargs))   # == block(*args, **kwargs)
    """
    with tracing(layer, args, kwargs, expand=expand, opaque=opaque, validate=validate) as traced:
        return traced


@keras.saving.register_keras_serializable(package="kgraph")
class LayerMethod(keras.Operation):
    """A helper method of a traced layer, kept as one operation.

    Calling it runs `method` of `layer_class` on an instance rebuilt from the
    layer's plain attributes (numbers, strings, booleans and containers of them)
    and dtype policy, without `__init__` and without sublayers or weights: what
    a causal-mask helper needs. The method runs on real or backend-symbolic
    tensors, where `ops.shape` gives the actual sizes.

    Example:
        >>> op = LayerMethod.of(block, "_compute_self_attention_mask")
        >>> mask = op(x, decoder_padding_mask=padding_mask, ...)
        >>> LayerMethod.from_config(op.get_config())   # rebuilt without `block`
    """

    def __init__(
        self,
        layer_class: str,
        method: str,
        attributes: Mapping[str, Any] | None = None,
        dtype_policy: Any = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.layer_class = layer_class
        self.method = method
        self.attributes = dict(attributes or {})
        self.dtype_policy_config = dtype_policy
        cls = _resolve_class(layer_class)
        function = inspect.getattr_static(cls, method, None)
        if not callable(function):
            raise ValueError(f"{cls.__name__} has no method {method!r}")
        instance = object.__new__(cls)
        vars(instance).update(_copy_plain(self.attributes))
        if dtype_policy is not None:
            vars(instance)["_dtype_policy"] = keras.dtype_policies.deserialize(dtype_policy)
        # a bound function, not a layer attribute: Keras' saving walks an operation's
        # attributes for layers, and this instance has none of a layer's state
        self._run = functools.partial(getattr(cls, method), instance)

    @classmethod
    def of(cls, layer: keras.layers.Layer, method: str, name: str | None = None) -> LayerMethod:
        """The op running `layer.<method>`, described by the layer's plain state."""
        base = _base_attributes()
        attributes = {
            k: v
            for k, v in vars(layer).items()
            if (k == "name" or (k not in base and not k.startswith("_self_"))) and _is_plain(v)
        }
        policy = getattr(layer, "dtype_policy", None)
        return cls(
            _class_name(type(layer)),
            method,
            attributes,
            keras.dtype_policies.serialize(policy) if policy is not None else None,
            name=name,
        )

    def call(self, *args: Any, **kwargs: Any) -> Any:
        return self._run(*args, **kwargs)

    def compute_output_spec(self, *args: Any, **kwargs: Any) -> Any:
        from keras.src import backend

        return backend.compute_output_spec(self.call, *args, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layer_class": self.layer_class,
            "method": self.method,
            "attributes": _copy_plain(self.attributes),
            "dtype_policy": self.dtype_policy_config,
        }


# --------------------------------------------------------------------------------------


class _HelperFailed(Exception):
    """A helper method of the traced layer raised on symbolic tensors."""

    def __init__(self, method: str, error: BaseException) -> None:
        super().__init__(method)
        self.method = method
        self.error = error


class _Sublayer:
    """Stands in a proxy for a sublayer: its calls go through the tracer."""

    def __init__(self, layer: keras.layers.Layer, tracer: _Tracer, path: str) -> None:
        self._layer = layer
        self._tracer = tracer
        self._path = path

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_layer", "_tracer", "_path"):
            raise AttributeError(name)
        return getattr(self._layer, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._tracer.call_sublayer(self._layer, args, kwargs, self._path)


class _Tracer:
    """One top-level trace: the saved node lists and what was found on the way."""

    def __init__(
        self,
        root: keras.layers.Layer,
        expand: Callable[[keras.layers.Layer], bool],
        opaque: frozenset[str],
        validate: bool,
    ) -> None:
        self.expand = expand
        self.forced = opaque
        self.validate = validate
        self.saved: dict[int, tuple[Any, list[Any], list[Any]]] = {}
        self.models: list[keras.Model] = []
        self.expanded: list[str] = []
        self.whole: dict[str, str] = {}
        self.opaque: list[str] = []
        if isinstance(root, keras.layers.Layer):
            for layer in root._flatten_layers(include_self=True, recursive=True):
                self.saved[id(layer)] = (
                    layer,
                    list(layer._inbound_nodes),
                    list(layer._outbound_nodes),
                )

    # ---- restoring the user's layers ------------------------------------------------

    def restore(self) -> None:
        ours = {id(n) for model in self.models for n in _model_nodes(model)}
        for layer, inbound, outbound in self.saved.values():
            layer._inbound_nodes[:] = inbound
            layer._outbound_nodes[:] = outbound
        for model in self.models:  # layers the call reached that its layer does not track
            for operation in model.operations:
                if id(operation) in self.saved or not isinstance(operation, keras.layers.Layer):
                    continue
                if any(id(n) not in ours for n in operation._inbound_nodes):
                    operation._inbound_nodes[:] = [
                        n for n in operation._inbound_nodes if id(n) not in ours
                    ]
                    operation._outbound_nodes[:] = [
                        n for n in operation._outbound_nodes if id(n) not in ours
                    ]

    # ---- tracing ------------------------------------------------------------------

    def trace(self, layer: Any, args: tuple, kwargs: dict, path: str) -> TracedCall:
        _check_traceable(layer)
        helpers = [m for m in self.forced if callable(inspect.getattr_static(type(layer), m, None))]
        for _ in range(_MAX_HELPERS):
            try:
                return self._attempt(layer, args, kwargs, path, helpers)
            except _HelperFailed as failure:
                if failure.method in helpers:
                    what = f"its helper {failure.method}() fails: {failure.error}"
                    raise _cannot(layer, what) from failure.error
                helpers.append(failure.method)
        raise _cannot(layer, f"more than {_MAX_HELPERS} helper methods fail on symbolic tensors")

    def _attempt(
        self, layer: Any, args: tuple, kwargs: dict, path: str, helpers: list[str]
    ) -> TracedCall:
        mark = len(self.expanded), len(self.opaque), dict(self.whole)
        try:
            return self._run(layer, args, kwargs, path, helpers)
        except BaseException:  # forget what a failed attempt found on its way
            del self.expanded[mark[0] :], self.opaque[mark[1] :]
            self.whole.clear()
            self.whole.update(mark[2])
            raise

    def _run(
        self, layer: Any, args: tuple, kwargs: dict, path: str, helpers: list[str]
    ) -> TracedCall:
        inputs, sources, call_args, call_kwargs = _fresh_inputs(layer, args, kwargs)
        proxy = self._proxy(layer, helpers, path)
        try:
            outputs = type(layer).call(proxy, *call_args, **call_kwargs)
        except (LiftError, _HelperFailed):
            raise
        except Exception as error:
            method = _failing_helper(error, proxy)
            if method is None:
                raise _cannot(
                    layer, f"its call() fails on symbolic tensors: {keras_message(error)}"
                ) from error
            raise _HelperFailed(method, error) from error
        flat_outputs = keras.tree.flatten(outputs)
        if not flat_outputs or not all(_is_keras_tensor(t) for t in flat_outputs):
            kinds = sorted({type(t).__name__ for t in flat_outputs})
            raise _cannot(
                layer, f"its outputs must all be tensors computed from its inputs, got {kinds}"
            )
        try:
            model = keras.Model(inputs, outputs, name=layer.name)
        except Exception as error:  # Keras raises ValueError/TypeError for odd graphs
            raise _cannot(
                layer, f"its trace is not a valid functional graph: {keras_message(error)}"
            ) from error
        self.models.append(model)
        self.opaque.extend(f"{path}.{m}" for m in helpers)
        inside = (f"{path}/", f"{path}.")
        record = TracedCall(
            layer=layer,
            model=model,
            inputs=sources,
            expanded=tuple(e for e in self.expanded if e.startswith(inside)),
            whole={k: v for k, v in self.whole.items() if k.startswith(inside)},
            opaque=tuple(o for o in self.opaque if o.startswith(inside)),
            unused=_unused(layer, model),
        )
        if self.validate:
            record = dataclasses.replace(record, validated=_validate(layer, record, args, kwargs))
        return record

    def _proxy(self, layer: Any, helpers: list[str], path: str) -> Any:
        """A private instance of the layer's class sharing its state (see module doc)."""
        proxy = object.__new__(type(layer))
        state = dict(vars(layer))
        for key, value in state.items():
            if key not in _BOOKKEEPING:
                state[key] = self._substitute(layer, value, path, depth=2)
        for method in helpers:
            state[method] = _helper(layer, method)
        vars(proxy).update(state)
        return proxy

    def _substitute(self, owner: Any, value: Any, path: str, depth: int) -> Any:
        if isinstance(value, keras.layers.Layer):
            if value is owner:
                return value
            return _Sublayer(value, self, f"{path}/{value.name}")
        if depth == 0 or isinstance(value, (str, bytes)):
            return value
        if isinstance(value, (list, tuple)):
            items = [self._substitute(owner, v, path, depth - 1) for v in value]
            if all(a is b for a, b in zip(items, value)):
                return value
            return tuple(items) if isinstance(value, tuple) else items
        if isinstance(value, dict):
            items = {k: self._substitute(owner, v, path, depth - 1) for k, v in value.items()}
            if all(items[k] is value[k] for k in value):
                return value
            return items
        return value

    def call_sublayer(self, layer: Any, args: tuple, kwargs: dict, path: str) -> Any:
        """A sublayer's call inside a trace: traced if composite, else one node."""
        if self.expand(layer) and _has_keras_tensor((args, kwargs)):
            try:
                record = self.trace(layer, args, kwargs, path)
            except LiftError as error:
                self.whole[path] = str(error)
            else:
                self.expanded.append(path)
                return record.model(record.input_values(args, kwargs))
        try:
            return layer(*args, **kwargs)
        except Exception as error:
            # Some layers cannot be called symbolically with arguments their call()
            # accepts (CachedMultiHeadAttention's compute_output_spec refuses
            # cache=None): leave out those that only repeat call()'s default.
            reduced = _without_defaults(layer, kwargs)
            if len(reduced) == len(kwargs):
                raise
            try:
                return layer(*args, **reduced)
            except Exception:
                raise error from None


# ---- helpers ---------------------------------------------------------------------------


def _cannot(layer: Any, what: str) -> LiftError:
    name = getattr(layer, "name", "?")
    cls = type(layer).__name__
    return LiftError(
        f"layer {name!r} ({cls}) cannot be traced: {what}. Keep it as one node with a kgraph "
        f"rule for {cls} (kgraph.register_rule), or pass opaque=[...] naming the helper "
        "method that cannot run on symbolic tensors"
    )


def _check_traceable(layer: Any) -> None:
    if not isinstance(layer, keras.layers.Layer):
        raise LiftError(f"trace_layer() needs a keras Layer, got {type(layer).__name__}")
    if _is_graph_model(layer):
        raise _cannot(layer, "it is a Functional or Sequential model; lift inlines those as is")
    if not layer.built:
        raise _cannot(layer, "it is not built; call it on data or build it first")
    own = layer._trainable_variables + layer._non_trainable_variables
    if own:
        names = ", ".join(sorted({v.path.split("/")[-1] for v in own}))
        raise _cannot(
            layer,
            f"its call() reads its own weights ({names}), which a functional graph can only "
            "hold inside a layer",
        )


def _is_graph_model(layer: Any) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(layer, (Functional, keras.Sequential))


def _is_keras_tensor(value: Any) -> bool:
    return isinstance(value, keras.KerasTensor) and hasattr(value, "_keras_history")


def _has_keras_tensor(structure: Any) -> bool:
    return any(isinstance(v, keras.KerasTensor) for v in keras.tree.flatten(structure))


def _leaves(value: Any, path: _Path) -> Iterator[tuple[_Path, Any]]:
    """(path, leaf) pairs of a call argument, lists/tuples and dicts in their own order."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    else:
        yield path, value


def _replace(value: Any, path: _Path, new: Mapping[_Path, Any]) -> Any:
    if path in new:
        return new[path]
    if isinstance(value, (list, tuple)):
        items = [_replace(v, (*path, i), new) for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        return {k: _replace(v, (*path, k), new) for k, v in value.items()}
    return value


def _at(args: tuple, kwargs: dict, path: _Path) -> Any:
    value: Any = args[path[0]] if isinstance(path[0], int) else kwargs[path[0]]
    for key in path[1:]:
        value = value[key]
    return value


def _keras_mask(value: Any) -> Any:
    from keras.src.backend.common.masking import get_keras_mask

    return get_keras_mask(value)


def _argument_names(layer: Any, args: tuple) -> list[str]:
    try:
        parameters = list(inspect.signature(type(layer).call).parameters.values())[1:]
    except (TypeError, ValueError):
        parameters = []
    positional = [
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return [positional[i] if i < len(positional) else f"arg{i}" for i in range(len(args))]


def _fresh_inputs(
    layer: Any, args: tuple, kwargs: dict
) -> tuple[list[Any], tuple[TracedInput, ...], tuple, dict]:
    """Fresh `keras.Input`s for the tensor arguments, and the arguments using them."""
    names = _argument_names(layer, args)
    inputs: list[Any] = []
    sources: list[TracedInput] = []
    new: dict[_Path, Any] = {}
    roots = [((i,), a) for i, a in enumerate(args)] + [((k,), v) for k, v in kwargs.items()]
    for root, value in roots:
        for path, leaf in _leaves(value, root):
            if not isinstance(leaf, keras.KerasTensor):
                continue
            base = names[path[0]] if isinstance(path[0], int) else path[0]
            name = "_".join([base, *(str(p) for p in path[1:])])
            if _keras_mask(leaf) is not None:
                # Sublayers read implicit masks from the tensors they get at run time
                # (MultiHeadAttention's query/value masks), which a traced graph does
                # not reproduce; an explicit mask argument is traced like any input.
                raise _cannot(
                    layer,
                    f"its argument {name!r} carries an implicit Keras mask; pass the mask "
                    "as an argument (padding_mask=...) instead of relying on mask_zero",
                )
            tensor = _input_like(leaf, name)
            inputs.append(tensor)
            sources.append(TracedInput(path))
            new[path] = tensor
    call_args = tuple(_replace(a, (i,), new) for i, a in enumerate(args))
    call_kwargs = {k: _replace(v, (k,), new) for k, v in kwargs.items()}
    call_args, call_kwargs = _convert_inputs(layer, call_args, call_kwargs)
    return inputs, tuple(sources), call_args, call_kwargs


def _input_like(tensor: Any, name: str) -> Any:
    return keras.Input(
        batch_shape=tuple(tensor.shape),
        dtype=tensor.dtype,
        ragged=bool(getattr(tensor, "ragged", False)),
        name=name,
    )


def _convert_inputs(layer: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Cast float inputs to the layer's compute dtype, as `Layer.__call__` does."""
    if not getattr(layer, "_convert_input_args", True):
        return args, kwargs

    def convert(x: Any) -> Any:
        if not isinstance(x, keras.KerasTensor):
            return x
        return layer.dtype_policy.convert_input(x, layer.autocast, layer.input_dtype)

    return keras.tree.map_structure(convert, args), keras.tree.map_structure(convert, kwargs)


def _helper(layer: Any, method: str) -> Callable[..., Any]:
    """The proxy's stand-in for `layer.<method>`: one `LayerMethod` op per call."""
    from keras.src.utils.naming import auto_name

    def run(*args: Any, **kwargs: Any) -> Any:
        op = LayerMethod.of(layer, method, name=auto_name(f"{layer.name}_{method.strip('_')}"))
        return op(*args, **kwargs)

    return run


def _without_defaults(layer: Any, kwargs: dict) -> dict:
    """`kwargs` less the values that equal the default of `layer.call`'s parameter."""
    try:
        parameters = inspect.signature(type(layer).call).parameters
    except (TypeError, ValueError):
        return kwargs
    reduced = {}
    for key, value in kwargs.items():
        parameter = parameters.get(key)
        default = inspect.Parameter.empty if parameter is None else parameter.default
        same = value is default or (
            isinstance(value, (bool, int, float, str))
            and type(value) is type(default)
            and value == default
        )
        if not same:
            reduced[key] = value
    return reduced


def _failing_helper(error: BaseException, proxy: Any) -> str | None:
    """The outermost helper method of `proxy` (not `call`) in the error's traceback."""
    cls = type(proxy)
    for frame, _ in traceback.walk_tb(error.__traceback__):
        if frame.f_locals.get("self") is not proxy:
            continue
        name = frame.f_code.co_name
        if name == "call" or name.startswith("__"):
            continue
        if inspect.isfunction(inspect.getattr_static(cls, name, None)):
            return name
    return None


def _model_nodes(model: keras.Model) -> list[Any]:
    return [n for nodes in model._nodes_by_depth.values() for n in nodes]


def _unused(layer: Any, model: keras.Model) -> tuple[str, ...]:
    """Paths of weight-owning sublayers of `layer` that no node of `model` reaches."""
    used: set[int] = set()
    stack = list(model.operations)
    while stack:
        operation = stack.pop()
        if id(operation) in used:
            continue
        used.add(id(operation))
        if isinstance(operation, keras.layers.Layer):
            stack.extend(operation._flatten_layers(include_self=False, recursive=True))
            if _is_graph_model(operation):
                stack.extend(operation.operations)
    unused = []
    for sub in layer._flatten_layers(include_self=False, recursive=True):
        own = sub._trainable_variables + sub._non_trainable_variables
        if own and id(sub) not in used:
            unused.append(getattr(sub, "path", sub.name))
    return tuple(unused)


def _probe(tensor: Any, batch: int, size: int, rng: np.random.Generator) -> np.ndarray | None:
    shape = [
        d if d is not None else (batch if axis == 0 else size)
        for axis, d in enumerate(tensor.shape)
    ]
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    if dtype == "bool":
        return np.ones(shape, dtype=bool)
    if "int" in dtype:
        return np.ones(shape, dtype=dtype)
    if "float" in dtype:
        return rng.standard_normal(shape).astype("float32").astype(dtype)
    return None


def _validate(layer: Any, record: TracedCall, args: tuple, kwargs: dict) -> bool:
    """Run `record.model` against `layer` on random inputs at two sets of sizes.

    Returns whether some probe could be compared (the layer itself may refuse a
    probe, e.g. a sequence longer than its cache); raises `LiftError` when the
    traced graph fails or differs where the layer runs.
    """
    rng = np.random.default_rng(0)
    compared = False
    for batch, size in _PROBE_SIZES:
        values = [_probe(t, batch, size, rng) for t in record.model.inputs]
        if any(v is None for v in values):
            return False
        new = {source.path: value for source, value in zip(record.inputs, values)}
        call_args = tuple(_replace(a, (i,), new) for i, a in enumerate(args))
        call_kwargs = {k: _replace(v, (k,), new) for k, v in kwargs.items()}
        try:
            expected = keras.tree.flatten(layer(*call_args, **call_kwargs))
        except Exception:  # the layer refuses this probe: nothing to compare with
            continue
        try:
            got = keras.tree.flatten(record.model(values))
        except Exception as error:  # Keras and the backends raise many kinds of errors
            raise _cannot(
                layer,
                f"its traced graph fails at batch {batch}, size {size}: {keras_message(error)}",
            ) from error
        for want, have in zip(expected, got):
            want, have = keras.ops.convert_to_numpy(want), keras.ops.convert_to_numpy(have)
            tolerance = 1e-2 if want.dtype.itemsize < 4 and want.dtype.kind == "f" else 1e-4
            if want.shape != have.shape or not np.allclose(
                have, want, rtol=tolerance, atol=tolerance, equal_nan=True
            ):
                worst = np.max(np.abs(have - want)) if want.shape == have.shape else math.inf
                raise _cannot(
                    layer,
                    f"its traced graph differs from the layer at batch {batch}, size {size} "
                    f"(shapes {have.shape} vs {want.shape}, largest difference {worst:.3g}); its "
                    "call() probably bakes an unknown size into an argument",
                )
        compared = True
    return compared


@functools.cache
def _base_attributes() -> frozenset[str]:
    """Attributes every Keras layer has (its bookkeeping, left out of `LayerMethod`)."""
    return frozenset(vars(keras.layers.Layer(name="kgraph_trace_probe")))


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _copy_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_copy_plain(v) for v in value)
    if isinstance(value, list):
        return [_copy_plain(v) for v in value]
    return value


def _class_name(cls: type) -> str:
    registered = keras.saving.get_registered_name(cls)
    if keras.saving.get_registered_object(registered) is cls:
        return registered
    return f"{cls.__module__}:{cls.__qualname__}"


# Packages whose layer classes a saved LayerMethod may name in Keras' safe mode:
# installed library code, not code that comes with the file.
_SAFE_PACKAGES = ("keras.", "keras_hub.")


def _resolve_class(name: str) -> type:
    cls = keras.saving.get_registered_object(name)
    if cls is None and ":" in name:
        from keras.src.saving.serialization_lib import in_safe_mode

        module, qualname = name.split(":", 1)
        if in_safe_mode() and not module.startswith(_SAFE_PACKAGES):
            raise ValueError(
                f"LayerMethod refers to the unregistered class {name!r}; importing it is not "
                "allowed in safe mode: register it with keras.saving.register_keras_serializable"
            )
        cls = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    if not isinstance(cls, type) or not issubclass(cls, keras.layers.Layer):
        raise ValueError(f"{name!r} is not a Keras layer class")
    return cls
