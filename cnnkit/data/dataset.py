"""The :class:`Dataset` record, the stratified split and per-channel normalisation.

Every loader in :mod:`cnnkit.data` produces raw images ``x`` (float, (N, C, H, W), on the
loader's documented pixel scale) and integer labels ``y``; :func:`build_dataset` turns them
into a split, normalised :class:`Dataset`. The split and the statistics live here once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Dataset:
    """A labelled image data set, split and normalised, ready for training.

    Attributes
    ----------
    name : str
        The loader's name (``"digits"``, ``"mnist"``, ...).
    x_train, x_val, x_test : numpy.ndarray
        float32 images, shape (N, C, H, W), already normalised with ``mean`` and ``std``.
    y_train, y_val, y_test : numpy.ndarray
        int64 class indices, shape (N,).
    class_names : list of str
        ``class_names[k]`` names class ``k``.
    input_shape : tuple of int
        (C, H, W) of one image.
    mean, std : numpy.ndarray
        float32, shape (C,): per-channel statistics of the raw training images (x_train
        before normalisation), never of validation or test images.
    preprocess : dict
        JSON-serialisable description of how a raw image file becomes a raw array on this
        data set's pixel scale (see :func:`cnnkit.data.images.load_image_for_model`). Store
        it with a model so ``predict`` treats a new image exactly as training did.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    input_shape: tuple[int, int, int]
    mean: np.ndarray
    std: np.ndarray
    preprocess: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    def summary(self) -> dict[str, Any]:
        """Sizes and shapes as plain JSON-friendly values (for ``--json`` output)."""
        return {
            "name": self.name,
            "train": int(len(self.y_train)),
            "val": int(len(self.y_val)),
            "test": int(len(self.y_test)),
            "classes": list(self.class_names),
            "input_shape": list(self.input_shape),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
        }


def check_fraction(name: str, value: float) -> float:
    """Return ``value`` as a float if ``0 <= value < 1``; otherwise raise ValueError."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def stratified_split(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``0..len(y)-1`` into (kept, taken) with ``taken`` stratified by class.

    Parameters
    ----------
    y : numpy.ndarray
        Integer labels, shape (N,).
    fraction : float
        Share of the samples to take, in [0, 1).
    rng : numpy.random.Generator
        Chooses which samples of each class are taken.

    Returns
    -------
    kept, taken : numpy.ndarray
        Sorted int64 index arrays that partition ``range(N)``.

    Notes
    -----
    The number taken is ``n = ceil(fraction * N)`` (scikit-learn's ``train_test_split``
    rounding, so 20 % of the 1,797 digits is 360). It is shared among classes by the
    largest-remainder rule: class ``c`` with ``N_c`` samples gets ``floor(n * N_c / N)``, and
    the ``n - sum`` samples left over go to the classes with the largest fractional parts
    (ties to the smaller class index). Totals are therefore exact and every class's share
    differs from ``fraction * N_c`` by less than one.
    """
    y = np.asarray(y)
    total = len(y)
    n_take = math.ceil(fraction * total - 1e-9) if fraction > 0 else 0
    classes, counts = np.unique(y, return_counts=True)
    quota = n_take * counts / max(total, 1)
    share = np.floor(quota).astype(np.int64)
    leftover = n_take - int(share.sum())
    # stable sort on the negated remainder: largest first, ties to the smaller class index
    order = np.argsort(-(quota - share), kind="stable")
    share[order[:leftover]] += 1
    taken = []
    for cls, k in zip(classes, share):
        members = np.flatnonzero(y == cls)
        taken.append(rng.permutation(members)[:k])
    taken_idx = np.sort(np.concatenate(taken)) if taken else np.zeros(0, np.int64)
    mask = np.ones(total, dtype=bool)
    mask[taken_idx] = False
    return np.flatnonzero(mask).astype(np.int64), taken_idx.astype(np.int64)


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of images ``x`` (N, C, H, W).

    Notes
    -----
    ``mean_c = mean(x[:, c])`` and ``std_c = sqrt(mean((x[:, c] - mean_c)**2))`` (population
    standard deviation), accumulated in float64. A constant channel has ``std_c = 0``; it is
    replaced by 1 so normalisation never divides by zero.
    """
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.mean(axis=(0, 2, 3))
    std = x64.std(axis=(0, 2, 3))
    std = np.where(std > 0, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardise images channel by channel: ``(x - mean[c]) / std[c]``.

    Parameters
    ----------
    x : numpy.ndarray
        Raw images on the data set's pixel scale, shape (N, C, H, W) or (C, H, W).
    mean, std : array_like
        Per-channel statistics, shape (C,), as stored in :class:`Dataset` (or a model file).

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> float(normalize(np.full((1, 1, 2, 2), 3.0), np.array([1.0]), np.array([2.0]))[0, 0, 0, 0])
    1.0
    """
    x = np.asarray(x)
    mean = np.asarray(mean, dtype=np.float32).reshape(-1)
    std = np.asarray(std, dtype=np.float32).reshape(-1)
    if x.ndim not in (3, 4):
        raise ValueError(f"normalize: x must be (N, C, H, W) or (C, H, W), got shape {x.shape}")
    channels = x.shape[-3]
    if mean.shape != (channels,) or std.shape != (channels,):
        raise ValueError(
            f"normalize: mean and std need one value per channel ({channels}), "
            f"got {mean.shape[0]} and {std.shape[0]}"
        )
    if not (np.all(np.isfinite(std)) and np.all(std > 0)):
        raise ValueError("normalize: std must be finite and positive")
    shape = (channels, 1, 1)
    out = x.astype(np.float32, copy=True)
    out -= mean.reshape(shape)
    out /= std.reshape(shape)
    return out


def build_dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    class_names: list[str],
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    preprocess: dict[str, Any] | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> Dataset:
    """Split raw images into train / validation / test and normalise them with train stats.

    Parameters
    ----------
    name : str
        Data set name recorded in the result.
    x : numpy.ndarray
        Raw images (N, C, H, W) on the loader's pixel scale.
    y : numpy.ndarray
        Integer labels (N,), values in ``0..len(class_names)-1``.
    class_names : list of str
    seed : int
        Seeds the split; the same seed gives the same split.
    val_fraction : float
        Share of the non-test samples kept for validation, in [0, 1).
    test_fraction : float
        Share of all samples held out for testing, in [0, 1). Ignored when ``test`` is given.
    preprocess : dict, optional
        Stored on the result (see :class:`Dataset`).
    test : (x_test, y_test), optional
        An official test set (MNIST's t10k files): used as is instead of splitting one off.

    Returns
    -------
    Dataset

    Notes
    -----
    First ``ceil(test_fraction * N)`` samples are held out for testing, then
    ``ceil(val_fraction * N_rest)`` of the rest for validation, both stratified by class
    (:func:`stratified_split`). For the digits with the defaults (0.2, 0.1): 360 test, and
    the 1,437 others give 144 validation and 1,293 training images. ``mean``/``std`` come
    from the training images only, so no validation or test pixel leaks into training.
    """
    val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction)
    x = np.asarray(x)
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if test is None:
        rest, test_idx = stratified_split(y, test_fraction, rng)
        x_test, y_test = x[test_idx], y[test_idx]
    else:
        rest = np.arange(len(y))
        x_test, y_test = np.asarray(test[0]), np.asarray(test[1], dtype=np.int64)
    keep, val_idx = stratified_split(y[rest], val_fraction, rng)
    train_idx, val_idx = rest[keep], rest[val_idx]
    if len(train_idx) == 0:
        raise ValueError(
            f"{name}: {len(y)} samples leave no training images with "
            f"test_fraction={test_fraction} and val_fraction={val_fraction}"
        )
    x_train = x[train_idx]
    mean, std = channel_stats(x_train)
    return Dataset(
        name=name,
        x_train=normalize(x_train, mean, std),
        y_train=y[train_idx],
        x_val=normalize(x[val_idx], mean, std),
        y_val=y[val_idx],
        x_test=normalize(x_test, mean, std),
        y_test=y_test,
        class_names=[str(c) for c in class_names],
        input_shape=(int(x.shape[1]), int(x.shape[2]), int(x.shape[3])),
        mean=mean,
        std=std,
        preprocess=dict(preprocess or {}),
    )
