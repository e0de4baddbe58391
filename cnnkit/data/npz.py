"""Arrays from an ``.npz`` file: key ``x`` (images), key ``y`` (labels), optional names."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cnnkit import memory
from cnnkit.errors import ParameterError
from cnnkit.io import read_npz

#: Most classes a data set may have (a label of 1e9 would otherwise build a billion names).
MAX_CLASSES = 65_536


def _to_nchw(x: np.ndarray, layout: str, path: Path) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise ValueError(
            f"{path}: x must be (N, H, W), (N, C, H, W) or (N, H, W, C), got {x.shape}"
        )
    if layout == "auto":
        if x.shape[1] in (1, 3):
            layout = "nchw"
        elif x.shape[3] in (1, 3):
            layout = "nhwc"
        else:
            raise ValueError(
                f"{path}: cannot tell the channel axis of x with shape {x.shape}; "
                "pass layout='nchw' or layout='nhwc'"
            )
    return x.transpose(0, 3, 1, 2) if layout == "nhwc" else x


def _pixels(x: np.ndarray, path: Path) -> tuple[np.ndarray, float]:
    """float32 pixels (uint8 / 255, bool as 0/1, other numbers as they are) and their
    ``pixel_max``: 1.0 for uint8, bool or values within [0, 1], else 255.0."""
    if x.dtype == np.bool_:
        raw, pixel_max = x.astype(np.float32), 1.0
    elif x.dtype == np.uint8:
        raw, pixel_max = x.astype(np.float32) / np.float32(255.0), 1.0
    elif np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating):
        raw = x.astype(np.float32)
        if not np.all(np.isfinite(raw)):
            raise ValueError(f"{path}: x contains NaN or infinite values")
        pixel_max = 1.0 if raw.min() >= 0 and raw.max() <= 1 else 255.0
    else:
        raise ValueError(f"{path}: x must hold numbers, got dtype {x.dtype}")
    return raw, pixel_max


def _labels(
    y: np.ndarray, names: np.ndarray | None, path: Path
) -> tuple[np.ndarray, list[str] | None]:
    """int64 class indices, and the sorted names of string labels without ``class_names``."""
    label_names = None
    if y.dtype.kind in "US" and names is not None:
        # string labels spelled as in class_names: index by class_names' order
        lookup = {str(v): k for k, v in enumerate(names.tolist())}
        unknown = sorted({str(v) for v in y.tolist()} - set(lookup))
        if unknown:
            raise ValueError(f"{path}: label {unknown[0]!r} is not in class_names")
        y = np.array([lookup[str(v)] for v in y.tolist()], dtype=np.int64)
    elif y.dtype.kind in "US":
        label_names, y = np.unique(y.astype(str), return_inverse=True)
        label_names = [str(v) for v in label_names]
    elif y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(f"{path}: y must hold whole-number class indices")
    elif y.dtype.kind not in "iub":
        raise ValueError(f"{path}: y must hold integer class indices, got dtype {y.dtype}")
    if y.dtype.kind in "iu" and y.size and int(y.max()) >= MAX_CLASSES:
        raise ValueError(
            f"{path}: y has label {int(y.max())}; labels are class indices 0 .. "
            f"{MAX_CLASSES - 1:,} (at most {MAX_CLASSES:,} classes)"
        )
    if y.dtype.kind == "f" and y.size and float(y.max()) >= MAX_CLASSES:
        raise ValueError(
            f"{path}: y has label {float(y.max()):g}; labels are class indices 0 .. "
            f"{MAX_CLASSES - 1:,} (at most {MAX_CLASSES:,} classes)"
        )
    y = np.asarray(y).astype(np.int64)
    if y.min() < 0:
        raise ValueError(f"{path}: y has negative label {int(y.min())}; labels are 0, 1, 2, ...")
    return y, label_names


def _class_names(
    names: np.ndarray | None, label_names: list[str] | None, y: np.ndarray, path: Path
) -> list[str]:
    """``class_names`` from the file, else the string labels, else ``"0"`` .. ``max(y)``."""
    if names is not None:
        class_names = [str(v) for v in names]
        if len(class_names) <= int(y.max()):
            raise ValueError(
                f"{path}: class_names has {len(class_names)} names but y goes up to {int(y.max())}"
            )
    elif label_names is not None:
        class_names = label_names
    else:
        class_names = [str(k) for k in range(int(y.max()) + 1)]
    return class_names


def load_npz_raw(
    data_dir: str | os.PathLike[str] | None, layout: str = "auto"
) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    """Read images and labels from an ``.npz`` file (opened with ``allow_pickle=False``).

    Parameters
    ----------
    data_dir : path-like
        The ``.npz`` file itself.
    layout : {"auto", "nchw", "nhwc"}
        Axis order of a 4-D ``x``. ``"auto"``: NCHW when axis 1 has 1 or 3 entries,
        otherwise NHWC when the last axis has 1 or 3, otherwise an error. A 3-D ``x`` is
        (N, H, W), one channel.

    Returns
    -------
    x : numpy.ndarray
        float32 (N, C, H, W). uint8 pixels are divided by 255 (0..1 scale); booleans become
        0/1; other numbers are kept as they are.
    y : numpy.ndarray
        int64 (N,). Integer labels (or floats with integral values) are used as class
        indices; string labels are numbered in sorted order.
    class_names : list of str
        The optional key ``class_names`` (strings, at least ``max(y) + 1`` of them), else the
        sorted string labels, else ``"0"``, ``"1"``, ... up to ``max(y)``.
    pixel_max : float
        1.0 when the pixels are uint8, bool or within [0, 1], else 255.0 (floats on the
        0..255 scale); used to treat new image files the same way.
    """
    if layout not in ("auto", "nchw", "nhwc"):
        raise ValueError(f"npz: layout must be auto, nchw or nhwc, got {layout!r}")
    if data_dir is None:
        raise ParameterError("npz needs data_dir: the .npz file with keys x and y", "data_dir")
    path = Path(data_dir)
    if path.is_dir() or not path.exists():
        raise ValueError(f"npz: {path} is not a file (data_dir must be the .npz file itself)")
    arrays = read_npz(path, "data set", kinds="biufUS")
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        keys = ", ".join(arrays) or "nothing"
        raise ValueError(f"{path}: missing key {missing[0]!r} (has: {keys})")
    x, y = arrays["x"], arrays["y"]
    names = arrays.get("class_names")
    if x.dtype.kind in "US":
        raise ValueError(f"{path}: x must hold numbers, got dtype {x.dtype}")
    if names is not None and (names.ndim != 1 or names.dtype.kind not in "US"):
        raise ValueError(f"{path}: class_names must be a 1-D array of strings")
    if y.ndim != 1:
        raise ValueError(f"{path}: y must be 1-D (one label per image), got shape {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{path}: x has {len(x)} images but y has {len(y)} labels")
    if len(y) == 0:
        raise ValueError(f"{path}: no images")
    x = _to_nchw(np.asarray(x), layout, path)
    # float32 images, then the split and normalised copies of them
    memory.check(
        x.size * 4 * 3,
        f"{path}: {len(x):,} images of {' x '.join(map(str, x.shape[1:]))} as float32",
        "use fewer or smaller images",
    )

    raw, pixel_max = _pixels(x, path)
    y, label_names = _labels(y, names, path)
    class_names = _class_names(names, label_names, y, path)
    return np.ascontiguousarray(raw), y, class_names, pixel_max
