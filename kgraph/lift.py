"""`lift`: read a Functional or Sequential Keras 3 model into a `Graph`.

Every layer call becomes a node (a shared layer gets one node per call, all
holding the same weight arrays); raw `keras.ops` operations between layers
become nodes too; nested Functional/Sequential models are inlined, their layers
keeping their names unless an outer layer already uses the name. The model is
only read, never changed.

Example:
    >>> graph = kgraph.lift(keras.applications.ResNet50(weights=None))
    >>> len(graph)  # 176 layer calls, an input and an output
    178
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import itertools
import logging
import weakref
from collections import defaultdict
from typing import Any

import attrs
import keras
import networkx as nx
import numpy as np

from kgraph.configs import rebuild_config
from kgraph.errors import KGraphError, LiftError
from kgraph.graph import Graph
from kgraph.ir import LAMBDA_FUNCTION, InputSpace, Node, Slot
from kgraph.keras_utils import functional_of, layer_weight_names, nodes_in_order, tensor_record
from kgraph.passes.propagate_masks import update_node
from kgraph.rules import DEFAULT_RULES
from kgraph.rules.base import OPAQUE_REASON, OpaqueRule, fresh_output
from kgraph.rules.registry import RuleSet
from kgraph.trace import TracedCall, is_composite, tracing

__all__ = ["lift"]

log = logging.getLogger(__name__)

_Ref = tuple[int, int]  # (call id, output slot) while lifting


@attrs.define
class _Call:
    """One layer/op call found while walking the model (before nodes get names)."""

    id: int
    operation: Any
    keras_node: Any
    layer_name: str
    path: str
    sources: list[_Ref]
    training: Any


class _Lifter:
    def __init__(self, functional: Any, rules: RuleSet, traces: contextlib.ExitStack) -> None:
        self.calls: list[_Call] = []
        self.ids = itertools.count()
        self.names: dict[int, str] = {}  # id(layer) -> unique layer name
        self.taken = {op.name for op in functional.operations}
        self.inputs: list[tuple[int, Any, Any]] = []  # (call id, keras tensor, input layer)
        self.rules = rules
        self.traces = traces  # keeps each trace's Keras nodes until lifting ends
        self.opaque: dict[int, str] = {}  # id(layer) -> why it could not be traced
        self.traced: set[str] = set()  # prefixes of traced calls: their layers get prefixed
        self.helpers: set[str] = set()  # helper methods earlier traces kept as one op

    def expands(self, operation: Any) -> bool:
        """Whether to trace a call of `operation` (a composite layer without a rule)."""
        rule = self.rules.rule_for_class(type(operation))
        return isinstance(rule, OpaqueRule) and is_composite(operation)

    def layer_name(self, operation: Any, prefix: str) -> str:
        key = id(operation)
        if key not in self.names:
            name = operation.name
            inside_trace = any(prefix == t or prefix.startswith(t + "/") for t in self.traced)
            if prefix and (name in self.taken or inside_trace):
                base = f"{prefix.replace('/', '_')}_{name}"
                name, i = base, 0
                while name in self.taken:
                    i += 1
                    name = f"{base}_{i}"
            self.taken.add(name)
            self.names[key] = name
        return self.names[key]

    def walk(self, functional: Any, env: dict[int, _Ref], prefix: str, training: Any) -> None:
        """Record the calls of `functional`; `env` maps its input tensors to sources."""
        for keras_node in nodes_in_order(functional):
            operation = keras_node.operation
            if keras_node.is_input or isinstance(operation, keras.layers.InputLayer):
                continue
            sources = [env[id(t)] for t in keras_node.input_tensors]
            if isinstance(operation, keras.Model):  # a nested model: inline its layers
                self.inline(operation, keras_node, sources, env, prefix, training)
                continue
            if self.expands(operation):  # a composite layer: inline its traced call
                traced = self.trace(operation, keras_node)
                if traced is not None:
                    self.inline_traced(traced, keras_node, env, prefix, training)
                    continue
            call = _Call(
                id=next(self.ids),
                operation=operation,
                keras_node=keras_node,
                layer_name=self.layer_name(operation, prefix),
                path=f"{prefix}/{operation.name}" if prefix else operation.name,
                sources=sources,
                training=training,
            )
            self.calls.append(call)
            for slot, tensor in enumerate(keras_node.outputs):
                env[id(tensor)] = (call.id, slot)

    def inline(
        self,
        model: Any,
        keras_node: Any,
        sources: list[_Ref],
        env: dict[int, _Ref],
        prefix: str,
        training: Any,
    ) -> None:
        inner = functional_of(model)
        outer_inputs = keras_node.arguments.args[0] if keras_node.arguments.args else None
        if outer_inputs is None:
            outer_inputs = keras_node.arguments.kwargs.get("inputs")
        flat_outer = keras.tree.flatten(outer_inputs)
        if len(flat_outer) != len(inner.inputs):
            raise LiftError(
                f"nested model {model.name!r} is called with {len(flat_outer)} tensors but has "
                f"{len(inner.inputs)} inputs; kgraph cannot inline this call"
            )
        inner_env = {id(i): env[id(o)] for i, o in zip(inner.inputs, flat_outer)}
        call_training = keras_node.arguments.kwargs.get("training")
        inner_training = training if call_training is None else call_training
        inner_prefix = f"{prefix}/{model.name}" if prefix else model.name
        self.walk(inner, inner_env, inner_prefix, inner_training)
        for outer, inner_out in zip(keras_node.outputs, inner.outputs):
            env[id(outer)] = inner_env[id(inner_out)]

    def trace(self, operation: Any, keras_node: Any) -> TracedCall | None:
        """The traced call, or None (the layer stays one node) when it cannot be traced."""
        arguments = keras_node.arguments
        try:
            traced = self.traces.enter_context(
                tracing(
                    operation,
                    arguments.args,
                    arguments.kwargs,
                    expand=self.expands,
                    opaque=self.helpers,  # the next block of a kind needs one trace, not two
                )
            )
            self.helpers.update(name.rsplit(".", 1)[-1] for name in traced.opaque)
            return traced
        except LiftError as error:
            log.info("lift: %s stays one node: %s", operation.name, error)
            self.opaque[id(operation)] = str(error)
            return None

    def inline_traced(
        self,
        traced: TracedCall,
        keras_node: Any,
        env: dict[int, _Ref],
        prefix: str,
        training: Any,
    ) -> None:
        inner = traced.model
        arguments = keras_node.arguments
        outer_inputs = traced.input_values(arguments.args, arguments.kwargs)
        inner_env = {id(i): env[id(o)] for i, o in zip(inner.inputs, outer_inputs)}
        call_training = arguments.kwargs.get("training")
        inner_training = training if call_training is None else call_training
        inner_prefix = f"{prefix}/{inner.name}" if prefix else inner.name
        self.traced.add(inner_prefix)
        self.walk(inner, inner_env, inner_prefix, inner_training)
        outer_outputs, inner_outputs = keras_node.outputs, keras.tree.flatten(inner.outputs)
        if len(outer_outputs) != len(inner_outputs):
            raise LiftError(
                f"the trace of {traced.layer.name!r} ({type(traced.layer).__name__}) has "
                f"{len(inner_outputs)} outputs but the call has {len(outer_outputs)}"
            )
        for outer, inner_out in zip(outer_outputs, inner_outputs):
            env[id(outer)] = inner_env[id(inner_out)]

    def input_nodes(self, functional: Any, env: dict[int, _Ref]) -> None:
        for tensor in functional.inputs:
            layer = tensor._keras_history.operation
            call_id = next(self.ids)
            self.inputs.append((call_id, tensor, layer))
            env[id(tensor)] = (call_id, 0)


def _template(keras_node: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's (args, kwargs) with every KerasTensor replaced by its `Slot`.

    Slots are numbered in the order Keras lists the call's input tensors (its
    `tree.flatten` order: dictionaries by sorted key), whatever the backend's own
    traversal order of dictionaries is.
    """
    counter = itertools.count()

    def to_slots(value: Any) -> Any:
        if isinstance(value, keras.KerasTensor):
            return Slot(next(counter))
        if isinstance(value, dict) and not isinstance(value, collections.OrderedDict):
            ordered = {key: to_slots(value[key]) for key in sorted(value)}
            return type(value)((key, ordered[key]) for key in value)
        if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
            return type(value)(to_slots(item) for item in value)
        if isinstance(value, collections.OrderedDict):
            return type(value)((key, to_slots(item)) for key, item in value.items())
        return value

    args, kwargs = to_slots((tuple(keras_node.arguments.args), dict(keras_node.arguments.kwargs)))
    return args, kwargs


def _config(operation: Any, keras_node: Any, name: str) -> dict[str, Any]:
    config = rebuild_config(operation, keras_node)
    if config is None:
        config = _op_arguments(operation)
    if config is None:
        raise LiftError(
            f"operation {operation.name!r} ({type(operation).__name__}) has no usable "
            "get_config(), so kgraph could not rebuild it; implement get_config() for it"
        )
    config["name"] = name
    return config


def _op_arguments(operation: Any) -> dict[str, Any] | None:
    """Constructor arguments of a keras.ops operation Keras cannot serialise, or None.

    `ops.clip(x, lo, hi)` with array bounds builds `Clip(lo, hi)`, whose config
    Keras refuses; the operation keeps each argument as an attribute of its name.
    """
    parameters = inspect.signature(type(operation).__init__).parameters
    names = [p for p in parameters if p not in ("self", "name", "args", "kwargs")]
    if not all(hasattr(operation, p) for p in names):
        return None
    return {p: getattr(operation, p) for p in names}


def _call_node(call: _Call, node_name: str, call_index: int, weights: Any) -> Node:
    operation = call.operation
    is_layer = isinstance(operation, keras.layers.Layer)
    args, kwargs = _template(call.keras_node)
    if (
        call.training is not None
        and is_layer
        and getattr(operation, "_call_has_training_arg", False)
        and kwargs.get("training") is None
    ):
        kwargs["training"] = call.training
    names, arrays = weights
    return Node(
        name=node_name,
        kind="layer" if is_layer else "op",
        cls=type(operation),
        config=_config(operation, call.keras_node, call.layer_name),
        layer=call.layer_name,
        call_index=call_index,
        args=args,
        kwargs=kwargs,
        weights=arrays,
        weight_names=names,
        inputs=(),
        outputs=tuple(tensor_record(t) for t in call.keras_node.outputs),
        origin=weakref.ref(operation),
        path=call.path,
    )


def lift(model: keras.Model, *, rules: RuleSet | None = None) -> Graph:
    """Read `model` (Functional or Sequential) into a frozen `Graph`.

    `rules` is the `kgraph.rules.RuleSet` the graph is read with (default:
    `kgraph.rules.DEFAULT_RULES`). Raises `LiftError` for subclassed or unbuilt
    models and for layers that cannot be serialised.
    """
    if rules is not None and not isinstance(rules, RuleSet):
        raise KGraphError(f"rules must be a kgraph.rules.RuleSet, got {type(rules).__name__}")
    rules = DEFAULT_RULES if rules is None else rules
    functional = functional_of(model)
    with contextlib.ExitStack() as traces:
        lifter = _Lifter(functional, rules, traces)
        env: dict[int, _Ref] = {}
        lifter.input_nodes(functional, env)
        lifter.walk(functional, env, "", None)
        graph = _build(model, functional, lifter, env, rules)
    _infer_masks(graph)
    return graph.freeze()


def _build(
    model: Any, functional: Any, lifter: _Lifter, env: dict[int, _Ref], rules: RuleSet
) -> Graph:
    """The graph of the calls `lifter` found (while the traces' Keras nodes exist)."""
    g = nx.MultiDiGraph()
    node_names: dict[int, str] = {}
    for call_id, tensor, layer in lifter.inputs:
        node = _input_node(tensor, layer)
        node_names[call_id] = node.name
        g.add_node(node.name, node=node)

    calls_of: dict[str, list[_Call]] = defaultdict(list)
    for call in lifter.calls:
        calls_of[call.layer_name].append(call)
    for siblings in calls_of.values():  # number calls as Keras does (its node index)
        siblings.sort(key=lambda c: (c.operation._inbound_nodes.index(c.keras_node), c.id))
    weights_of: dict[int, tuple[tuple[str, ...], tuple[np.ndarray, ...]]] = {}
    for call in lifter.calls:
        operation = call.operation
        if id(operation) not in weights_of:
            weights_of[id(operation)] = _weights(operation)
        siblings = calls_of[call.layer_name]
        index = siblings.index(call)
        name = call.layer_name if len(siblings) == 1 else f"{call.layer_name}@{index}"
        node_names[call.id] = name
        node = _call_node(call, name, index, weights_of[id(operation)])
        if id(operation) in lifter.opaque:
            node = attrs.evolve(node, meta={OPAQUE_REASON: lifter.opaque[id(operation)]})
        if isinstance(operation, keras.layers.Lambda):
            node = attrs.evolve(node, meta={**node.meta, LAMBDA_FUNCTION: operation.function})
        g.add_node(name, node=node)
    for call in lifter.calls:
        for slot, (src, src_slot) in enumerate(call.sources):
            g.add_edge(node_names[src], node_names[call.id], key=slot, src=src_slot)

    output_names = []
    for i, tensor in enumerate(functional.outputs):
        src, src_slot = env[id(tensor)]
        name = f"output:{i}"
        g.add_node(name, node=Node(name=name, kind="output", cls=None, layer=name))
        g.add_edge(node_names[src], name, key=0, src=src_slot)
        output_names.append(name)

    inputs_struct = keras.tree.pack_sequence_as(
        functional._inputs_struct, [node_names[c] for c, _, _ in lifter.inputs]
    )
    outputs_struct = keras.tree.pack_sequence_as(functional._outputs_struct, output_names)
    graph = Graph(
        g,
        name=model.name,
        inputs=inputs_struct,
        outputs=outputs_struct,
        input_names=keras.tree.flatten(inputs_struct),
        output_names=keras.tree.flatten(outputs_struct),
        rules=rules,
        dtype_policy=_model_policy(model),
    )
    return graph


def _model_policy(model: keras.Model) -> str:
    """The name of `model`'s own dtype policy. A model saved under a mixed policy and
    loaded under float32 has a float32 model policy but mixed layers (Keras keeps
    only the layers' policies); there the mixed policy of its layers is the model's,
    so that `compile` adds loss scaling as it did for the original.
    """
    own = model.dtype_policy.name
    if own != "float32":
        return own
    mixed = {
        layer.dtype_policy.name
        for layer in model._flatten_layers(include_self=False)
        if layer.dtype_policy.name.startswith("mixed_")
    }
    return mixed.pop() if len(mixed) == 1 else own


def _weights(operation: Any) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    if not isinstance(operation, keras.layers.Layer) or not operation.weights:
        return (), ()
    return layer_weight_names(operation), tuple(_read(v) for v in operation.weights)


def _read(variable: Any) -> np.ndarray:
    """The value of `variable` as a read-only numpy array (what `get_weights` gives).

    With TensorFlow the array is a view of a read of the variable, not a copy:
    TensorFlow variables are copy-on-write (an assignment or optimizer step while a
    read is alive writes to a new buffer), so the view never changes, and lifting
    costs no second copy of the model's weights. With JAX it is a view of the
    variable's `jax.Array` on the CPU: those are immutable (an assignment replaces the
    array), and JAX does not donate a buffer a numpy view holds. With PyTorch, whose
    optimizers write parameters in place, it is a private copy.
    """
    backend = keras.backend.backend()
    read = getattr(variable.value, "value", None)  # tf.Variable.value(): one read op
    if backend == "tensorflow" and callable(read):
        array = np.asarray(read())
    elif backend == "jax":
        array = np.asarray(variable.value)  # a view on the CPU, a host copy elsewhere
    else:  # another backend: a private copy
        array = np.asarray(variable.numpy())
        if not array.flags.owndata:
            array = array.copy()
    array.setflags(write=False)
    return array


def _input_node(tensor: Any, layer: Any) -> Node:
    if isinstance(layer, keras.layers.InputLayer):
        config = dict(layer.get_config())
        name = layer.name
    else:  # the model starts at an intermediate tensor
        name = tensor.name
        config = {"batch_shape": tuple(tensor.shape), "dtype": str(tensor.dtype), "name": name}
    return Node(
        name=name,
        kind="input",
        cls=keras.layers.InputLayer,
        config=config,
        layer=name,
        outputs=(tensor_record(tensor),),
        origin=weakref.ref(layer) if layer is not None else None,
        path=name,
    )


def _input_channel_axis(graph: Graph, name: str, slot: int, rank: int) -> int:
    """The channel axis of a model input: axis 1 when every reader that has a
    `data_format` reads channels_first (an image model in that layout), else the last."""
    formats = {
        graph.node(user).config.get("data_format")
        for user, _, _ in graph.users(name, slot)
        if graph.node(user).config.get("data_format") is not None
    }
    return 1 if rank > 2 and formats == {"channels_first"} else -1


def _infer_masks(graph: Graph) -> None:
    """Give every tensor its channel axis and an all-kept mask (the lifted coordinates)."""
    for name in graph.topological_order():
        node = graph.node(name)
        if node.kind == "input":
            outputs = tuple(
                fresh_output(
                    node, t, _input_channel_axis(graph, name, slot, len(t.shape)), InputSpace
                )
                for slot, t in enumerate(node.outputs)
            )
            graph.set_node(attrs.evolve(node, outputs=outputs))
        elif node.kind == "output":
            graph.set_node(attrs.evolve(node, inputs=tuple(graph.input_tensors(name))))
        else:
            inputs = graph.input_tensors(name)
            node = attrs.evolve(node, inputs=tuple(inputs))
            try:
                node = update_node(node, inputs, graph.rules)
            except KGraphError as error:
                # A rule that cannot place this call's channels (say, an unusual
                # broadcast) leaves it opaque: lifting never fails on a valid model,
                # and a deletion reaching it later meets the rule's error.
                log.debug("lift: %s is opaque: %s", node.describe(), error)
                outputs = tuple(fresh_output(node, t) for t in node.outputs)
                node = attrs.evolve(node, outputs=outputs)
            graph.set_node(node)
