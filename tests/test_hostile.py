"""Hostile input: a seeded corpus of bad files through the real CLI, and property-based tests
of every parser.

The rule checked everywhere: an input ends in a correct result, or in a one-line ``error:``
message with exit code 2 (1 for a failure of the work itself), never in a traceback, within a
time budget. The corpus is generated here, from a fixed seed, so it needs no fixtures on disk.
"""

from __future__ import annotations

import json
import os
import struct
import time
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from cnnkit import arch as spec
from cnnkit import filters, geometry, io, ops
from cnnkit.cli.app import app
from cnnkit.nn.model import build_model
from cnnkit.nn.serialize import load_model, read_model_file, save_model

runner = CliRunner()
SEED = 20261129
FAST = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TINY = "input 1 8 8\nconv 2 k=3\nrelu\nfc 3"


def run(*args: object, budget: float = 20.0):
    start = time.perf_counter()
    result = runner.invoke(app, [str(a) for a in args])
    assert time.perf_counter() - start < budget, args
    return result


def assert_clean_error(result, *fragments: str, code: int = 2) -> None:
    """Exit ``code``, one ``error:`` line on stderr, no traceback, fragments present."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --------------------------------------------------------------------------- the corpus


def tiny_model(folder: Path, **header) -> Path:
    model = build_model(TINY, seed=1)
    meta = {"class_names": ["a", "b", "c"], "mean": [0.0], "std": [1.0]}
    meta.update(header)
    path = folder / "model.npz"
    save_model(path, model, meta)
    return path


def tampered(folder: Path, name: str, change) -> Path:
    """A copy of the tiny model whose header or arrays ``change(header, arrays)`` edits."""
    good = tiny_model(folder)
    with np.load(good, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(str(arrays["header"]))
    change(header, arrays)
    arrays["header"] = np.array(json.dumps(header))
    path = folder / name
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def test_model_files_are_checked_field_by_field(tmp_path):
    def field(key, value):
        return lambda h, a: h.__setitem__(key, value)

    def weights(dtype=None, value=None):
        def change(h, a):
            key = next(k for k in a if k.startswith("model/"))
            if dtype is not None:
                a[key] = a[key].astype(dtype)
            if value is not None:
                a[key] = a[key].copy()
                a[key].flat[0] = value

        return change

    (tmp_path / "secret.txt").write_text("input 1 8 8; fc 3\n")
    cases = {
        "spec_path.npz": (field("spec", str(tmp_path / "secret.txt")), "stored architecture"),
        "spec_home.npz": (field("spec", "~/.bashrc"), "stored architecture"),
        "shape_str.npz": (field("input_shape", "1x8x8"), "'input_shape' must be"),
        "shape_big.npz": (field("input_shape", [1, 10**10, 8]), "'input_shape' must be"),
        "shape_huge.npz": (field("input_shape", [1, 2**70, 8]), "'input_shape' must be"),
        "std_zero.npz": (field("std", [0.0]), "'std' must be"),
        "mean_nan.npz": (field("mean", [float("nan")]), "'mean' must be"),
        "names_int.npz": (field("class_names", [1, 2, 3]), "'class_names' must be"),
        "names_few.npz": (field("class_names", ["a"]), "names 1 classes"),
        "dtype.npz": (field("dtype", "complex128"), "'dtype' must be"),
        "version.npz": (field("format_version", True), "format_version"),
        "ckpt.npz": (field("checkpoint", {"epoch": -1}), "'checkpoint' must be"),
        "prep.npz": (field("preprocess", {"invert": 3}), "'preprocess' must be"),
        "nan_weights.npz": (weights(value=np.nan), "NaN or infinite"),
        "complex.npz": (weights(dtype=np.complex64), "complex64"),
    }
    for name, (change, fragment) in cases.items():
        path = tampered(tmp_path, name, change)
        assert_clean_error(run("evaluate", path, "--dataset", "digits"), name, fragment)
        assert_clean_error(run("predict", path, "x.png"), name, fragment)


def test_tampered_header_json(tmp_path):
    good = tiny_model(tmp_path)
    with np.load(good, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    for name, text in {
        "deep.npz": "[" * 5000 + "]" * 5000,
        "dup.npz": '{"format": "cnnkit-model", "format": "x"}',
        "bigint.npz": '{"format": "cnnkit-model", "format_version": ' + "9" * 5000 + "}",
        "list.npz": "[1, 2]",
    }.items():
        arrays["header"] = np.array(text)
        np.savez(tmp_path / name, **arrays)
        assert_clean_error(run("evaluate", tmp_path / name), name)


def test_wrong_kinds_of_files(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros(3))
    assert_clean_error(run("evaluate", tmp_path / "plain.npy"), "single .npy array")
    np.savez(tmp_path / "k.npz", w=np.ones((3, 3)))
    os.replace(tmp_path / "k.npz", tmp_path / "k.npy")
    (tmp_path / "in.png").write_bytes(_png(np.zeros((8, 8), np.uint8)))
    assert_clean_error(
        run("filter", tmp_path / "in.png", "-k", tmp_path / "k.npy", "-o", tmp_path / "o.png"),
        "an .npz archive",
    )
    with zipfile.ZipFile(tmp_path / "text.npz", "w") as archive:
        archive.writestr("x.txt", "hello")
    assert_clean_error(run("evaluate", tmp_path / "text.npz"), "not a .npy array")
    assert_clean_error(
        run("train", "-d", "npz", "--data-dir", tmp_path / "text.npz", "-o", tmp_path / "m.npz"),
        "not a .npy array",
    )
    os.mkfifo(tmp_path / "pipe.png")
    model = tiny_model(tmp_path)
    for args in (
        ("filter", tmp_path / "pipe.png", "-k", "box", "-o", tmp_path / "o.png"),
        ("predict", model, tmp_path / "pipe.png"),
        ("visualize", model, "--activations", tmp_path / "pipe.png", tmp_path / "o.png"),
        (
            "receptive-field",
            "lenet5",
            "--plot",
            tmp_path / "o.png",
            "--image",
            tmp_path / "pipe.png",
        ),
    ):
        assert_clean_error(run(*args, budget=10), "not a regular file")


def test_decompression_bombs_in_every_command(tmp_path):
    from test_safety_io import png_header_only

    png_header_only(tmp_path / "bomb.png", 20000, 20000)
    model = tiny_model(tmp_path)
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "b").mkdir()
    png_header_only(tmp_path / "data" / "a" / "bomb.png", 20000, 20000)
    for args in (
        ("filter", tmp_path / "bomb.png", "-k", "box", "-o", tmp_path / "o.png"),
        ("predict", model, tmp_path / "bomb.png"),
        ("visualize", model, "--activations", tmp_path / "bomb.png", tmp_path / "o.png"),
        (
            "receptive-field",
            "lenet5",
            "--plot",
            tmp_path / "o.png",
            "--image",
            tmp_path / "bomb.png",
        ),
        ("train", "-d", "folder", "--data-dir", tmp_path / "data", "-o", tmp_path / "m.npz"),
    ):
        assert_clean_error(run(*args), "400,000,000 pixels", "max_pixels")
    assert not (tmp_path / "o.png").exists()


def test_non_finite_pixels_are_refused(tmp_path):
    pixels = np.ones((8, 8), np.float32)
    pixels[2, 3] = np.inf
    Image.fromarray(pixels, mode="F").save(tmp_path / "inf.tif")
    assert_clean_error(
        run("filter", tmp_path / "inf.tif", "-k", "box", "-o", tmp_path / "o.png"), "1 pixels"
    )
    pixels[2, 3] = np.nan
    Image.fromarray(pixels, mode="F").save(tmp_path / "nan.tif")
    assert_clean_error(run("predict", tiny_model(tmp_path), tmp_path / "nan.tif"), "NaN")


def test_markup_in_user_text_is_printed_as_is(tmp_path):
    for name in ("[/x].png", "photo [a].png", "pic:x:.png", "[bold]b[/bold].png"):
        result = run("filter", tmp_path / name, "-k", "box", "-o", tmp_path / "o.png")
        assert_clean_error(result, f"{tmp_path / name}: no ")


def test_spec_files(tmp_path):
    (tmp_path / "bom.txt").write_text("\ufeffinput 1 8 8\nconv 2 k=3\n", encoding="utf-8")
    assert spec.parse(str(tmp_path / "bom.txt")).layers[0].kind == "conv"
    (tmp_path / "latin.txt").write_bytes("# café\ninput 1 8 8\nfc 2\n".encode("latin-1"))
    assert_clean_error(run("shape", tmp_path / "latin.txt"), "latin.txt", "not UTF-8")
    (tmp_path / "deep.json").write_text("[" * 3000 + "]" * 3000)
    assert_clean_error(run("shape", tmp_path / "deep.json"), "nested too deeply")
    (tmp_path / "dup.json").write_text('[{"layer": "input", "shape": [1, 8, 8], "shape": [1]}]')
    assert_clean_error(run("shape", tmp_path / "dup.json"), "given twice")
    assert_clean_error(run("shape", "input 1 8 8; conv 1 k=3 k=5"), "k given twice")
    assert_clean_error(run("shape", "input 1 8 8; conv 2 k=" + "9" * 320), "<= 2,147,483,647")
    assert_clean_error(run("shape", "input 1 8 8; dropout " + "9" * 320), "finite number")
    big = run("shape", "input 1 8 8; fc 1000000000")
    assert big.exit_code == 0 and "65,000,000,000" in big.stdout.replace("\n", "")


def test_signal_files(tmp_path):
    (tmp_path / "long.csv").write_text("v\n" + "1" * 200_000 + "\n2\n")
    assert_clean_error(
        run("filter", tmp_path / "long.csv", "-k", "box:3", "-o", tmp_path / "o.csv"),
        "long.csv",
    )
    (tmp_path / "bom.csv").write_bytes("\ufeff1\n2\n3\n4\n".encode())
    assert io.load(tmp_path / "bom.csv").data.tolist() == [[1.0, 2.0, 3.0, 4.0]]
    with wave.open(str(tmp_path / "ok.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.arange(16, dtype="<i2").tobytes())
    raw = bytearray((tmp_path / "ok.wav").read_bytes())
    raw[24:28] = struct.pack("<I", 0)  # sample rate 0
    (tmp_path / "rate0.wav").write_bytes(bytes(raw))
    assert_clean_error(
        run("filter", tmp_path / "rate0.wav", "-k", "box:3", "-o", tmp_path / "o.wav"),
        "sample rate of 0",
    )
    with pytest.raises(ValueError, match="rate must be"):
        io.save_wav(tmp_path / "o.wav", np.zeros((1, 4)), 0, 2)


def test_train_outputs_are_checked_before_training(tmp_path):
    base = ["train", "--arch", "input 1 8 8; conv 2 k=3; relu; fc 10", "--epochs", "1"]
    assert_clean_error(run(*base, "-o", tmp_path / "model.txt"), "model.txt", ".npz")
    same = tmp_path / "m.npz"
    assert_clean_error(run(*base, "-o", same, "--checkpoint", same), "same file")
    assert_clean_error(run(*base, "-o", "/dev/null"), ".npz")
    (tmp_path / "dev.npz").symlink_to("/dev/null")
    assert_clean_error(run(*base, "-o", tmp_path / "dev.npz"), "not a regular file")
    assert_clean_error(run(*base, "-o", tmp_path / "nope" / "m.npz"), "nope")
    assert_clean_error(run(*base, "--weight-decay", "nan", "-o", same), "--weight-decay")
    assert not same.exists()


def test_sigterm_during_training_keeps_the_checkpoint(tmp_path):
    """SIGTERM after the first epoch: checkpoint and model written, exit 143, resume hint."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = (
        "import os, signal, sys\n"
        "from cnnkit import train\n"
        "real = train.save_checkpoint\n"
        "def save(*a, **k):\n"
        "    real(*a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "train.save_checkpoint = save\n"
        "sys.argv = ['cnnkit', *sys.argv[1:]]\n"
        "from cnnkit.cli.app import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "train", "--epochs", "3", "-o", "m.npz"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(root)),
    )
    assert done.returncode == 143, done.stderr
    assert "Traceback" not in done.stderr
    assert "--resume m.ckpt.npz" in done.stderr
    header, _ = read_model_file(tmp_path / "m.ckpt.npz")
    assert header["checkpoint"]["epoch"] == 1
    assert (tmp_path / "m.npz").is_file()
    assert not [p for p in tmp_path.iterdir() if ".cnnkit-" in p.name]


def test_api_edges():
    x = np.ones((1, 1, 3, 3))
    w = np.ones((1, 1, 3, 3))
    for method in ("loop", "im2col"):
        assert ops.conv2d(x, w, stride=2**63, method=method).item() == 9.0
        assert ops.conv2d(x, w, stride=10**30, method=method).item() == 9.0
    with pytest.raises(ValueError, match="kernel 30"):
        geometry.conv_output_size(8, 30)
    with pytest.raises(ValueError, match="stride"):
        geometry.conv_output_size(8, 3, stride=0)
    with pytest.raises(ValueError, match="stride"):
        ops.conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match="ceil_mode"):
        ops.max_pool2d(x, 3, ceil_mode="no")
    with pytest.raises(ValueError, match="flip"):
        ops.conv2d(x, w, flip="yes")
    with pytest.raises(ValueError, match="padding"):
        ops.conv2d(x, w, padding=10**30)
    with pytest.raises(ValueError, match="n must be an integer"):
        geometry.conv_output_size(True, 1)


# ------------------------------------------------------------------ property-based tests


def _png(pixels: np.ndarray) -> bytes:
    import io as stdio

    buffer = stdio.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_bytes(fmt: str) -> bytes:
    import io as stdio

    rng = np.random.default_rng(SEED)
    buffer = stdio.BytesIO()
    Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def _mutate(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    raw = bytearray(data[: max(cut, 0)] if cut < len(data) else data)
    for position, value in flips:
        if raw:
            raw[position % len(raw)] = value
    return bytes(raw)


MUTATION = st.tuples(
    st.integers(0, 4000),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
)


@FAST
@given(fmt=st.sampled_from(["PNG", "GIF", "BMP", "TIFF", "JPEG", "WEBP"]), change=MUTATION)
def test_damaged_images_load_or_fail_cleanly(tmp_path_factory, fmt, change):
    path = tmp_path_factory.mktemp("img") / f"x.{fmt.lower()}"
    path.write_bytes(_mutate(_image_bytes(fmt), *change))
    try:
        loaded = io.load(path)
    except ValueError as exc:
        assert str(path) in str(exc)
        return
    assert loaded.data.dtype == np.float32 and np.isfinite(loaded.data).all()


def _wav_bytes() -> bytes:
    import io as stdio

    buffer = stdio.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.arange(64, dtype="<i2").tobytes())
    return buffer.getvalue()


@FAST
@given(change=MUTATION)
def test_damaged_wav_loads_or_fails_cleanly(tmp_path_factory, change):
    path = tmp_path_factory.mktemp("wav") / "x.wav"
    path.write_bytes(_mutate(_wav_bytes(), *change))
    try:
        loaded = io.load(path)
    except ValueError as exc:
        assert str(path) in str(exc)
        return
    assert loaded.sample_rate >= 1 and loaded.data.shape[0] >= 1


@FAST
@given(change=MUTATION, shape=st.sampled_from([(5,), (4, 3), (3, 4, 2)]))
def test_damaged_npy_loads_or_fails_cleanly(tmp_path_factory, change, shape):
    import io as stdio

    buffer = stdio.BytesIO()
    np.save(buffer, np.arange(np.prod(shape), dtype=np.float32).reshape(shape))
    path = tmp_path_factory.mktemp("npy") / "x.npy"
    path.write_bytes(_mutate(buffer.getvalue(), *change))
    try:
        loaded = io.load(path)
    except ValueError as exc:
        assert str(path) in str(exc)
        return
    assert np.isfinite(loaded.data).all()


@FAST
@given(text=st.text(max_size=300))
def test_csv_text_loads_or_fails_cleanly(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("csv") / "x.csv"
    path.write_text(text, encoding="utf-8")
    try:
        loaded = io.load(path)
    except ValueError:
        return
    assert loaded.data.ndim == 2 and np.isfinite(loaded.data).all()


SPEC_WORDS = st.sampled_from(
    ["input", "conv", "pool", "fc", "relu", "k=3", "s=2", "p=1", "k=", "1", "8", "0", "-3",
     "9" * 40, "1e400", "nan", "max", ";", "\n", "=", "x", "k=3x3", "\ufeff", "#"]
)  # fmt: skip


@FAST
@given(words=st.lists(SPEC_WORDS, max_size=14))
def test_spec_text_parses_or_fails_cleanly(words):
    text = " ".join(words)
    try:
        arch = spec.parse_text(text)
        spec.infer(arch)
    except ValueError:
        return


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
HEADER_KEYS = st.sampled_from(
    ["spec", "input_shape", "dtype", "mean", "std", "class_names", "preprocess", "checkpoint",
     "split_seed", "val_fraction", "format_version", "dataset", "data_dir"]
)  # fmt: skip


@settings(FAST, max_examples=60)
@given(key=HEADER_KEYS, value=JSON_VALUES)
def test_tampered_model_headers_load_or_fail_cleanly(tmp_path_factory, key, value):
    folder = tmp_path_factory.mktemp("model")
    path = tampered(folder, "t.npz", lambda h, a: h.__setitem__(key, value))
    try:
        model, header = load_model(path)
    except ValueError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert model.num_outputs == 3


GEOMETRY_INTS = st.one_of(
    st.integers(-3, 12), st.sampled_from([2**31, 2**63, 10**30]), st.booleans()
)


def _reference_conv(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    xp = np.pad(x, padding) if padding < 50 else None
    size = (x.shape[0] + 2 * padding - w.shape[0]) // stride + 1
    out = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            for a in range(w.shape[0]):
                for b in range(w.shape[1]):
                    r, c = i * stride + a - padding, j * stride + b - padding
                    if 0 <= r < x.shape[0] and 0 <= c < x.shape[1]:
                        out[i, j] += x[r, c] * w[a, b]
    assert xp is None or xp.shape[0] == x.shape[0] + 2 * padding
    return out


@FAST
@given(
    n=GEOMETRY_INTS,
    k=GEOMETRY_INTS,
    stride=GEOMETRY_INTS,
    padding=GEOMETRY_INTS,
    method=st.sampled_from(["loop", "im2col"]),
)
def test_geometry_and_conv2d_are_right_or_refused(n, k, stride, padding, method):
    try:
        size = geometry.conv_output_size(n, k, stride, padding)
    except ValueError as exc:
        assert any(name in str(exc) for name in ("n ", "kernel", "stride", "padding"))
        return
    assert size >= 1
    if n > 12 or k > 12 or padding > 12:
        return
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((n, n))
    w = rng.standard_normal((k, k))
    got = ops.conv2d(x[None, None], w[None, None], stride=stride, padding=padding, method=method)
    np.testing.assert_allclose(got[0, 0], _reference_conv(x, w, stride, padding), atol=1e-10)


@FAST
@given(text=st.text(max_size=40))
def test_kernel_specs_parse_or_fail_cleanly(text):
    if os.sep in text or text.strip().lower().endswith((".npy", ".txt", ".csv")):
        return  # names of files: covered by the corpus
    try:
        kernel = filters.parse_kernel(text)
    except ValueError:
        return
    assert kernel.weights.ndim == 2 and max(kernel.weights.shape) <= filters.MAX_KERNEL_SIDE


def _idx_bytes(compressed: bool) -> bytes:
    import gzip

    rng = np.random.default_rng(SEED)
    images = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    raw = bytes([0, 0, 0x08, 3]) + struct.pack(">III", 3, 4, 4) + images.tobytes()
    return gzip.compress(raw, mtime=0) if compressed else raw


@FAST
@given(change=MUTATION, compressed=st.booleans())
def test_damaged_idx_reads_or_fails_cleanly(tmp_path_factory, change, compressed):
    from cnnkit.data.idx import read_idx

    path = tmp_path_factory.mktemp("idx") / "train-images-idx3-ubyte"
    path.write_bytes(_mutate(_idx_bytes(compressed), *change))
    try:
        data = read_idx(path)
    except ValueError as exc:
        assert str(path) in str(exc)
        return
    assert data.size * data.itemsize <= 10**6


def _npz_bytes() -> bytes:
    import io as stdio

    buffer = stdio.BytesIO()
    rng = np.random.default_rng(SEED)
    np.savez_compressed(buffer, x=rng.integers(0, 256, (6, 4, 4), np.uint8), y=np.arange(6) % 2)
    return buffer.getvalue()


@FAST
@given(change=MUTATION)
def test_damaged_npz_data_sets_load_or_fail_cleanly(tmp_path_factory, change):
    from cnnkit.data.npz import load_npz_raw

    path = tmp_path_factory.mktemp("npz") / "d.npz"
    path.write_bytes(_mutate(_npz_bytes(), *change))
    try:
        x, y, names, _ = load_npz_raw(path)
    except ValueError as exc:
        assert str(path) in str(exc)
        return
    assert len(x) == len(y) and len(names) > int(y.max())
