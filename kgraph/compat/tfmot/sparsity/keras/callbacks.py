"""tfmot's pruning callbacks: `UpdatePruningStep` (required to train) and `PruningSummaries`.

Example:
    >>> model.fit(x, y, callbacks=[UpdatePruningStep(), PruningSummaries(log_dir="logs")])
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from typing import Any

import keras
import numpy as np

from kgraph.compat.tfmot.errors import TfmotError
from kgraph.compat.tfmot.sparsity.keras.wrapper import collect_prunable_layers

__all__ = ["PruningSummaries", "UpdatePruningStep", "pruning_logs"]


class UpdatePruningStep(keras.callbacks.Callback):
    """Counts training steps for every `PruneLowMagnitude` of the model and prunes on time.

    Training a pruned model without it raises `PruningStepError`, as with tfmot. On
    each training step it advances the wrappers' `pruning_step`, recomputes masks on
    the steps their schedules name, and multiplies the weights by the masks before
    and after the step (and at the end of each epoch).

    Example:
        >>> pruned.fit(x, y, epochs=2, callbacks=[UpdatePruningStep()])
    """

    def __init__(self) -> None:
        super().__init__()
        self.prunable_layers: list[Any] = []
        self._stale = False  # weights changed since the masks were last applied
        self._unbuilt: list[Any] = []  # layers that Keras builds in the first step

    def on_train_begin(self, logs: Any = None) -> None:
        self.prunable_layers = collect_prunable_layers(self.model)
        for layer in self.prunable_layers:
            layer.start_pruning()
        self._unbuilt = [layer for layer in self.prunable_layers if not layer.built]
        self._stale = True

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        if not self.prunable_layers:
            return
        _ = self.model  # on JAX, brings the training state back into the variables
        for layer in self.prunable_layers:
            if layer.advance_step() or self._stale:
                layer.apply_masks()
        self._stale = True  # until on_train_batch_end: the optimizer moves pruned weights

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self._unbuilt:  # built during this step, which counts as their step 1
            _ = self.model
            for layer in [layer for layer in self._unbuilt if layer.built]:
                layer.advance_step()
                self._unbuilt.remove(layer)
        self._apply()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._apply()

    def _apply(self) -> None:
        if not self.prunable_layers:
            return
        _ = self.model
        for layer in self.prunable_layers:
            layer.apply_masks()
        self._stale = False


def pruning_logs(model: keras.Model) -> dict[str, float]:
    """Each mask's sparsity and threshold: `{"<weight path>/sparsity": 0.5, ...}`.

    Example:
        >>> pruning_logs(pruned)["dense/kernel/sparsity"]
        0.5
    """
    logs = {}
    for layer in collect_prunable_layers(model):
        for weight, mask, threshold in layer.pruning_vars:
            logs[f"{weight.path}/sparsity"] = float(1 - np.mean(keras.ops.convert_to_numpy(mask)))
            logs[f"{weight.path}/threshold"] = float(keras.ops.convert_to_numpy(threshold))
    return logs


class PruningSummaries(keras.callbacks.TensorBoard):
    """TensorBoard logs plus, at each epoch's start, every mask's sparsity and threshold.

    The pruning scalars go to `<log_dir>/metrics`, named after the pruned weight
    (`.../dense/kernel/sparsity`). Like Keras' TensorBoard callback it writes with
    TensorFlow and needs the `tensorboard` package, on any backend.

    Example:
        >>> pruned.fit(x, y, callbacks=[UpdatePruningStep(), PruningSummaries(log_dir="logs")])
    """

    def __init__(self, log_dir: str, update_freq: str | int = "epoch", **kwargs: Any) -> None:
        if not isinstance(log_dir, str) or not log_dir:
            raise TfmotError(
                f"`log_dir` must be a non-empty string. You passed `log_dir`={log_dir!r}."
            )
        missing = [name for name in ("tensorflow", "tensorboard") if not find_spec(name)]
        if missing:
            raise TfmotError(
                f"PruningSummaries writes TensorBoard logs, which needs {' and '.join(missing)} "
                f"installed (pip install {' '.join(missing)}); or leave it out of the "
                "callbacks: UpdatePruningStep alone prunes"
            )
        super().__init__(log_dir=log_dir, update_freq=update_freq, **kwargs)
        self._pruning_writer: Any = None

    def pruning_logs(self) -> dict[str, float]:
        """`pruning_logs(self.model)`: each mask's sparsity and threshold now."""
        return pruning_logs(self.model)

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        super().on_epoch_begin(epoch, logs)
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        step = 0 if optimizer is None else int(keras.ops.convert_to_numpy(optimizer.iterations))
        if self._pruning_writer is None:
            metrics_dir = os.path.join(self.log_dir, "metrics")
            self._pruning_writer = self.summary.create_file_writer(metrics_dir)
        with self._pruning_writer.as_default():
            for name, value in self.pruning_logs().items():
                self.summary.scalar(name, value, step=step)
        self._pruning_writer.flush()
