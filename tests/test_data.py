"""Tests for cnnkit.data: every loader on data the tests create, every error path.

Oracles: scikit-learn's own copy of the digits (when installed), IDX files written here with
``struct`` straight from the format description, pillow resizes done independently, plain
numpy for statistics, and second-moment orientation estimates for the generated shapes.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.data import (
    DATASETS,
    builtin_preprocess,
    channel_stats,
    load_dataset,
    load_image_for_model,
    normalize,
)
from cnnkit.data.dataset import build_dataset, stratified_split
from cnnkit.data.digits import DIGITS_FILE
from cnnkit.data.idx import read_idx
from cnnkit.data.images import fit_content
from cnnkit.data.shapes import SHAPE_CLASSES, generate_shapes

DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def raw(ds, split: str) -> np.ndarray:
    """Undo the normalisation of one split: x * std + mean, per channel."""
    x = getattr(ds, f"x_{split}").astype(np.float64)
    return x * ds.std.reshape(-1, 1, 1) + ds.mean.reshape(-1, 1, 1)


def sorted_rows(x: np.ndarray) -> np.ndarray:
    flat = np.asarray(x).reshape(len(x), -1)
    return flat[np.lexsort(flat.T[::-1])]


# ---------------------------------------------------------------------------- digits


def test_shipped_digits_file_matches_documentation():
    with np.load(DIGITS_FILE, allow_pickle=False) as data:
        images, labels = data["images"], data["labels"]
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (1797,) and labels.dtype == np.uint8
    assert images.min() == 0 and images.max() == 16
    assert np.bincount(labels, minlength=10).tolist() == DIGIT_COUNTS


def test_shipped_digits_equal_sklearns_copy():
    datasets = pytest.importorskip("sklearn.datasets")
    ref = datasets.load_digits()
    with np.load(DIGITS_FILE, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["images"], ref.images.astype(np.uint8))
        np.testing.assert_array_equal(data["labels"], ref.target)


def test_digits_default_split_sizes_and_stratification():
    ds = load_dataset("digits")
    assert ds.input_shape == (1, 8, 8) and ds.class_names == [str(d) for d in range(10)]
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (1293, 144, 360)
    for x in (ds.x_train, ds.x_val, ds.x_test):
        assert x.dtype == np.float32 and x.shape[1:] == (1, 8, 8)
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert y.dtype == np.int64
    test_counts = np.bincount(ds.y_test, minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * np.array(DIGIT_COUNTS)) < 1)
    rest = np.array(DIGIT_COUNTS) - test_counts
    assert np.all(np.abs(np.bincount(ds.y_val, minlength=10) - 0.1 * rest) < 1)
    # 360 is also what scikit-learn's stratified train_test_split holds out
    model_selection = pytest.importorskip("sklearn.model_selection")
    labels = np.concatenate([np.full(c, k) for k, c in enumerate(DIGIT_COUNTS)])
    _, held = model_selection.train_test_split(
        labels, test_size=0.2, stratify=labels, random_state=0
    )
    assert len(held) == len(ds.y_test)


def test_digits_splits_partition_the_raw_images():
    ds = load_dataset("digits", val_fraction=0.25, seed=3)
    with np.load(DIGITS_FILE, allow_pickle=False) as data:
        images, labels = data["images"].astype(np.float64), data["labels"]
    parts = [raw(ds, s) for s in ("train", "val", "test")]
    # normalisation is undone exactly enough to recover the 0..16 integers
    for part in parts:
        assert np.allclose(part, np.round(part), atol=1e-4)
    # pair each image with its label, then compare the multisets
    got = np.concatenate(
        [
            np.concatenate([np.round(p).reshape(len(p), -1), y[:, None]], axis=1)
            for p, y in zip(parts, (ds.y_train, ds.y_val, ds.y_test))
        ]
    )
    want = np.concatenate([images.reshape(1797, -1), labels[:, None]], axis=1)
    np.testing.assert_array_equal(sorted_rows(got), sorted_rows(want))


def test_digits_statistics_come_from_train_only():
    ds = load_dataset("digits", seed=1)
    train = raw(ds, "train")
    assert ds.mean.shape == (1,) and ds.std.shape == (1,)
    assert math.isclose(float(ds.mean[0]), train.mean(), rel_tol=1e-5)
    assert math.isclose(float(ds.std[0]), train.std(), rel_tol=1e-5)
    assert abs(ds.x_train.mean()) < 1e-5 and abs(ds.x_train.std() - 1) < 1e-4
    # the test set is normalised with the *training* statistics, so it is not exactly 0/1
    test = raw(ds, "test")
    assert not math.isclose(float(ds.mean[0]), test.mean(), rel_tol=1e-4)


def test_split_is_deterministic_by_seed():
    a, b, c = (load_dataset("digits", seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_test, c.x_test)


def test_val_fraction_zero_keeps_all_1437_for_training():
    ds = load_dataset("digits", val_fraction=0.0)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (1437, 0, 360)
    assert ds.x_val.shape == (0, 1, 8, 8)


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.2, 0.5, 0.93])
def test_stratified_split_partitions_and_shares(rng, fraction):
    y = rng.integers(0, 5, size=103)
    kept, taken = stratified_split(y, fraction, np.random.default_rng(0))
    assert len(taken) == math.ceil(fraction * 103 - 1e-9)
    np.testing.assert_array_equal(np.sort(np.concatenate([kept, taken])), np.arange(103))
    counts = np.bincount(y, minlength=5)
    shares = np.bincount(y[taken], minlength=5)
    assert np.all(np.abs(shares - fraction * counts) < 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_fraction": 1.0}, "test_fraction must be in \\[0, 1\\)"),
        ({"val_fraction": -0.1}, "val_fraction must be in \\[0, 1\\)"),
        ({"val_fraction": "half"}, "val_fraction must be a number"),
        ({"seed": "x"}, "seed must be an integer"),
        ({"size": 0}, "size must be a positive int"),
        ({"size": (8, 8, 8)}, "size must be a positive int"),
        ({"colour": 1}, "digits: unknown option 'colour' \\(accepted: none\\)"),
    ],
)
def test_bad_common_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_dataset("digits", **kwargs)


def test_digits_resized_with_size():
    ds = load_dataset("digits", size=16, val_fraction=0.0, test_fraction=0.0)
    assert ds.input_shape == (1, 16, 16)
    with np.load(DIGITS_FILE, allow_pickle=False) as data:
        first = data["images"][0].astype(np.float32)
    want = np.asarray(Image.fromarray(first).resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(raw(ds, "train")[0, 0], want, atol=1e-4)


# ---------------------------------------------------------------------------- names


def test_unknown_dataset_suggests_closest():
    with pytest.raises(ValueError, match="unknown dataset 'digit'; did you mean 'digits'"):
        load_dataset("digit")
    with pytest.raises(ValueError, match="did you mean 'fashion-mnist'"):
        load_dataset("fashion-mnst")
    with pytest.raises(ValueError, match="unknown dataset 'zzz' \\(known: digits, shapes"):
        load_dataset("zzz")


def test_dataset_names_are_forgiving_about_case_and_underscores(tmp_path):
    assert "fashion-mnist" in DATASETS
    with pytest.raises(ValueError, match="fashion-mnist needs data_dir"):
        load_dataset("Fashion_MNIST")


# ---------------------------------------------------------------------------- normalize


def test_normalize_matches_numpy(rng):
    x = rng.normal(3, 2, size=(4, 3, 5, 6))
    mean, std = np.array([1.0, 2.0, 3.0]), np.array([0.5, 2.0, 4.0])
    got = normalize(x, mean, std)
    want = np.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], axis=1)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(normalize(x[0], mean, std), want[0], rtol=1e-6, atol=1e-6)


def test_normalize_errors():
    x = np.zeros((2, 3, 4, 4))
    with pytest.raises(ValueError, match="one value per channel \\(3\\)"):
        normalize(x, [0.0], [1.0])
    with pytest.raises(ValueError, match="std must be finite and positive"):
        normalize(x, [0, 0, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="must be \\(N, C, H, W\\) or \\(C, H, W\\)"):
        normalize(np.zeros((4, 4)), [0.0], [1.0])


def test_channel_stats_match_numpy_and_guard_constant_channels(rng):
    x = rng.normal(size=(5, 2, 3, 3))
    x[:, 1] = 7.0
    mean, std = channel_stats(x)
    np.testing.assert_allclose(mean, [x[:, 0].mean(), 7.0], rtol=1e-6)
    np.testing.assert_allclose(std, [x[:, 0].std(), 1.0], rtol=1e-6)


def test_too_few_samples_for_a_training_set():
    x = np.zeros((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="leave no training images"):
        build_dataset("tiny", x, np.zeros(1), ["a"], seed=0, val_fraction=0, test_fraction=0.5)


# ---------------------------------------------------------------------------- shapes


def orientation(image: np.ndarray) -> tuple[float, float]:
    """Angle in degrees (0..180, counter-clockwise, rows grow downwards) and elongation of
    the intensity distribution, from its second central moments."""
    rows, cols = np.indices(image.shape) + 0.5
    w = image / image.sum()
    cy, cx = (w * rows).sum(), (w * cols).sum()
    syy = (w * (rows - cy) ** 2).sum()
    sxx = (w * (cols - cx) ** 2).sum()
    sxy = (w * (rows - cy) * (cols - cx)).sum()
    values, vectors = np.linalg.eigh(np.array([[sxx, sxy], [sxy, syy]]))
    vx, vy = vectors[:, 1]
    return math.degrees(math.atan2(-vy, vx)) % 180.0, float(values[1] / values[0])


def test_shapes_are_what_their_labels_say():
    x, y = generate_shapes(count=80, size=32, noise=0.0, seed=4)
    assert x.shape == (80, 1, 32, 32) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [20, 20, 20, 20]
    for image, label in zip(x[:, 0], y):
        angle, elongation = orientation(image.astype(np.float64))
        if label == 3:
            assert elongation < 1.3**2 + 0.05
            continue
        assert elongation > 4
        # distance to the class's nominal angle(s), on the 180-degree circle
        nominal = {0: [0.0], 1: [90.0], 2: [45.0, 135.0]}[int(label)]
        off = min(min(abs(angle - a), 180 - abs(angle - a)) for a in nominal)
        assert off <= 17, (label, angle)


def test_shapes_deterministic_range_and_noise():
    a, ya = generate_shapes(count=12, size=16, noise=0.1, seed=2)
    b, yb = generate_shapes(count=12, size=16, noise=0.1, seed=2)
    c, _ = generate_shapes(count=12, size=16, noise=0.1, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    clean, _ = generate_shapes(count=12, size=16, noise=0.0, seed=2)
    assert (clean == 0).mean() > 0.3 and (a == 0).mean() < (clean == 0).mean()


def test_load_shapes_options():
    ds = load_dataset("shapes", count=40, size=12, noise=0.0, test_fraction=0.25)
    assert ds.input_shape == (1, 12, 12) and ds.class_names == SHAPE_CLASSES
    assert len(ds.y_test) == 10 and len(ds.y_train) + len(ds.y_val) == 30
    assert ds.preprocess["invert"] == "auto"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 3}, "count must be at least 4"),
        ({"size": 4}, "size must be at least 8"),
        ({"noise": -1}, "noise must be a finite number >= 0"),
        ({"size": (16, 12)}, "images are square"),
        ({"limit": 3}, "shapes: unknown option 'limit' \\(accepted: count, noise\\)"),
    ],
)
def test_shapes_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_dataset("shapes", **kwargs)


# ---------------------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file written from the format description: magic, big-endian sizes, data."""
    fmt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += b"".join(struct.pack(">I", n) for n in array.shape)
    return header + np.asarray(array, dtype=fmt).tobytes()


def write_mnist(folder: Path, rng, n_train=30, n_test=12, gz=False, dotted=False, side=6):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        data = idx_bytes(array)
        if dotted:
            name = name.replace("-idx", ".idx")
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize(
    ("code", "dtype"),
    [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32)],
)
def test_read_idx_all_types(tmp_path, rng, code, dtype):
    array = rng.integers(-100, 100, size=(3, 4, 2)).astype(dtype)
    if dtype == np.uint8:
        array = rng.integers(0, 255, size=(3, 4, 2)).astype(dtype)
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(array, code))
    got = read_idx(path)
    assert got.shape == (3, 4, 2) and got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize(("gz", "dotted"), [(False, False), (True, False), (False, True)])
def test_mnist_loads_idx_files(tmp_path, rng, gz, dotted):
    arrays = write_mnist(tmp_path, rng, gz=gz, dotted=dotted)
    ds = load_dataset("mnist", data_dir=tmp_path, val_fraction=0.2)
    assert ds.input_shape == (1, 6, 6) and ds.class_names == [str(d) for d in range(10)]
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (24, 6, 12)
    # the official test set, in file order, on the byte / 255 scale
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    np.testing.assert_allclose(
        raw(ds, "test")[:, 0], arrays["t10k-images-idx3-ubyte"] / 255.0, atol=1e-5
    )
    train = np.concatenate([raw(ds, "train"), raw(ds, "val")])[:, 0] * 255
    assert np.allclose(train, np.round(train), atol=1e-3)
    assert ds.preprocess["native_size"] == [6, 6]


def test_fashion_mnist_subfolder_limit_and_size(tmp_path, rng):
    write_mnist(tmp_path / "fashion-mnist", rng, gz=True)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path, limit=20, size=4, val_fraction=0)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert len(ds.y_train) == 20 and ds.input_shape == (1, 4, 4) and ds.x_test.shape[2:] == (4, 4)


def corrupt(folder: Path, name: str, data: bytes) -> None:
    (folder / name).write_bytes(data)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "t10k-labels-idx1-ubyte").unlink(), "missing t10k-labels-idx1-ubyte"),
        (
            lambda d: corrupt(d, "train-images-idx3-ubyte", b"\x00\x00\x07\x03" + b"\x00" * 12),
            "train-images-idx3-ubyte: not an IDX file \\(magic number 00000703",
        ),
        (
            lambda d: corrupt(d, "train-labels-idx1-ubyte", b"PK\x03\x04xxxx"),
            "not an IDX file \\(magic number 504b0304",
        ),
        (
            lambda d: corrupt(
                d, "train-images-idx3-ubyte", idx_bytes(np.zeros((30, 6, 6), np.uint8))[:-5]
            ),
            "truncated: header says 30x6x6 values \\(1080 bytes\\) but the file has 1075",
        ),
        (
            lambda d: corrupt(
                d, "t10k-images-idx3-ubyte", idx_bytes(np.zeros((12, 6, 6), np.uint8)) + b"!"
            ),
            "has trailing bytes",
        ),
        (
            lambda d: corrupt(d, "train-labels-idx1-ubyte", idx_bytes(np.zeros(29, np.uint8))),
            "train-images-idx3-ubyte has 30 images but train-labels-idx1-ubyte has 29 labels",
        ),
        (
            lambda d: corrupt(d, "train-labels-idx1-ubyte", idx_bytes(np.full(30, 12, np.uint8))),
            "label 12 out of range 0..9",
        ),
        (
            lambda d: corrupt(
                d, "train-images-idx3-ubyte", idx_bytes(np.zeros((30, 36), np.uint8))
            ),
            "expected uint8 images \\(N, rows, cols\\)",
        ),
        (
            lambda d: corrupt(d, "train-images-idx3-ubyte", b"\x1f\x8b\x08\x00garbage"),
            "corrupt gzip data",
        ),
        (
            lambda d: corrupt(d, "t10k-images-idx3-ubyte", b""),
            "not an IDX file \\(magic number empty file",
        ),
    ],
)
def test_mnist_errors(tmp_path, rng, damage, message):
    write_mnist(tmp_path, rng)
    damage(tmp_path)
    with pytest.raises(ValueError, match=message):
        load_dataset("mnist", data_dir=tmp_path)


def test_mnist_needs_a_data_dir(tmp_path):
    with pytest.raises(ValueError, match="^mnist needs data_dir: a folder"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="is not a folder"):
        load_dataset("mnist", data_dir=tmp_path / "nope")
    with pytest.raises(ValueError, match="missing train-images-idx3-ubyte \\(or .*\\.gz\\)"):
        load_dataset("mnist", data_dir=tmp_path)
    write_mnist(tmp_path, np.random.default_rng(0))
    with pytest.raises(ValueError, match="limit must be a positive number"):
        load_dataset("mnist", data_dir=tmp_path, limit=0)


# ---------------------------------------------------------------------------- folder


def save_gray(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode=None).save(path)


def make_folder(root: Path, rng, rgb_in: str | None = None) -> dict[str, list[np.ndarray]]:
    made: dict[str, list[np.ndarray]] = {"cat": [], "dog": []}
    for cls in made:
        for i in range(5):
            h, w = 10 + i, 12 + 2 * i  # different sizes, all resized to one
            if cls == rgb_in and i == 2:
                image = rng.integers(0, 256, (h, w, 3))
            else:
                image = rng.integers(0, 256, (h, w))
            save_gray(root / cls / f"{i}.png", image)
            made[cls].append(image)
    (root / "README.txt").write_text("ignored: not in a class folder")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00junk")
    return made


def test_folder_grayscale_resized_like_pillow(tmp_path, rng):
    made = make_folder(tmp_path, rng)
    ds = load_dataset("folder", data_dir=tmp_path, size=8, val_fraction=0, test_fraction=0)
    assert ds.class_names == ["cat", "dog"] and ds.input_shape == (1, 8, 8)
    assert ds.y_train.tolist() == [0] * 5 + [1] * 5
    got = raw(ds, "train")[:, 0]
    for k, image in enumerate(made["cat"] + made["dog"]):
        want = np.asarray(
            Image.fromarray(image.astype(np.uint8)).resize((8, 8), Image.Resampling.BILINEAR),
            dtype=np.float64,
        )
        # pillow resizes 8-bit images in fixed point and rounds; cnnkit resizes in float
        np.testing.assert_allclose(got[k] * 255, want, atol=1.0)


def test_folder_rgb_when_any_image_has_colour(tmp_path, rng):
    made = make_folder(tmp_path, rng, rgb_in="dog")
    ds = load_dataset("folder", data_dir=tmp_path, size=(6, 7), val_fraction=0, test_fraction=0)
    assert ds.input_shape == (3, 6, 7) and ds.mean.shape == (3,)
    x = raw(ds, "train")
    # a grayscale image repeated over R, G, B; the colour one keeps its channels
    np.testing.assert_allclose(x[0, 0], x[0, 1], atol=1e-5)
    colour = np.asarray(
        Image.fromarray(made["dog"][2].astype(np.uint8)).resize((7, 6), Image.Resampling.BILINEAR),
        dtype=np.float64,
    )
    np.testing.assert_allclose(x[7].transpose(1, 2, 0) * 255, colour, atol=1.0)
    forced = load_dataset("folder", data_dir=tmp_path, size=6, channels=1, test_fraction=0)
    assert forced.input_shape == (1, 6, 6)


def test_folder_rgb_with_equal_channels_counts_as_grayscale(tmp_path, rng):
    gray = rng.integers(0, 256, (9, 9)).astype(np.uint8)
    for cls in ("a", "b"):
        save_gray(tmp_path / cls / "x.png", np.stack([gray] * 3, axis=-1))
    ds = load_dataset("folder", data_dir=tmp_path, size=9, test_fraction=0, val_fraction=0)
    assert ds.input_shape == (1, 9, 9)
    np.testing.assert_allclose(raw(ds, "train")[0, 0] * 255, gray, atol=1e-3)


def test_folder_errors(tmp_path, rng):
    with pytest.raises(ValueError, match="folder needs data_dir"):
        load_dataset("folder")
    with pytest.raises(ValueError, match="is not a folder"):
        load_dataset("folder", data_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="has no class sub-folders"):
        load_dataset("folder", data_dir=tmp_path)
    make_folder(tmp_path, rng)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        load_dataset("folder", data_dir=tmp_path, channels=2)
    (tmp_path / "dog" / "notes.txt").write_text("not a picture")
    with pytest.raises(ValueError, match="notes.txt: cannot read as an image"):
        load_dataset("folder", data_dir=tmp_path)
    (tmp_path / "dog" / "notes.txt").unlink()
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(ValueError, match="broken.png: cannot read as an image"):
        load_dataset("folder", data_dir=tmp_path)
    (tmp_path / "dog" / "broken.png").unlink()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="class folder .*empty has no images"):
        load_dataset("folder", data_dir=tmp_path)


# ---------------------------------------------------------------------------- npz


def test_npz_layouts_and_scales(tmp_path, rng):
    images = rng.integers(0, 256, (12, 5, 4), dtype=np.uint8)
    labels = np.arange(12) % 3
    np.savez(tmp_path / "hw.npz", x=images, y=labels)
    ds = load_dataset("npz", data_dir=tmp_path / "hw.npz", val_fraction=0, test_fraction=0)
    assert ds.input_shape == (1, 5, 4) and ds.class_names == ["0", "1", "2"]
    np.testing.assert_allclose(raw(ds, "train")[:, 0], images / 255.0, atol=1e-5)
    assert ds.preprocess["pixel_max"] == 1.0

    nhwc = rng.normal(size=(12, 5, 4, 3)).astype(np.float32)
    np.savez(tmp_path / "nhwc.npz", x=nhwc, y=labels)
    ds = load_dataset("npz", data_dir=tmp_path / "nhwc.npz", val_fraction=0, test_fraction=0)
    assert ds.input_shape == (3, 5, 4)
    np.testing.assert_allclose(raw(ds, "train"), nhwc.transpose(0, 3, 1, 2), atol=1e-5)

    nchw = rng.normal(size=(12, 3, 5, 3)).astype(np.float32)  # auto picks NCHW (axis 1 = 3)
    np.savez(tmp_path / "nchw.npz", x=nchw, y=labels)
    ds = load_dataset("npz", data_dir=tmp_path / "nchw.npz", val_fraction=0, test_fraction=0)
    np.testing.assert_allclose(raw(ds, "train"), nchw, atol=1e-5)
    forced = load_dataset(
        "npz", data_dir=tmp_path / "nchw.npz", layout="nhwc", val_fraction=0, test_fraction=0
    )
    assert forced.input_shape == (3, 3, 5)


def test_npz_label_kinds(tmp_path):
    x = np.zeros((6, 4, 4), np.float32)
    np.savez(tmp_path / "s.npz", x=x, y=np.array(["pear", "apple", "pear", "fig", "fig", "apple"]))
    ds = load_dataset("npz", data_dir=tmp_path / "s.npz", test_fraction=0, val_fraction=0)
    assert ds.class_names == ["apple", "fig", "pear"]
    assert ds.y_train.tolist() == [2, 0, 2, 1, 1, 0]

    names = np.array(["pear", "fig", "apple"])
    np.savez(tmp_path / "n.npz", x=x, y=np.array(["pear", "apple"] * 3), class_names=names)
    ds = load_dataset("npz", data_dir=tmp_path / "n.npz", test_fraction=0, val_fraction=0)
    assert ds.class_names == ["pear", "fig", "apple"] and ds.y_train.tolist() == [0, 2] * 3

    np.savez(tmp_path / "f.npz", x=x, y=np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0]))
    ds = load_dataset("npz", data_dir=tmp_path / "f.npz", test_fraction=0, val_fraction=0)
    assert ds.y_train.dtype == np.int64 and ds.y_train.tolist() == [0, 1, 2, 0, 1, 2]


def npz_case(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "case.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((3, 4, 4))}, "missing key 'y' \\(has: x\\)"),
        ({"images": np.zeros((3, 4, 4)), "y": np.zeros(3)}, "missing key 'x'"),
        ({"x": np.zeros((3, 4, 4)), "y": np.zeros(2)}, "x has 3 images but y has 2 labels"),
        ({"x": np.zeros((3, 4, 4)), "y": np.zeros((3, 1))}, "y must be 1-D"),
        ({"x": np.zeros((3, 4)), "y": np.zeros(3)}, "x must be \\(N, H, W\\), \\(N, C, H, W\\)"),
        ({"x": np.zeros((3, 5, 6, 7)), "y": np.zeros(3)}, "cannot tell the channel axis"),
        ({"x": np.full((3, 4, 4), np.nan), "y": np.zeros(3)}, "NaN or infinite"),
        ({"x": np.zeros((3, 4, 4)), "y": np.array([0, -1, 1])}, "negative label -1"),
        ({"x": np.zeros((3, 4, 4)), "y": np.array([0, 0.5, 1])}, "whole-number class"),
        (
            {"x": np.zeros((3, 4, 4)), "y": np.array([0, 1, 2]), "class_names": np.array(["a"])},
            "class_names has 1 names but y goes up to 2",
        ),
        (
            {
                "x": np.zeros((3, 4, 4)),
                "y": np.array(["a", "b", "c"]),
                "class_names": np.array(["a"]),
            },
            "label 'b' is not in class_names",
        ),
        ({"x": np.zeros((0, 4, 4)), "y": np.zeros(0)}, "no images"),
        (
            {"x": np.array([{"a": 1}] * 3, dtype=object), "y": np.zeros(3)},
            "holds Python objects, which cnnkit never unpickles",
        ),
    ],
)
def test_npz_errors(tmp_path, arrays, message):
    path = npz_case(tmp_path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset("npz", data_dir=path, test_fraction=0, val_fraction=0)


def test_npz_file_errors(tmp_path):
    with pytest.raises(ValueError, match="npz needs data_dir"):
        load_dataset("npz")
    with pytest.raises(ValueError, match="is not a file"):
        load_dataset("npz", data_dir=tmp_path)
    (tmp_path / "bad.npz").write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="bad.npz: not a readable .npz file"):
        load_dataset("npz", data_dir=tmp_path / "bad.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single .npy array"):
        load_dataset("npz", data_dir=tmp_path / "one.npy")
    np.savez(tmp_path / "ok.npz", x=np.zeros((4, 2, 2)), y=np.arange(4) % 2)
    with pytest.raises(ValueError, match="layout must be auto, nchw or nhwc"):
        load_dataset("npz", data_dir=tmp_path / "ok.npz", layout="chw")


# ---------------------------------------------------------------------------- images


def digit_png(
    path: Path, digit: np.ndarray, *, scale=4, black_on_white=True, canvas=None, at=(0, 0)
):
    """Render a 0..16 digit as an 8-bit PNG, each pixel a scale x scale block."""
    ink = np.kron(digit / 16.0, np.ones((scale, scale)))
    if canvas is not None:
        big = np.zeros(canvas)
        big[at[0] : at[0] + ink.shape[0], at[1] : at[1] + ink.shape[1]] = ink
        ink = big
    value = 1.0 - ink if black_on_white else ink
    Image.fromarray(np.round(value * 255).astype(np.uint8)).save(path)


def test_digit_png_roundtrip_both_polarities(tmp_path):
    ds = load_dataset("digits")
    with np.load(DIGITS_FILE, allow_pickle=False) as data:
        digit = data["images"][5].astype(np.float64)
    stretch = dict(builtin_preprocess("digits"), fit="stretch")
    want = normalize(digit[None, None], ds.mean, ds.std)
    for polarity in (True, False):
        path = tmp_path / f"d{polarity}.png"
        digit_png(path, digit, black_on_white=polarity)
        got = load_image_for_model(path, (1, 8, 8), ds.mean, ds.std, preprocess=stretch)
        assert got.shape == (1, 1, 8, 8) and got.dtype == np.float32
        # 8-bit rounding of the PNG costs at most 16 * 0.5 / 255 on the 0..16 scale
        np.testing.assert_allclose(got, want, atol=16 * 0.51 / 255 / ds.std[0])


def test_digit_drawn_anywhere_on_a_large_canvas_is_cropped_to_the_digit(tmp_path):
    ds = load_dataset("digits")
    with np.load(DIGITS_FILE, allow_pickle=False) as data:
        digit = data["images"][0].astype(np.float64)
    digit_png(tmp_path / "alone.png", digit)
    digit_png(tmp_path / "a.png", digit, canvas=(100, 120), at=(10, 70))
    digit_png(tmp_path / "b.png", digit, canvas=(90, 90), at=(50, 5))
    outs = [
        load_image_for_model(tmp_path / f"{n}.png", (1, 8, 8), ds.mean, ds.std, preprocess="digits")
        for n in ("alone", "a", "b")
    ]
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-5)
    np.testing.assert_allclose(outs[2], outs[0], atol=1e-5)


def test_cropping_a_rendered_digit_gives_back_the_digit(tmp_path):
    # The UCI digits fill their box in height, so cropping a rendering to its ink and box-
    # averaging to 8x8 reproduces most of them exactly; the rest (digits not centred in
    # their box, or wider than tall) are shifted or rescaled, and still correlate.
    ds = load_dataset("digits")
    with np.load(DIGITS_FILE, allow_pickle=False) as data:
        digits = data["images"][:30].astype(np.float64)
    exact, corr = 0, []
    for k, digit in enumerate(digits):
        digit_png(tmp_path / f"{k}.png", digit, canvas=(40, 40), at=(4, 4))
        got = load_image_for_model(
            tmp_path / f"{k}.png", (1, 8, 8), ds.mean, ds.std, preprocess="digits"
        )
        back = got[0, 0] * ds.std[0] + ds.mean[0]
        exact += np.abs(back - digit).max() < 0.1
        corr.append(np.corrcoef(back.ravel(), digit.ravel())[0, 1])
    assert exact >= len(digits) // 2 and np.median(corr) > 0.99 and np.mean(corr) > 0.85


def test_fit_content_centres_a_square_around_the_bright_box():
    x = np.zeros((1, 20, 30), np.float32)
    x[0, 4:10, 3:7] = 1.0  # 6 rows x 4 cols, centre (7, 5)
    out = fit_content(x, margin=0.0)
    assert out.shape == (1, 6, 6)
    np.testing.assert_array_equal(out[0, :, 1:5], 1.0)
    np.testing.assert_array_equal(out[0, :, [0, 5]], 0.0)
    padded = fit_content(x, margin=0.25)  # side 6 / (1 - 0.5) = 12, content in the middle
    assert padded.shape == (1, 12, 12) and padded.sum() == 24
    np.testing.assert_array_equal(padded[0, 3:9, 4:8], 1.0)
    blank = np.zeros((1, 5, 5), np.float32)
    assert fit_content(blank, 0.1) is blank


def test_transparent_drawing_is_composited_over_white(tmp_path):
    ds = load_dataset("digits")
    with np.load(DIGITS_FILE, allow_pickle=False) as data:
        digit = data["images"][7].astype(np.float64)
    ink = np.kron(digit / 16.0, np.ones((4, 4)))
    rgba = np.zeros((32, 32, 4), np.uint8)  # black ink, alpha = ink coverage
    rgba[..., 3] = np.round(ink * 255).astype(np.uint8)
    Image.fromarray(rgba).save(tmp_path / "t.png")
    digit_png(tmp_path / "w.png", digit)
    a = load_image_for_model(tmp_path / "t.png", (1, 8, 8), ds.mean, ds.std, preprocess="digits")
    b = load_image_for_model(tmp_path / "w.png", (1, 8, 8), ds.mean, ds.std, preprocess="digits")
    np.testing.assert_allclose(a, b, atol=0.02)


def test_folder_image_preprocessed_exactly_like_its_training_copy(tmp_path, rng):
    make_folder(tmp_path, rng, rgb_in="cat")
    ds = load_dataset("folder", data_dir=tmp_path, size=7, val_fraction=0, test_fraction=0)
    for k, path in enumerate([tmp_path / "cat" / "0.png", tmp_path / "cat" / "2.png"]):
        got = load_image_for_model(path, ds.input_shape, ds.mean, ds.std, preprocess=ds.preprocess)
        np.testing.assert_allclose(got[0], ds.x_train[2 * k], atol=1e-5)


def test_load_image_for_model_errors(tmp_path):
    mean, std = np.zeros(1), np.ones(1)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_image_for_model(tmp_path / "nope.png", (1, 8, 8), mean, std)
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ValueError, match="text.png: cannot read as an image"):
        load_image_for_model(tmp_path / "text.png", (1, 8, 8), mean, std)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "ok.png")
    with pytest.raises(ValueError, match="1 \\(grayscale\\) or 3 \\(RGB\\) channels, got 2"):
        load_image_for_model(tmp_path / "ok.png", (2, 8, 8), np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="input_shape must be \\(C, H, W\\)"):
        load_image_for_model(tmp_path / "ok.png", (8, 8), mean, std)
    with pytest.raises(ValueError, match="one value per channel"):
        load_image_for_model(tmp_path / "ok.png", (1, 8, 8), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="unknown dataset"):
        load_image_for_model(tmp_path / "ok.png", (1, 8, 8), mean, std, preprocess="digts")
    with pytest.raises(ValueError, match="unknown preprocess keys: colour"):
        load_image_for_model(tmp_path / "ok.png", (1, 8, 8), mean, std, preprocess={"colour": 1})


def test_mnist_preprocess_puts_the_content_in_a_20x20_box(tmp_path):
    canvas = np.full((100, 140), 255, np.uint8)  # black on white: gets inverted
    canvas[30:70, 50:70] = 0  # 40 x 20 dark bar: bounding box 40 tall
    Image.fromarray(canvas).save(tmp_path / "bar.png")
    got = load_image_for_model(
        tmp_path / "bar.png", (1, 28, 28), np.zeros(1), np.ones(1), preprocess="mnist"
    )[0, 0]
    rows = np.flatnonzero(got.max(axis=1) > 0.5)
    cols = np.flatnonzero(got.max(axis=0) > 0.5)
    # 40 px tall -> 20 of 28 rows (margin 4), 20 px wide -> 10 columns, centred
    assert (rows[0], rows[-1]) == (4, 23)
    assert (cols[0], cols[-1]) == (9, 18)
    assert got.max() <= 1.0 + 1e-6 and got[0].max() == 0


def test_shapes_png_roundtrip(tmp_path):
    ds = load_dataset("shapes", count=8, size=16, test_fraction=0, val_fraction=0)
    image = raw(ds, "train")[3, 0]
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(tmp_path / "s.png")
    got = load_image_for_model(
        tmp_path / "s.png", ds.input_shape, ds.mean, ds.std, preprocess=ds.preprocess
    )
    np.testing.assert_allclose(got[0], ds.x_train[3], atol=0.51 / 255 / ds.std[0])
    # the same shape drawn dark on light is inverted back
    Image.fromarray(np.round((1 - image) * 255).astype(np.uint8)).save(tmp_path / "i.png")
    inv = load_image_for_model(
        tmp_path / "i.png", ds.input_shape, ds.mean, ds.std, preprocess="shapes"
    )
    np.testing.assert_allclose(inv, got, atol=1.1 / 255 / ds.std[0])


def test_exif_orientation_is_applied(rng, tmp_path):
    pixels = rng.integers(0, 256, (6, 9)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 3  # "rotate 180" as camera metadata
    Image.fromarray(pixels).save(tmp_path / "r.png", exif=exif)
    got = load_image_for_model(tmp_path / "r.png", (1, 6, 9), np.zeros(1), np.ones(1))
    np.testing.assert_allclose(got[0, 0] * 255, pixels[::-1, ::-1], atol=1e-3)


def test_sixteen_bit_grayscale_uses_its_full_range(rng, tmp_path):
    pixels = rng.integers(0, 65536, (5, 7)).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    got = load_image_for_model(tmp_path / "deep.png", (1, 5, 7), np.zeros(1), np.ones(1))
    np.testing.assert_allclose(got[0, 0], pixels / 65535.0, atol=1e-6)


def test_summary_and_docstring_examples():
    import doctest

    import cnnkit.data
    import cnnkit.data.dataset

    ds = load_dataset("digits")
    summary = ds.summary()
    assert (summary["train"], summary["val"], summary["test"]) == (1293, 144, 360)
    assert summary["input_shape"] == [1, 8, 8] and ds.num_classes == 10
    for module in (cnnkit.data, cnnkit.data.dataset):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0


def test_hand_drawn_black_on_white_digits_look_like_the_training_digits(tmp_path):
    # The "done when" story: a user draws a digit in black on a white canvas. After
    # preprocessing, the nearest class mean of the training digits must be that digit.
    from PIL import ImageDraw

    ds = load_dataset("digits")
    centroids = np.stack([ds.x_train[ds.y_train == k].mean(axis=0).ravel() for k in range(10)])
    strokes = {
        0: [("ellipse", (60, 30, 140, 170))],
        1: [("line", (100, 30, 100, 170))],
        4: [
            ("line", (110, 30, 55, 120)),
            ("line", (55, 120, 145, 120)),
            ("line", (120, 70, 120, 170)),
        ],
        7: [("line", (60, 35, 140, 35)), ("line", (140, 35, 85, 170))],
    }
    for digit, parts in strokes.items():
        canvas = Image.new("L", (200, 200), 255)
        pen = ImageDraw.Draw(canvas)
        for kind, box in parts:
            if kind == "ellipse":
                pen.ellipse(box, outline=0, width=14)
            else:
                pen.line(box, fill=0, width=14)
        canvas.save(tmp_path / f"{digit}.png")
        x = load_image_for_model(
            tmp_path / f"{digit}.png", ds.input_shape, ds.mean, ds.std, preprocess=ds.preprocess
        )
        assert int(((centroids - x.ravel()) ** 2).sum(axis=1).argmin()) == digit


def test_make_digits_script_rebuilds_the_shipped_file(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "scripts" / "make_digits.py"
    spec = importlib.util.spec_from_file_location("make_digits", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "TARGET", tmp_path / "digits.npz")
    module.main()
    with (
        np.load(tmp_path / "digits.npz", allow_pickle=False) as rebuilt,
        np.load(DIGITS_FILE, allow_pickle=False) as shipped,
    ):
        for key in ("images", "labels"):
            assert rebuilt[key].dtype == shipped[key].dtype
            np.testing.assert_array_equal(rebuilt[key], shipped[key])
