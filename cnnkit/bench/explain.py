"""``cnnkit bench --explain``: the lecture's im2col example, small enough to read."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from cnnkit.geometry import conv_output_size


def explain_data(ops: Any = None, seed: int = 6) -> dict[str, np.ndarray]:
    """The lecture's example, small: four 3x3x3 kernels, a 3x5x5 RGB image.

    Returns
    -------
    dict
        ``kernels`` (4, 3, 3, 3), ``image`` (3, 5, 5), ``w_matrix`` (4, 27): each kernel
        flattened to a row; ``patches`` (27, 9): each 3x3x3 block of the image as a column
        (``cnnkit.im2col``); ``product`` (4, 9) = ``w_matrix @ patches``; ``maps``
        (4, 3, 3): the product's rows reshaped to the output maps; ``loop`` (4, 3, 3): the
        same convolution by the sliding-window loop (``cnnkit.conv2d(method="loop")``).

    Notes
    -----
    Small integers keep every product exact in float32, so ``maps == loop`` holds exactly.
    """
    if ops is None:
        ops = importlib.import_module("cnnkit.ops")
    rng = np.random.default_rng(seed)
    kernels = rng.integers(-1, 2, size=(4, 3, 3, 3)).astype(np.float32)
    image = rng.integers(0, 10, size=(3, 5, 5)).astype(np.float32)
    w_matrix = kernels.reshape(4, 27)
    patches = np.asarray(ops.im2col(image, 3))
    product = w_matrix @ patches
    side = conv_output_size(5, 3)
    maps = product.reshape(4, side, side)
    loop = np.asarray(ops.conv2d(image[None], kernels, method="loop"))[0]
    return {
        "kernels": kernels,
        "image": image,
        "w_matrix": w_matrix,
        "patches": patches,
        "product": product,
        "maps": maps,
        "loop": loop,
    }
