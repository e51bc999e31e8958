"""Oracles of the fuzz suite: dead channels and heads, errors, save/load, settings.

- `make_dead` zeroes, in place, what makes channels (and attention heads) dead in a
  model drawn by `strategies.Builder`: the producer's kernel columns and bias, and the
  BatchNorm, depthwise-bias and attention fix-ups on their way (tests/helpers.py's
  `zero_outputs` and `zero_batchnorm`, tests/test_properties_sequences.py's
  `zero_bidirectional`).
- `guarded` runs a kgraph operation: anything raised that is not a `kgraph.KGraphError`
  fails the test, and so does a change of the models given to kgraph.
- `check_round_trip` saves a lowered model as `.keras` and loads it back.
- `fuzz_settings` reads the hypothesis profile conftest.py registered
  (`KGRAPH_FUZZ=long` for the long run) and gives a test its share of the cases
  (`KGRAPH_FUZZ_SHRINK=0`: report a failure as found, without shrinking it).
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
from helpers import GENERATED_CASES, fingerprint, outputs_of, zero_batchnorm, zero_outputs
from hypothesis import Phase, assume, note, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from strategies import Builder, Tape, build_model, positions, resolve
from test_properties_sequences import zero_bidirectional

import kgraph

RTOL, ATOL = 1e-4, 1e-5

PROFILE = "kgraph-fuzz-long" if os.environ.get("KGRAPH_FUZZ") == "long" else "kgraph-fuzz-ci"


_SESSIONS = [0]


def new_session() -> None:
    """Start a case. `keras.backend.clear_session()` costs about as much as the rest of
    a case (it collects garbage), so it runs every 25 cases, to bound memory."""
    _SESSIONS[0] += 1
    if _SESSIONS[0] % 25 == 0:
        keras.backend.clear_session()


class Case(NamedTuple):
    """One generated case: the tape of its draws, the model's seed, and its builder."""

    tape: Tape
    seed: int
    builder: Builder


def new_case(data: st.DataObject, **options: Any) -> Case:
    """Start a case (`new_session`) and build its random model (`build_model` with
    `options`), described in the report of a failing case."""
    new_session()
    tape = Tape(data)
    seed = data.draw(st.integers(0, 2**16), label="seed")
    builder = build_model(tape, seed, **options)
    describe(builder)
    return Case(tape, seed, builder)


def count_case(name: str) -> None:
    """Count one checked case (the summary line shows the totals); with
    `KGRAPH_FUZZ_PROGRESS=file`, also append a time-stamped line to that file, so a
    long run stopped by a timeout still says how many cases it checked."""
    GENERATED_CASES[name] += 1
    progress = os.environ.get("KGRAPH_FUZZ_PROGRESS")
    if progress:
        with open(progress, "a") as file:
            file.write(f"{time.time():.1f} {name}\n")


def fuzz_settings(share: float) -> Callable[[Callable], Callable]:
    """The active profile, with `share` of its cases for one test (and, in the long
    profile, the run's seed: `KGRAPH_FUZZ_SEED`, printed in the report header)."""
    profile = settings.get_profile(PROFILE)
    chosen = settings(profile, max_examples=max(1, round(profile.max_examples * share)))
    if os.environ.get("KGRAPH_FUZZ_SHRINK") == "0":  # report failures as found, unshrunk
        chosen = settings(chosen, phases=[p for p in chosen.phases if p != Phase.shrink])

    def decorate(test: Callable) -> Callable:
        test = chosen(test)
        run_seed = os.environ.get("KGRAPH_FUZZ_SEED")
        if PROFILE == "kgraph-fuzz-long" and run_seed:
            test = hypothesis_seed(int(run_seed))(test)
        return test

    return decorate


# -- dead channels and heads ----------------------------------------------------------


def _weights(layer: keras.layers.Layer) -> tuple[list[str], list[np.ndarray]]:
    names = [w.path for w in layer.weights]
    return names, [np.array(w) for w in layer.get_weights()]


def _index(names: Sequence[str], suffix: str) -> int:
    return next(i for i, n in enumerate(names) if n.endswith(suffix))


def zero_columns(layer: keras.layers.Layer, kind: str, channels: Sequence[int]) -> None:
    """Make output `channels` of an owner layer exactly zero for every input."""
    if kind == "td":
        zero_outputs(layer.layer, channels)
    elif kind in ("bicat", "bisum"):
        zero_bidirectional(layer, channels, concat=kind == "bicat")
    elif kind == "sepconv":  # depthwise_kernel, pointwise_kernel (..., out), bias
        names, values = _weights(layer)
        values[_index(names, "pointwise_kernel")][..., channels] = 0
        if layer.use_bias:
            values[_index(names, "bias")][channels] = 0
        layer.set_weights(values)
    elif kind == "tconv":  # kernel (..., out, in), bias
        names, values = _weights(layer)
        values[_index(names, "kernel")][..., channels, :] = 0
        if layer.use_bias:
            values[_index(names, "bias")][channels] = 0
        layer.set_weights(values)
    elif kind == "mha":
        zero_attention_output(layer, channels)
    else:  # Dense, EinsumDense, Conv, SimpleRNN/GRU/LSTM, Embedding
        zero_outputs(layer, channels)


def zero_attention_output(layer: keras.layers.Layer, channels: Sequence[int]) -> None:
    names, values = _weights(layer)
    values[_index(names, "attention_output/kernel")][..., channels] = 0
    values[_index(names, "attention_output/bias")][channels] = 0
    layer.set_weights(values)


def zero_heads(layer: keras.layers.Layer, heads: Sequence[int]) -> None:
    """Make attention heads dead: their value projection (columns and bias) is zero, so
    they add nothing through the output projection."""
    names, values = _weights(layer)
    values[_index(names, "value/kernel")][:, list(heads), :] = 0
    values[_index(names, "value/bias")][list(heads), :] = 0
    layer.set_weights(values)


def _find(model: keras.Model, path: Sequence[str]) -> keras.layers.Layer | None:
    try:
        return resolve(model, path)
    except ValueError:  # skipped by a structure pass's expectation
        return None


def make_dead(
    builder: Builder,
    model: keras.Model,
    entries: set[tuple[int, int]],
    heads: Mapping[tuple[str, ...], Sequence[int]] | None = None,
) -> None:
    """Zero, in `model` (drawn by `builder`), what makes `entries` and `heads` dead."""
    for owner in builder.owners:
        channels = positions(owner.layout, entries)
        layer = _find(model, owner.path) if channels else None
        if layer is not None:
            zero_columns(layer, owner.kind, channels)
    for fix in builder.fixups:
        channels = positions(fix.layout, entries)
        layer = _find(model, fix.path) if channels else None
        if layer is None:
            continue
        if fix.kind == "bn":
            zero_batchnorm(layer, channels)
        elif fix.kind == "mha":
            zero_attention_output(layer, channels)
        else:  # dwbias: channel c makes outputs c*m .. c*m+m-1
            names, values = _weights(layer)
            m = fix.multiplier
            values[_index(names, "bias")][[c * m + j for c in channels for j in range(m)]] = 0
            layer.set_weights(values)
    for path, dead in (heads or {}).items():
        layer = _find(model, path)
        if dead and layer is not None:
            zero_heads(layer, dead)


def address(choose: Callable, path: tuple[str, ...]) -> str:
    """A nested layer by its path or (layers keep their names when inlined) its name."""
    if len(path) > 1 and choose(st.booleans(), "by path"):
        return "/".join(path)
    return path[-1]


# -- known issues (tests/fuzz/test_fuzz_regressions.py has each) ----------------------


def known_issue(builder: Builder, entries: set[tuple[int, int]], *, explicit: bool) -> str:
    """Why deleting `entries` would meet a known, reported kgraph bug or limitation (""
    if it would not): the fuzz tests draw such cases again (`assume`), so that they go
    on finding new ones. `explicit`: every owner is given its own channels to delete.
    """
    if not explicit:  # limitation: test_rearranged_channels_are_deleted_by_name
        deleted = {e[0] for e in entries}
        for owner in builder.owners:
            mine = [e for e in owner.layout if e is not None and e[0] in deleted]
            if len(mine) > len(set(mine)):
                return f"{owner.name}: merged with re-arranged channels of another owner"
    return ""


# Errors that are not KGraphErrors, by (exception class, function raising it): each is
# a reported kgraph bug with a test in test_fuzz_regressions.py.
KNOWN_ERRORS: dict[tuple[str, str], str] = {}


def known_error(error: BaseException) -> str:
    """The regression test of a known bug that raised `error` ("" if it is new)."""
    frames = traceback.extract_tb(error.__traceback__)
    where = frames[-1].name if frames else ""
    return KNOWN_ERRORS.get((type(error).__name__, where), "")


# -- running kgraph -------------------------------------------------------------------


class Refused(Exception):
    """kgraph raised a KGraphError (carried in `error`)."""

    def __init__(self, error: kgraph.KGraphError) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


def guarded(operation: Callable[[], Any], models: Iterable[keras.Model]) -> Any:
    """Run `operation`; only a `kgraph.KGraphError` may escape (as `Refused`), and the
    models given to kgraph must be unchanged either way."""
    models = list(models)
    before = [fingerprint(m) for m in models]
    try:
        result = operation()
    except kgraph.KGraphError as error:
        _unchanged(models, before)
        raise Refused(error) from error
    except Exception as error:  # the oracle: every error must be a KGraphError
        _unchanged(models, before)
        assume(not known_error(error))  # draw again: a reported bug, not a new one
        raise AssertionError(
            f"kgraph raised {type(error).__module__}.{type(error).__name__}, not a "
            f"KGraphError: {error}"
        ) from error
    _unchanged(models, before)
    return result


def _unchanged(models: Sequence[keras.Model], before: Sequence[str]) -> None:
    for model, digest in zip(models, before, strict=True):
        assert fingerprint(model) == digest, f"kgraph changed the model {model.name!r}"


def assert_outputs_close(expected: Sequence[np.ndarray], model: keras.Model, inputs: Any) -> None:
    got = outputs_of(model, inputs)
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_allclose(have, want, rtol=RTOL, atol=ATOL)


def check_round_trip(model: keras.Model, inputs: Any) -> None:
    """The model saves to `.keras` and loads back computing the same outputs."""
    expected = outputs_of(model, inputs)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "lowered.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
    for want, have in zip(expected, outputs_of(loaded, inputs), strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-6, atol=1e-6)


def describe(builder: Builder) -> None:
    note(f"operations: {' '.join(builder.summary)}")
    note(f"tape: {builder.tape.values!r}")
