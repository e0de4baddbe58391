"""``cnnkit shape`` and ``cnnkit receptive-field`` through typer's CliRunner: output, JSON,
every error path (one line, exit code 2, no traceback), plots, and start-up cost."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cnnkit import arch as spec
from cnnkit.arch import receptive
from cnnkit.cli.app import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def run_json(*args: str):
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ----------------------------------------------------------------------------- shape


def test_shape_table_lenet5():
    result = run("shape", "lenet5")
    assert result.exit_code == 0, result.output
    for fragment in ("conv1", "6x28x28", "16x5x5", "61,706", "48,120", "total"):
        assert fragment in result.stdout


def test_shape_json_keys_and_totals():
    data = run_json("shape", "vgg16")
    assert data["total_params"] == 138_357_544
    layers = data["layers"]
    assert {"name", "output_shape", "params", "macs"} <= set(layers[0])
    assert sum(layer["params"] for layer in layers) == data["total_params"]
    assert sum(layer["macs"] for layer in layers) == data["total_macs"]
    # Each layer's input is the previous layer's output, and activations are their product.
    for before, after in zip(layers, layers[1:]):
        assert after["input_shape"] == before["output_shape"]
    for layer in layers:
        assert layer["activations"] == math.prod(layer["output_shape"])
        assert layer["activation_bytes"] == 4 * layer["activations"]


def test_shape_input_override():
    data = run_json("shape", "vgg16", "--input", "3x32x32")
    assert data["input_shape"] == [3, 32, 32]
    pools = [layer for layer in data["layers"] if layer["name"].startswith("pool")]
    assert pools[-1]["output_shape"] == [512, 1, 1]
    assert data["total_params"] == 138_357_544 - 4096 * 512 * (49 - 1)


def test_shape_lecture_figures_through_the_cli():
    fc = run_json("shape", "lecture-fc")
    assert fc["layers"][0]["params"] == 270_000
    valid = run_json("shape", "lecture-valid")
    assert valid["layers"][0]["output_shape"] == [1, 6, 6]
    assert any("8 -> 6" in note for note in valid["layers"][0]["notes"])
    table = run("shape", "lecture-fc")
    assert "270,000" in table.stdout


def test_shape_compare_fc():
    data = run_json("shape", "lecture-valid", "--compare-fc")
    cmp = data["compare_fc"]
    assert cmp["weights_per_fc_unit_on_input"] == 64
    (row,) = cmp["layers"]
    assert (row["conv_params"], row["fc_params"]) == (9, 64 * 36)
    big = run_json("shape", "input 3 300 300; conv 8 k=3", "--compare-fc")
    assert big["compare_fc"]["weights_per_fc_unit_on_input"] == 270_000
    table = run("shape", "lecture-valid", "--compare-fc")
    assert "2,304" in table.stdout and "64" in table.stdout


def test_shape_shows_what_the_arithmetic_hides():
    result = run("shape", "input 1 8 8; conv 1 k=3 s=2")
    assert result.exit_code == 0
    assert "drops the last 1 input row" in result.stdout


def test_shape_reads_files_and_json(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("# a comment\ninput 1 8 8\nconv 4 k=3\nfc 2\n")
    assert run_json("shape", str(path))["total_params"] == 4 * 9 + 4 + 4 * 36 * 2 + 2
    layers = [{"layer": "input", "shape": [1, 8, 8]}, {"layer": "conv", "out": 4, "k": 3}]
    as_json = run_json("shape", json.dumps(layers))
    assert as_json["layers"][0]["output_shape"] == [4, 6, 6]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["shape", "input 1 8 8; cnov 4 k=3"], ["item 2", "'cnov'", "did you mean 'conv'"]),
        (["shape", "input 1 8 8; conv k=3"], ["item 2", "output channels"]),
        (["shape", "input 1 8 8; conv 4 k=3 s=0"], ["item 2", "stride", "0"]),
        (["shape", "input 1 8 8; conv -4 k=3"], ["item 2", "-4"]),
        (["shape", "conv 4 k=3; input 1 8 8"], ["item 1", "layer before input"]),
        (["shape", "input 0 8 8; relu"], ["item 1", "0"]),
        (["shape", "input 1 4 4; conv 1 k=3; conv 1 k=3"], ["conv2", "empty", "height 2"]),
        (["shape", "lenet5", "--input", "1x2x2"], ["conv2", "line 11", "empty"]),
        (["shape", "lenet5", "--input", "1xfoo"], ["--input", "1xfoo"]),
        (["shape", "lenet5", "--input", "0x28x28"], ["--input", "0x28x28"]),
        (["shape", "lenet6"], ["did you mean 'lenet5'"]),
        (["shape", "missing.txt"], ["missing.txt", "no such file"]),
        (["receptive-field", "lecture-valid", "--unit", "9,9"], ["0..5"]),
        (["receptive-field", "lecture-valid", "--unit", "a,b"], ["'a,b'"]),
        (["receptive-field", "lecture-valid", "--unit", "0,0", "--layer", "pool7"], ["pool7"]),
        (["receptive-field", "digits", "--unit", "0", "--layer", "fc1"], ["fc1", "flat"]),
        (["receptive-field", "lecture-valid", "--layer", "1"], ["--unit"]),
        (["receptive-field", "lecture-valid", "--image", "x.png"], ["--plot"]),
        (["receptive-field", "lecture-valid", "--compare", "lenet6"], ["lenet5"]),
        (["receptive-field", "input 1 4 4 4; conv 1 k=2", "--plot", "x.png"], ["3-D"]),
    ],
)
def test_errors_are_one_line_with_exit_code_2(args, fragments):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = result.stderr.strip()
    assert message.startswith("error:") and "\n" not in message, message
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, message


def test_unwritable_plot_is_an_error(tmp_path):
    result = run("receptive-field", "lenet5", "--plot", str(tmp_path / "no" / "dir" / "f.png"))
    assert result.exit_code == 2
    assert result.stderr.startswith("error:")


# ----------------------------------------------------------------------------- receptive-field


def test_receptive_json_keys_match_the_library():
    data = run_json("receptive-field", "vgg16")
    fields = receptive.fields(spec.parse("vgg16"))
    assert len(data["layers"]) == len(fields)
    keys = {"name", "output_shape", "receptive_field", "effective_stride"}
    assert keys | {"effective_padding", "start"} <= set(data["layers"][0])
    pool5 = [layer for layer in data["layers"] if layer["name"] == "pool5"][0]
    assert pool5["receptive_field"] == [212, 212]
    assert pool5["effective_stride"] == [32, 32]
    assert pool5["effective_padding"] == [90, 90]
    assert pool5["start"] == [-90, -90]


def test_receptive_table_and_unit():
    result = run("receptive-field", "lecture-1d", "--unit", "0")
    assert result.exit_code == 0, result.output
    assert "0..7" in result.stdout and "All 8 input pixels" in result.stdout
    data = run_json("receptive-field", "lecture-3x3x2", "--unit", "0,0", "--layer", "conv2")
    unit = data["unit"]
    assert unit["box"] == [[-2, 2], [-2, 2]]
    assert (unit["field_size"], unit["inside"], unit["padding"]) == (25, 9, 16)
    assert unit["padding_fraction"] == pytest.approx(16 / 25)
    by_number = run_json("receptive-field", "lecture-3x3x2", "--unit", "0,0", "--layer", "3")
    assert by_number["unit"] == unit


def test_receptive_compare():
    result = run("receptive-field", "lecture-3x3x2", "--compare", "lecture-5x5")
    assert result.exit_code == 0, result.output
    for fragment in ("5x5", "18", "25", "1,152", "1,600"):
        assert fragment in result.stdout
    data = run_json("receptive-field", "lecture-3x3x2", "--compare", "lecture-5x5")
    two, one = data["compare"]
    assert two["receptive_field"] == one["receptive_field"] == [5, 5]
    assert (two["params"], one["params"], two["nonlinearities"], one["nonlinearities"]) == (
        18,
        25,
        2,
        1,
    )


def test_receptive_plot_grid_photo_and_1d(tmp_path):
    np = pytest.importorskip("numpy")
    from PIL import Image

    out = tmp_path / "fields.png"
    result = run("receptive-field", "lenet5", "--plot", str(out))
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] > 100
    photo = tmp_path / "photo.png"
    Image.fromarray((np.arange(64 * 48) % 255).astype("uint8").reshape(48, 64)).save(photo)
    over = tmp_path / "over.png"
    assert (
        run("receptive-field", "lenet5", "--plot", str(over), "--image", str(photo)).exit_code == 0
    )
    assert over.exists()
    line = tmp_path / "line.png"
    assert run("receptive-field", "lecture-1d", "--plot", str(line)).exit_code == 0
    assert line.exists()
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_bad_image_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    result = run(
        "receptive-field", "lenet5", "--plot", str(tmp_path / "o.png"), "--image", str(bad)
    )
    assert result.exit_code == 2
    assert "not an image" in result.stderr
    assert not (tmp_path / "o.png").exists()


# ----------------------------------------------------------------------------- start-up


@pytest.mark.parametrize("command", ["shape", "receptive-field"])
@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_commands_do_not_import_numba_or_numpy(command, name):
    code = (
        "import sys; from cnnkit.cli.app import app; "
        f"sys.argv = ['cnnkit', '{command}', '{name}', '--json']; "
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: app()\n"
        "    except SystemExit: pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'numba', 'matplotlib'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- graphs


def test_shape_json_of_a_graph_names_each_layers_inputs():
    data = run_json("shape", "resnet18")
    assert data["total_params"] == 11_689_512
    layers = {layer["name"]: layer for layer in data["layers"]}
    assert layers["conv1"]["inputs"] == ["input"]
    assert layers["layer2.add1"]["inputs"] == ["layer2.bn2", "layer2.shortcut.bn1"]
    assert layers["layer2.add1"]["input_shape"] == layers["layer2.add1"]["output_shape"]
    assert sum(layer["params"] for layer in layers.values()) == data["total_params"]
    seen = {"input"}
    for layer in data["layers"]:
        assert set(layer["inputs"]) <= seen
        seen.add(layer["name"])


def test_shape_depth_folds_blocks_with_their_totals():
    full = run("shape", "resnet18")
    folded = run("shape", "resnet18", "--depth", "1")
    assert full.exit_code == folded.exit_code == 0, folded.output
    rows = [line for line in folded.stdout.splitlines() if line.startswith("│ ")]
    names = [line.split("│")[2].split()[0] for line in rows]
    assert names[:5] == ["conv1", "bn1", "relu1", "pool1", "layer1"]
    assert names[-3:] == ["gap1", "fc1", "total"]
    layer1 = [line for line in rows if line.split("│")[2].split()[0] == "layer1"][0]
    assert "147,968" in layer1 and "(14 layers)" in layer1  # two blocks of 73,984
    assert "11,689,512" in folded.stdout and "1.81 G" in folded.stdout
    assert "layer1.0.conv1" in full.stdout and "layer1.0.conv1" not in folded.stdout
    assert run("shape", "resnet18", "--depth", "0").exit_code == 2


def _piped(*args, columns="80"):
    """The command as a user's pipe sees it: a subprocess, stdout not a terminal."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns is not None:
        env["COLUMNS"] = columns
    out = subprocess.run(
        [sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("columns", ["80", None])
def test_tables_keep_every_number_at_80_columns(columns):
    """At 80 columns (or piped with no width), wide tables drop optional columns or wrap
    names; no number is cut."""
    vgg = _piped("shape", "vgg16", columns=columns)
    assert "138,357,544" in vgg and "15.47 G" in vgg and "…" not in vgg
    assert max(len(line) for line in vgg.splitlines()) <= 80
    for layer in run_json("shape", "vgg16")["layers"]:
        assert "x".join(map(str, layer["output_shape"])) in vgg
    res = _piped("shape", "resnet50", columns=columns)
    assert "25,557,032" in res and "4.09 G" in res and "…" not in res
    assert max(len(line) for line in res.splitlines()) <= 80
    fields = _piped("receptive-field", "vgg16", columns=columns)
    assert "…" not in fields and max(len(line) for line in fields.splitlines()) <= 80
    pool5 = [line for line in fields.splitlines() if "pool5" in line][0]
    assert "512x7x7" in pool5 and "212x212" in pool5 and "32,32" in pool5 and "90,90" in pool5
    graph = _piped("receptive-field", "resnet50", columns=columns)
    last = [line for line in graph.splitlines() if "layer4.more.1.relu3" in line][0]
    assert "2048x7x7" in last and "427x427" in last and "213,213" in last
    assert max(len(line) for line in graph.splitlines()) <= 80


def test_branch_merge_error_is_one_line_with_exit_code_2(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("input 4 8 8\nresidual {\n  conv 8 k=3 p=1\n}\n")
    for command in ("shape", "receptive-field"):
        result = run(command, str(path))
        assert result.exit_code == 2, result.output
        message = result.stderr.strip()
        assert message.startswith("error:") and "\n" not in message
        for fragment in ("line 2", "'residual'", "8x8x8", "4x8x8"):
            assert fragment in message, message


def test_json_file_convention(tmp_path):
    out = tmp_path / "shape.json"
    result = run("shape", "lenet5", "--json-file", str(out))
    assert result.exit_code == 0 and "lenet5: input" in result.stdout  # the table still
    assert json.loads(out.read_text())["total_params"] == 61_706
    dash = run("shape", "lenet5", "--json-file", "-")
    assert json.loads(dash.stdout)["total_params"] == 61_706
    rf = tmp_path / "rf.json"
    both = run("receptive-field", "resnet18", "--json", "--json-file", str(rf))
    assert json.loads(both.stdout) == json.loads(rf.read_text())
    layers = json.loads(rf.read_text())["layers"]
    assert all(layer["aligned"] for layer in layers)


def test_receptive_field_of_a_graph_through_the_cli(tmp_path):
    data = run_json("receptive-field", "resnet18", "--unit", "0,0", "--layer", "layer2.relu4")
    assert data["unit"]["box"] == [[-49, 49], [-49, 49]]
    assert data["unit"]["pixels_seen"] == 50 * 50
    table = run("receptive-field", "input 1 8 8; concat { conv 1 k=3 p=1 } { conv 1 k=2 p=same }")
    assert table.exit_code == 0 and "unaligned" in table.stdout and "concat1 *" in table.stdout
    bad = run("receptive-field", "input 1 8 8; concat { conv 1 k=1 s=2 } { conv 1 k=5 }")
    assert bad.exit_code == 2 and "different effective strides" in bad.stderr


def test_receptive_plot_honours_unit_and_says_when_the_photo_was_resized(tmp_path):
    np = pytest.importorskip("numpy")
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((50, 70), dtype="uint8")).save(photo)
    out = tmp_path / "f.png"
    result = run(
        "receptive-field", "resnet18", "--unit", "1,2", "--plot", str(out), "--image", str(photo)
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "resized from 70x50 to 224x224" in said
    assert "19 layers drawn" in said and out.exists()
    same = tmp_path / "same.png"
    Image.fromarray(np.zeros((28, 28), dtype="uint8")).save(same)
    quiet = run("receptive-field", "lenet5", "--plot", str(out), "--image", str(same))
    assert "resized" not in quiet.stdout
    data = run_json("receptive-field", "resnet18", "--unit", "1,2", "--plot", str(out))
    assert data["unit"]["unit"] == [1, 2] and data["plot"] == str(out)
