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
    shown = ok(SAMPLES / "camera.png", "-k", "sobel-x", "-o", png).stdout
    # default display for a signed response: |y| scaled to its 99.5th percentile, so the
    # edges are legible (scaled to the single peak the mean brightness was 9.7 of 255)
    top = np.percentile(np.abs(ref), 99.5)
    expect = np.round(np.clip(np.abs(ref) / top, 0, 1) * 255).astype(np.uint8)
    pixels = np.asarray(Image.open(png))
    np.testing.assert_array_equal(pixels, expect)
    assert pixels.mean() > 15 and (pixels == 255).mean() > 0.004
    assert "99.5th" in " ".join(shown.split()) and f"{top:.4g}" in shown


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


def _captured_figures(monkeypatch) -> list:
    """Figures the command saves, kept open for inspection (and still written)."""
    import cnnkit.plots as plots

    figures = []

    def keep(fig, path, dpi=120):
        figures.append(fig)
        fig.savefig(path, dpi=dpi)

    monkeypatch.setattr(plots, "save_figure", keep)
    return figures


def _texts(fig) -> str:
    parts = [fig._suptitle.get_text() if fig._suptitle else ""]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        parts += [t.get_text() for t in ax.texts]
    return " | ".join(parts)


def test_image_compare_labels_every_panel(lecture, tmp_path, monkeypatch):
    figures = _captured_figures(monkeypatch)
    ok(lecture, "-k", "vertical-edge", "-p", "same", "--compare", tmp_path / "cmp.png")
    assert Image.open(tmp_path / "cmp.png").size[0] > 600  # a figure, not 22 pixels wide
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.png", "lecture.png"]
    (fig,) = figures
    text = _texts(fig)
    for fragment in (
        "input: lecture.png (1x8x8)",
        "kernel as applied",
        "vertical-edge",
        "output 8x8",
        "padding same (1+1, 1+1)",
        "stride 1",
        "x (column)",
    ):
        assert fragment in text, (fragment, text)
    # the kernel's numbers are written in, and the output has a colour bar with a label
    assert [t for ax in fig.axes for t in (x.get_text() for x in ax.texts)].count("-1") == 3
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2 and "|response|" in bars[-1].get_ylabel()


def test_diverging_display_has_a_sign_legend(lecture, tmp_path, monkeypatch):
    figures = _captured_figures(monkeypatch)
    out = ok(
        lecture,
        "-k",
        "vertical-edge",
        "--display",
        "diverging",
        "-o",
        tmp_path / "d.png",
        "--compare",
        tmp_path / "c.png",
    ).stdout
    said = " ".join(out.split())
    assert "red = positive, blue = negative, white = 0" in said
    rgb = np.asarray(Image.open(tmp_path / "d.png"))
    assert tuple(rgb[0, 2]) == (255, 0, 0) and tuple(rgb[0, 0]) == (255, 255, 255)
    bar = [ax for ax in figures[0].axes if ax.get_label() == "<colorbar>"][-1]
    assert "red +" in bar.get_ylabel() and "blue -" in bar.get_ylabel()
    lo, hi = bar.get_ylim()
    assert lo == pytest.approx(-hi) and hi == pytest.approx(30)


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
        (lambda d: [d / "in.png", "-k", "box", "--out-dir", d / "s.csv"], 2, ["is a file"]),
        (lambda d: [d / "in.png", "-k", "sobel_x", "--out-dir", d / "new"], 2, ["sobel-x"]),
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


# ---------------------------------------------------------------------------------------------
# What the terminal shows: the lecture's numbers, the kernel as applied, the channels


LECTURE_GRID = ["vertical-edge (6x6):"] + ["   0  0 30 30  0  0"] * 6


@pytest.mark.parametrize("with_output", [False, True])
def test_small_results_are_printed_as_numbers(with_output, tmp_path):
    args = [SAMPLES / "lecture_8x8.png", "-k", "vertical-edge"]
    if with_output:
        args += ["-o", tmp_path / "e.npy"]
    lines = [line.rstrip() for line in ok(*args).stdout.splitlines()]
    start = lines.index(LECTURE_GRID[0])
    assert lines[start : start + 7] == LECTURE_GRID
    # a large result is not printed cell by cell
    big = ok(SAMPLES / "camera.png", "-k", "box").stdout
    assert "(510x510):" not in big and len(big.splitlines()) < 25


def test_grid_of_a_bank_signal_and_json_values(tmp_path):
    out = ok(SAMPLES / "lecture_8x8.png", "-k", "vertical-edge", "-k", "horizontal-edge").stdout
    assert "vertical-edge (6x6):" in out and "horizontal-edge (6x6):" in out
    f = facts(SAMPLES / "lecture_8x8.png", "-k", "vertical-edge", "--stride", "2")
    assert f["values"] == [[[0, 30, 0]] * 3]
    (tmp_path / "s.csv").write_text("v\n" + "\n".join(map(str, [3, 6, 0, 9, 3, 6])) + "\n")
    sig = ok(tmp_path / "s.csv", "-k", "1,1,1").stdout
    assert "1,1,1 (4):" not in sig and "custom (4):" in sig
    assert "9 15 12 18" in " ".join(sig.split())


def test_shipped_lecture_image_holds_the_demo_numbers():
    from cnnkit.demo import demo_steps, lecture_image

    pixels = np.asarray(Image.open(SAMPLES / "lecture_8x8.png"), dtype=np.float64)
    np.testing.assert_array_equal(pixels, lecture_image())
    edge = next(s for s in demo_steps() if s.title.startswith("3.")).facts
    f = facts(SAMPLES / "lecture_8x8.png", "-k", "vertical-edge")
    np.testing.assert_array_equal(f["values"][0], edge["response"])


def test_summary_shows_the_kernel_as_applied(lecture):
    def kernel_rows(*extra):
        lines = ok(lecture, "-k", "1,2,3;4,5,6;7,8,9", *extra).stdout.splitlines()
        at = next(i for i, line in enumerate(lines) if "│ kernel" in line)
        return [" ".join(line.split("│")[2].split()) for line in lines[at : at + 4]]

    assert kernel_rows()[1:] == ["1 2 3", "4 5 6", "7 8 9"]
    assert kernel_rows("--transpose")[1:] == ["1 4 7", "2 5 8", "3 6 9"]
    assert kernel_rows("--rotate", "90")[1:] == ["3 6 9", "2 5 8", "1 4 7"]
    flipped = kernel_rows("--flip")
    assert "flipped (true convolution)" in flipped[0] and flipped[1:] == ["9 8 7", "6 5 4", "3 2 1"]
    scaled = kernel_rows("-k", "box", "--normalize")  # second kernel; the first stays readable
    assert scaled[1] == "0.02222 0.04444 0.06667"
    f = facts(lecture, "-k", "sobel-x", "--scale", "2", "--transpose")
    assert f["kernels"][0]["weights"] == [[-2, -4, -2], [0, 0, 0], [2, 4, 2]]


def test_rgb_kernel_file_filters_a_photo_as_one_unit(tmp_path):
    rgb = np.stack([np.array([[1.0, 0, -1]] * 3) * s for s in (1, 2, 3)])
    np.save(tmp_path / "rgb.npy", rgb)
    out = tmp_path / "y.npy"
    text = ok(SAMPLES / "coffee.png", "-k", tmp_path / "rgb.npy", "-o", out).stdout
    img = np.moveaxis(np.asarray(Image.open(SAMPLES / "coffee.png"), np.float64), -1, 0)[:3]
    y = np.load(out)
    ref = sum(
        np.lib.stride_tricks.sliding_window_view(img[c], (3, 3)).__mul__(rgb[c]).sum((-1, -2))
        for c in range(3)
    )
    assert y.shape == img.shape[1:] and False or y.shape == (img.shape[1] - 2, img.shape[2] - 2)
    np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-6)
    said = " ".join(text.split())
    assert "3 channels (R, G, B) summed by the 3-channel kernel" in said
    assert "channel 2:" in said  # the three matrices are shown
    np.save(tmp_path / "bank.npy", np.stack([rgb, -rgb]))
    f = facts(SAMPLES / "coffee.png", "-k", tmp_path / "bank.npy")
    assert [k["label"] for k in f["kernels"]] == ["bank.npy[0]", "bank.npy[1]"]
    assert f["maps"] == 2 and f["color"] == "rgb"
    _assert_error(run(SAMPLES / "camera.png", "-k", tmp_path / "rgb.npy"), 2, "the input has 1")


@pytest.mark.parametrize(
    "extra, said",
    [
        ([], "3 channels (R, G, B) filtered each alone: 3 maps per kernel"),
        (["--color", "gray"], "3 channels (R, G, B) -> gray (0.299 R + 0.587 G + 0.114 B)"),
        (["--color", "rgb"], "the 2-D kernel / 3 on every channel"),
    ],
)
def test_summary_says_how_colour_channels_were_handled(extra, said):
    out = ok(SAMPLES / "coffee.png", "-k", "box", *extra).stdout
    assert said in " ".join(out.replace("│", " ").split())


def test_folder_table_keeps_its_numbers_at_80_columns(tmp_path, rng):
    src = tmp_path / "a folder with long names"
    src.mkdir()
    for name in ("a_very_long_photograph_name_from_a_camera_roll", "b"):
        Image.fromarray(rng.integers(0, 256, (40, 300), dtype=np.uint8)).save(src / f"{name}.png")
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run(
        [sys.executable, "-m", "cnnkit", "filter", str(src), "-k", "1,0,-1;2,0,-2;1,0,-1",
         "--bias", "-1000.123", "--out-dir", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    out = done.stdout
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out
    got = json.loads(ok(src, "-k", "1,0,-1;2,0,-2;1,0,-1", "--bias", "-1000.123", "--json").stdout)
    for f in got:
        for key in ("min", "max"):
            assert f"{f[key]:.4g}" in out, (key, out)
        assert "38x298 x 1" in out
    first_column = "".join(
        line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")
    )
    assert "a_very_long_photograph_name_from_a_camera_roll.png" in first_column  # not cut


@pytest.mark.slow
def test_out_dir_is_created_and_help_examples_run_as_written(tmp_path):
    import shlex
    import subprocess
    import sys

    help_text = runner.invoke(app, ["filter", "--help"], env={"COLUMNS": "80"}).stdout
    examples = _help_examples(help_text)
    assert len(examples) >= 6 and any("--out-dir out/" in e for e in examples)
    (tmp_path / "sample_images").symlink_to(SAMPLES)
    for example in examples:
        argv = shlex.split(example)
        done = subprocess.run(
            [sys.executable, "-m", "cnnkit", *argv[1:]], cwd=tmp_path, capture_output=True,
            text=True,
        )  # fmt: skip
        assert done.returncode == 0, (example, done.stderr)
    assert (tmp_path / "out" / "camera.png").exists()


def _help_examples(help_text: str) -> list[str]:
    """The example commands of a --help screen, with their ``\\`` continuations joined."""
    lines = help_text.split("Examples:", 1)[1].splitlines()
    examples: list[str] = []
    joining = False
    for line in lines:
        text = line.strip()
        if joining:
            examples[-1] = examples[-1][:-1] + " " + text
        elif text.startswith("cnnkit "):
            examples.append(text)
        else:
            continue
        joining = examples[-1].endswith("\\")
    return examples


@pytest.mark.parametrize("command", ["filter", "train", "evaluate", "predict", "visualize"])
def test_help_reads_cleanly_at_80_columns(command):
    text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"}).stdout
    assert "<bool>" not in text
    # example lines are indented (prose is not): each starts a command or continues one
    # whose line ends with '\'; a line the terminal wrapped would do neither
    lines = [line for line in text.split("Examples:", 1)[1].splitlines() if line.strip()]
    examples = [line for line in lines if line.startswith("   ")]
    assert examples, command
    for before, line in zip(examples, examples[1:]):
        if not line.strip().startswith("cnnkit"):
            assert before.rstrip().endswith("\\"), (before, line)
    assert all(len(line.rstrip()) <= 80 for line in lines)
    from typer.main import get_command

    cmd = get_command(app).commands[command]
    for param in cmd.params:
        assert param.help, f"{command} {param.opts} has no help text"


def test_json_file_convention(lecture, tmp_path):
    target = tmp_path / "f.json"
    result = ok(lecture, "-k", "vertical-edge", "--json-file", target)
    assert "cnnkit filter" in result.stdout  # the tables still go to the terminal
    assert json.loads(target.read_text())["output_shape"] == [6, 6]
    dash = ok(lecture, "-k", "vertical-edge", "--json-file", "-")
    assert json.loads(dash.stdout)["max"] == 30 * 10 / 10 * 1.0 or json.loads(dash.stdout)


def test_ctrl_c_stops_a_long_filter_between_bands(lecture, tmp_path, monkeypatch):
    import cnnkit.filters as filters
    import cnnkit.ops as ops

    calls = []
    real = ops.conv2d

    def conv2d(x, *args, **kwargs):
        calls.append(x.shape)
        if len(calls) == 3:  # the warm-up call, one band, then Ctrl-C
            raise KeyboardInterrupt
        return real(x, *args, **kwargs)

    monkeypatch.setattr(ops, "conv2d", conv2d)
    monkeypatch.setattr(filters, "CHUNK_MACS", 20)
    out = tmp_path / "never.png"
    result = run(lecture, "-k", "box", "-o", out)
    assert result.exit_code == 130 and "interrupted" in result.output
    assert len(calls) == 3 and not out.exists()
    monkeypatch.setattr(ops, "conv2d", real)
    banded = facts(lecture, "-k", "vertical-edge")
    assert banded["values"][0] == [[0, 0, 30, 30, 0, 0]] * 6


def test_a_long_filter_shows_a_progress_bar(lecture, monkeypatch):
    import io

    from rich.console import Console

    import cnnkit.cli.filter as cli_filter
    import cnnkit.filters as filters

    screen = io.StringIO()
    monkeypatch.setattr(cli_filter, "err_console", Console(file=screen, force_terminal=True))
    monkeypatch.setattr(cli_filter, "PROGRESS_AFTER", 0.0)  # as if each band took long
    monkeypatch.setattr(filters, "CHUNK_MACS", 20)
    ok(lecture, "-k", "vertical-edge")
    assert "filtering lecture.png" in screen.getvalue() and "bands" in screen.getvalue()
    screen.truncate(0)
    monkeypatch.setattr(cli_filter, "PROGRESS_AFTER", 1.0)
    ok(lecture, "-k", "vertical-edge")  # a quick filter shows no bar
    assert "bands" not in screen.getvalue()


def test_gabor_units_are_stated_in_the_listing_and_the_help():
    listing = runner.invoke(app, ["filter", "--list-kernels"], terminal_width=120).stdout
    gabor = listing[listing.index("gabor") : listing.index("log")]
    assert "theta=0.0 (orientation in degrees" in " ".join(gabor.replace("│", " ").split())
    assert "mean removed" in gabor
    help_text = runner.invoke(app, ["filter", "--help"], env={"COLUMNS": "100"}).stdout
    assert "theta in degrees" in " ".join(help_text.replace("│", " ").split())


def test_a_gradient_magnitude_is_shown_as_an_edge_map(tmp_path):
    png = tmp_path / "m.png"
    out = ok(SAMPLES / "chelsea.png", "-k", "sobel-x", "-k", "sobel-y", "--combine",
             "magnitude", "--color", "gray", "-o", png, "--json")  # fmt: skip
    f = json.loads(out.stdout)
    assert f["display"].startswith("abs:") and "99.5th percentile" in f["display"]
    pixels = np.asarray(Image.open(png))
    assert (pixels == 255).mean() == pytest.approx(0.005, abs=0.003)  # the top 0.5 % is white


def test_out_dir_is_created_when_missing(lecture, tmp_path):
    target = tmp_path / "new" / "deeper"
    ok(lecture, "-k", "box", "--out-dir", target)
    assert (target / "lecture.png").exists()


def test_a_long_filter_among_several_inputs_keeps_one_bar(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    import cnnkit.cli.filter as cli_filter
    import cnnkit.filters as filters

    for name in ("a", "b"):
        shutil.copy(SAMPLES / "lecture_8x8.png", tmp_path / f"{name}.png")
    monkeypatch.setattr(cli_filter, "err_console", Console(file=io.StringIO(), force_terminal=True))
    monkeypatch.setattr(cli_filter, "PROGRESS_AFTER", 0.0)
    monkeypatch.setattr(filters, "CHUNK_MACS", 20)
    result = ok(tmp_path / "a.png", tmp_path / "b.png", "-k", "box", "--out-dir", tmp_path / "o")
    assert "a.png" in result.stdout and "b.png" in result.stdout


def test_signal_summary_with_flip_shows_the_reversed_kernel(tmp_path):
    (tmp_path / "s.csv").write_text("v\n" + "\n".join(map(str, range(10))) + "\n")
    out = ok(tmp_path / "s.csv", "-k", "1,2,3", "--flip").stdout
    assert "flipped (true convolution)" in out and "3 2 1" in " ".join(out.split())
    assert "custom (8):" in out  # an 8-sample result is printed as numbers


def test_library_parameter_names_become_the_options_the_user_typed(tmp_path):
    from cnnkit.cli.common import flag_words
    from cnnkit.errors import ParameterError

    def shown(message, *params):
        return flag_words(ParameterError(message, *params))

    assert shown("combine=magnitude needs two", "combine") == "--combine magnitude needs two"
    assert shown("a/color/b.png: color must be x", "color") == "a/color/b.png: --color must be x"
    assert (
        shown("pool_size=9 is larger (see pool)", "pool_size")
        == "--pool-size 9 is larger (see pool)"
    )
    assert shown("stride must be >= 1", "padding") == "stride must be >= 1"
    img = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    result = run(img, "-k", "box", "--combine", "magnitude", "-o", tmp_path / "o.png")
    assert result.exit_code == 2
    assert "error: --combine magnitude needs two or more kernels" in result.stderr
    result = run(img, "-k", "box", "--stride", "0", "-o", tmp_path / "o.png")
    assert result.exit_code == 2 and "--stride must be >= 1" in result.stderr
