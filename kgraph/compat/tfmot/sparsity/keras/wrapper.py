"""`PruneLowMagnitude`: tfmot's pruning wrapper, for Keras 3 on every backend.

The wrapper holds, for each weight it prunes, a mask and a threshold as non-trainable
variables, and a `pruning_step`; its `call` is the wrapped layer's. The pruning runs
on the host, driven by the `UpdatePruningStep` callback: on the steps the schedule
names it ranks the current weights with kgraph's `weight_masks` (magnitude, blocks,
N:M) and stores the masks; before and after every training step it multiplies the
weights by them, so every forward pass sees the pruned weights and they stay exactly
zero whatever the optimizer does. Nothing is patched: `model.fit` trains it as it
trains any layer.

Example:
    >>> layer = PruneLowMagnitude(keras.layers.Dense(4), ConstantSparsity(0.5, 0))
    >>> layer.name
    'prune_low_magnitude_dense'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from kgraph.compat.tfmot.errors import PruningStepError, TfmotError
from kgraph.compat.tfmot.sparsity.keras import registry
from kgraph.compat.tfmot.sparsity.keras.schedules import (
    ConstantSparsity,
    PruningSchedule,
    deserialize_schedule,
)
from kgraph.sparse.masks import weight_masks

__all__ = ["PruneLowMagnitude", "collect_prunable_layers", "m_by_n_mask"]

CALLBACK_MESSAGE = (
    "Prune() wrapper requires the UpdatePruningStep callback to be provided during "
    "training. Please add it as a callback to your model.fit call."
)


def _pair(value: Any, name: str) -> tuple[int, int]:
    """Two integers as a tuple (tfmot's convert_to_tuple_of_two_int)."""
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TfmotError(f"The {name} argument must be a tuple/list of 2 integers, got {value!r}")
    return pair  # type: ignore[return-value]


def _kept_at_least_one(shape: tuple[int, ...], sparsity: float, block: tuple[int, int]) -> float:
    """The sparsity that keeps tfmot's count: round(units * (1 - sparsity)) weights (or
    blocks), and always at least one."""
    rows = math.prod(shape[:-1]) if len(shape) > 1 else math.prod(shape)
    cols = shape[-1] if len(shape) > 1 else 1
    units = math.ceil(rows / block[0]) * math.ceil(cols / block[1])
    kept = max(round(units * (1 - sparsity)), 1)
    return 1 - kept / units


def m_by_n_mask(weight: np.ndarray, m_by_n: tuple[int, int]) -> np.ndarray:
    """tfmot's M-by-N pattern: at least `m` zeros in every `n` consecutive weights along
    the kernel's input axis (its second to last), the input count padded with zeros.

    Example:
        >>> m_by_n_mask(np.array([[0.74], [-0.89], [-1.68], [0.31]]), (2, 4)).ravel()
        array([False,  True,  True, False])
    """
    m, n = m_by_n
    moved = np.moveaxis(weight, -2, 0)
    rows = moved.shape[0]
    padded = np.zeros((math.ceil(rows / n) * n, moved[0].size), dtype=weight.dtype)
    padded[:rows] = moved.reshape(rows, -1)
    keep = weight_masks({"weight": padded}, None, n_m=(n - m, n))["weight"][:rows]
    return np.moveaxis(keep.reshape(moved.shape), 0, -2)


@keras.saving.register_keras_serializable(package="kgraph.tfmot")
class PruneLowMagnitude(keras.layers.Wrapper):
    """Prune the weights of `layer` by magnitude while it trains (tfmot's wrapper).

    Args:
        layer: the layer to prune; a built-in Keras layer tfmot knows, or one with
            `get_prunable_weights()`.
        pruning_schedule: a `PruningSchedule` (`ConstantSparsity`, `PolynomialDecay`).
        block_size: (rows, columns) blocks zeroed whole, ranked by their mean
            (`block_pooling_type="AVG"`) or largest (`"MAX"`) magnitude.
        sparsity_m_by_n: `(m, n)`: at least m zeros in every n consecutive weights
            along the input axis, fixed on the first training step.

    Example:
        >>> model = keras.Sequential([keras.Input((8,)), PruneLowMagnitude(keras.layers.Dense(4))])
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        pruning_schedule: PruningSchedule = ConstantSparsity(0.5, 0),  # noqa: B008
        block_size: Sequence[int] = (1, 1),
        block_pooling_type: str = "AVG",
        sparsity_m_by_n: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        if block_pooling_type not in ("AVG", "MAX"):
            raise TfmotError(
                f"Unsupported pooling type {block_pooling_type!r}. Should be 'AVG' or 'MAX'."
            )
        block = _pair(block_size, "block_size")
        if min(block) < 1:
            raise TfmotError(f"block_size must be two positive integers, got {block_size!r}")
        m_by_n = _pair(sparsity_m_by_n, "sparsity_m_by_n") if sparsity_m_by_n else None
        if m_by_n is not None and not 0 < m_by_n[0] < m_by_n[1]:
            raise TfmotError(
                f"sparsity_m_by_n={m_by_n} must be (m, n) with 0 < m < n: m zeros in every n "
                "consecutive weights, e.g. (2, 4)"
            )
        if m_by_n is not None and block != (1, 1):
            raise TfmotError(
                f"sparsity_m_by_n={m_by_n} and block_size={block} cannot be combined; use one"
            )
        if not isinstance(pruning_schedule, PruningSchedule):
            raise TfmotError(
                f"pruning_schedule must be a PruningSchedule such as "
                f"tfmot.sparsity.keras.ConstantSparsity(0.5, 0), got {pruning_schedule!r}"
            )
        if not isinstance(layer, keras.layers.Layer):
            raise TfmotError(
                f"Please initialize `Prune` layer with a `Layer` instance. You passed: {layer!r}"
            )
        if not registry.supports(layer):
            raise TfmotError(registry.unsupported_message(layer))
        kwargs["name"] = f"prune_low_magnitude_{layer.name}"
        shape = getattr(layer, "_input_shape_arg", None)  # a first Sequential layer's shape
        if shape is not None and "input_shape" not in kwargs and "input_dim" not in kwargs:
            kwargs["input_shape"] = shape
        super().__init__(layer, **kwargs)
        self.pruning_schedule = pruning_schedule
        self.block_size = block
        self.block_pooling_type = block_pooling_type
        self.sparsity_m_by_n = m_by_n
        self._pruning_started = False  # set by UpdatePruningStep
        self._step: int | None = None

    def build(self, input_shape: Any = None) -> None:
        if not self.layer.built:
            try:
                self.layer.build(input_shape)
            except TypeError as error:
                raise TfmotError(
                    f"cannot build layer {self.layer.name!r} ({type(self.layer).__name__}) from "
                    f"the shape of its first input alone ({error}); call the layer once on "
                    "its inputs before wrapping it, or prune the whole model"
                ) from error
        weights = registry.prunable_weights(self.layer)
        if self.sparsity_m_by_n is not None:
            for weight in weights:
                if len(weight.shape) < 2:
                    raise TfmotError(
                        f"sparsity_m_by_n needs kernels with an input axis, but {weight.path} "
                        f"of layer {self.layer.name!r} has shape {tuple(weight.shape)}"
                    )
        self._masks = [
            self.add_weight(
                name="mask", shape=w.shape, initializer="ones", dtype=w.dtype, trainable=False
            )
            for w in weights
        ]
        self._thresholds = [
            self.add_weight(
                name="threshold", shape=(), initializer="zeros", dtype=w.dtype, trainable=False
            )
            for w in weights
        ]
        self.pruning_step = self.add_weight(
            name="pruning_step",
            shape=(),
            initializer=keras.initializers.Constant(-1),
            dtype="int32",
            trainable=False,
        )

    def call(self, inputs: Any, *args: Any, training: Any = None, **kwargs: Any) -> Any:
        if training and not self._pruning_started:
            raise PruningStepError(
                f"{CALLBACK_MESSAGE} (layer {self.name!r} was called with training=True, but "
                "no UpdatePruningStep has started training on it: pass "
                "callbacks=[tfmot.sparsity.keras.UpdatePruningStep()] to fit, or call its "
                "set_model() and on_train_begin() in a custom training loop)"
                + (
                    ". On JAX, Keras leaves a model's weights detached after an error inside "
                    "fit: call prune_low_magnitude on the original model again"
                    if keras.backend.backend() == "jax"
                    else ""
                )
            )
        return self.layer(inputs, *args, **kwargs)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return self.layer.compute_mask(inputs, mask)

    # ------------------------------------------------------------ tfmot's attributes

    @property
    def prunable_weights(self) -> list[Any]:
        """The wrapped layer's weights this wrapper prunes."""
        return registry.prunable_weights(self.layer) if self.built else []

    @property
    def pruning_vars(self) -> list[tuple[Any, Any, Any]]:
        """`(weight, mask, threshold)` for each pruned weight, as tfmot's wrapper has them."""
        if not self.built:
            return []
        return list(zip(self.prunable_weights, self._masks, self._thresholds))

    def get_weights(self) -> list[np.ndarray]:
        """The wrapped layer's weights (as tfmot's wrapper returns them)."""
        return self.layer.get_weights()

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Set the wrapped layer's weights (as tfmot's wrapper does)."""
        self.layer.set_weights(weights)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "pruning_schedule": self.pruning_schedule.get_config(),
            "block_size": list(self.block_size),
            "block_pooling_type": self.block_pooling_type,
            "sparsity_m_by_n": None if self.sparsity_m_by_n is None else list(self.sparsity_m_by_n),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> PruneLowMagnitude:
        config = dict(config)
        schedule = deserialize_schedule(config.pop("pruning_schedule"), custom_objects)
        layer = keras.saving.deserialize_keras_object(
            config.pop("layer"), custom_objects=custom_objects
        )
        config.pop("name", None)  # always prune_low_magnitude_<layer name>
        return cls(layer, pruning_schedule=schedule, **config)

    # ------------------------------------------------------------ pruning, on the host

    def start_pruning(self) -> None:
        """Allow training calls; a new wrapper's `pruning_step` goes from -1 to 0."""
        self._pruning_started = True
        if self.built:
            self._step = int(keras.ops.convert_to_numpy(self.pruning_step))
            if self._step < 0:
                self._step = 0
                self.pruning_step.assign(0)

    def advance_step(self) -> bool:
        """Count one training step; recompute the masks if the schedule says so.

        Returns True if the masks changed.
        """
        if not self.built:
            return False
        if self._step is None:
            self.start_pruning()
        self._step += 1
        self.pruning_step.assign(self._step)
        if self.sparsity_m_by_n is not None:  # tfmot fixes an M-by-N mask on step 1
            if self._step != 1:
                return False
            sparsity = None
        else:
            should_prune, sparsity = self.pruning_schedule(self._step)
            if not bool(should_prune):
                return False
            sparsity = float(sparsity)
        self.update_masks(sparsity)
        return True

    def update_masks(self, sparsity: float | None) -> None:
        """Masks for `sparsity` from the current weights (None: the M-by-N pattern)."""
        weights = self.prunable_weights
        values = [keras.ops.convert_to_numpy(w) for w in weights]
        if self.sparsity_m_by_n is not None:
            keeps = [m_by_n_mask(v, self.sparsity_m_by_n) for v in values]
        else:
            pooling = "mean" if self.block_pooling_type == "AVG" else "max"
            keeps = [
                weight_masks(
                    {"weight": v},
                    _kept_at_least_one(v.shape, sparsity, self.block_size),
                    block=self.block_size,
                    block_pooling=pooling,
                )["weight"]
                for v in values
            ]
        for value, keep, mask, threshold in zip(values, keeps, self._masks, self._thresholds):
            kept = np.abs(value[keep])
            mask.assign(keep.astype(value.dtype))
            threshold.assign(np.asarray(kept.min() if kept.size else 0, dtype=value.dtype))

    def apply_masks(self) -> None:
        """weights = weights * masks."""
        for weight, mask in zip(self.prunable_weights, getattr(self, "_masks", [])):
            weight.assign(keras.ops.multiply(weight, mask))


def collect_prunable_layers(model: keras.Model) -> list[PruneLowMagnitude]:
    """Every `PruneLowMagnitude` in `model`, nested models included.

    Example:
        >>> [layer.name for layer in collect_prunable_layers(pruned)]
        ['prune_low_magnitude_dense', 'prune_low_magnitude_dense_1']
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(collect_prunable_layers(layer))
        if isinstance(layer, PruneLowMagnitude):
            found.append(layer)
    return found
