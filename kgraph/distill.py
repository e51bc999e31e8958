"""`distill`: fine-tune a pruned model with the original as its teacher.

Knowledge distillation (Hinton et al. 2015): the student learns the teacher's softened
outputs, `T² · KL(softmax(teacher / T) ‖ softmax(student / T))`, mixed with the usual
loss on labels when there are labels (`alpha` of it), so it needs no labels at all.
The teacher runs in inference mode and is never changed; `Distiller` is a
`keras.Model` whose `compute_loss` does this, trained by Keras' own `fit` on every
backend.

Example:
    >>> small = kgraph.prune(model, 0.5, "l1")
    >>> small = kgraph.distill(small, model, x_train, epochs=3)
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from kgraph.calibrate import _is_arrays, check_batching, iterate_batches
from kgraph.errors import KGraphError

__all__ = ["DistillationError", "Distiller", "distill", "distillation_loss"]

log = logging.getLogger(__name__)

_TINY = 1e-7


class DistillationError(KGraphError, ValueError):
    """`distill` cannot use its models, data or options."""


def _logits(outputs: Any, from_logits: bool) -> Any:
    outputs = keras.ops.cast(outputs, "float32")
    return outputs if from_logits else keras.ops.log(keras.ops.clip(outputs, _TINY, 1.0 - _TINY))


def distillation_loss(
    teacher_outputs: Any, student_outputs: Any, temperature: float = 4.0, from_logits: bool = False
) -> Any:
    """Per-sample `T² · KL(softmax(teacher / T) ‖ softmax(student / T))` over the last axis.

    Outputs are probabilities (their log, clipped at 1e-7 like Keras' cross-entropy,
    serves as logits), or logits with `from_logits`.

    Example:
        >>> distillation_loss(np.array([[0.9, 0.1]]), np.array([[0.6, 0.4]]), 2.0)
    """
    teacher = _logits(teacher_outputs, from_logits) / temperature
    student = _logits(student_outputs, from_logits) / temperature
    log_p = keras.ops.log_softmax(teacher, axis=-1)
    log_q = keras.ops.log_softmax(student, axis=-1)
    kl = keras.ops.sum(keras.ops.exp(log_p) * (log_p - log_q), axis=-1)
    return kl * (temperature**2)


class _Frozen:
    """Holds the teacher out of Keras' tracking, so its weights never join the student's."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model


class Distiller(keras.Model):
    """A model that is its student and learns its teacher's outputs (see `distill`).

    Training the distiller trains the student in place; the teacher runs in inference
    mode, outside the distiller's variables, behind a stop-gradient.

    Example:
        >>> distiller = Distiller(student, teacher, temperature=4.0)
        >>> distiller.compile(keras.optimizers.Adam(1e-3))
        >>> distiller.fit(x_train, epochs=2)
    """

    def __init__(
        self,
        student: keras.Model,
        teacher: keras.Model,
        *,
        temperature: float = 4.0,
        alpha: float = 0.1,
        from_logits: bool = False,
        loss: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.student = student
        self._teacher = _Frozen(teacher)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.from_logits = bool(from_logits)
        self.hard_loss = None if loss is None else keras.losses.get(loss)

    @property
    def teacher(self) -> keras.Model:
        return self._teacher.model

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.student(inputs, training=training)

    def _hard(self, y: Any, y_pred: Any) -> Any:
        if self.hard_loss is not None:
            return self.hard_loss(y, y_pred)
        sparse = len(y.shape) < len(y_pred.shape) or y.shape[-1] == 1
        if sparse:
            return keras.losses.sparse_categorical_crossentropy(
                y, y_pred, from_logits=self.from_logits
            )
        return keras.losses.categorical_crossentropy(y, y_pred, from_logits=self.from_logits)

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        teacher = keras.ops.stop_gradient(self.teacher(x, training=False))
        per_sample = distillation_loss(teacher, y_pred, self.temperature, self.from_logits)
        if y is not None and self.alpha > 0:
            hard = keras.ops.cast(self._hard(y, y_pred), per_sample.dtype)
            per_sample = self.alpha * hard + (1.0 - self.alpha) * per_sample
        if sample_weight is not None:
            weight = keras.ops.cast(keras.ops.reshape(sample_weight, (-1,)), per_sample.dtype)
            loss = keras.ops.sum(per_sample * weight) / keras.ops.maximum(
                keras.ops.sum(weight), _TINY
            )
        else:
            loss = keras.ops.mean(per_sample)
        extra = self.losses  # the student's regularisation losses
        return loss + keras.ops.sum(extra) if extra else loss


class _Batches(keras.utils.PyDataset):
    """A list of batches as a PyDataset, so every epoch sees all of them."""

    def __init__(self, items: list[Any]) -> None:
        super().__init__()
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        x, y = self.items[index]
        return x if y is None else (x, y)


def _is_native(data: Any) -> bool:
    """Data `fit` reads itself, every epoch anew: tf.data, PyDataset, torch DataLoader."""
    module = type(data).__module__
    return isinstance(data, keras.utils.PyDataset) or module.startswith(
        ("tensorflow.", "torch.utils.data")
    )


def _check(value: Any, what: str, low: float, high: float | None, closed: bool = True) -> float:
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if (
        not number
        or value < low
        or (high is not None and value > high)
        or (not closed and value == low)
    ):
        bounds = f"in [{low}, {high}]" if high is not None else f"above {low}"
        raise DistillationError(f"{what} must be a number {bounds}, got {value!r}")
    return float(value)


def _check_outputs(student: keras.Model, teacher: keras.Model, x: Any, from_logits: bool) -> None:
    teacher_out = teacher(x, training=False)
    student_out = student(x, training=False)
    for name, out in (("teacher", teacher_out), ("student", student_out)):
        if isinstance(out, (list, tuple, dict)):
            raise DistillationError(
                f"the {name} has several outputs; distill needs models with one output "
                "(class probabilities or logits)"
            )
    if tuple(teacher_out.shape) != tuple(student_out.shape):
        raise DistillationError(
            f"the teacher's outputs have shape {tuple(teacher_out.shape)} but the student's "
            f"{tuple(student_out.shape)}; distill needs the same outputs (the pruned model "
            "of the teacher keeps them)"
        )
    if not from_logits:
        values = keras.ops.convert_to_numpy(keras.ops.cast(teacher_out, "float32"))
        sums = values.sum(axis=-1)
        if values.min() < -1e-6 or not np.allclose(sums, 1.0, atol=1e-3):
            raise DistillationError(
                "the teacher's outputs are not probabilities (they do not sum to 1 over the "
                "last axis): pass from_logits=True for a model that outputs logits"
            )


def distill(
    student: keras.Model,
    teacher: keras.Model,
    data: Any,
    *,
    epochs: int = 1,
    temperature: float = 4.0,
    alpha: float = 0.1,
    optimizer: Any = None,
    from_logits: bool = False,
    loss: Any = None,
    batch_size: int = 32,
    callbacks: Iterable[keras.callbacks.Callback] | None = None,
    jit_compile: bool | str = "auto",
    verbose: int = 0,
) -> keras.Model:
    """Train `student` (in place) to match `teacher`'s outputs on `data`; return it.

    Args:
        student, teacher: models with one output each, of the same shape (class
            probabilities, or logits with `from_logits=True`).
        data: inputs `x` (numpy, dict of arrays) or `(x, y)` with labels, a
            tf.data.Dataset, a keras.utils.PyDataset, or an iterable of batches.
        temperature: softens both outputs before comparing them (the loss is scaled
            by its square, as in Hinton et al.).
        alpha: weight of the loss on labels when `data` has labels (ignored without).
        optimizer: default `keras.optimizers.Adam(1e-3)`.
        loss: the loss on labels (default: sparse or categorical cross-entropy, by the
            labels' shape).
        callbacks, jit_compile, verbose: passed to Keras' `fit` and `compile`.

    The student is trained in place (like `fit`) and returned; its compile state is
    left alone. The teacher is frozen: run in inference mode and never changed.

    Example:
        >>> small = kgraph.distill(kgraph.prune(model, 0.5), model, x_train, epochs=2)
    """
    for name, model in (("student", student), ("teacher", teacher)):
        if not isinstance(model, keras.Model):
            raise DistillationError(f"{name} must be a keras.Model, got {type(model).__name__}")
    if student is teacher:
        raise DistillationError("student and teacher are the same model; prune a copy first")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise DistillationError(f"epochs must be a positive integer, got {epochs!r}")
    temperature = _check(temperature, "temperature", 0.0, None, closed=False)
    alpha = _check(alpha, "alpha", 0.0, 1.0)
    check_batching(batch_size, error=DistillationError)
    fit_args = _fit_arguments(data, batch_size)
    first = next(iter(iterate_batches(fit_args["x"], batch_size, 1)), None)
    if first is None:
        raise DistillationError("the data gave no batches to distill on")
    _check_outputs(student, teacher, first[0], from_logits)

    distiller = Distiller(
        student, teacher, temperature=temperature, alpha=alpha, from_logits=from_logits, loss=loss
    )
    distiller.compile(optimizer=optimizer or keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    history = distiller.fit(**fit_args, epochs=epochs, callbacks=callbacks, verbose=verbose)
    log.info("distill: %d epochs, last loss %.4f", epochs, history.history["loss"][-1])
    return student


def _fit_arguments(data: Any, batch_size: int) -> dict[str, Any]:
    """`fit`'s data arguments for `data` (see `distill`)."""
    if data is None:
        raise DistillationError("no data given: pass data=x, data=(x, y) or a tf.data.Dataset")
    if isinstance(data, tuple) and 1 <= len(data) <= 3 and _is_arrays(data[0]):
        arguments = {"x": data[0], "y": data[1] if len(data) > 1 else None}
        if len(data) == 3:
            arguments["sample_weight"] = data[2]
        return {**arguments, "batch_size": batch_size}
    if _is_arrays(data) and not isinstance(data, list):
        return {"x": data, "batch_size": batch_size}
    if _is_native(data):  # shuffled, or not, by its maker
        return {"x": data, "shuffle": False}
    batches = _Batches(list(iterate_batches(data, batch_size)))
    if not len(batches):
        raise DistillationError("the data gave no batches to distill on")
    return {"x": batches, "shuffle": False}
