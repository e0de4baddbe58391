"""cnnkit.io: images of every pillow mode, .npy layouts, CSV/TXT columns, WAV widths, the
display mappings and atomic writes. Inputs are made with numpy and written with pillow /
the stdlib, so every loaded value is checked against the array it came from."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from PIL import Image

from cnnkit import io


def _pixels(rng, shape, high=256, dtype=np.uint8):
    return rng.integers(0, high, size=shape).astype(dtype)


def test_gray_rgb_and_formats(rng, tmp_path):
    gray = _pixels(rng, (6, 7))
    rgb = _pixels(rng, (6, 7, 3))
    for suffix in (".png", ".bmp", ".tif", ".gif"):
        p = tmp_path / f"g{suffix}"
        Image.fromarray(gray).save(p)
        loaded = io.load(p)
        assert loaded.kind == "image" and loaded.maxval == 255
        np.testing.assert_array_equal(loaded.data, gray[None].astype(float))
    p = tmp_path / "c.png"
    Image.fromarray(rgb).save(p)
    loaded = io.load(p)
    assert loaded.data.shape == (3, 6, 7) and loaded.alpha is None
    np.testing.assert_array_equal(loaded.data, np.moveaxis(rgb, 2, 0))
    Image.fromarray(rgb).save(tmp_path / "c.webp", lossless=True)
    np.testing.assert_array_equal(io.load(tmp_path / "c.webp").data, np.moveaxis(rgb, 2, 0))
    # JPEG is lossy: the load is pillow's decode, close to the source
    Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).save(tmp_path / "j.jpg", quality=95)
    assert np.abs(io.load(tmp_path / "j.jpg").data - 120).max() <= 2


def test_alpha_is_kept_aside(rng, tmp_path):
    rgba = _pixels(rng, (5, 4, 4))
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    loaded = io.load(tmp_path / "a.png")
    np.testing.assert_array_equal(loaded.data, np.moveaxis(rgba[:, :, :3], 2, 0))
    np.testing.assert_array_equal(loaded.alpha, rgba[:, :, 3])
    la = _pixels(rng, (5, 4, 2))
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    loaded = io.load(tmp_path / "la.png")
    np.testing.assert_array_equal(loaded.data[0], la[:, :, 0])
    np.testing.assert_array_equal(loaded.alpha, la[:, :, 1])


def test_palette_bilevel_and_16_bit(rng, tmp_path):
    colours = np.array([[255, 0, 0], [0, 128, 255], [10, 20, 30], [200, 200, 0]], np.uint8)
    index = rng.integers(0, 4, size=(6, 5))
    rgb = colours[index]
    Image.fromarray(rgb).quantize(colors=4, method=Image.Quantize.MEDIANCUT).save(
        tmp_path / "p.png"
    )
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(io.load(tmp_path / "p.png").data, np.moveaxis(rgb, 2, 0))
    # palette with a transparent entry -> RGBA, alpha kept aside
    pal = Image.fromarray(index.astype(np.uint8), "P")
    pal.putpalette(colours.reshape(-1).tolist())
    pal.save(tmp_path / "t.png", transparency=2)
    loaded = io.load(tmp_path / "t.png")
    np.testing.assert_array_equal(loaded.alpha, np.where(index == 2, 0, 255))
    bits = rng.integers(0, 2, size=(4, 6)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    np.testing.assert_array_equal(io.load(tmp_path / "b.png").data[0], bits * 255.0)
    deep = _pixels(rng, (5, 6), high=65536, dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    loaded = io.load(tmp_path / "d.png")
    assert loaded.maxval == 65535
    np.testing.assert_array_equal(loaded.data[0], deep)


def test_gif_first_frame(rng, tmp_path):
    a, b = _pixels(rng, (4, 4)), _pixels(rng, (4, 4))
    frames = [Image.fromarray(a).convert("P"), Image.fromarray(b).convert("P")]
    frames[0].save(tmp_path / "m.gif", save_all=True, append_images=frames[1:])
    assert Image.open(tmp_path / "m.gif").n_frames == 2
    loaded = io.load(tmp_path / "m.gif")
    assert loaded.data.shape == (1, 4, 4)  # a gray palette stays gray
    np.testing.assert_array_equal(loaded.data[0], a)
    assert not np.array_equal(a, b)


def test_bad_images(tmp_path):
    good = tmp_path / "g.png"
    Image.fromarray(np.zeros((40, 40), np.uint8) + 7).save(good)
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png: cannot read as an image"):
        io.load(tmp_path / "cut.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="not an image"):
        io.load(tmp_path / "text.png")
    with pytest.raises(ValueError, match="unknown input format '.xyz'"):
        io.load(tmp_path / "a.xyz")
    with pytest.raises(FileNotFoundError):
        io.load(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="^column applies"):
        io.load(good, column="x")


def test_arrays(rng, tmp_path):
    cases = {
        "hw": (rng.random((5, 6)), lambda a: a[None]),
        "hwc": (rng.random((5, 6, 3)), lambda a: np.moveaxis(a, 2, 0)),
        "chw": (rng.random((5, 6, 7)), lambda a: a),
        # ambiguous (3, 5, 3): the last-dimension rule wins, channels-last
        "amb": (rng.random((3, 5, 3)), lambda a: np.moveaxis(a, 2, 0)),
    }
    for name, (arr, expect) in cases.items():
        np.save(tmp_path / f"{name}.npy", arr)
        loaded = io.load(tmp_path / f"{name}.npy")
        assert loaded.kind == "array"
        np.testing.assert_array_equal(loaded.data, expect(arr))
    np.save(tmp_path / "u8.npy", _pixels(rng, (4, 4)))
    assert io.load(tmp_path / "u8.npy").maxval == 255
    np.save(tmp_path / "sig.npy", np.arange(5.0))
    sig = io.load(tmp_path / "sig.npy")
    assert sig.kind == "signal" and sig.data.shape == (1, 5)
    for name, arr, message in [
        ("4d", np.zeros((1, 2, 3, 4)), "got shape"),
        ("str", np.array(["a"]), "numeric"),
        ("nan", np.array([[1.0, np.nan]]), "NaN"),
        ("empty", np.zeros((0, 3)), "empty"),
    ]:
        np.save(tmp_path / f"{name}.npy", arr)
        with pytest.raises(ValueError, match=message):
            io.load(tmp_path / f"{name}.npy")
    np.save(tmp_path / "obj.npy", np.array([None]), allow_pickle=True)
    with pytest.raises(ValueError, match="numeric"):
        io.load(tmp_path / "obj.npy")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "hw.npy").read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot read"):
        io.load(tmp_path / "cut.npy")


def test_csv_and_txt_signals(tmp_path):
    (tmp_path / "one.csv").write_text("value\n1\n2.5\n-3\n")
    np.testing.assert_array_equal(io.load(tmp_path / "one.csv").data, [[1, 2.5, -3]])
    (tmp_path / "bare.txt").write_text("# comment\n1\n\n2\n3e-1\n")
    np.testing.assert_array_equal(io.load(tmp_path / "bare.txt").data, [[1, 2, 0.3]])
    (tmp_path / "multi.csv").write_text("t,left,right\n0,1,10\n1,2,20\n2,3,30\n")
    with pytest.raises(ValueError, match=r"3 columns \(t, left, right\).*with column NAME"):
        io.load(tmp_path / "multi.csv")
    np.testing.assert_array_equal(io.load(tmp_path / "multi.csv", "right").data, [[10, 20, 30]])
    np.testing.assert_array_equal(io.load(tmp_path / "multi.csv", "1").data, [[1, 2, 3]])
    with pytest.raises(ValueError, match="'middle' not found"):
        io.load(tmp_path / "multi.csv", "middle")
    with pytest.raises(ValueError, match="columns 0..2"):
        io.load(tmp_path / "multi.csv", "5")
    (tmp_path / "ws.txt").write_text("1 10\n2 20\n")
    np.testing.assert_array_equal(io.load(tmp_path / "ws.txt", "1").data, [[10, 20]])
    (tmp_path / "bad.csv").write_text("v\n1\nabc\n")
    with pytest.raises(ValueError, match=r"line 3, column 'v': 'abc' is not a number"):
        io.load(tmp_path / "bad.csv")
    (tmp_path / "short.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(ValueError, match="line 3 has no column 'b'"):
        io.load(tmp_path / "short.csv", "b")
    (tmp_path / "empty.csv").write_text("value\n")
    with pytest.raises(ValueError, match="no values"):
        io.load(tmp_path / "empty.csv")


def _write_wav(path, ints: np.ndarray, width: int, rate: int = 8000) -> None:
    """(C, L) integer samples -> PCM WAV, written with the stdlib only."""
    frames = ints.T.reshape(-1)
    if width == 1:
        raw = (frames + 128).astype(np.uint8).tobytes()
    elif width == 3:
        raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in frames)
    else:
        raw = frames.astype(f"<i{width}").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(ints.shape[0])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)


@pytest.mark.parametrize("width, channels", [(1, 1), (2, 2), (3, 1), (4, 2)])
def test_wav_roundtrip(rng, tmp_path, width, channels):
    full = 1 << (8 * width - 1)
    ints = rng.integers(-full, full, size=(channels, 50))
    _write_wav(tmp_path / "in.wav", ints, width, rate=22050)
    loaded = io.load(tmp_path / "in.wav")
    assert (loaded.sample_rate, loaded.sample_width, loaded.maxval) == (22050, width, full)
    np.testing.assert_array_equal(loaded.data, ints)
    # writing clips to the sample range and rounds
    out = loaded.data.copy()
    out[0, 0], out[0, 1], out[0, 2] = 10.0 * full, -10.0 * full, 2.6
    io.save_wav(tmp_path / "out.wav", out, 22050, width)
    back = io.load(tmp_path / "out.wav")
    expect = np.clip(np.round(out), -full, full - 1)
    np.testing.assert_array_equal(back.data, expect)
    assert back.sample_rate == 22050


def test_truncated_wav(rng, tmp_path):
    _write_wav(tmp_path / "w.wav", rng.integers(-100, 100, size=(1, 400)), 2)
    data = (tmp_path / "w.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:300])
    with pytest.raises(ValueError, match="truncated WAV"):
        io.load(tmp_path / "cut.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF1234")
    with pytest.raises(ValueError, match="cannot read as WAV"):
        io.load(tmp_path / "junk.wav")


def test_save_and_compose(rng, tmp_path):
    gray = _pixels(rng, (4, 5))
    alpha = _pixels(rng, (4, 5))
    with_alpha = io.attach_alpha(gray, alpha)
    assert with_alpha.shape == (4, 5, 2)
    assert io.attach_alpha(gray[:3], alpha) is not None
    assert io.attach_alpha(gray[:3], alpha).shape == (3, 5)  # size changed: alpha dropped
    io.save_image(tmp_path / "a.png", with_alpha)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), with_alpha)
    io.save_image(tmp_path / "a.jpg", io.attach_alpha(np.dstack([gray] * 3), alpha))
    assert Image.open(tmp_path / "a.jpg").mode == "RGB"
    pair = io.side_by_side(gray, np.dstack([gray[:2]] * 3), gap=3)
    assert pair.shape == (4, 5 + 3 + 5, 3)
    np.testing.assert_array_equal(pair[:, :5, 0], gray)
    np.testing.assert_array_equal(pair[1:3, 8:, 1], gray[:2])  # vertically centred
    assert (pair[0, 8:] == 255).all()
    io.save_array(tmp_path / "x.npy", np.arange(3.0))
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), [0, 1, 2])
    io.save_signal_csv(tmp_path / "s.csv", np.array([[1.5, 2.0], [3.0, 4.25]]), ["a", "b"])
    assert (tmp_path / "s.csv").read_text() == "a,b\n1.5,3\n2,4.25\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.jpg",
        "a.png",
        "s.csv",
        "x.npy",
    ]  # no temporary files left


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.save_array(tmp_path / "missing" / "x.npy", np.zeros(2))
    with pytest.raises(TypeError):
        io.save_image(tmp_path / "bad.png", np.zeros((2, 2), dtype=object))
    assert list(tmp_path.iterdir()) == []


def test_to_gray():
    rgb = np.array([[[10.0]], [[20.0]], [[30.0]]])
    np.testing.assert_allclose(io.to_gray(rgb), [[[0.299 * 10 + 0.587 * 20 + 0.114 * 30]]])
    one = np.ones((1, 2, 2))
    assert io.to_gray(one) is one


def test_float_tiff_and_cmyk(rng, tmp_path):
    f = (rng.random((4, 5)) * 3).astype(np.float32)
    Image.fromarray(f, "F").save(tmp_path / "f.tif")
    loaded = io.load(tmp_path / "f.tif")
    np.testing.assert_array_equal(loaded.data[0], f)
    assert loaded.maxval == pytest.approx(f.max())
    cmyk = Image.new("CMYK", (3, 2), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(tmp_path / "k.tif")
    loaded = io.load(tmp_path / "k.tif")
    assert loaded.data.shape == (3, 2, 3)
    np.testing.assert_array_equal(loaded.data[:, 0, 0], [255, 0, 0])
