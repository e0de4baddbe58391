"""``cnnkit filter`` through typer's CliRunner: results against scipy / numpy, every output
type, batches, --demo, --list-kernels, and every error path (one line, exit code, nothing
left behind)."""

from __future__ import annotations

import json
import os
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnkit.cli.app import app
from cnnkit.geometry import conv_output_size

try:  # scipy is the oracle for the results; the error paths run without it
    import scipy.ndimage as ndi
    import scipy.signal as signal
except ImportError:  # pragma: no cover
    ndi = signal = None
needs_scipy = pytest.mark.skipif(ndi is None, reason="scipy is the oracle")

runner = CliRunner()
SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"


def run(*args: str):
    return runner.invoke(app, ["filter", *map(str, args)])


def ok(*args: str):
    result = run(*args)
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return result


def facts(*args: str) -> dict:
    return json.loads(ok(*args, "--json").stdout)


@pytest.fixture
def lecture(tmp_path) -> Path:
    p = tmp_path / "lecture.png"
    shutil.copy(SAMPLES / "lecture_8x8.png", p)
    return p


@needs_scipy
def test_sobel_edge_map_of_a_sample_photo(tmp_path):
    out = tmp_path / "edges.npy"
    f = facts(SAMPLES / "camera.png", "-k", "sobel-x", "-o", out)
    img = np.asarray(Image.open(SAMPLES / "camera.png"), dtype=np.float64)
    w = np.outer([1, 2, 1], [-1, 0, 1])
    ref = ndi.correlate(img, w, mode="constant")[1:-1, 1:-1]  # valid part
    got = np.load(out)
    assert got.shape == (510, 510)
    np.testing.assert_allclose(got, ref, atol=1e-9)
    assert f["output_shape"] == [conv_output_size(512, 3)] * 2
    assert f["min"] == pytest.approx(ref.min()) and f["max"] == pytest.approx(ref.max())
    assert f["mean"] == pytest.approx(ref.mean())
    png = tmp_path / "edges.png"
    ok(SAMPLES / "camera.png", "-k", "sobel-x", "-o", png)
    # default display for a signed response: |y| scaled to the peak
    expect = np.round(np.abs(ref) / np.abs(ref).max() * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(png)), expect)


@needs_scipy
def test_lecture_image_and_summary_table(lecture, tmp_path):
    out = tmp_path / "e.npy"
    result = ok(lecture, "-k", "vertical-edge", "-o", out)
    for word in ("input", "kernel", "padding", "stride", "dilation", "output shape", "time"):
        assert word in result.stdout
    img = np.asarray(Image.open(lecture), dtype=np.float64)
    np.testing.assert_allclose(np.load(out), signal.correlate2d(img, [[1, 0, -1]] * 3, "valid"))


@needs_scipy
@pytest.mark.parametrize(
    "options, oracle",
    [
        (
            ["--padding", "same", "--pad-mode", "reflect"],
            lambda x, w: ndi.correlate(x, w, mode="mirror"),
        ),
        (
            ["--padding", "same", "--pad-mode", "circular"],
            lambda x, w: ndi.correlate(x, w, mode="wrap"),
        ),
        (["--padding", "full"], lambda x, w: signal.correlate2d(x, w, "full")),
        (
            ["--padding", "2x1", "--stride", "2"],
            lambda x, w: signal.correlate2d(np.pad(x, ((2, 2), (1, 1))), w, "valid")[::2, ::2],
        ),
        (
            ["--flip", "--padding", "same", "--pad-mode", "replicate"],
            lambda x, w: ndi.convolve(x, w, mode="nearest"),
        ),
        (
            ["--method", "im2col", "--bias", "0.5"],
            lambda x, w: signal.correlate2d(x, w, "valid") + 0.5,
        ),
        (
            ["--method", "loop", "--dilation", "2"],
            lambda x, w: signal.correlate2d(x, np.kron(w, [[1, 0], [0, 0]])[:-1, :-1], "valid"),
        ),
        (["--transpose", "--scale", "2"], lambda x, w: signal.correlate2d(x, 2 * w.T, "valid")),
        (["--rotate", "90"], lambda x, w: signal.correlate2d(x, np.rot90(w), "valid")),
        (["--normalize"], lambda x, w: signal.correlate2d(x, w / w.sum(), "valid")),
        (
            ["--pool", "max", "--pool-size", "2"],
            lambda x, w: signal.correlate2d(x, w, "valid")[:6, :8].reshape(3, 2, 4, 2).max((1, 3)),
        ),
        (
            ["--pool", "avg", "--pool-size", "2", "--pool-stride", "1"],
            lambda x, w: ndi.uniform_filter(signal.correlate2d(x, w, "valid"), 2, origin=-1)[
                :-1, :-1
            ],
        ),
    ],
)
def test_options_match_an_independent_oracle(rng, tmp_path, options, oracle):
    x = rng.random((9, 11)) * 10
    w = np.array([[1.0, 2, 0], [0, -1, 3], [2, 1, 1]])
    np.save(tmp_path / "x.npy", x)
    inline = ";".join(",".join(f"{v:g}" for v in row) for row in w)
    f = facts(tmp_path / "x.npy", "-k", inline, "-o", tmp_path / "y.npy", *options)
    got = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(got, oracle(x, w), atol=1e-9)
    assert f["output_shape"] == list(got.shape)


@needs_scipy
def test_kernel_bank_magnitude_and_colour(tmp_path, rng):
    rgb = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    x = np.moveaxis(rgb, 2, 0).astype(float)
    gx, gy = np.outer([1, 2, 1], [-1, 0, 1]), np.outer([-1, 0, 1], [1, 2, 1])
    # per-channel bank: (K, C, H, W)
    ok(tmp_path / "c.png", "-k", "sobel-x", "-k", "sobel-y", "-o", tmp_path / "b.npy")
    bank = np.load(tmp_path / "b.npy")
    assert bank.shape == (2, 3, 10, 8)
    for c in range(3):
        np.testing.assert_allclose(bank[1, c], signal.correlate2d(x[c], gy, "valid"))
    luma = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    ok(
        tmp_path / "c.png",
        "-k",
        "sobel-x",
        "-k",
        "sobel-y",
        "--combine",
        "magnitude",
        "--color",
        "gray",
        "-o",
        tmp_path / "m.npy",
    )
    ref = np.hypot(signal.correlate2d(luma, gx, "valid"), signal.correlate2d(luma, gy, "valid"))
    np.testing.assert_allclose(np.load(tmp_path / "m.npy"), ref, atol=1e-9)
    ok(tmp_path / "c.png", "-k", "box", "--color", "rgb", "-o", tmp_path / "r.npy")
    np.testing.assert_allclose(
        np.load(tmp_path / "r.npy"), signal.correlate2d(x.mean(0), np.full((3, 3), 1 / 9), "valid")
    )
    # a bank saved as an image: the maps side by side with a 4-pixel gap
    ok(
        tmp_path / "c.png",
        "-k",
        "sobel-x",
        "-k",
        "sobel-y",
        "--color",
        "gray",
        "-o",
        tmp_path / "b.png",
    )
    assert Image.open(tmp_path / "b.png").size == (8 + 4 + 8, 10)


@needs_scipy
def test_rgba_alpha_reattached_only_at_the_same_size(tmp_path, rng):
    rgba = rng.integers(0, 256, size=(8, 9, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    ok(tmp_path / "a.png", "-k", "box", "--padding", "same", "-o", tmp_path / "same.png")
    same = np.asarray(Image.open(tmp_path / "same.png"))
    assert same.shape == (8, 9, 4)
    np.testing.assert_array_equal(same[:, :, 3], rgba[:, :, 3])
    blurred = ndi.correlate(rgba[:, :, 0].astype(float), np.full((3, 3), 1 / 9), mode="constant")
    np.testing.assert_array_equal(same[:, :, 0], np.round(blurred).astype(np.uint8))
    ok(tmp_path / "a.png", "-k", "box", "-o", tmp_path / "valid.png")
    assert np.asarray(Image.open(tmp_path / "valid.png")).shape == (6, 7, 3)


@needs_scipy
def test_display_modes_on_the_command_line(lecture, tmp_path):
    img = np.asarray(Image.open(lecture), dtype=np.float64)
    resp = signal.correlate2d(img, [[1, 0, -1]] * 3, "valid")
    ok(lecture, "-k", "vertical-edge", "--flip", "--display", "clip", "-o", tmp_path / "c.png")
    # flipped, the response is negative: clip shows black everywhere
    assert np.asarray(Image.open(tmp_path / "c.png")).max() == 0
    ok(lecture, "-k", "vertical-edge", "--display", "diverging", "-o", tmp_path / "d.png")
    div = np.asarray(Image.open(tmp_path / "d.png"))
    assert div.shape == (6, 6, 3)
    red = resp == resp.max()
    assert (div[red] == [255, 0, 0]).all() and (div[resp == 0] == 255).all()


def test_signals_csv_wav_and_compare(tmp_path, rng):
    s = rng.standard_normal(40)
    (tmp_path / "s.csv").write_text(
        "time,value\n" + "".join(f"{i},{float(v)!r}\n" for i, v in enumerate(s))
    )
    f = facts(
        tmp_path / "s.csv",
        "--column",
        "value",
        "-k",
        "box:3",
        "-o",
        tmp_path / "o.csv",
        "--compare",
        tmp_path / "plot.png",
    )
    lines = (tmp_path / "o.csv").read_text().splitlines()
    assert lines[0] == "filtered"
    np.testing.assert_allclose(
        [float(v) for v in lines[1:]], np.convolve(s, np.ones(3) / 3, "valid")
    )
    assert f["output_shape"] == [38] and Image.open(tmp_path / "plot.png").size[0] > 100
    ok(
        tmp_path / "s.csv",
        "--column",
        "1",
        "-k",
        "1,0,-1",
        "-k",
        "gaussian:1",
        "--padding",
        "same",
        "-o",
        tmp_path / "two.csv",
    )
    header = (tmp_path / "two.csv").read_text().splitlines()[0]
    assert header == "custom,gaussian:sigma=1"
    # WAV: stereo 16-bit, filtered per channel, written with the same rate and width
    ints = rng.integers(-9000, 9000, size=(2, 64))
    with wave.open(str(tmp_path / "a.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(11025)
        w.writeframes(ints.T.astype("<i2").tobytes())
    ok(tmp_path / "a.wav", "-k", "4,4", "-o", tmp_path / "b.wav")
    with wave.open(str(tmp_path / "b.wav"), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 11025)
        out = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2).T
    ref = np.stack([np.correlate(ch, [4.0, 4.0], "valid") for ch in ints])
    np.testing.assert_array_equal(out, np.clip(ref, -32768, 32767))
    assert (np.abs(ref) > 32767).any()  # the clipping was exercised


def test_image_compare_side_by_side(lecture, tmp_path):
    ok(lecture, "-k", "vertical-edge", "--compare", tmp_path / "cmp.png")
    assert Image.open(tmp_path / "cmp.png").size == (8 + 8 + 6, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.png", "lecture.png"]


@needs_scipy
def test_many_inputs_folder_and_glob(tmp_path, rng):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 256, size=(6, 7), dtype=np.uint8)).save(src / f"{name}.png")
    (src / "notes.csv").write_text("v\n1\n")  # not an image: a folder yields only images
    out = tmp_path / "out"
    out.mkdir()
    result = json.loads(ok(src, "-k", "box", "--out-dir", out, "--out-ext", "npy", "--json").stdout)
    assert [Path(r["input"]).name for r in result] == ["a.png", "b.png", "c.png"]
    for name in ("a", "b", "c"):
        img = np.asarray(Image.open(src / f"{name}.png"), dtype=np.float64)
        ref = signal.correlate2d(img, np.full((3, 3), 1 / 9), "valid")
        np.testing.assert_allclose(np.load(out / f"{name}.npy"), ref)
    ok(str(src / "*.png"), "-k", "sobel-y", "--out-dir", out)
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "c.png"]
    table = ok(src / "a.png", src / "b.png", "-k", "box", "--out-dir", out, "--force").stdout
    assert "a.png" in table and "b.png" in table


def test_list_kernels_and_demo():
    listing = runner.invoke(app, ["filter", "--list-kernels"], terminal_width=120)
    assert listing.exit_code == 0
    from cnnkit.filters import BANK

    for name in BANK:
        assert name in listing.stdout
    demo = runner.invoke(app, ["filter", "--demo"], terminal_width=120)
    assert demo.exit_code == 0, demo.output
    for title in (
        "3-tap average",
        "Cross-correlation vs convolution",
        "edge detector",
        "Valid vs same",
        "Stride 2",
        "Dilation 2",
        "pooling",
    ):
        assert title in demo.stdout


@needs_scipy
def test_demo_numbers_come_from_the_ops():
    from cnnkit.demo import demo_steps

    steps = {s.title.split(".")[0]: s.facts for s in demo_steps()}
    avg = steps["1"]
    np.testing.assert_allclose(avg["result"], np.convolve(avg["series"], np.ones(3) / 3, "valid"))
    cc = steps["2"]
    a, b = cc["a"], cc["b"]
    np.testing.assert_allclose(cc["corr"], np.correlate(a, b, "valid"))
    np.testing.assert_allclose(cc["conv"], np.convolve(a, b, "valid"))
    np.testing.assert_allclose(cc["conv_ab"], np.convolve(a, b))
    np.testing.assert_allclose(cc["conv_ba"], np.convolve(b, a))
    np.testing.assert_allclose(cc["corr_ab"], np.correlate(a, b, "full"))
    np.testing.assert_allclose(cc["corr_ba"], np.correlate(b, a, "full"))
    assert cc["conv_commutes"] and not cc["corr_commutes"]
    edge = steps["3"]
    np.testing.assert_allclose(
        edge["response"], signal.correlate2d(edge["image"], edge["kernel"], "valid")
    )
    assert edge["response"].shape == (6, 6) and not edge["response_h_wrong"].any()
    np.testing.assert_allclose(
        steps["4"]["same"], ndi.correlate(edge["image"], edge["kernel"], mode="constant")
    )
    np.testing.assert_allclose(steps["5"]["strided"], edge["response"][::2, ::2])
    pool = steps["7"]
    np.testing.assert_allclose(pool["mp"], pool["x"].reshape(2, 2, 2, 2).max((1, 3)))
    np.testing.assert_allclose(pool["ap_s"], pool["shifted"].reshape(2, 2, 2, 2).mean((1, 3)))
    assert pool["max_same"] and not pool["avg_same"]


def test_help_has_examples():
    result = runner.invoke(app, ["filter", "--help"], terminal_width=120)
    assert result.exit_code == 0
    assert "sample_images/camera.png -k sobel-x" in result.stdout
    assert "--list-kernels" in result.stdout


# ---------------------------------------------------------------------------------------------
# Errors: one line on stderr, exit 2 (usage) or 1 (failure), no file left behind


def _assert_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    message = result.stderr.strip()
    assert message.startswith("error:") and "\n" not in message, message
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    "make_args, code, fragments",
    [
        (lambda d: [d / "missing.png", "-k", "box"], 2, ["missing.png", "no such file"]),
        (lambda d: [d / "in.xyz", "-k", "box"], 2, ["unknown input format '.xyz'"]),
        (lambda d: [d / "cut.png", "-k", "box"], 2, ["cut.png: cannot read as an image"]),
        (lambda d: [d / "in.png", "-k", "1,0,-1;2,x,-2"], 2, ["row 2, column 2", "'x'"]),
        (lambda d: [d / "in.png", "-k", "1,0;1"], 2, ["row 2 has 1 value"]),
        (lambda d: [d / "in.png", "-k", "sobel_x"], 2, ["did you mean 'sobel-x'"]),
        (
            lambda d: [d / "in.png", "-k", "gaussian:sigma=4,size=11"],
            2,
            ["larger than the padded input height 8"],
        ),
        (
            lambda d: [d / "in.png", "-k", "box", "-o", d / "nope" / "o.png"],
            2,
            ["folder", "does not exist"],
        ),
        (
            lambda d: [d / "in.png", "-k", "box", "-o", d / "in.png"],
            2,
            ["would overwrite the input", "--force"],
        ),
        (lambda d: [d / "in.png", "-k", "box", "-o", d / "o.xyz"], 2, ["unknown output format"]),
        (lambda d: [d / "in.png", "-k", "box", "-o", d / "o.csv"], 2, ["1-D signals"]),
        (lambda d: [d / "in.png", "-k", "box", "-o", d / "o.wav"], 2, ["1-D signals"]),
        (lambda d: [d / "in.png", "-k", "box", "-o", d], 2, ["is a folder"]),
        (lambda d: [d / "in.png", "-k", "box", "--out-dir", d / "nope"], 2, ["does not exist"]),
        (lambda d: [d / "in.png", "-k", "box", "--padding", "wide"], 2, ["--padding"]),
        (lambda d: [d / "in.png", "-k", "box", "--pad-mode", "mirror"], 2, ["pad_mode"]),
        (lambda d: [d / "in.png", "-k", "box", "--rotate", "45"], 2, ["--rotate"]),
        (lambda d: [d / "in.png", "-k", "sobel-x", "--normalize"], 2, ["sums to 0"]),
        (lambda d: [d / "in.png", "-k", "box", "--combine", "magnitude"], 2, ["two or more"]),
        (lambda d: [d / "in.png", "-k", "box", "--display", "log"], 2, ["--display"]),
        (lambda d: [d / "in.png", "-k", "box", "--stride", "0"], 2, ["stride"]),
        (
            lambda d: [d / "in.png", "-k", "box", "--pool", "max", "--pool-size", "9"],
            2,
            ["pool-size 9"],
        ),
        (lambda d: [d / "in.png"], 2, ["give a kernel"]),
        (
            lambda d: [d / "in.png", "-k", "box", "-o", d / "o.png", "--compare", d / "c.npy"],
            2,
            ["--compare writes an image"],
        ),
        (lambda d: ["-k", "box"], 2, ["give an INPUT"]),
        (lambda d: [d / "s.csv", "-k", "sobel-x"], 2, ["2-D only"]),
        (
            lambda d: [d / "s.csv", "-k", "box", "-o", d / "o.png"],
            2,
            ["cannot be saved as an image"],
        ),
        (lambda d: [d / "s.csv", "-k", "box", "-o", d / "o.wav"], 2, ["needs a .wav input"]),
        (lambda d: [d / "in.png", d / "s.csv", "-k", "box", "-o", d / "o.png"], 2, ["--out-dir"]),
        (lambda d: [str(d / "*.bmp"), "-k", "box", "--out-dir", d], 2, ["no files match"]),
    ],
)
def test_error_paths(tmp_path, make_args, code, fragments):
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(tmp_path / "in.png")
    good = (tmp_path / "in.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "in.xyz").write_text("?")
    (tmp_path / "s.csv").write_text("v\n1\n2\n3\n4\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    _assert_error(run(*make_args(tmp_path)), code, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temp files


def test_force_allows_overwriting_the_input(lecture):
    ok(lecture, "-k", "identity", "--padding", "same", "-o", lecture, "--force")
    assert np.asarray(Image.open(lecture)).shape == (8, 8)


def test_unwritable_output_folder_is_a_failure(lecture, tmp_path, monkeypatch):
    # root ignores permission bits, so make the check itself say "not writable"
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if mode == os.W_OK else real_access(p, mode)
    )
    _assert_error(run(lecture, "-k", "box", "-o", tmp_path / "o.png"), 1, "not writable")
    assert not (tmp_path / "o.png").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_input_is_a_failure(lecture):
    lecture.chmod(0)
    try:
        _assert_error(run(lecture, "-k", "box"), 1, "lecture.png")
    finally:
        lecture.chmod(0o644)


def test_failure_while_writing_leaves_no_partial_file(lecture, tmp_path, monkeypatch):

    def broken(handle, arr, allow_pickle=False):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", broken)  # cnnkit.io imports numpy lazily
    _assert_error(run(lecture, "-k", "box", "-o", tmp_path / "o.npy"), 1, "No space left")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lecture.png"]


def test_cli_module_imports_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys, cnnkit.cli.filter; "
        "print(sorted(m for m in ('numba', 'numpy', 'PIL', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unreadable_input_is_a_failure_even_as_root(lecture, monkeypatch):
    import PIL.Image

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(PIL.Image, "open", denied)
    _assert_error(run(lecture, "-k", "box"), 1, "lecture.png", "Permission denied")
