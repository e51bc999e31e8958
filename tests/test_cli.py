"""The `kgraph` command: inspect, prune, dump and demo, and its one-line errors.

Commands run in-process through `kgraph.cli.main` (stdout/stderr from capsys), and
a few as real `python -m kgraph` processes to show the exit codes and that no
traceback escapes.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import assert_same_outputs, fingerprint, sample_inputs

import kgraph
from kgraph import cli
from kgraph.stats import human

L = keras.layers
HAS_DUMP = hasattr(kgraph.Graph, "dump")  # else the demo writes its graph as text
# TensorFlow's own start-up lines (absl logging before InitializeLog, CUDA probing):
# written by TensorFlow's C++ code when kgraph imports keras, not by the command.
TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|[IWEF]\d{4} \d\d:\d\d:\d\d"
    r"|To enable the following instructions)"
)


def tiny_model() -> keras.Model:
    """A residual block (conv1 and conv2 coupled by the Add), a conv, a Dense and a head."""
    x = keras.Input((10, 10, 3), name="image")
    a = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    b = L.Conv2D(8, 3, padding="same", name="conv2")(a)
    b = L.BatchNormalization(name="bn2")(b)
    y = L.ReLU(name="relu")(L.Add(name="add")([a, b]))
    y = L.Conv2D(16, 3, activation="relu", name="conv3")(y)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    y = L.Dense(12, activation="relu", name="fc")(y)
    model = keras.Model(x, L.Dense(4, name="head")(y), name="tiny")
    bn = model.get_layer("bn2")
    _, beta, mean, var = bn.get_weights()
    rng = np.random.default_rng(7)
    bn.set_weights([rng.uniform(0.1, 2.0, 8), beta, mean, var])  # bn_scale has something to rank
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    tiny_model().save(path)
    return path


@pytest.fixture
def model(saved: Path) -> keras.Model:
    return keras.saving.load_model(saved)


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kgraph: error: "), err
    return lines[0]


def assert_same_model(a: keras.Model, b: keras.Model) -> None:
    assert [layer.name for layer in a.layers] == [layer.name for layer in b.layers]
    for layer in a.layers:
        for x, y in zip(layer.get_weights(), b.get_layer(layer.name).get_weights(), strict=True):
            np.testing.assert_array_equal(x, y)
    assert_same_outputs(a, b, sample_inputs(a))


# ---------------------------------------------------------------------- inspect


def test_inspect_prints_summary_groups_and_stats(capsys, saved: Path, model: keras.Model) -> None:
    code, out, err = run(capsys, "inspect", saved)
    assert code == 0 and err == ""
    counts = kgraph.stats(model)
    assert f"params   {human(counts.params)} ({model.count_params():,})" in out
    assert f"FLOPs    {human(counts.flops)} multiply-adds per example" in out
    assert "inputs   image: (None, 10, 10, 3)" in out
    assert "outputs  head: (None, 4)" in out
    assert "layers   9 layers, 9 calls" in out
    assert "groups   4 channel groups, 3 prunable with 36 of 40 channels" in out
    rows = {line.split()[1]: line for line in out.splitlines() if re.match(r"\s+\d+  ", line)}
    assert re.search(r"conv1, conv2\s+\d+\s+8  yes$", rows["conv1,"])  # coupled by the Add
    assert re.search(r"16  yes$", rows["conv3"])
    assert re.search(r"12  yes$", rows["fc"])
    assert rows["head"].endswith("4  no: they reach model output 0 (from 'head')")
    assert str(counts).splitlines()[-1] in out  # the stats table's total row


def test_inspect_abbreviates_long_tables_unless_all(capsys, saved, monkeypatch) -> None:
    monkeypatch.setattr(cli, "ROWS", 2)
    _, short, _ = run(capsys, "inspect", saved)
    assert "... 2 more groups (--all shows every one)" in short
    assert "more layers" in short
    assert "head" in short.split("Channel groups")[0]  # the summary names the output
    _, full, _ = run(capsys, "inspect", saved, "--all")
    assert "more groups" not in full and "more layers" not in full
    assert len(full.splitlines()) > len(short.splitlines())


def test_inspect_shows_what_keeps_a_lambda_group_from_pruning(capsys, tmp_path) -> None:
    x = keras.Input((6,))
    y = L.Dense(5, name="fc")(x)
    y = L.Lambda(lambda t: t * 2.0, name="double")(y)
    path = tmp_path / "lambda.keras"
    keras.Model(x, L.Dense(2, name="head")(y)).save(path)

    code, _, err = run(capsys, "inspect", path)
    assert code == 1
    line = one_error_line(err)
    assert "Lambda" in line and "--unsafe" in line and str(path) in line

    code, out, err = run(capsys, "inspect", path, "--unsafe")
    assert code == 0 and err == ""
    assert re.search(r"fc\s+1\s+5  no: they reach 'double' \(Lambda\), which has no rule", out)


# ---------------------------------------------------------------------- prune


PRUNE_OPTIONS = [
    ([], {}),
    (["--ratio", "0.3"], {"ratio": 0.3}),
    (["--ratio", "0.5", "--criterion", "l2"], {"criterion": "l2"}),
    (["--criterion", "bn_scale"], {"criterion": "bn_scale"}),
    (["--criterion", "random", "--seed", "4"], {"criterion": "random", "seed": 4}),
    (["--scope", "global", "--ratio", "0.4"], {"scope": "global", "ratio": 0.4}),
    (["--round-to", "4"], {"round_to": 4}),
    (["--min-channels", "6", "--ratio", "0.9"], {"min_channels": 6, "ratio": 0.9}),
    (["--ignore", "conv2", "fc"], {"ignore": ["conv2", "fc"]}),
    (["--ignore", "conv3", "--ignore", "fc"], {"ignore": ["conv3", "fc"]}),
]


@pytest.mark.parametrize(("argv", "options"), PRUNE_OPTIONS, ids=lambda v: " ".join(v) or "-")
def test_prune_writes_what_kgraph_prune_gives(capsys, saved, model, tmp_path, argv, options):
    output = tmp_path / "small.keras"
    code, out, err = run(capsys, "prune", saved, "-o", output, *argv)
    assert code == 0 and err == ""
    options = {"ratio": 0.5, "criterion": "l1", **options}
    expected = kgraph.prune(model, options.pop("ratio"), options.pop("criterion"), **options)
    written = keras.saving.load_model(output)
    assert_same_model(expected, written)
    assert written.count_params() < model.count_params()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.keras"]  # no temporary left

    before, after = kgraph.stats(model), kgraph.stats(written)
    header = next(line for line in out.splitlines() if line.startswith("layer"))
    assert re.split(r"\s{2,}", header) == [
        "layer", "params before", "params after", "FLOPs before", "FLOPs after"
    ]  # fmt: skip
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split()[1:] == [
        human(before.params),
        human(after.params),
        f"({after.params / before.params:.1%})",
        human(before.flops),
        human(after.flops),
        f"({after.flops / before.flops:.1%})",
    ]
    assert f"{model.count_params():,} -> {written.count_params():,} params" in out


def test_prune_options_mean_what_they_say(capsys, saved, tmp_path) -> None:
    output = tmp_path / "small.keras"
    run(capsys, "prune", saved, "-o", output, "--ratio", "0.5", "--ignore", "conv3")
    written = keras.saving.load_model(output)
    assert written.get_layer("conv3").filters == 16  # ignored
    assert written.get_layer("conv1").filters == written.get_layer("conv2").filters == 4
    assert written.get_layer("fc").units == 6
    run(capsys, "prune", saved, "-o", output, "--ratio", "0.3", "--round-to", "4")
    written = keras.saving.load_model(output)
    assert written.get_layer("conv3").filters == 12  # 16 - 4 = 12 kept, a multiple of 4
    assert written.get_layer("fc").units == 12  # 12 - 3 = 9, rounded up to 12
    _, out, _ = run(capsys, "prune", saved, "-o", output, "--ratio", "0")
    assert "deleted 0 of 36 prunable channels from 0 of 3 prunable channel groups" in out


def test_prune_replaces_an_existing_output(capsys, saved, model, tmp_path) -> None:
    output = tmp_path / "small.keras"
    output.write_text("an older file")
    code, _, _ = run(capsys, "prune", saved, "-o", output)
    assert code == 0
    assert_same_model(kgraph.prune(model), keras.saving.load_model(output))


def test_prune_reads_legacy_h5(capsys, model, tmp_path) -> None:
    legacy = tmp_path / "model.h5"
    model.save(legacy)
    code, _, err = run(capsys, "prune", legacy, "-o", tmp_path / "small.keras")
    assert code == 0, err
    assert_same_model(kgraph.prune(model), keras.saving.load_model(tmp_path / "small.keras"))


def test_prune_with_apoz_and_taylor_data(capsys, saved, model, tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 10, 10, 3)).astype("float32")
    y = rng.integers(0, 4, 20)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    output = tmp_path / "small.keras"

    code, _, _ = run(capsys, "prune", saved, "-o", output, "--criterion", "apoz", "--data",
                     tmp_path / "x.npy", "--batch-size", "8")  # fmt: skip
    assert code == 0
    expected = kgraph.prune(model, 0.5, "apoz", data=x, batch_size=8)
    assert_same_model(expected, keras.saving.load_model(output))

    loss = "sparse_categorical_crossentropy"
    code, _, _ = run(capsys, "prune", saved, "-o", output, "--criterion", "taylor", "--loss", loss,
                     "--data", tmp_path / "x.npy", "--labels", tmp_path / "y.npy")  # fmt: skip
    assert code == 0
    expected = kgraph.prune(model, 0.5, "taylor", data=(x, y), loss=loss)
    assert_same_model(expected, keras.saving.load_model(output))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--criterion", "apoz"], "criterion 'apoz' needs data: --data inputs.npy; the data-free"),
        (["--criterion", "taylor", "--data", "x.npy"], "criterion 'taylor' needs --labels"),
    ],
)
def test_data_driven_criteria_need_data(capsys, saved, tmp_path, argv, message) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 10, 10, 3), "float32"))
    argv = [str(tmp_path / a) if a.endswith(".npy") else a for a in argv]
    code, _, err = run(capsys, "prune", saved, "-o", tmp_path / "small.keras", *argv)
    assert code == 2
    assert message in one_error_line(err)
    assert not (tmp_path / "small.keras").exists()


def test_progress_and_log_lines(capsys, saved, tmp_path) -> None:
    np.save(tmp_path / "x.npy", np.ones((4, 10, 10, 3), "float32"))
    handlers = list(logging.getLogger("kgraph").handlers)
    code, out, err = run(capsys, "prune", saved, "-o", tmp_path / "small.keras", "--progress",
                         "-v", "--criterion", "apoz", "--data", tmp_path / "x.npy")  # fmt: skip
    assert code == 0 and "wrote" in out
    steps = [
        "loading .*tiny.keras",
        "lifting the model to kgraph's IR",
        "scoring and choosing channels by apoz",
        r"deleting \d+ channels and 0 heads",
        "lowering to a Keras model",
        "saving .*small.keras",
    ]
    timed = [line for line in err.splitlines() if re.search(r" \.\.\. \d+\.\d\ds$", line)]
    assert len(timed) == len(steps), err
    for line, step in zip(timed, steps):
        assert re.match(f"kgraph: {step} \\.\\.\\. ", line), line
    assert "kgraph: apoz: 1 batches measured" in err.splitlines()  # -v: kgraph's log, own line
    assert logging.getLogger("kgraph").handlers == handlers  # main() removed its handler
    code, _, err = run(capsys, "prune", saved, "-o", tmp_path / "small.keras")
    assert code == 0 and err == ""  # stderr is no terminal: no progress by default


# ---------------------------------------------------------------------- errors


def bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    text = folder / "notes.txt"
    text.write_text("not a model")
    garbage = folder / "garbage.keras"
    garbage.write_bytes(b"\x00garbage" * 20)
    other_zip = folder / "other.keras"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "a zip, but no model")
    bad_h5 = folder / "bad.h5"
    bad_h5.write_text("not hdf5")
    return {"text": text, "garbage": garbage, "zip": other_zip, "h5": bad_h5}


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("missing", "no such file: '{path}'"),
        ("folder", "'{path}' is a folder, not a saved Keras model"),
        ("text", "'{path}' is not a Keras model file: kgraph reads .keras files (and legacy .h5)"),
        ("garbage", "'{path}' is not a Keras model file: a .keras file is a zip archive"),
        ("zip", "'{path}' is a zip archive but not a Keras model"),
        ("h5", "cannot load '{path}': "),
        ("truncated", "'{path}' is not a Keras model file: a .keras file is a zip archive"),
    ],
)
@pytest.mark.parametrize("command", ["inspect", "prune", "dump"])
def test_unreadable_models_give_one_line(capsys, saved, tmp_path, which, message, command):
    files = bad_files(tmp_path / "in")
    files["missing"] = tmp_path / "in" / "missing.keras"
    files["folder"] = tmp_path / "in"
    truncated = tmp_path / "in" / "truncated.keras"
    truncated.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    files["truncated"] = truncated
    path = files[which]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = {
        "inspect": [],
        "prune": ["-o", out_dir / "o.keras"],
        "dump": ["-o", out_dir / "g.txt"],
    }
    code, out, err = run(capsys, command, path, *output[command])
    assert code == 1 and out == ""
    assert one_error_line(err).startswith("kgraph: error: " + message.format(path=path))
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ratio", "1.5"], "argument --ratio: must be a number in [0, 1), got '1.5'"),
        (["--ratio", "abc"], "argument --ratio: must be a number in [0, 1), got 'abc'"),
        (["--ratio", "-0.1"], "argument --ratio: must be a number in [0, 1), got '-0.1'"),
        (["--ratio", "nan"], "argument --ratio: must be a number in [0, 1), got 'nan'"),
        (["--round-to", "0"], "argument --round-to: must be a positive integer, got '0'"),
        (["--criterion", "l3"], "argument --criterion: invalid choice: 'l3'"),
        (["--scope", "galaxy"], "argument --scope: invalid choice: 'galaxy'"),
        (["-o", "small.h5"], "output 'small.h5' must end with .keras"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    capsys, saved, tmp_path, monkeypatch, argv, message
):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "prune", saved, "-o", "small.keras", *argv)
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert message in line
    assert list(tmp_path.iterdir()) == []


def test_missing_command_and_help(capsys) -> None:
    code, _, err = run(capsys)
    assert code == 2
    assert "the following arguments are required: COMMAND" in one_error_line(err)
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "inspect" in out and "prune" in out and "demo" in out
    code, out, _ = run(capsys, "prune", "--help")
    text = " ".join(out.split())
    assert code == 0 and "l1: L1 norm of the weights" in text
    assert "taylor: |activation x gradient of the loss| on data with targets" in text
    assert "(needs --data, --labels, --loss)" in text
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"kgraph {kgraph.__version__}"


def test_unknown_ignore_layer(capsys, saved, tmp_path) -> None:
    output = tmp_path / "small.keras"
    code, out, err = run(capsys, "prune", saved, "-o", output, "--ignore", "conv9")
    assert code == 1 and out == ""
    line = one_error_line(err)
    assert "model 'tiny' has no layer 'conv9'" in line and "Did you mean" in line
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_the_input(capsys, saved, tmp_path) -> None:
    copy = tmp_path / "model.keras"
    copy.write_bytes(saved.read_bytes())
    (tmp_path / "link.keras").hardlink_to(copy)
    for output in (copy, tmp_path / "." / "model.keras", tmp_path / "link.keras"):
        code, _, err = run(capsys, "prune", copy, "-o", output)
        assert code == 1
        assert "refusing to overwrite the input model" in one_error_line(err)
    assert copy.read_bytes() == saved.read_bytes()


def test_missing_output_folder(capsys, saved, tmp_path) -> None:
    output = tmp_path / "nowhere" / "small.keras"
    code, _, err = run(capsys, "prune", saved, "-o", output)
    assert code == 1
    assert f"folder '{output.parent}' does not exist" in one_error_line(err)
    assert not output.parent.exists()


def test_a_failed_save_leaves_no_partial_output(capsys, saved, tmp_path, monkeypatch) -> None:
    output = tmp_path / "small.keras"
    output.write_text("the previous version")

    def broken_save(self: keras.Model, path: object, **kwargs: object) -> None:
        Path(str(path)).write_bytes(b"PK half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    code, _, err = run(capsys, "prune", saved, "-o", output)
    assert code == 1
    assert (
        one_error_line(err)
        == f"kgraph: error: cannot write {str(output)!r}: No space left on device"
    )
    assert output.read_text() == "the previous version"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.keras"]


def test_unexpected_errors_are_one_line_unless_debug(capsys, saved, monkeypatch) -> None:
    def broken_lift(model: keras.Model) -> None:
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(kgraph, "lift", broken_lift)
    code, _, err = run(capsys, "inspect", saved)
    assert code == 1
    assert one_error_line(err) == (
        "kgraph: error: RuntimeError: a bug over two lines (--debug shows the traceback)"
    )
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["inspect", str(saved), "--debug"])

    def interrupted(model: keras.Model) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(kgraph, "lift", interrupted)
    code, _, err = run(capsys, "inspect", saved)
    assert code == 130 and err == "kgraph: interrupted\n"


def test_the_model_file_is_not_changed(capsys, saved, model, tmp_path) -> None:
    before = saved.read_bytes()
    run(capsys, "prune", saved, "-o", tmp_path / "small.keras")
    run(capsys, "inspect", saved)
    assert saved.read_bytes() == before
    assert fingerprint(keras.saving.load_model(saved)) == fingerprint(model)


# ---------------------------------------------------------------------- dump


def test_dump_writes_txt_and_html(capsys, saved, model, tmp_path) -> None:
    graph = kgraph.lift(model)
    code, out, err = run(capsys, "dump", saved, "-o", tmp_path / "graph.txt")
    assert code == 0 and err == ""
    assert (tmp_path / "graph.txt").read_text() == str(graph) + "\n"
    assert out == f"wrote {tmp_path / 'graph.txt'} ({len(graph)} nodes)\n"
    code, _, _ = run(capsys, "dump", saved, "-o", tmp_path / "graph.html")
    assert code == 0
    page = (tmp_path / "graph.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "conv2" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.html", "graph.txt"]


def test_dump_refuses_unknown_formats(capsys, saved, tmp_path) -> None:
    code, _, err = run(capsys, "dump", saved, "-o", tmp_path / "graph.pdf")
    assert code == 2
    assert "output" in one_error_line(err) and ".html" in err and ".txt" in err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- demo


def test_demo_runs_end_to_end(capsys, tmp_path) -> None:
    folder = tmp_path / "demo"
    code, out, err = run(capsys, "demo", "--quick", "--out", folder)
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert {"original", "APoZ", "L1"} <= set(rows)
    original = keras.saving.load_model(folder / "lenet.keras")
    assert rows["original"][3] == human(original.count_params())
    for name, file in (("APoZ", "lenet-apoz.keras"), ("L1", "lenet-l1.keras")):
        pruned = keras.saving.load_model(folder / file)
        assert pruned.count_params() < original.count_params() / 2  # half of the channels
        assert rows[name][3] == human(pruned.count_params())
        assert re.fullmatch(r"\d+\.\d%", rows[name][1]) and re.fullmatch(r"\d+\.\d%", rows[name][2])
        assert rows[name][-4:-2] == [f"{float(rows[name][-4]):.2f}", "ms"]  # batch-1 latency
    dump = folder / ("lenet-apoz.html" if HAS_DUMP else "lenet-apoz.txt")
    assert dump.stat().st_size > 0
    assert f"wrote {dump}" in out
    assert (folder / "lenet-apoz.keras").exists() and (folder / "lenet-l1.keras").exists()


def test_demo_without_scikit_learn(capsys, tmp_path, monkeypatch) -> None:
    from kgraph import demo

    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails
    code = demo.main(["--out", str(tmp_path / "demo")])
    err = capsys.readouterr().err
    assert code == 1
    assert one_error_line(err) == (
        'kgraph: error: the demo needs scikit-learn for its data set: pip install -e ".[demo]"'
    )
    assert not (tmp_path / "demo").exists()


# ---------------------------------------------------------------------- processes


def test_python_m_kgraph_exit_code_without_traceback(tmp_path) -> None:
    bad = bad_files(tmp_path)["garbage"]
    output = tmp_path / "small.keras"
    process = subprocess.run(
        [sys.executable, "-m", "kgraph", "prune", str(bad), "-o", str(output)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 1, process.stderr
    assert "Traceback" not in process.stderr
    own = [line for line in process.stderr.splitlines() if not TF_NOISE.match(line)]
    assert own == [f"kgraph: error: '{bad}' is not a Keras model file: a .keras file is a zip "
                   "archive, this one is not (truncated or renamed?)"]  # fmt: skip
    assert process.stdout == ""
    assert not output.exists()
