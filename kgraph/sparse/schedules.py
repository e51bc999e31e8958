"""Gradual pruning while training: sparsity schedules and the Keras callback applying them.

The schedules mean what tfmot's do: pruning happens on steps `begin_step`,
`begin_step + frequency`, ... up to `end_step` (-1: forever); `PolynomialDecay`
raises sparsity from `initial_sparsity` to `final_sparsity` as
`final + (initial - final) * (1 - progress) ** power`.

`GradualPruning` is a plain `keras.callbacks.Callback`: no wrapper layers, nothing to
strip afterwards. On pruning steps it recomputes the masks from the current weights;
after every training step it multiplies the weights by them, so pruned weights stay
exactly zero whatever the optimizer does.

Example:
    >>> schedule = kgraph.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000, frequency=50)
    >>> model.fit(x, y, epochs=10, callbacks=[kgraph.GradualPruning(schedule)])
    >>> kgraph.sparsity(model).total
    0.8
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import attrs
import keras
import numpy as np

from kgraph.sparse.masks import SparsityError, check_options, is_prunable, weight_masks

__all__ = ["ConstantSparsity", "GradualPruning", "PolynomialDecay", "Schedule"]

log = logging.getLogger(__name__)


def _check_steps(begin_step: int, end_step: int, frequency: int) -> None:
    if not isinstance(begin_step, int) or begin_step < 0:
        raise SparsityError(f"begin_step must be a non-negative integer, got {begin_step!r}")
    if not isinstance(end_step, int) or (end_step != -1 and end_step < begin_step):
        raise SparsityError(
            f"end_step must be -1 or >= begin_step ({begin_step}), got {end_step!r}"
        )
    if not isinstance(frequency, int) or frequency < 1:
        raise SparsityError(f"frequency must be a positive integer, got {frequency!r}")


@attrs.frozen
class Schedule:
    """When to prune and to what sparsity (subclasses say how much)."""

    begin_step: int = 0
    end_step: int = -1
    frequency: int = 100

    def should_prune(self, step: int) -> bool:
        """True on the steps that recompute the masks."""
        in_range = step >= self.begin_step and (self.end_step == -1 or step <= self.end_step)
        return in_range and (step - self.begin_step) % self.frequency == 0

    def sparsity(self, step: int) -> float:
        raise NotImplementedError


@attrs.frozen
class ConstantSparsity(Schedule):
    """The same `target_sparsity` on every pruning step."""

    target_sparsity: float = attrs.field(kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_steps(self.begin_step, self.end_step, self.frequency)
        check_options(self.target_sparsity, "magnitude", "layer", (1, 1), None)

    def sparsity(self, step: int) -> float:
        return self.target_sparsity


@attrs.frozen
class PolynomialDecay(Schedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity` between begin and end step."""

    initial_sparsity: float = attrs.field(kw_only=True)
    final_sparsity: float = attrs.field(kw_only=True)
    power: float = attrs.field(default=3.0, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_steps(self.begin_step, self.end_step, self.frequency)
        if self.end_step <= self.begin_step:
            raise SparsityError("PolynomialDecay needs end_step > begin_step")
        for value in (self.initial_sparsity, self.final_sparsity):
            check_options(value, "magnitude", "layer", (1, 1), None)

    def sparsity(self, step: int) -> float:
        progress = min(max((step - self.begin_step) / (self.end_step - self.begin_step), 0.0), 1.0)
        return (
            self.final_sparsity
            + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** self.power
        )


class GradualPruning(keras.callbacks.Callback):
    """Prune weights on `schedule` during `model.fit`, keeping pruned weights at zero.

    Args:
        schedule: a `ConstantSparsity` or `PolynomialDecay`.
        layers: names of the layers to prune (default: every kernel and embedding).
        criterion, scope, block, n_m, seed: as for the `Sparsify` pass.
    """

    def __init__(
        self,
        schedule: Schedule,
        *,
        layers: Iterable[str] | None = None,
        criterion: str = "magnitude",
        scope: str = "layer",
        block: tuple[int, int] = (1, 1),
        n_m: tuple[int, int] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(schedule, Schedule):
            raise SparsityError(f"schedule must be a kgraph sparsity Schedule, got {schedule!r}")
        check_options(None if n_m else 0.0, criterion, scope, tuple(block), n_m)
        self.schedule = schedule
        self.layers = None if layers is None else list(layers)
        self.options = {"criterion": criterion, "scope": scope, "block": tuple(block), "n_m": n_m}
        self.seed = seed
        self.step = 0
        self.masks: dict[str, np.ndarray] = {}

    def _variables(self) -> dict[str, Any]:
        if self.layers is None:
            candidates = self.model.weights
        else:
            candidates = [w for name in self.layers for w in self.model.get_layer(name).weights]
        found = {}
        for variable in candidates:
            if is_prunable(variable.path.split("/")[-1]) and variable.path not in found:
                found[variable.path] = variable
        if not found:
            raise SparsityError("GradualPruning found no kernels or embeddings to prune")
        return found

    def on_train_begin(self, logs: Any = None) -> None:
        self.variables = self._variables()
        self._apply()

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        if not self.schedule.should_prune(self.step):
            return
        sparsity = None if self.options["n_m"] else self.schedule.sparsity(self.step)
        self._sync()
        values = {path: keras.ops.convert_to_numpy(v) for path, v in self.variables.items()}
        self.masks = weight_masks(values, sparsity, seed=self.seed + self.step, **self.options)
        log.debug("step %d: masks for sparsity %s", self.step, sparsity)
        self._apply()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self._apply()
        self.step += 1

    def _sync(self) -> None:
        """Bring the training state into the variables: on JAX it lives outside them
        mid-epoch, and Keras' `Callback.model` property writes it back."""
        _ = self.model

    def _apply(self) -> None:
        if self.masks:
            self._sync()
        for path, mask in self.masks.items():
            variable = self.variables[path]
            variable.assign(keras.ops.multiply(variable, mask.astype(variable.dtype)))
