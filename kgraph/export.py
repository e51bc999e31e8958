"""`export`: write a Keras model for deployment as LiteRT, ONNX or a SavedModel.

The path's suffix chooses the format: `.tflite` is LiteRT (TensorFlow Lite), `.onnx`
is ONNX, `.keras` is Keras' own file, and a folder (no suffix, or a trailing `/`) is a
TensorFlow SavedModel. LiteRT files can be post-training quantized: `"float16"`
(weights), `"dynamic"` (int8 weights, no data needed) or `"int8"` (weights and
activations, calibrated on `data`; ops without an int8 kernel stay float, inputs and
outputs stay float32). Files are written to a temporary sibling and renamed when
complete, so a failure leaves no partial file and keeps an existing one.

Where it runs: LiteRT and SavedModel come from TensorFlow's converters, so on the JAX
and PyTorch backends kgraph saves the model and converts it in a TensorFlow-backend
subprocess; ONNX is tf2onnx on TensorFlow's frozen graph, Keras' own
`model.export(format="onnx")` (torch.onnx) on PyTorch, and the subprocess on JAX.
int8 calibration always runs in a subprocess, because TensorFlow's calibrator can crash
the process (it does on LSTM while loops); a crash becomes a `ConversionError`.

Example:
    >>> from kgraph.export import export, load_exported
    >>> export(small, "small.tflite", quantize="int8", data=x_calibration)
    >>> outputs = load_exported("small.tflite", threads=2)(x_test[:1])
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np

from kgraph.errors import KGraphError

__all__ = [
    "FORMATS",
    "QUANTIZATIONS",
    "BackendError",
    "ConversionError",
    "ExportError",
    "ExportFormatError",
    "ExportedModel",
    "MissingPackageError",
    "QuantizationError",
    "export",
    "format_of",
    "load_exported",
]

log = logging.getLogger(__name__)

FORMATS = {
    "litert": "LiteRT (.tflite)",
    "onnx": "ONNX (.onnx)",
    "saved_model": "a TensorFlow SavedModel (a folder)",
    "keras": "a Keras file (.keras)",
}
QUANTIZATIONS = ("float16", "dynamic", "int8")
_SUFFIXES = {".tflite": "litert", ".onnx": "onnx", ".keras": "keras"}
_ALIASES = {"tflite": "litert", "tf_saved_model": "saved_model", "savedmodel": "saved_model"}
_INSTALL = 'pip install "kgraph[export]"'


class ExportError(KGraphError):
    """A model cannot be exported, or an exported file cannot be run."""


class ExportFormatError(ExportError, ValueError):
    """An unknown suffix or format, or an option the format does not have."""


class QuantizationError(ExportError, ValueError):
    """A quantization kgraph does not know, or int8 without usable calibration data."""


class MissingPackageError(ExportError, ImportError):
    """An optional package the format needs is not installed."""


class BackendError(ExportError):
    """The current Keras backend cannot produce the format."""


class ConversionError(ExportError):
    """The converter (TensorFlow Lite, tf2onnx, torch.onnx) failed or crashed."""


_ERRORS = {
    cls.__name__: cls
    for cls in (
        ExportError,
        ExportFormatError,
        QuantizationError,
        MissingPackageError,
        BackendError,
        ConversionError,
    )
}

# ---------------------------------------------------------------------- checks


def format_of(path: str | os.PathLike[str], format: str | None = None) -> str:
    """The format `export` writes to `path`: "litert", "onnx", "saved_model" or "keras".

    Example:
        >>> format_of("small.tflite"), format_of("serving/")
        ('litert', 'saved_model')
    """
    text = os.fspath(path)
    suffix = Path(text).suffix.lower()
    by_suffix = _SUFFIXES.get(suffix)
    if format is not None:
        name = _ALIASES.get(format.lower(), format.lower())
        if name not in FORMATS:
            known = ", ".join(repr(f) for f in FORMATS)
            raise ExportFormatError(f"unknown export format {format!r}: use one of {known}")
        wanted = next((s for s, f in _SUFFIXES.items() if f == name), None)
        if by_suffix != name and (wanted or by_suffix):
            need = f"a path ending in {wanted!r}" if wanted else "a folder path"
            raise ExportFormatError(
                f"format {format!r} does not match the path {text!r}: {FORMATS[name]} needs "
                f"{need}; change the path or leave out format= to follow its suffix"
            )
        return name
    if by_suffix:
        return by_suffix
    if not suffix or text.endswith(("/", os.sep)) or Path(text).is_dir():
        return "saved_model"
    raise ExportFormatError(
        f"cannot tell the export format of {text!r} from its suffix {suffix!r}: use .tflite "
        "(LiteRT), .onnx (ONNX), .keras, or a folder for a SavedModel (no suffix, or end "
        "the path with '/')"
    )


def _check_model(model: Any) -> list[Any]:
    """The model's input tensors (KerasTensors), flattened."""
    if not isinstance(model, keras.Model):
        raise ExportError(
            f"export needs a keras.Model, got {type(model).__name__}: pass the model itself"
        )
    try:
        inputs = list(model.inputs or [])
    except (AttributeError, ValueError):
        inputs = []
    if not inputs:
        raise ExportError(
            f"model {model.name!r} ({type(model).__name__}) has no defined inputs: build it "
            "from keras.Input (a Sequential model needs an Input first); subclassed models "
            "cannot be exported by kgraph"
        )
    return inputs


def _input_name(tensor: Any) -> str:
    """The name of the InputLayer that makes `tensor` (kept in saved files, unlike the
    tensor's own name), which the exported files use for their inputs."""
    history = getattr(tensor, "_keras_history", None)
    return getattr(getattr(history, "operation", None), "name", None) or tensor.name


def _backend() -> str:
    return keras.backend.backend()


def _route(fmt: str, backend: str) -> str:
    """Where to convert: "here" (this process) or "child" (a TensorFlow subprocess)."""
    if backend == "tensorflow" or fmt == "keras" or (backend == "torch" and fmt == "onnx"):
        return "here"
    if backend in ("jax", "torch"):
        return "child"
    raise BackendError(
        f"the {backend!r} Keras backend cannot export {FORMATS[fmt]}: kgraph exports from "
        "the tensorflow, jax and torch backends (set KERAS_BACKEND before importing keras)"
    )


def _check_packages(fmt: str, backend: str, route: str) -> None:
    tensorflow_side = backend == "tensorflow" or route == "child"
    needs = {"litert": ["tensorflow"], "saved_model": ["tensorflow"], "keras": []}.get(fmt)
    if needs is None:  # onnx
        needs = ["onnx", "tf2onnx"] if tensorflow_side else ["onnx", "onnxscript"]
        if route == "child":
            needs.insert(0, "tensorflow")
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        how = "in a TensorFlow subprocess" if route == "child" else f"on the {backend} backend"
        raise MissingPackageError(
            f"exporting {FORMATS[fmt]} {how} needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {_INSTALL}"
        )


def _batch(batch_size: int | str | None, fmt: str, backend: str) -> int | None:
    if batch_size == "auto":
        # LiteRT: static shapes let the converter lower RNN loops to builtin ops and let
        # XNNPACK plan ahead. torch: Keras uses the dynamo ONNX exporter only for static
        # shapes, and its fallback (TorchScript) fails on LayerNormalization.
        return 1 if fmt == "litert" or (fmt == "onnx" and backend == "torch") else None
    if batch_size is None:
        return None
    if isinstance(batch_size, (bool, float)) or not isinstance(batch_size, int) or batch_size < 1:
        raise ExportError(
            f"batch_size must be a positive integer, None (dynamic) or 'auto', got {batch_size!r}"
        )
    return batch_size


def _check_destination(path: Path, fmt: str) -> None:
    parent = path.parent
    if not parent.is_dir():
        raise ExportError(f"the folder {str(parent)!r} of {str(path)!r} does not exist: create it")
    if fmt != "saved_model":
        if path.is_dir():
            raise ExportFormatError(
                f"{str(path)!r} is a folder; {FORMATS[fmt]} is a file: choose a file path"
            )
        return
    if path.exists() and not path.is_dir():
        raise ExportFormatError(
            f"{str(path)!r} is a file; a SavedModel is a folder: choose a folder path"
        )
    if path.is_dir() and any(path.iterdir()) and not (path / "saved_model.pb").exists():
        raise ExportError(
            f"{str(path)!r} exists and is not a SavedModel: kgraph replaces only a SavedModel "
            "folder or an empty one; choose a new folder"
        )


def _calibration(
    model: keras.Model, inputs: list[Any], data: Any, limit: int
) -> dict[str, np.ndarray]:
    """`data` as {input name: array of at most `limit` samples}, checked against the inputs."""
    names = [_input_name(t) for t in inputs]
    where = f"model {model.name!r} (inputs {', '.join(names)})"
    if isinstance(data, Mapping):
        structure = model.input if isinstance(model.input, Mapping) else {}
        by_name = {}
        for key, value in data.items():
            if key in names:
                by_name[key] = value
            elif key in structure:
                by_name[_input_name(structure[key])] = value
            else:
                raise QuantizationError(f"data has an array for {key!r}, not an input of {where}")
        missing = [n for n in names if n not in by_name]
        if missing:
            raise QuantizationError(f"data has no array for {', '.join(missing)} of {where}")
        arrays = [by_name[n] for n in names]
    elif isinstance(data, (list, tuple)) and len(inputs) > 1:
        arrays = list(data)
    else:
        arrays = [data]
    if len(arrays) != len(inputs):
        raise QuantizationError(
            f"data has {len(arrays)} arrays for the {len(inputs)} inputs of {where}: pass one "
            "array per input (a list in the order of model.inputs, or a dict by name)"
        )
    result: dict[str, np.ndarray] = {}
    for name, tensor, array in zip(names, inputs, arrays):
        try:
            value = np.asarray(keras.ops.convert_to_numpy(array))
        except (TypeError, ValueError) as error:
            raise QuantizationError(
                f"data for input {name!r} of {where} is not an array: {error}"
            ) from error
        expected = tuple(tensor.shape)
        fits = value.ndim == len(expected) and all(
            e is None or e == v for e, v in zip(expected[1:], value.shape[1:])
        )
        if not fits or value.shape[0] < 1:
            shown = "(N, " + ", ".join("None" if e is None else str(e) for e in expected[1:]) + ")"
            raise QuantizationError(
                f"data for input {name!r} of {where} has shape {value.shape}, expected "
                f"{shown} with N >= 1 samples"
            )
        value = value[:limit].astype(tensor.dtype, copy=False)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise QuantizationError(f"data for input {name!r} has NaN or infinite values")
        result[name] = value
    counts = {len(v) for v in result.values()}
    if len(counts) > 1:
        raise QuantizationError(f"the arrays of data have different numbers of samples: {counts}")
    return result


# ---------------------------------------------------------------------- writing


def _signature(model: keras.Model, batch: int | None) -> list[Any]:
    """The input signature (one positional argument: the model's input structure)."""

    def spec(tensor: Any) -> keras.InputSpec:
        shape = (batch, *tuple(tensor.shape)[1:])
        return keras.InputSpec(dtype=tensor.dtype, shape=shape, name=_input_name(tensor))

    return [keras.tree.map_structure(spec, model.input)]


def _tf_signature(model: keras.Model, batch: int | None) -> list[Any]:
    import tensorflow as tf

    def spec(s: keras.InputSpec) -> Any:
        return tf.TensorSpec(s.shape, s.dtype, name=s.name)

    return keras.tree.map_structure(spec, _signature(model, batch))


def _write_saved_model(model: keras.Model, folder: Path, batch: int | None) -> None:
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda *args: model(*args, training=False),
        input_signature=_tf_signature(model, batch),
    )
    archive.write_out(str(folder), verbose=False)


def _samples(data: Mapping[str, np.ndarray], step: int) -> Iterator[dict[str, np.ndarray]]:
    count = len(next(iter(data.values())))
    for start in range(0, count - step + 1, step):
        yield {name: array[start : start + step] for name, array in data.items()}


def _convert_saved_model(
    saved_model: Path,
    output: Path,
    quantize: str | None,
    data: Mapping[str, np.ndarray] | None,
    step: int,
) -> None:
    """TensorFlow Lite's converter on a SavedModel, builtin ops only."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    # Builtin ops only: the LiteRT runtime has no TensorFlow (Flex) ops.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = lambda: _samples(data or {}, step)
    output.write_bytes(converter.convert())


@contextlib.contextmanager
def _torch_mode_kept(model: keras.Model) -> Iterator[None]:
    """Keras' torch ONNX export calls `model.eval()`; put the torch mode back after."""
    training = getattr(model, "training", None)
    try:
        yield
    finally:
        if training is not None and hasattr(model, "train"):
            model.train(training)


def _write_here(
    model: keras.Model,
    output: Path,
    fmt: str,
    quantize: str | None,
    data: Mapping[str, np.ndarray] | None,
    batch: int | None,
    isolate: bool,
) -> None:
    """Write `output` in this process (TensorFlow backend, or torch for ONNX)."""
    if fmt == "keras":
        model.save(output)
    elif fmt == "saved_model":
        _write_saved_model(model, output, batch)
    elif fmt == "onnx" and _backend() == "tensorflow":
        _write_onnx_tensorflow(model, output, batch)
        _check_onnx(output)
    elif fmt == "onnx":
        with _torch_mode_kept(model):
            model.export(
                str(output), format="onnx", verbose=False, input_signature=_signature(model, batch)
            )
        _check_onnx(output)
    else:
        with tempfile.TemporaryDirectory(prefix="kgraph-export-") as work:
            saved = Path(work) / "saved_model"
            _write_saved_model(model, saved, batch)
            if quantize == "int8" and isolate:
                _run_child(
                    {"kind": "convert", "saved_model": str(saved), "output": str(output)},
                    model,
                    quantize,
                    data,
                    batch,
                    Path(work),
                )
            else:
                _convert_saved_model(saved, output, quantize, data, batch or 1)


def _write_onnx_tensorflow(model: keras.Model, output: Path, batch: int | None) -> None:
    """tf2onnx on the model's frozen graph: what Keras' `model.export(format="onnx")` does,
    except that constants captured by the graph (e.g. the mean and variance of a
    `Normalization` layer, as in EfficientNet) stay constants; Keras hands them to tf2onnx
    as extra inputs of the ONNX model."""
    import tensorflow as tf
    import tf2onnx

    signature = _tf_signature(model, batch)
    specs = keras.tree.flatten(signature)
    function = tf.function(lambda *args: model(*args, training=False))
    concrete = function.get_concrete_function(*signature)
    inputs = [tensor.name for tensor in concrete.inputs[: len(specs)]]  # not the captures
    outputs = [tensor.name for tensor in concrete.outputs]
    renames = {name: spec.name for name, spec in zip(inputs, specs)}
    renames.update({name: f"output_{i}" for i, name in enumerate(outputs)})
    with _numpy_object_alias():
        with contextlib.suppress(ImportError):  # Keras' numpy 2 fixes for tf2onnx, if present
            from keras.src.export.tf2onnx_lib import patch_tf2onnx

            patch_tf2onnx()
        with tf.device("/cpu:0"):
            graph = tf2onnx.tf_loader.from_function(concrete, inputs, outputs)
        tf2onnx.convert.from_graph_def(
            graph,
            name=model.name,
            input_names=inputs,
            output_names=outputs,
            tensors_to_rename=renames,
            output_path=str(output),
        )


@contextlib.contextmanager
def _numpy_object_alias() -> Iterator[None]:
    """`np.object`, which tf2onnx still reads and numpy 2 removed, for the duration of a
    conversion only (Keras' tf2onnx patch would leave it set for the process)."""
    had = "object" in vars(np)
    if not had:
        np.object = object
    try:
        yield
    finally:
        if not had and "object" in vars(np):
            del np.object


def _check_onnx(path: Path) -> None:
    """ONNX's own checker: tf2onnx can write ops that ONNX does not have (e.g. Erfc)."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as error:
        raise ValueError(f"the converter wrote an invalid ONNX model: {error}") from error


def _rnn_layers(model: keras.Model) -> list[str]:
    found, stack = [], list(model.layers)
    while stack:
        layer = stack.pop()
        if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
            found.append(layer.name)
        stack.extend(getattr(layer, "layers", []))
    return sorted(found)


def _run_child(
    job: dict[str, Any],
    model: keras.Model,
    quantize: str | None,
    data: Mapping[str, np.ndarray] | None,
    batch: int | None,
    work: Path,
) -> None:
    """Run `job` in a TensorFlow-backend Python subprocess; its failure as an ExportError."""
    job = {**job, "quantize": quantize, "batch": batch, "error": str(work / "error.json")}
    if data is not None:
        names = list(data)
        np.savez(work / "data.npz", *[data[n] for n in names])
        job.update(data=str(work / "data.npz"), names=names)
    (work / "job.json").write_text(json.dumps(job))
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    code = "import sys; from kgraph.export import _child_main; sys.exit(_child_main(sys.argv[1:]))"
    what = "calibrating int8" if job["kind"] == "convert" else f"exporting {FORMATS[job['format']]}"
    log.info("%s for model %r in a TensorFlow subprocess", what, model.name)
    result = subprocess.run(
        [sys.executable, "-c", code, str(work / "job.json")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.stderr:
        log.debug("the TensorFlow subprocess said:\n%s", result.stderr[-20000:])
    if result.returncode == 0:
        return
    error_file = work / "error.json"
    if error_file.exists():
        error = json.loads(error_file.read_text())
        raise _ERRORS.get(error["type"], ConversionError)(error["message"])
    if result.returncode < 0:
        try:
            name = signal.Signals(-result.returncode).name
        except ValueError:
            name = f"signal {-result.returncode}"
        rnns = _rnn_layers(model)
        known = (
            f" (TensorFlow's int8 calibrator is known to crash on the while loops of RNN "
            f"layers, and model {model.name!r} has {', '.join(map(repr, rnns))})"
            if rnns and quantize == "int8"
            else ""
        )
        fix = (
            "use quantize='dynamic' or 'float16', or build the RNN layers with unroll=True"
            if quantize == "int8"
            else "run the export with KERAS_BACKEND=tensorflow to see TensorFlow's own report"
        )
        raise ConversionError(
            f"TensorFlow's converter crashed ({name}) while {what} for model "
            f"{model.name!r}{known}: {fix}"
        )
    last = [line for line in result.stderr.splitlines() if line.strip()][-1:] or ["no output"]
    raise ConversionError(
        f"the TensorFlow subprocess failed (exit code {result.returncode}) while {what} for "
        f"model {model.name!r}: {last[0].strip()[:300]}"
    )


def _child_main(argv: Sequence[str]) -> int:
    """The subprocess's side of `_run_child` (KERAS_BACKEND=tensorflow)."""
    job = json.loads(Path(argv[0]).read_text())
    try:
        data = None
        if job.get("data"):
            with np.load(job["data"]) as arrays:
                data = {n: arrays[f"arr_{i}"] for i, n in enumerate(job["names"])}
        if job["kind"] == "convert":
            try:
                _convert_saved_model(
                    Path(job["saved_model"]),
                    Path(job["output"]),
                    job["quantize"],
                    data,
                    job["batch"] or 1,
                )
            except Exception as error:
                raise ConversionError(
                    f"TensorFlow Lite's converter failed on int8 calibration: {_one_line(error)}"
                ) from error
        else:
            # The file was written a moment ago from the caller's own model object.
            model = keras.saving.load_model(job["model"], compile=False, safe_mode=False)
            _export_here(
                model,
                Path(job["output"]),
                job["format"],
                job["quantize"],
                data,
                job["batch"],
                Path(job["target"]),
                isolate=False,
            )
    except Exception as error:
        kind = type(error).__name__ if isinstance(error, ExportError) else "ConversionError"
        message = str(error) if isinstance(error, ExportError) else _one_line(error)
        Path(job["error"]).write_text(json.dumps({"type": kind, "message": message}))
        return 1
    return 0


# ---------------------------------------------------------------------- errors


def _one_line(error: BaseException) -> str:
    """The converter's message in one line: its first `error:` line, locations dropped."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    line = next((line for line in lines if "error:" in line), lines[0])
    if "error:" in line:
        line = line.split("error:", 1)[1].strip()
    if line.startswith("loc("):  # an MLIR location: skip to its closing parenthesis
        depth = 0
        for index, char in enumerate(line):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                line = line[index + 1 :].lstrip(": ")
                break
    line = re.sub(r"\s+", " ", line)
    return line if len(line) <= 300 else line[:297] + "..."


def _hint(text: str, fmt: str, batch: int | None) -> str:
    if fmt == "litert" and "TensorList" in text and batch is None:
        return "give the inputs static shapes: batch_size=1 (LiteRT's default)"
    if "Select TF" in text or "Flex" in text or "not supported by the" in text:
        return (
            "the model needs TensorFlow ops that LiteRT's builtin set lacks (kgraph does not "
            "use the Flex delegate); replace those layers or export to ONNX"
        )
    if fmt == "onnx" and "Erfc" in text:
        return (
            "tf2onnx has no ONNX op for Erfc, which Keras' exact GELU uses on TensorFlow: use "
            "keras.activations.gelu(x, approximate=True), or export ONNX from the torch backend"
        )
    if fmt == "onnx" and _backend() == "torch" and batch is None:
        return "try batch_size=1: torch's dynamo exporter needs static shapes"
    return f"see the traceback (raise from) for the converter's full report of {FORMATS[fmt]}"


def _export_here(
    model: keras.Model,
    output: Path,
    fmt: str,
    quantize: str | None,
    data: Mapping[str, np.ndarray] | None,
    batch: int | None,
    target: Path,
    isolate: bool = True,
) -> None:
    try:
        _write_here(model, output, fmt, quantize, data, batch, isolate)
    except ExportError:
        raise
    except Exception as error:
        text = str(error)
        raise ConversionError(
            f"converting model {model.name!r} to {FORMATS[fmt]} {str(target)!r} failed: "
            f"{_one_line(error)}; {_hint(text, fmt, batch)}"
        ) from error


# ---------------------------------------------------------------------- global state


@contextlib.contextmanager
def _global_state_kept() -> Iterator[None]:
    """Quiet TensorFlow's and tf2onnx's loggers for the conversion, and put back what the
    converters change globally: absl (inside TensorFlow) calls `logging.basicConfig()`
    on its first message, tf2onnx sets absl's level, and Keras' tf2onnx shim warns
    about `np.object`."""
    loggers = [logging.getLogger(name) for name in ("", "absl", "tensorflow", "tf2onnx")]
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    for noisy in loggers[2:]:  # deprecation notices and progress; failures are raised
        noisy.setLevel(max(noisy.getEffectiveLevel(), logging.ERROR))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*np\.object", category=FutureWarning)
        try:
            yield
        finally:
            for logger, level, handlers, propagate in saved:
                logger.setLevel(level)
                logger.handlers[:] = handlers
                logger.propagate = propagate


# ---------------------------------------------------------------------- atomic output


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _atomic(path: Path, folder: bool) -> Iterator[Path]:
    """A temporary sibling of `path`, moved onto `path` when the block succeeds."""
    pid = os.getpid()
    if folder:
        temporary = path.with_name(f".{path.name}.kgraph-{pid}")
    else:
        temporary = path.with_name(f".{path.stem}.kgraph-{pid}{path.suffix}")
    _remove(temporary)
    try:
        yield temporary
        if not temporary.exists():
            raise ConversionError(f"the converter wrote nothing for {str(path)!r}")
        if folder and path.exists():  # a folder cannot be renamed onto a folder: swap
            old = path.with_name(f".{path.name}.kgraph-{pid}.old")
            _remove(old)
            os.replace(path, old)
            try:
                os.replace(temporary, path)
            except BaseException:
                os.replace(old, path)
                raise
            _remove(old)
        else:
            os.replace(temporary, path)
    finally:
        _remove(temporary)


# ---------------------------------------------------------------------- the API


def export(
    model: keras.Model,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    quantize: Literal["float16", "dynamic", "int8"] | None = None,
    data: Any = None,
    batch_size: int | Literal["auto"] | None = "auto",
    calibration_samples: int = 256,
) -> Path:
    """Write `model` to `path` as LiteRT (.tflite), ONNX (.onnx), .keras or a SavedModel folder.

    Args:
        format: "litert", "onnx", "saved_model" or "keras"; default: from the suffix.
        quantize: LiteRT only. "float16" (weights in float16), "dynamic" (int8 weights,
            float activations; no data), "int8" (int8 weights and activations, calibrated
            on `data`; ops without int8 kernels stay float; inputs/outputs float32).
        data: representative inputs for "int8": an array (one input), a list of arrays
            in the order of `model.inputs`, or a dict by input name; the first
            `calibration_samples` samples are used. Ignored otherwise.
        batch_size: the batch dimension of the exported inputs: an int, None (dynamic),
            or "auto": 1 for LiteRT (static shapes convert RNNs to builtin ops) and for
            ONNX on torch, dynamic otherwise.

    Returns the path written. The model is not changed. Errors are `ExportError`s.

    Example:
        >>> export(model, "small.onnx")
        PosixPath('small.onnx')
    """
    target = Path(path)
    fmt = format_of(path, format)
    if quantize is not None and quantize not in QUANTIZATIONS:
        known = ", ".join(repr(q) for q in QUANTIZATIONS)
        raise QuantizationError(f"unknown quantize={quantize!r}: use None or one of {known}")
    if quantize is not None and fmt != "litert":
        raise ExportFormatError(
            f"quantize={quantize!r} is for LiteRT (.tflite) files, and {str(target)!r} is "
            f"{FORMATS[fmt]}: export to a .tflite path, or leave out quantize"
        )
    inputs = _check_model(model)
    backend = _backend()
    batch = _batch(batch_size, fmt, backend)
    arrays = None
    if quantize == "int8":
        if data is None:
            raise QuantizationError(
                f"quantize='int8' for model {model.name!r} needs representative inputs to "
                "calibrate the activations' ranges: pass data= (a few hundred typical "
                "inputs), or use quantize='dynamic' (int8 weights only) or 'float16'"
            )
        if not isinstance(calibration_samples, int) or calibration_samples < 1:
            raise QuantizationError(
                f"calibration_samples must be a positive integer, got {calibration_samples!r}"
            )
        arrays = _calibration(model, inputs, data, calibration_samples)
        if batch is not None and len(next(iter(arrays.values()))) < batch:
            raise QuantizationError(
                f"data has fewer samples than one batch of {batch}: pass at least {batch}"
            )
    elif data is not None:
        log.debug("data is used only for quantize='int8'; ignored")
    route = _route(fmt, backend)
    _check_packages(fmt, backend, route)
    _check_destination(target, fmt)
    with _global_state_kept(), _atomic(target, folder=fmt == "saved_model") as temporary:
        if route == "here":
            _export_here(model, temporary, fmt, quantize, arrays, batch, target)
        else:
            with tempfile.TemporaryDirectory(prefix="kgraph-export-") as work:
                saved = Path(work) / "model.keras"
                model.save(saved)
                job = {
                    "kind": "export",
                    "model": str(saved),
                    "output": str(temporary),
                    "format": fmt,
                    "target": str(target),
                }
                _run_child(job, model, quantize, arrays, batch, Path(work))
    log.info("wrote %s (%s, %s)", target, FORMATS[fmt], quantize or "float32")
    return target


# ---------------------------------------------------------------------- running


class ExportedModel:
    """An exported file loaded in its runtime: LiteRT's Interpreter, ONNX Runtime or
    TensorFlow (SavedModel). Call it with an array (one input) or a dict by input name;
    it returns the list of outputs as numpy arrays. A file with a fixed batch of 1 runs
    a larger batch one sample at a time.

    Example:
        >>> run = load_exported("small.tflite", threads=1)
        >>> (logits,) = run(np.zeros((1, 32, 32, 3), "float32"))
    """

    def __init__(
        self,
        path: Path,
        runtime: str,
        input_names: list[str],
        fixed_batch: dict[str, int | None],
        run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
    ) -> None:
        self.path = path
        self.runtime = runtime
        self.input_names = input_names
        self._fixed_batch = fixed_batch
        self._run = run

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.path)!r}, runtime={self.runtime!r})"

    def __call__(self, inputs: Any) -> list[np.ndarray]:
        if isinstance(inputs, Mapping):
            feed = {str(k): np.asarray(v) for k, v in inputs.items()}
        elif len(self.input_names) == 1:
            feed = {self.input_names[0]: np.asarray(inputs)}
        else:
            raise ExportError(
                f"{str(self.path)!r} has inputs {', '.join(self.input_names)}: pass a dict by name"
            )
        if sorted(feed) != sorted(self.input_names):
            raise ExportError(
                f"{str(self.path)!r} takes inputs {', '.join(self.input_names)}, "
                f"got {', '.join(feed)}"
            )
        counts = {len(v) for v in feed.values()}
        fixed = {self._fixed_batch[n] for n in feed} - {None}
        if len(fixed) == 1 and len(counts) == 1 and counts != fixed:
            step, count = fixed.pop(), counts.pop()
            if count % step:
                raise ExportError(
                    f"{str(self.path)!r} has a fixed batch of {step}: pass a multiple of it"
                )
            parts = [
                self._run({n: v[i : i + step] for n, v in feed.items()})
                for i in range(0, count, step)
            ]
            return [np.concatenate(outputs) for outputs in zip(*parts)]
        return self._run(feed)


def _output_order(name: str) -> tuple[int, str]:
    match = re.search(r"(\d+)$", name)
    return (int(match.group(1)) if match else 0, name)


def _load_litert(path: Path, threads: int | None) -> ExportedModel:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise MissingPackageError(
            f"running {str(path)!r} needs the LiteRT runtime (ai-edge-litert): {_INSTALL}"
        ) from error
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    signatures = interpreter.get_signature_list()
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    inputs = runner.get_input_details()
    outputs = sorted(runner.get_output_details().items(), key=lambda item: _output_order(item[0]))
    del runner  # it holds the interpreter's internals, which would block allocate_tensors
    shapes = {n: tuple(d["shape"]) for n, d in inputs.items()}
    fixed = {
        n: (None if d["shape_signature"][0] < 0 else int(d["shape"][0])) for n, d in inputs.items()
    }

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        resized = False
        for name, value in feed.items():
            if tuple(value.shape) != shapes[name]:
                interpreter.resize_tensor_input(inputs[name]["index"], value.shape)
                shapes[name] = tuple(value.shape)
                resized = True
        if resized:
            interpreter.allocate_tensors()
        for name, value in feed.items():
            interpreter.set_tensor(inputs[name]["index"], value.astype(inputs[name]["dtype"]))
        interpreter.invoke()
        return [interpreter.get_tensor(d["index"]).copy() for _, d in outputs]

    interpreter.allocate_tensors()
    return ExportedModel(path, "litert", list(inputs), fixed, run)


def _load_onnx(path: Path, threads: int | None) -> ExportedModel:
    try:
        import onnxruntime
    except ImportError as error:
        raise MissingPackageError(f"running {str(path)!r} needs onnxruntime: {_INSTALL}") from error
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    types = {i.name: np.float32 if i.type == "tensor(float)" else None for i in inputs}
    fixed = {i.name: i.shape[0] if isinstance(i.shape[0], int) else None for i in inputs}

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        cast = {n: v.astype(types[n]) if types[n] else v for n, v in feed.items()}
        return list(session.run(None, cast))

    return ExportedModel(path, "onnxruntime", [i.name for i in inputs], fixed, run)


def _load_saved_model(path: Path) -> ExportedModel:
    import tensorflow as tf

    function = tf.saved_model.load(str(path)).signatures["serving_default"]
    specs = function.structured_input_signature[1]
    fixed = {n: s.shape[0] for n, s in specs.items()}

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = function(**{n: tf.constant(v, dtype=specs[n].dtype) for n, v in feed.items()})
        return [result[k].numpy() for k in sorted(result, key=_output_order)]

    return ExportedModel(path, "tensorflow", list(specs), fixed, run)


def load_exported(path: str | os.PathLike[str], *, threads: int | None = None) -> ExportedModel:
    """An exported file ready to run: LiteRT for .tflite, ONNX Runtime for .onnx, TensorFlow
    for a SavedModel folder. `threads` sets the CPU threads of LiteRT and ONNX Runtime
    (None: the runtime's default).

    Example:
        >>> outputs = load_exported("small.onnx", threads=1)(x[:1])
    """
    target = Path(path)
    if not target.exists():
        raise ExportError(f"{str(target)!r} does not exist: export a model there first")
    fmt = format_of(target)
    if fmt == "keras":
        raise ExportFormatError(f"{str(target)!r} is a Keras file: load it with keras.saving")
    try:
        with _global_state_kept():
            if fmt == "litert":
                return _load_litert(target, threads)
            if fmt == "onnx":
                return _load_onnx(target, threads)
            return _load_saved_model(target)
    except ExportError:
        raise
    except Exception as error:
        raise ExportError(
            f"cannot load {str(target)!r} in its runtime: {_one_line(error)}"
        ) from error
