"""The `kgraph` command: inspect, prune and dump saved Keras models, and a demo.

    kgraph inspect model.keras                      # layers, channel groups, params/FLOPs
    kgraph prune model.keras -o small.keras --ratio 0.3 --criterion l1
    kgraph dump model.keras -o graph.html           # also .txt, .dot, .svg, .png
    kgraph demo                                     # train, prune, compare (scikit-learn)

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
import sys
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

import kgraph
from kgraph.errors import KGraphError
from kgraph.importance import CRITERIA
from kgraph.stats import human

__all__ = [
    "CommandError",
    "UsageError",
    "atomic_output",
    "build_parser",
    "load_model",
    "main",
    "out",
    "table",
]

ROWS = 20  # table rows shown unless --all


class CommandError(Exception):
    """A failure the command reports as one line on stderr (exit code 1)."""


class UsageError(CommandError):
    """Bad arguments (exit code 2, like argparse)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions, reported by `main` in one line."""

    def error(self, message: str) -> Any:  # argparse would print the usage and exit
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------- output


def out(text: str = "") -> None:
    """A line on stdout (the command's result)."""
    sys.stdout.write(text + "\n")


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    total: Sequence[Any] = (),
    align: str = "",
) -> str:
    """Columns aligned by `align` ("l"/"r" each; default: the first left, the others right),
    with `total` below a rule."""
    align = align or "l" + "r" * (len(header) - 1)
    every = [header, *rows, *([total] if total else [])]
    widths = [max(len(str(row[i])) for row in every) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)

    def line(row: Sequence[Any]) -> str:
        cells = [
            str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(row, widths, align)
        ]
        return "  ".join(cells).rstrip()

    lines = [line(header), rule, *map(line, rows)]
    return "\n".join([*lines, rule, line(total)] if total else lines)


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


def build_parser() -> argparse.ArgumentParser:
    """The parser of the `kgraph` command and its subcommands."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show the steps and their times on stderr (default: when stderr is a terminal)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="show kgraph's log messages")
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
    parser.add_argument("--version", action="version", version=f"kgraph {kgraph.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser(
        "inspect",
        parents=[loads, common],
        help="layers, channel groups and a params/FLOPs table of a model",
        description="Show a model's layers, its channel groups (which channels are tied "
        "together and whether they can be pruned) and its parameters and FLOPs per layer.",
    )
    inspect.add_argument("--all", action="store_true", help=f"show every row (default: {ROWS})")
    inspect.set_defaults(run=_inspect)

    prune = commands.add_parser(
        "prune",
        parents=[loads, common],
        help="delete the least important channels and save the smaller model",
        description="Prune a model with kgraph.prune and save it; prints a before/after "
        "table. Criteria: "
        + "; ".join(
            f"{c.name}: {c.summary}"
            + (" (needs --data, --labels, --loss)" if c.needs_loss else "")
            + (" (needs --data)" if c.needs_data and not c.needs_loss else "")
            for c in CRITERIA.values()
        ),
    )
    prune.add_argument("-o", "--output", type=Path, required=True, help="the pruned .keras file")
    prune.add_argument(
        "--ratio", type=_ratio, default=0.5, help="fraction of channels to delete (default 0.5)"
    )
    prune.add_argument("--criterion", choices=sorted(CRITERIA), default="l1", help="default l1")
    prune.add_argument("--scope", choices=("local", "global"), default="local")
    prune.add_argument("--round-to", type=_positive, help="round kept counts up to a multiple")
    prune.add_argument("--min-channels", type=_positive, default=1, help="keep at least this many")
    prune.add_argument(
        "--ignore",
        nargs="+",
        action="extend",
        default=[],
        metavar="LAYER",
        help="layers whose channel groups are left alone",
    )
    prune.add_argument("--data", type=Path, help="inputs for apoz/taylor: a .npy array")
    prune.add_argument("--labels", type=Path, help="targets for taylor: a .npy array")
    prune.add_argument(
        "--loss", help="a Keras loss for taylor, e.g. sparse_categorical_crossentropy"
    )
    prune.add_argument("--batch-size", type=_positive, default=32, help="for apoz/taylor")
    prune.add_argument("--seed", type=int, default=0, help="for the random criterion")
    prune.add_argument("--all", action="store_true", help=f"show every row (default: {ROWS})")
    prune.set_defaults(run=_prune)

    dump = commands.add_parser(
        "dump",
        parents=[loads, common],
        help="write the model's graph (IR) as .html, .txt, .dot, .svg or .png",
        description="Write the lifted graph of a model; the format follows the extension "
        "(.svg and .png need Graphviz's dot program).",
    )
    dump.add_argument("-o", "--output", type=Path, required=True, help="e.g. graph.html")
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


def load_model(path: Path, *, unsafe: bool = False) -> keras.Model:
    """`keras.saving.load_model` (safe mode unless `unsafe`), with one-line errors."""
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
    elif suffix not in (".h5", ".hdf5"):
        raise CommandError(
            f"{str(path)!r} is not a Keras model file: kgraph reads .keras files (and legacy .h5)"
        )
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as error:  # Keras raises many kinds for a bad file
        if "safe_mode" in str(error) or "unsafe_deserialization" in str(error):
            raise CommandError(
                f"{str(path)!r} has a Lambda layer, whose Python code would run when it is "
                "loaded; if you trust the file, load it with --unsafe"
            ) from error
        raise CommandError(f"cannot load {str(path)!r}: {_one_line(error)}") from error


def _check_output(path: Path, suffixes: Sequence[str], source: Path | None = None) -> None:
    """Refuse an output path before any work: wrong extension, missing folder, the input."""
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"output {str(path)!r} must end with {' or '.join(suffixes)}")
    folder = path.parent
    if not folder.is_dir():
        raise CommandError(f"cannot write {str(path)!r}: folder {str(folder)!r} does not exist")
    if path.is_dir():
        raise CommandError(f"cannot write {str(path)!r}: it is a folder")
    if source is not None and (
        path.resolve() == source.resolve()
        or (path.exists() and source.exists() and path.samefile(source))
    ):
        raise CommandError(
            f"refusing to overwrite the input model {str(source)!r}; write to another file"
        )


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path next to `path` (same extension), renamed to `path` on success."""
    temporary = path.with_name(f".{path.stem}.kgraph-{os.getpid()}{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _load_array(path: Path, what: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot read {what} {str(path)!r}: {_one_line(error)}") from error
    if not isinstance(array, np.ndarray):
        raise CommandError(f"{what} {str(path)!r} must be one .npy array, not an .npz archive")
    return array


def _loaded(args: argparse.Namespace, steps: Steps) -> tuple[keras.Model, kgraph.Graph]:
    with steps(f"loading {args.model}"):
        model = load_model(args.model, unsafe=args.unsafe)
    with steps("lifting the model to kgraph's IR"):
        graph = kgraph.lift(model)
    return model, graph


def _shape(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _group_rows(groups: Sequence[kgraph.ChannelGroup]) -> list[list[Any]]:
    rows = []
    for number, group in enumerate(groups, start=1):
        owners = ", ".join(group.owners[:2])
        if len(group.owners) > 2:
            owners += f" +{len(group.owners) - 2} more"
        status = "yes" if group.prunable else f"no: {group.reason}"
        rows.append([str(number), owners, len(group.members), group.channels, status])
    return rows


# ---------------------------------------------------------------------- commands


def _inspect(args: argparse.Namespace, steps: Steps) -> int:
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
        ("params", f"{human(counts.params)} ({counts.params:,})"),
        ("FLOPs", f"{human(counts.flops)} multiply-adds per example"),
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
    out(abbreviate(str(counts), limit, "layers"))
    return 0


def _prune(args: argparse.Namespace, steps: Steps) -> int:
    from kgraph.pruning import PruneOptions, apply_plan, plan_pruning

    criterion = CRITERIA[args.criterion]
    if criterion.needs_data and args.data is None:
        free = [c.name for c in CRITERIA.values() if not c.needs_data]
        raise UsageError(
            f"criterion {args.criterion!r} needs data: --data inputs.npy"
            f"{' --labels targets.npy --loss NAME' if criterion.needs_loss else ''}; "
            f"the data-free criteria are {', '.join(free)}"
        )
    if criterion.needs_loss and (args.labels is None or args.loss is None):
        raise UsageError(f"criterion {args.criterion!r} needs --labels targets.npy and --loss NAME")
    _check_output(args.output, (".keras",), source=args.model)
    data = None
    if args.data is not None:
        data = _load_array(args.data, "data")
        if args.labels is not None:
            data = (data, _load_array(args.labels, "labels"))
    model, graph = _loaded(args, steps)
    before = kgraph.stats(graph)
    with steps(f"scoring channels by {args.criterion}"):
        options = PruneOptions(
            criterion=args.criterion,
            scope=args.scope,
            data=data,
            loss=args.loss,
            round_to=args.round_to,
            min_channels=args.min_channels,
            ignore=args.ignore,
            batch_size=args.batch_size,
            seed=args.seed,
        )
        plan = plan_pruning(graph, args.ratio, options=options)
    deleted = plan.deleted_channels
    with steps(f"deleting {deleted} channels from {len(plan.channels)} channel groups"):
        pruned = apply_plan(graph, plan)
    with steps("lowering to a Keras model"):
        smaller = pruned.lower()
    with steps(f"saving {args.output}"), atomic_output(args.output) as temporary:
        smaller.save(temporary)
    after = kgraph.stats(pruned)
    prunable = [g for g in kgraph.channel_groups(graph) if g.prunable]
    out(
        f"deleted {deleted} of {sum(g.channels for g in prunable)} prunable channels from "
        f"{len(plan.channels)} of {len(prunable)} prunable channel groups "
        f"(criterion {args.criterion}, {args.scope}, ratio {args.ratio:g})"
    )
    out()
    out(abbreviate(str(before.compare(after)), None if args.all else ROWS, "layers"))
    out()
    out(f"wrote {args.output} ({model.name}: {before.params:,} -> {after.params:,} params)")
    return 0


def _dump(args: argparse.Namespace, steps: Steps) -> int:
    from kgraph.dump import FORMATS

    _check_output(args.output, sorted(FORMATS), source=args.model)
    _, graph = _loaded(args, steps)
    with steps(f"writing {args.output}"), atomic_output(args.output) as temporary:
        graph.dump(temporary)
    out(f"wrote {args.output} ({len(graph)} nodes)")
    return 0


def _demo(args: argparse.Namespace, steps: Steps) -> int:
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
        return run(args, steps)
    except Exception as error:
        steps.end_line()
        if args.debug:
            raise
        code = 2 if isinstance(error, UsageError) else 1
        known = (CommandError, KGraphError, OSError, ValueError)
        message = _one_line(error)
        if not isinstance(error, known):
            message = f"{type(error).__name__}: {message} (--debug shows the traceback)"
        sys.stderr.write(f"kgraph: error: {message}\n")
        return code
    except KeyboardInterrupt:
        steps.end_line()
        sys.stderr.write("kgraph: interrupted\n")
        return 130
    finally:
        logger.removeHandler(handler)
