"""tfmot's pruning schedules, with its signatures, on top of kgraph's schedules.

`schedule(step)` returns `(should_prune, sparsity)` as Python values; when to prune
and how sparse is decided by `kgraph.ConstantSparsity` / `kgraph.PolynomialDecay`.

Example:
    >>> schedule = PolynomialDecay(0.2, 0.8, begin_step=100, end_step=110, frequency=2)
    >>> schedule(102)
    (True, 0.4928)
"""

from __future__ import annotations

import abc
import numbers
from typing import Any

import keras

from kgraph.compat.tfmot.errors import TfmotError
from kgraph.sparse import schedules as kgraph_schedules
from kgraph.sparse.masks import SparsityError, check_options

__all__ = ["ConstantSparsity", "PolynomialDecay", "PruningSchedule", "deserialize_schedule"]


def _integer(value: Any) -> Any:
    """numpy and other integral numbers as `int` (tfmot's tutorials pass numpy integers)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _real(value: Any) -> Any:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _step(step: Any) -> int:
    """A training step given as an int, a numpy scalar, a tensor or a variable."""
    if isinstance(step, numbers.Integral):
        return int(step)
    return int(keras.ops.convert_to_numpy(step))


class PruningSchedule(abc.ABC):
    """When to prune and to which sparsity: `schedule(step)` -> `(should_prune, sparsity)`.

    Subclass it for a schedule of your own, as with tfmot; the `_validate_*` and
    `_should_prune_in_step` helpers mean what tfmot's do.

    Example:
        >>> class Halfway(PruningSchedule):
        ...     def __call__(self, step):
        ...         return self._should_prune_in_step(step, 0, 100, 10), 0.5
        ...     def get_config(self):
        ...         return {"class_name": "Halfway", "config": {}}
    """

    def _should_prune_in_step(
        self, step: Any, begin_step: int, end_step: int, frequency: int
    ) -> bool:
        """True on steps `begin_step`, `begin_step + frequency`, ... up to `end_step`."""
        end = -1 if end_step < 0 else end_step
        return kgraph_schedules.Schedule(begin_step, end, frequency).should_prune(_step(step))

    def _validate_step(
        self, begin_step: Any, end_step: Any, frequency: Any, allow_negative_1: bool
    ) -> None:
        if not allow_negative_1 and end_step == -1:
            raise TfmotError(
                f"{type(self).__name__}: end_step cannot be -1; give the step at which "
                "pruning reaches its final sparsity"
            )
        kgraph_schedules.ConstantSparsity(
            _integer(begin_step), _integer(end_step), _integer(frequency), target_sparsity=0.0
        )

    def _validate_sparsity(self, sparsity: Any, variable_name: str) -> None:
        try:
            check_options(_real(sparsity), "magnitude", "layer", (1, 1), None)
        except SparsityError as error:
            raise TfmotError(f"{type(self).__name__}: {variable_name}: {error}") from None

    @abc.abstractmethod
    def __call__(self, step: Any) -> tuple[bool, float]:
        """`(should_prune, sparsity)` for training step `step`."""

    @abc.abstractmethod
    def get_config(self) -> dict[str, Any]:
        """`{"class_name": ..., "config": {...}}`, as tfmot's schedules give."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PruningSchedule:
        """The schedule whose `get_config()["config"]` is `config`."""
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self) -> int:
        return hash(repr(self.get_config()))

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config()["config"].items())
        return f"{type(self).__name__}({arguments})"


class ConstantSparsity(PruningSchedule):
    """`target_sparsity` on steps `begin_step`, `begin_step + frequency`, ... up to `end_step`.

    Example:
        >>> ConstantSparsity(0.5, begin_step=0, frequency=100)(200)
        (True, 0.5)
    """

    def __init__(
        self, target_sparsity: float, begin_step: int, end_step: int = -1, frequency: int = 100
    ) -> None:
        self.target_sparsity = _real(target_sparsity)
        self.begin_step = _integer(begin_step)
        self.end_step = _integer(end_step)
        self.frequency = _integer(frequency)
        self.schedule = kgraph_schedules.ConstantSparsity(
            self.begin_step,
            self.end_step,
            self.frequency,
            target_sparsity=self.target_sparsity,
        )

    def __call__(self, step: Any) -> tuple[bool, float]:
        step = _step(step)
        return self.schedule.should_prune(step), self.schedule.sparsity(step)

    def get_config(self) -> dict[str, Any]:
        return {
            "class_name": type(self).__name__,
            "config": {
                "target_sparsity": self.target_sparsity,
                "begin_step": self.begin_step,
                "end_step": self.end_step,
                "frequency": self.frequency,
            },
        }


class PolynomialDecay(PruningSchedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity` between begin and end step.

    `final + (initial - final) * (1 - progress) ** power`, on steps `begin_step`,
    `begin_step + frequency`, ... up to `end_step`.

    Example:
        >>> PolynomialDecay(0.0, 0.5, begin_step=0, end_step=1000)(1000)
        (True, 0.5)
    """

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        power: float = 3,
        frequency: int = 100,
    ) -> None:
        self.initial_sparsity = _real(initial_sparsity)
        self.final_sparsity = _real(final_sparsity)
        self.power = power
        self.begin_step = _integer(begin_step)
        self.end_step = _integer(end_step)
        self.frequency = _integer(frequency)
        self._validate_step(self.begin_step, self.end_step, self.frequency, False)
        self.schedule = kgraph_schedules.PolynomialDecay(
            self.begin_step,
            self.end_step,
            self.frequency,
            initial_sparsity=self.initial_sparsity,
            final_sparsity=self.final_sparsity,
            power=_real(power),
        )

    def __call__(self, step: Any) -> tuple[bool, float]:
        step = _step(step)
        return self.schedule.should_prune(step), self.schedule.sparsity(step)

    def get_config(self) -> dict[str, Any]:
        return {
            "class_name": type(self).__name__,
            "config": {
                "initial_sparsity": self.initial_sparsity,
                "final_sparsity": self.final_sparsity,
                "power": self.power,
                "begin_step": self.begin_step,
                "end_step": self.end_step,
                "frequency": self.frequency,
            },
        }


_SCHEDULES = {"ConstantSparsity": ConstantSparsity, "PolynomialDecay": PolynomialDecay}


def deserialize_schedule(
    config: dict[str, Any], custom_objects: dict[str, Any] | None = None
) -> PruningSchedule:
    """The schedule a `get_config()` result describes (custom ones: registered with
    `keras.saving.register_keras_serializable` or given in `custom_objects`).

    Example:
        >>> deserialize_schedule(ConstantSparsity(0.5, 0).get_config())
        ConstantSparsity(target_sparsity=0.5, begin_step=0, end_step=-1, frequency=100)
    """
    if isinstance(config, PruningSchedule):
        return config
    if not isinstance(config, dict) or "class_name" not in config:
        raise TfmotError(
            f"a pruning schedule config must be a dict with 'class_name' and 'config', got "
            f"{config!r}; use schedule.get_config()"
        )
    name = config["class_name"]
    cls = (custom_objects or {}).get(name) or _SCHEDULES.get(name)
    if cls is None:  # a custom_object_scope entry or a registered name
        cls = keras.saving.get_registered_object(name)
    if cls is None:
        raise TfmotError(
            f"unknown pruning schedule {name!r}: register it with "
            "@keras.saving.register_keras_serializable() or load inside "
            "keras.saving.custom_object_scope({...: YourSchedule})"
        )
    return cls.from_config(config.get("config", {}))
