"""A generated data set of oriented bars and blobs: edge detectors emerge in seconds."""

from __future__ import annotations

import numpy as np

SHAPE_CLASSES = ["horizontal bar", "vertical bar", "diagonal bar", "blob"]


def generate_shapes(
    count: int = 2000, size: int = 32, noise: float = 0.05, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``count`` 1 x size x size images of bars and blobs, balanced over 4 classes.

    Parameters
    ----------
    count : int
        Number of images (at least 4); class ``i % 4`` for image ``i`` before shuffling, so
        the classes differ in size by at most one.
    size : int
        Side of the square images in pixels (at least 8).
    noise : float
        Standard deviation of the Gaussian pixel noise added before clipping to [0, 1].
    seed : int
        The same seed gives the same images.

    Returns
    -------
    x : numpy.ndarray
        float32 (count, 1, size, size), values in [0, 1]: bright shapes on black.
    y : numpy.ndarray
        int64 (count,) indices into :data:`SHAPE_CLASSES`.

    Notes
    -----
    A bar is a segment through centre ``c`` (uniform in the middle 40 % of the image) with
    direction ``u = (cos a, sin a)``, length ``L`` in [0.5, 0.9] * size and half-thickness
    ``t`` in [1, 2] * size / 32. Pixel ``p`` (its centre) is at distance
    ``d = sqrt(max(|(p - c).u| - L/2, 0)^2 + ((p - c).n)^2)`` (``n`` normal to ``u``) and gets
    ``A * clip(t + 0.5 - d, 0, 1)``, an anti-aliased edge, with brightness ``A`` in
    [0.7, 1]. The angle ``a`` is 0 (horizontal), 90 (vertical) or 45 / 135 degrees
    (diagonal) plus a uniform jitter of +-15 degrees, so the nearest angles of two classes
    stay 15 degrees apart. A blob is ``A * exp(-(r1^2 / s1^2 + r2^2 / s2^2) / 2)`` in a
    randomly rotated frame, ``s1`` in [0.08, 0.16] * size and ``s2 / s1`` in [1, 1.3]:
    round enough never to look like a bar.
    """
    count, size = int(count), int(size)
    if count < 4:
        raise ValueError(f"shapes: count must be at least 4 (one per class), got {count}")
    if size < 8:
        raise ValueError(f"shapes: size must be at least 8 pixels, got {size}")
    noise = float(noise)
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"shapes: noise must be a finite number >= 0, got {noise}")
    rng = np.random.default_rng([int(seed), 0x5A4E])
    y = rng.permutation(np.arange(count) % len(SHAPE_CLASSES)).astype(np.int64)
    grid = np.arange(size, dtype=np.float64) + 0.5
    py, px = grid[None, :, None], grid[None, None, :]

    cy = rng.uniform(0.3, 0.7, count)[:, None, None] * size
    cx = rng.uniform(0.3, 0.7, count)[:, None, None] * size
    amplitude = rng.uniform(0.7, 1.0, count)[:, None, None]
    base = np.array([0.0, 90.0, 45.0, 0.0])[y]
    base[(y == 2) & (rng.random(count) < 0.5)] = 135.0
    angle = np.deg2rad(base + rng.uniform(-15.0, 15.0, count))[:, None, None]
    ux, uy = np.cos(angle), -np.sin(angle)  # image rows grow downwards
    dx, dy = px - cx, py - cy
    along = dx * ux + dy * uy
    across = -dx * uy + dy * ux

    length = rng.uniform(0.5, 0.9, count)[:, None, None] * size
    half = rng.uniform(1.0, 2.0, count)[:, None, None] * size / 32
    dist = np.hypot(np.maximum(np.abs(along) - length / 2, 0.0), across)
    bars = np.clip(half + 0.5 - dist, 0.0, 1.0)

    s1 = rng.uniform(0.08, 0.16, count)[:, None, None] * size
    s2 = s1 * rng.uniform(1.0, 1.3, count)[:, None, None]
    blobs = np.exp(-0.5 * ((along / s2) ** 2 + (across / s1) ** 2))

    is_blob = (y == 3)[:, None, None]
    x = amplitude * np.where(is_blob, blobs, bars)
    if noise > 0:
        x = x + noise * rng.standard_normal(x.shape)
    x = np.clip(x, 0.0, 1.0)
    return x.astype(np.float32)[:, None], y
