"""The `kgraph` command: inspect, prune and dump saved Keras models, and a demo.

    kgraph inspect model.keras                      # layers, channel groups, params/FLOPs
    kgraph prune model.keras -o small.keras --ratio 0.3 --criterion l1
    kgraph prune model.keras -o small.tflite --target flops=0.5 --quantize int8 --data x.npy
    kgraph prune model.keras --dry-run --plan-out plan.json
    kgraph dump model.keras -o graph.html           # also .txt, .dot, .svg, .png
    kgraph dump model.keras --compare small.keras -o diff.html
    kgraph demo                                     # train, prune, compare (scikit-learn)

`--help`, `--version` and argument errors answer without loading a Keras backend;
TensorFlow's start-up messages are hidden unless `--verbose`. SIGTERM and SIGHUP
stop a command like Ctrl-C (exit codes 143 and 129) and leave no partial file.

Models are loaded with Keras' safe mode; a model with `Lambda` layers (whose Python
code runs when it is loaded) needs `--unsafe`. Every failure is one line on stderr,
`kgraph: error: ...`, with exit code 2 for bad usage and 1 for anything else; output
files are written to a temporary file next to them and renamed at the end, so a
failure never leaves a partial file. This module (and `kgraph.demo`) is the only
part of kgraph that prints.

Example:
    >>> from kgraph.cli import main
    >>> main(["prune", "model.keras", "-o", "small.keras", "--ratio", "0.3"])
    0
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kgraph import __version__
from kgraph.criteria import BUILTIN
from kgraph.tables import table

__all__ = [
    "CommandError",
    "UsageError",
    "atomic_output",
    "build_parser",
    "load_model",
    "main",
    "out",
]

ROWS = 20  # table rows shown unless --all


class CommandError(Exception):
    """A failure the command reports as one line on stderr (exit code 1)."""


class UsageError(CommandError):
    """Bad arguments (exit code 2, like argparse)."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: stop like Ctrl-C (files are cleaned up on the way out)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.code = 128 + signum


def _stop(signum: int, frame: Any) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Terminated` while a command runs (main thread only)."""
    names = [name for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {}
    try:
        for name in names:
            number = getattr(signal, name)
            previous[number] = signal.signal(number, _stop)
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def _quiet_native_stderr(enabled: bool) -> Iterator[None]:
    """Hide what native code writes to stderr (TensorFlow's absl, oneDNN and CUDA lines,
    printed before its logging can be configured) while a backend starts."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _start_backend(verbose: bool) -> None:
    """Import Keras (and its backend) now, quietly unless `verbose`."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _quiet_native_stderr(not verbose):
        import keras  # the command needs a backend from here on

        keras.ops.convert_to_numpy(keras.ops.zeros((1,)))  # devices report at first use
        # Keras imports TensorFlow, when installed, at the first serialization on every
        # backend (it checks for tf.TensorShape): let that happen here, quietly.
        keras.layers.Dense(1).get_config()


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions, reported by `main` in one line."""

    def error(self, message: str) -> Any:  # argparse would print the usage and exit
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------- output


def out(text: str = "") -> None:
    """A line on stdout (the command's result)."""
    sys.stdout.write(text + "\n")


def abbreviate(text: str, limit: int | None, what: str) -> str:
    """`text`, a table with a total row, with at most `limit` body rows (None: all)."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if line and set(line) <= {"-", " "}]
    if limit is None or len(rules) < 2:
        return text
    first, last = rules[0], rules[-1]
    body = lines[first + 1 : last]
    if len(body) <= limit:
        return text
    more = f"... {len(body) - limit} more {what} (--all shows every one)"
    return "\n".join([*lines[: first + 1], *body[:limit], more, *lines[last:]])


class Steps:
    """Progress of long steps on stderr: `kgraph: lifting the model ... 0.84s`."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.open = False  # a step line is waiting for its time

    @contextlib.contextmanager
    def __call__(self, what: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self.end_line()
        sys.stderr.write(f"kgraph: {what} ...")
        sys.stderr.flush()
        self.open, start = True, time.perf_counter()
        try:
            yield
        except BaseException:
            self.end_line(" failed")
            raise
        took = f"{time.perf_counter() - start:.2f}s"
        if self.open:
            self.end_line(f" {took}")
        else:  # a log message interrupted the line: repeat it
            sys.stderr.write(f"kgraph: {what} ... {took}\n")

    def end_line(self, text: str = "") -> None:
        """Finish an open step line (before a log message or an error)."""
        if self.open:
            sys.stderr.write(text + "\n")
            self.open = False


class _LogHandler(logging.Handler):
    """kgraph's log messages (-v) on stderr, each on its own line."""

    def __init__(self, steps: Steps) -> None:
        super().__init__(logging.INFO)
        self.steps = steps

    def emit(self, record: logging.LogRecord) -> None:
        self.steps.end_line()
        sys.stderr.write(f"kgraph: {record.getMessage()}\n")


# ---------------------------------------------------------------------- arguments


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _layer_ratios(text: str) -> dict[str, float]:
    """`conv1=0.3,block2_conv=0.5` as {layer: ratio}."""
    found = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        ratio = _ratio(value) if name and value else None
        if ratio is None:
            raise argparse.ArgumentTypeError(f"write LAYER=RATIO[,LAYER=RATIO...], got {text!r}")
        found[name.strip()] = ratio
    return found


def _target(text: str) -> str:
    """A budget, `metric=amount` (checked fully once kgraph is loaded)."""
    if not re.fullmatch(r"\s*(params|flops|bytes|latency)\s*=\s*[0-9.]+\s*[a-zA-Z]*\s*", text):
        raise argparse.ArgumentTypeError(
            f"write params=, flops=, bytes= or latency= and an amount (0.5, 2M, 8MB), got {text!r}"
        )
    return text


def _fraction(text: str) -> float:
    value = _ratio(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def _criteria_help() -> str:
    return "; ".join(
        f"{c.name}: {c.summary}"
        + (" (needs --data, --labels, --loss)" if c.needs_loss else "")
        + (" (needs --data)" if c.needs_data and not c.needs_loss else "")
        for c in BUILTIN.values()
    )


OUTPUTS = ".keras (a Keras model), .tflite (LiteRT), .onnx, or a folder/ (a TF SavedModel)"


def build_parser() -> argparse.ArgumentParser:
    """The parser of the `kgraph` command and its subcommands (no backend is loaded)."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show the steps and their times on stderr (default: when stderr is a terminal)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show kgraph's log messages and the backend's start-up messages",
    )
    common.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    loads = _Parser(add_help=False)
    loads.add_argument("model", type=Path, help="a saved Keras model (.keras, or legacy .h5)")
    loads.add_argument(
        "--unsafe",
        action="store_true",
        help="load Lambda layers, whose Python code runs when the model is loaded "
        "(only for files you trust; Keras' safe_mode=False)",
    )

    parser = _Parser(
        prog="kgraph",
        description="Network surgery on trained Keras 3 models.",
        epilog="Errors are one line on stderr; exit code 2 for bad usage, 1 for other failures.",
    )
    parser.add_argument("--version", action="version", version=f"kgraph {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser(
        "inspect",
        parents=[loads, common],
        help="layers, channel groups and a params/FLOPs table of a model",
        description="Show a model's layers, its channel groups (which channels are tied "
        "together and whether they can be pruned) and the layers with the most parameters.",
    )
    inspect.add_argument("--all", action="store_true", help=f"show every row (default: {ROWS})")
    inspect.set_defaults(run=_inspect)

    prune = commands.add_parser(
        "prune",
        parents=[loads, common],
        help="delete the least important channels (and heads) and save the smaller model",
        description="Prune a model with kgraph.prune and save it as "
        + OUTPUTS
        + "; prints a before/after table. Criteria: "
        + _criteria_help(),
    )
    prune.add_argument("-o", "--output", type=Path, help=f"the pruned model: {OUTPUTS}")
    what = prune.add_argument_group("what to prune")
    what.add_argument(
        "--ratio", type=_ratio, default=0.5, help="fraction of channels to delete (default 0.5)"
    )
    what.add_argument(
        "--target",
        type=_target,
        help="a budget instead of a ratio: params=2M, flops=0.5, bytes=8MB (up to 1: a "
        "fraction of the original)",
    )
    what.add_argument(
        "--ratios",
        type=_layer_ratios,
        default={},
        metavar="LAYER=RATIO,...",
        help="a ratio per layer (for its whole channel group), e.g. conv1=0.3,block2_conv=0.5",
    )
    what.add_argument("--heads", type=_fraction, help="fraction of attention heads to delete")
    what.add_argument(
        "--hidden",
        action="store_true",
        help="also prune a transformer's hidden size and channels that reach an output",
    )
    what.add_argument(
        "--uniform",
        action="store_true",
        help="cut every block alike and keep a keras-hub model's own class",
    )
    what.add_argument(
        "--criterion", choices=sorted(BUILTIN), default="l1", help="default l1 (see above)"
    )
    what.add_argument("--scope", choices=("local", "global"), default="local")
    what.add_argument("--round-to", type=_positive, help="round kept counts up to a multiple")
    what.add_argument("--min-channels", type=_positive, default=1, help="keep at least this many")
    what.add_argument(
        "--ignore",
        nargs="+",
        action="extend",
        default=[],
        metavar="LAYER",
        help="layers whose channel groups are left alone",
    )
    what.add_argument("--seed", type=int, default=0, help="for the random criterion")
    data = prune.add_argument_group("data")
    data.add_argument(
        "--data", type=Path, help="inputs (.npy) for apoz/taylor, --calibrate and int8"
    )
    data.add_argument("--labels", type=Path, help="targets for taylor: a .npy array")
    data.add_argument(
        "--loss", help="a Keras loss for taylor, e.g. sparse_categorical_crossentropy"
    )
    data.add_argument("--batch-size", type=_positive, default=32, help="for apoz/taylor")
    data.add_argument(
        "--calibrate",
        action="store_true",
        help="re-estimate BatchNorm statistics on --data after pruning (kgraph.recalibrate)",
    )
    plans = prune.add_argument_group("plans")
    plans.add_argument(
        "--dry-run", action="store_true", help="print the plan and stop (nothing is written)"
    )
    plans.add_argument("--plan-out", type=Path, help="save the plan as JSON")
    plans.add_argument("--plan", type=Path, help="replay a saved plan instead of choosing channels")
    outputs = prune.add_argument_group("outputs")
    outputs.add_argument(
        "--quantize",
        choices=("float16", "dynamic", "int8"),
        help="post-training quantization of a .tflite output (int8 needs --data)",
    )
    outputs.add_argument(
        "--report", type=Path, help="write an HTML page comparing the pruned and original graphs"
    )
    outputs.add_argument(
        "--all", action="store_true", help=f"show every table row (default: {ROWS})"
    )
    prune.set_defaults(run=_prune)

    dump = commands.add_parser(
        "dump",
        parents=[loads, common],
        help="write the model's graph (IR) as .html, .txt, .dot, .svg or .png",
        description="Write the lifted graph of a model; the format follows the extension "
        "(.svg and .png need Graphviz's dot program; .html is an interactive page).",
    )
    dump.add_argument("-o", "--output", type=Path, required=True, help="e.g. graph.html")
    dump.add_argument(
        "--compare",
        type=Path,
        metavar="PRUNED",
        help="a pruned version of the model (.keras): the .html page shows what changed",
    )
    dump.set_defaults(run=_dump)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="train a CNN on handwritten digits, prune it by APoZ and L1, compare",
        description="Train a LeNet-style CNN on scikit-learn's handwritten digits (nothing "
        "is downloaded), prune it by APoZ and by L1, fine-tune, and print accuracy, params, "
        "FLOPs and CPU latency before and after. Needs scikit-learn: "
        'pip install -e ".[demo]".',
    )
    demo.add_argument("--out", type=Path, default=Path("kgraph-demo"), help="default ./kgraph-demo")
    demo.add_argument("--epochs", type=_positive, default=20, help="training epochs (default 20)")
    demo.add_argument("--finetune-epochs", type=_positive, default=3, help="default 3")
    demo.add_argument("--ratio", type=_ratio, default=0.5, help="channels to delete (default 0.5)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--quick", action="store_true", help="a fast smoke run: 2 epochs, 1 of fine-tuning"
    )
    demo.set_defaults(run=_demo)
    return parser


# ---------------------------------------------------------------------- helpers


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def load_model(path: Path, *, unsafe: bool = False) -> Any:
    """`keras.saving.load_model` (safe mode unless `unsafe`), with one-line errors."""
    import keras

    if not path.exists():
        raise CommandError(f"no such file: {str(path)!r}")
    if path.is_dir():
        raise CommandError(f"{str(path)!r} is a folder, not a saved Keras model (.keras)")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise CommandError(
                f"{str(path)!r} is not a Keras model file: a .keras file is a zip archive, "
                "this one is not (truncated or renamed?)"
            )
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise CommandError(f"{str(path)!r} is a zip archive but not a Keras model")
            if b"keras_hub" in archive.read("config.json"):
                _register_keras_hub()
    elif suffix not in (".h5", ".hdf5"):
        raise CommandError(
            f"{str(path)!r} is not a Keras model file: kgraph reads .keras files (and legacy .h5)"
        )
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as error:  # Keras raises many kinds for a bad file
        text = str(error)
        if "safe_mode" in text or "unsafe_deserialization" in text:
            raise CommandError(
                f"{str(path)!r} has a Lambda layer, whose Python code would run when it is "
                "loaded; if you trust the file, load it with --unsafe"
            ) from error
        unknown = re.search(r"Could not locate class '([^']+)'", text)
        if unknown:
            raise CommandError(
                f"cannot load {str(path)!r}: it uses the custom class {unknown.group(1)!r}, "
                "which is not registered in this Python process; kgraph's command can only "
                "load models of Keras' (and keras-hub's) own layers — load the model in your "
                "own code, where the class is imported, and use kgraph's Python API"
            ) from error
        raise CommandError(f"cannot load {str(path)!r}: {_one_line(error)}") from error


def _register_keras_hub() -> None:
    """Import keras-hub, whose import registers its layers with Keras' loader."""
    try:
        import keras_hub  # noqa: F401 - registers keras-hub's classes
    except ImportError as error:
        raise CommandError(
            'this model uses keras-hub layers: pip install "kgraph[hub]" (keras-hub)'
        ) from error


def _is_folder_output(path: Path) -> bool:
    return str(path).endswith(("/", os.sep)) or (path.exists() and path.is_dir())


def _check_output(
    path: Path, suffixes: Sequence[str], source: Path | None = None, folders: bool = False
) -> None:
    """Refuse an output path before any work: wrong extension, a folder that does not
    exist or cannot be written, the input itself."""
    if folders and _is_folder_output(path):
        if path.exists() and any(path.iterdir()):
            raise CommandError(
                f"cannot write a SavedModel to {str(path)!r}: the folder is not empty"
            )
        folder = path if path.exists() else Path(str(path).rstrip("/" + os.sep)).parent
    elif path.suffix.lower() not in suffixes:
        allowed = " or ".join(suffixes) + (" (or a folder/ for a SavedModel)" if folders else "")
        raise UsageError(f"output {str(path)!r} must end with {allowed}")
    else:
        if path.is_dir():
            raise CommandError(f"cannot write {str(path)!r}: it is a folder")
        folder = path.parent
    if not folder.is_dir():
        raise CommandError(f"cannot write {str(path)!r}: folder {str(folder)!r} does not exist")
    try:  # a real probe: permissions alone do not tell (root, read-only mounts, /proc)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".kgraph-probe-"):
            pass
    except OSError as error:
        raise CommandError(
            f"cannot write {str(path)!r}: folder {str(folder)!r} is not writable "
            f"({error.strerror or error})"
        ) from error
    if source is not None and (
        path.resolve() == source.resolve()
        or (path.exists() and source.exists() and path.samefile(source))
    ):
        raise CommandError(
            f"refusing to overwrite the input model {str(source)!r}; write to another file"
        )


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path next to `path` (same extension), renamed to `path` on success;
    removed on any failure, Ctrl-C or termination. An error names `path`, not the
    temporary file."""
    temporary = path.with_name(f".{path.stem}.kgraph-{os.getpid()}{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as error:
        raise CommandError(f"cannot write {str(path)!r}: {error.strerror or error}") from error
    finally:
        temporary.unlink(missing_ok=True)


def _load_array(path: Path, what: str) -> Any:
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot read {what} {str(path)!r}: {_one_line(error)}") from error
    if not isinstance(array, np.ndarray):
        raise CommandError(f"{what} {str(path)!r} must be one .npy array, not an .npz archive")
    return array


def _loaded(args: argparse.Namespace, steps: Steps) -> tuple[Any, Any]:
    import kgraph

    with steps(f"loading {args.model}"):
        model = load_model(args.model, unsafe=args.unsafe)
    with steps("lifting the model to kgraph's IR"):
        graph = kgraph.lift(model)
    return model, graph


def _shape(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _group_rows(groups: Sequence[Any]) -> list[list[Any]]:
    rows = []
    for number, group in enumerate(groups, start=1):
        owners = ", ".join(group.owners[:2])
        if len(group.owners) > 2:
            owners += f" +{len(group.owners) - 2} more"
        status = "yes" if group.prunable else f"no: {group.reason}"
        rows.append([str(number), owners, len(group.members), group.channels, status])
    return rows


def _human(count: float) -> str:
    from kgraph.stats import human

    return human(count)


# ---------------------------------------------------------------------- commands


def _inspect(args: argparse.Namespace, steps: Steps) -> int:
    _start_backend(args.verbose)
    import kgraph

    model, graph = _loaded(args, steps)
    with steps("finding channel groups"):
        groups = kgraph.channel_groups(graph)
    with steps("counting params and FLOPs"):
        counts = kgraph.stats(graph)
    limit = None if args.all else ROWS
    calls = [n for n in graph.nodes() if n.kind in ("layer", "op")]
    prunable = [g for g in groups if g.prunable]
    inputs = [f"{n}: {_shape(graph.node(n).outputs[0].shape)}" for n in graph.input_names]
    outputs = [
        f"{graph.producers(n)[0][0]}: {_shape(graph.node(n).inputs[0].shape)}"
        for n in graph.output_names
    ]
    summary = [
        ("model", f"{model.name} ({type(model).__name__}), {args.model}"),
        ("inputs", ", ".join(inputs)),
        ("outputs", ", ".join(outputs)),
        ("layers", f"{len({n.layer for n in calls})} layers, {len(calls)} calls"),
        ("params", f"{_human(counts.params)} ({counts.params:,})"),
        ("FLOPs", f"{_human(counts.flops)} multiply-adds per example"),
        (
            "groups",
            f"{len(groups)} channel groups, {len(prunable)} prunable with "
            f"{sum(g.channels for g in prunable)} of {sum(g.channels for g in groups)} channels",
        ),
    ]
    for key, value in summary:
        out(f"{key:<8} {value}")
    out()
    out("Channel groups (channels tied together; pruning deletes them from every member):")
    rows = _group_rows(groups)
    total = ["total", f"{len(groups)} groups", "", sum(g.channels for g in groups), ""]
    header = ["#", "owners", "members", "channels", "prunable"]
    out(abbreviate(table(header, rows, total, align="rlrrl"), limit, "groups"))
    out()
    out(f"Layers with the most parameters{'' if args.all else f' (the {ROWS} largest)'}:")
    out(counts.table(limit, largest=True))
    return 0


def _prune_options(args: argparse.Namespace, data: Any) -> Any:
    from kgraph.budget import Budget
    from kgraph.pruning import PruneOptions

    return PruneOptions(
        criterion=args.criterion,
        scope=args.scope,
        data=data,
        loss=args.loss,
        round_to=args.round_to,
        min_channels=args.min_channels,
        ignore=args.ignore,
        ratios=args.ratios,
        batch_size=args.batch_size,
        seed=args.seed,
        heads=args.heads,
        hidden=args.hidden,
        uniform=args.uniform,
        target=None if args.target is None else Budget.parse(args.target),
    )


def _check_prune_arguments(args: argparse.Namespace) -> None:
    """Everything that can be refused before loading anything."""
    criterion = BUILTIN[args.criterion]
    if args.plan is None and criterion.needs_data and args.data is None:
        free = [c.name for c in BUILTIN.values() if not c.needs_data]
        raise UsageError(
            f"criterion {args.criterion!r} needs data: --data inputs.npy"
            f"{' --labels targets.npy --loss NAME' if criterion.needs_loss else ''}; "
            f"the data-free criteria are {', '.join(free)}"
        )
    if args.plan is None and criterion.needs_loss and (args.labels is None or args.loss is None):
        raise UsageError(f"criterion {args.criterion!r} needs --labels targets.npy and --loss NAME")
    if args.output is None and not args.dry_run and args.plan_out is None:
        raise UsageError("give -o OUTPUT (or --dry-run / --plan-out to only plan)")
    if args.calibrate and args.data is None:
        raise UsageError("--calibrate re-estimates BatchNorm statistics on data: give --data x.npy")
    if args.quantize and (args.output is None or args.output.suffix.lower() != ".tflite"):
        raise UsageError("--quantize applies to a LiteRT output: -o model.tflite")
    if args.quantize == "int8" and args.data is None:
        raise UsageError("--quantize int8 calibrates on representative inputs: give --data x.npy")
    if args.plan is not None and not args.plan.is_file():
        raise CommandError(f"no such plan file: {str(args.plan)!r}")
    if args.output is not None and not args.dry_run:
        _check_output(args.output, (".keras", ".tflite", ".onnx"), args.model, folders=True)
    if args.plan_out is not None:
        _check_output(args.plan_out, (".json",), args.model)
    if args.report is not None and not args.dry_run:
        _check_output(args.report, (".html",), args.model)


def _prune(args: argparse.Namespace, steps: Steps) -> int:
    _check_prune_arguments(args)
    _start_backend(args.verbose)
    import kgraph
    from kgraph.pruning import plan_pruning

    data = None
    if args.data is not None:
        data = _load_array(args.data, "data")
        if args.labels is not None:
            data = (data, _load_array(args.labels, "labels"))
    options = _prune_options(args, data)
    plan_loaded = kgraph.PruningPlan.load(args.plan) if args.plan is not None else None
    model, graph = _loaded(args, steps)
    before = kgraph.stats(graph)
    if plan_loaded is not None:
        plan = plan_loaded
        with steps(f"checking the plan {args.plan}"):
            plan.check(graph)
    else:
        what = (args.target and f"to the budget {args.target}") or f"by {args.criterion}"
        with steps(f"scoring and choosing channels {what}"):
            plan = plan_pruning(graph, args.ratio, options=options)
    if args.plan_out is not None:
        with steps(f"saving the plan to {args.plan_out}"):
            plan.save(args.plan_out)
    if args.dry_run:
        out(str(plan))
        if args.plan_out is not None:
            out(f"wrote {args.plan_out}")
        return 0
    if args.output is None:
        out(str(plan))
        out(f"wrote {args.plan_out}")
        return 0
    with steps(f"deleting {plan.deleted_channels} channels and {plan.deleted_heads} heads"):
        pruned = plan.apply_to_graph(graph)
    with steps("lowering to a Keras model"):
        smaller = kgraph.keep_class(model, pruned) if args.uniform else pruned.lower()
    if args.calibrate:
        from kgraph.calibrate import recalibrate

        x = data[0] if isinstance(data, tuple) else data
        with steps("re-estimating BatchNorm statistics"):
            smaller = recalibrate(smaller, x, batch_size=args.batch_size, inplace=True)
    _save(smaller, args, steps, data)
    if args.report is not None:
        from kgraph.page import write_page

        with steps(f"writing {args.report}"), atomic_output(args.report) as temporary:
            write_page(pruned, temporary, compare=graph, title=f"{model.name}, pruned")
    after = kgraph.stats(pruned)
    prunable = [g for g in kgraph.channel_groups(graph) if g.prunable]
    out(
        f"deleted {plan.deleted_channels} of {sum(g.channels for g in prunable)} prunable "
        f"channels from {len(plan.channels)} of {len(prunable)} prunable channel groups"
        + (f" and {plan.deleted_heads} attention heads" if plan.heads else "")
        + (
            f" (replayed {args.plan}: {plan.description})"
            if args.plan
            else f" ({plan.description})"
        )
    )
    out()
    out(before.compare(after).table(None if args.all else ROWS, largest=True))
    out()
    written = [str(args.output), *([str(args.report)] if args.report else [])]
    out(f"wrote {', '.join(written)} ({model.name}: {before.params:,} -> {after.params:,} params)")
    return 0


def _save(model: Any, args: argparse.Namespace, steps: Steps, data: Any) -> None:
    """Write the pruned model in the format `args.output` names (atomically)."""
    path: Path = args.output
    if path.suffix.lower() == ".keras":
        with steps(f"saving {path}"), atomic_output(path) as temporary:
            model.save(temporary)
        return
    from kgraph.export import export

    x = data[0] if isinstance(data, tuple) else data
    with steps(f"exporting {path}"):
        export(model, path, quantize=args.quantize, data=x)


def _dump(args: argparse.Namespace, steps: Steps) -> int:
    from kgraph.dump import FORMATS

    _check_output(args.output, sorted(FORMATS), source=args.model)
    if args.compare is not None and args.output.suffix.lower() != ".html":
        raise UsageError("--compare draws both graphs on one .html page: -o diff.html")
    _start_backend(args.verbose)
    import kgraph

    _, graph = _loaded(args, steps)
    with steps(f"writing {args.output}"), atomic_output(args.output) as temporary:
        if args.compare is not None:
            from kgraph.page import write_page

            with steps(f"loading {args.compare}"):
                pruned = kgraph.lift(load_model(args.compare, unsafe=args.unsafe))
            write_page(pruned, temporary, compare=graph)
        else:
            graph.dump(temporary)
    out(f"wrote {args.output} ({len(graph)} nodes)")
    return 0


def _demo(args: argparse.Namespace, steps: Steps) -> int:
    _start_backend(args.verbose)
    from kgraph import demo

    demo.run(
        args.out,
        epochs=2 if args.quick else args.epochs,
        finetune_epochs=1 if args.quick else args.finetune_epochs,
        ratio=args.ratio,
        seed=args.seed,
        repeats=20 if args.quick else 200,
    )
    return 0


# ---------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `kgraph` command with `argv` (default: sys.argv[1:]); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        sys.stderr.write(f"kgraph: error: {error}\n")
        return 2
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else 0
    steps = Steps(sys.stderr.isatty() if args.progress is None else args.progress)
    handler = _LogHandler(steps)
    logger = logging.getLogger("kgraph")
    if args.verbose:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    run: Callable[[argparse.Namespace, Steps], int] = args.run
    try:
        with _signals():
            return run(args, steps)
    except Terminated as stopped:
        steps.end_line()
        sys.stderr.write("kgraph: terminated\n")
        return stopped.code
    except KeyboardInterrupt:
        steps.end_line()
        sys.stderr.write("kgraph: interrupted\n")
        return 130
    except Exception as error:
        steps.end_line()
        if args.debug:
            raise
        code = 2 if isinstance(error, UsageError) else 1
        from kgraph.errors import KGraphError

        known = (CommandError, KGraphError, OSError, ValueError)
        message = _one_line(error)
        if not isinstance(error, known):
            message = f"{type(error).__name__}: {message} (--debug shows the traceback)"
        sys.stderr.write(f"kgraph: error: {message}\n")
        return code
    finally:
        logger.removeHandler(handler)
