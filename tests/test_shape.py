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
def test_commands_do_not_import_numba_or_numpy(command):
    code = (
        "import sys; from cnnkit.cli.app import app; "
        f"sys.argv = ['cnnkit', '{command}', 'vgg16', '--json']; "
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: app()\n"
        "    except SystemExit: pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'numba', 'matplotlib'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
