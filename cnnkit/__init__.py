"""cnnkit: the building blocks of convolutional neural networks, runnable.

The public API (NCHW layout, PyTorch's parameter names and semantics)::

    conv1d, conv2d, conv3d                      convolution / cross-correlation
    conv1d_backward, conv2d_backward            gradients w.r.t. input, weight and bias
    max_pool1d, max_pool2d, avg_pool1d, avg_pool2d, global_avg_pool
    max_pool2d_backward, avg_pool2d_backward    gradients of the 2-D pools
    im2col, col2im                              the lecture's patch matrices
    conv_output_size                            the one output-size formula

The Numba kernels load on first use, so importing cnnkit (and the arithmetic commands
``cnnkit shape`` and ``cnnkit receptive-field``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from cnnkit.geometry import conv_output_size, pool_output_size

__version__ = "0.1.0"

# name -> module that defines it; loaded lazily by __getattr__ (PEP 562).
_LAZY = {
    name: "cnnkit.ops"
    for name in (
        "conv1d",
        "conv2d",
        "conv3d",
        "conv1d_backward",
        "conv2d_backward",
        "max_pool1d",
        "max_pool2d",
        "avg_pool1d",
        "avg_pool2d",
        "global_avg_pool",
        "max_pool2d_backward",
        "avg_pool2d_backward",
        "global_avg_pool_backward",
        "im2col",
        "col2im",
    )
}

__all__ = ["__version__", "conv_output_size", "pool_output_size", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cnnkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
