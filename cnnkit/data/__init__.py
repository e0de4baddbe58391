"""Built-in data sets and loaders; every one returns a split, normalised :class:`Dataset`.

=================  ==============================================  ======================
name               source                                          raw pixel scale
=================  ==============================================  ======================
``digits``         8x8 UCI digits shipped in the package (1,797)   0..16, white on black
``shapes``         generated bars and blobs, 1 x size x size       0..1, bright on black
``mnist``          IDX files in ``data_dir`` (official test set)   0..1 (byte / 255)
``fashion-mnist``  IDX files in ``data_dir`` (official test set)   0..1 (byte / 255)
``folder``         ``data_dir/<class>/<image>``, resized to size   0..1 (byte / 255)
``npz``            ``data_dir`` is a .npz with ``x`` and ``y``     uint8 / 255, else as is
=================  ==============================================  ======================

Example
-------
>>> from cnnkit.data import load_dataset
>>> ds = load_dataset("digits")
>>> ds.x_train.shape, ds.x_val.shape, ds.x_test.shape
((1293, 1, 8, 8), (144, 1, 8, 8), (360, 1, 8, 8))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from cnnkit.data.dataset import Dataset, build_dataset, channel_stats, normalize
from cnnkit.data.digits import DIGITS_CLASSES, load_digits_raw
from cnnkit.data.folder import load_folder_raw
from cnnkit.data.idx import FASHION_CLASSES, MNIST_CLASSES, load_mnist_raw
from cnnkit.data.images import builtin_preprocess, load_image_for_model, resize_channels
from cnnkit.data.names import DATASETS, check_name
from cnnkit.data.npz import load_npz_raw
from cnnkit.data.shapes import SHAPE_CLASSES, generate_shapes

__all__ = [
    "DATASETS",
    "Dataset",
    "builtin_preprocess",
    "channel_stats",
    "check_name",
    "load_dataset",
    "load_image_for_model",
    "normalize",
]

# Extra keyword options each loader accepts (beyond the common ones of load_dataset).
_OPTIONS: dict[str, tuple[str, ...]] = {
    "digits": (),
    "shapes": ("count", "noise"),
    "mnist": ("limit",),
    "fashion-mnist": ("limit",),
    "folder": ("channels",),
    "npz": ("layout",),
}


def _size_pair(
    size: int | Sequence[int] | None, default: tuple[int, int] | None
) -> tuple[int, int] | None:
    if size is None:
        return default
    values = [size] * 2 if isinstance(size, int | np.integer) else list(size)
    if len(values) != 2 or not all(isinstance(v, int | np.integer) and v >= 1 for v in values):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return int(values[0]), int(values[1])


def _load_raw(
    name: str,
    data_dir: str | os.PathLike[str] | None,
    size: int | Sequence[int] | None,
    seed: int,
    options: dict[str, Any],
    preprocess: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, Sequence[str], tuple[np.ndarray, np.ndarray] | None, Any]:
    """The raw images, labels and class names of data set ``name``, its official test split
    if it has one, and the size still to resize to (None when the loader already did).

    Records the loader's native size and pixel scale in ``preprocess``.
    """
    test = None
    if name == "digits":
        x, y = load_digits_raw()
        class_names = DIGITS_CLASSES
    elif name == "shapes":
        side = _size_pair(size, (32, 32))
        if side[0] != side[1]:
            raise ValueError(f"shapes: images are square; got size {side[0]}x{side[1]}")
        x, y = generate_shapes(
            count=options.get("count", 2000),
            size=side[0],
            noise=options.get("noise", 0.05),
            seed=seed,
        )
        class_names, size = SHAPE_CLASSES, None
    elif name in ("mnist", "fashion-mnist"):
        (x, y), test = load_mnist_raw(data_dir, name, options.get("limit"))
        class_names = MNIST_CLASSES if name == "mnist" else FASHION_CLASSES
        preprocess["native_size"] = list(x.shape[2:])
    elif name == "folder":
        x, y, class_names = load_folder_raw(
            data_dir, _size_pair(size, (32, 32)), options.get("channels")
        )
        size = None
    else:
        x, y, class_names, pixel_max = load_npz_raw(data_dir, options.get("layout", "auto"))
        preprocess["pixel_max"] = pixel_max
        preprocess["native_size"] = list(x.shape[2:])
    return x, y, class_names, test, size


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    size: int | Sequence[int] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    **options: Any,
) -> Dataset:
    """Load a data set by name, split it and normalise it with the training statistics.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`. Underscores and case are forgiven (``Fashion_MNIST``).
    data_dir : path-like, optional
        ``mnist``/``fashion-mnist``: folder with the IDX files (``data_dir/<name>/`` is
        searched too); ``folder``: the folder of class sub-folders; ``npz``: the .npz file.
        Not used by ``digits`` and ``shapes``.
    size : int or (H, W), optional
        ``shapes``: side of the generated images (default 32); ``folder``: size every image
        is resized to (default 32); others: resize the images (bilinear) from their own
        size, which ``load_image_for_model`` reproduces through ``preprocess``.
    seed : int
        Fixes the split (and the generated ``shapes``): same seed, same data set.
    val_fraction : float
        Share of the non-test images held out for validation, in [0, 1).
    test_fraction : float
        Share of all images held out for testing, in [0, 1). ``mnist`` and
        ``fashion-mnist`` use their official 10,000-image test set instead.
    **options
        ``shapes``: ``count`` (default 2000), ``noise`` (default 0.05). ``mnist``,
        ``fashion-mnist``: ``limit`` (first N training images). ``folder``: ``channels``
        (1 or 3; default from the images). ``npz``: ``layout`` ("auto", "nchw", "nhwc").

    Returns
    -------
    Dataset

    Notes
    -----
    Splits are stratified by class with ``ceil(fraction * N)`` samples taken
    (:func:`cnnkit.data.dataset.stratified_split`). The digits with the defaults: 360 test
    images, and of the remaining 1,437, 144 validation and 1,293 training images (with
    ``val_fraction=0``, all 1,437 train, as in the reference PyTorch run).
    """
    name = check_name(name)
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        accepted = ", ".join(_OPTIONS[name]) or "none"
        raise ValueError(f"{name}: unknown option {unknown[0]!r} (accepted: {accepted})")
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise ValueError(f"seed must be an integer, got {seed!r}") from None
    preprocess = builtin_preprocess(name)
    x, y, class_names, test, size = _load_raw(name, data_dir, size, seed, options, preprocess)

    target = _size_pair(size, None)
    if target is not None:
        x = resize_channels(x, target, "bilinear")
        if test is not None:
            test = (resize_channels(test[0], target, "bilinear"), test[1])
    return build_dataset(
        name,
        x,
        y,
        list(class_names),
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        preprocess=preprocess,
        test=test,
    )
