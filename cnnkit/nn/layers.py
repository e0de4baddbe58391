"""Network layers: each one keeps its forward pass and its gradient side by side.

A layer is a plain object with ``forward(x, training)`` and ``backward(grad_y)``. Forward
remembers what backward needs; backward writes the parameter gradients into ``grads`` (in
place, so the model can keep every parameter and gradient in one flat buffer) and returns the
gradient with respect to the input.

Shapes are NCHW for images and (N, F) for features, as in PyTorch. Convolution and pooling
go through :mod:`cnnkit.ops` (the Numba core); everything else is a handful of numpy calls,
written to allocate little because for small networks the per-layer overhead is the cost.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import DTypeLike

from cnnkit import ops
from cnnkit.errors import ParameterError

PairPads = tuple[tuple[int, int], ...]


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """He (Kaiming) normal initialisation for layers followed by a relu-family activation.

    Notes
    -----
    ``w ~ N(0, 2 / fan_in)`` keeps the activation variance constant through relu layers
    (He et al., "Delving Deep into Rectifiers", 2015).
    """
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)


def glorot_uniform(
    rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int
) -> np.ndarray:
    """Glorot (Xavier) uniform initialisation for layers followed by tanh, sigmoid or nothing.

    Notes
    -----
    ``w ~ U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))`` (Glorot & Bengio, 2010).
    """
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape)


def torch_default(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """PyTorch's default initialisation of ``nn.Conv2d`` / ``nn.Linear`` weights and biases.

    Notes
    -----
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: Kaiming-uniform with ``a = sqrt(5)``, i.e. gain
    ``sqrt(2 / (1 + a^2)) = sqrt(1/3)`` and bound ``gain * sqrt(3 / fan_in)``. A third of the
    He variance; on small nets trained with Adam it overfits less (see ``cnnkit train``).
    """
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


# The weight initialisations a model is built with (:func:`init_weights` also knows
# "glorot", which layers pick for themselves).
INIT_SCHEMES = ("he", "torch")


def check_init(init: str) -> str:
    """``init`` when it is one of :data:`INIT_SCHEMES`, else a ParameterError naming it."""
    if init not in INIT_SCHEMES:
        raise ParameterError(f"init must be he or torch, got {init!r}", "init")
    return init


def init_weights(
    rng: np.random.Generator, init: str, shape: tuple[int, ...], fan_in: int, fan_out: int
) -> np.ndarray:
    """``"he"`` (:func:`he_normal`), ``"glorot"`` (:func:`glorot_uniform`) or ``"torch"``."""
    if init == "he":
        return he_normal(rng, shape, fan_in)
    if init == "glorot":
        return glorot_uniform(rng, shape, fan_in, fan_out)
    if init == "torch":
        return torch_default(rng, shape, fan_in)
    raise ValueError(f"unknown init {init!r}; choose he, glorot or torch")


class Layer:
    """Base class: a layer with no parameters that passes its input through.

    Attributes
    ----------
    name : str
        Display name (``conv1``, ``relu2``, ...), used in tables and activation plots.
    params, grads : list of ndarray
        Trainable arrays and their gradients, in the same order.
    buffers : dict of str to ndarray
        Non-trainable state saved with the model (batch-norm running statistics).
    need_input_grad : bool
        False for the first layer: nobody needs the gradient of the images.
    multi_input : bool
        True for layers that read several inputs (add, concat): ``forward`` takes a list and
        ``backward`` returns one gradient per input.
    """

    kind = "identity"
    multi_input = False

    def __init__(self, name: str = "") -> None:
        self.name = name or self.kind
        self.params: list[np.ndarray] = []
        self.grads: list[np.ndarray] = []
        self.buffers: dict[str, np.ndarray] = {}
        self.need_input_grad = True

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return x

    def backward(self, grad_y: np.ndarray) -> np.ndarray | None:
        return grad_y

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Conv2d(Layer):
    """2-D convolution (cross-correlation) with stride, padding, dilation and groups.

    Notes
    -----
    ``y[n, o] = b[o] + sum_{c, i, j} w[o, c, i, j] * x_pad[n, g*C/groups + c,
    h*stride + i*dilation, w*stride + j*dilation]``, output size from
    :func:`cnnkit.geometry.conv_output_size`. The gradients are
    :func:`cnnkit.ops.conv2d_backward`: ``dL/dw`` correlates the input with ``dL/dy``,
    ``dL/dx`` is the transposed convolution of ``dL/dy`` with ``w``, ``dL/db`` sums ``dL/dy``.
    """

    kind = "conv"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int],
        *,
        stride: tuple[int, int] = (1, 1),
        pads: PairPads = ((0, 0), (0, 0)),
        dilation: tuple[int, int] = (1, 1),
        groups: int = 1,
        bias: bool = True,
        init: str = "he",
        rng: np.random.Generator | None = None,
        dtype: DTypeLike = np.float32,
        name: str = "",
    ) -> None:
        super().__init__(name)
        rng = rng if rng is not None else np.random.default_rng(0)
        shape = (out_channels, in_channels // groups, *kernel)
        fan_in = shape[1] * kernel[0] * kernel[1]
        fan_out = out_channels // groups * kernel[0] * kernel[1]
        self.w = init_weights(rng, init, shape, fan_in, fan_out).astype(dtype)
        self.b = np.zeros(out_channels, dtype) if bias else None
        if bias and init == "torch":
            self.b[...] = torch_default(rng, (out_channels,), fan_in)
        self.params = [self.w] + ([self.b] if bias else [])
        self.grads = [np.zeros_like(p) for p in self.params]
        self.stride = stride
        self.pads = pads
        self.dilation = dilation
        self.groups = groups
        self._x: np.ndarray | None = None
        self._plans: dict = {}  # checked convolution plans per input shape (ops.conv2d_layer)

    def rebind(self) -> None:
        """Point ``w``/``b`` at ``params`` after the model moved them into its flat buffer."""
        self.w = self.params[0]
        self.b = self.params[1] if len(self.params) > 1 else None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._x = x
        return ops.conv2d_layer(
            self._plans,
            x,
            self.w,
            self.b,
            stride=self.stride,
            padding=self.pads,
            dilation=self.dilation,
            groups=self.groups,
        )

    def backward(self, grad_y: np.ndarray) -> np.ndarray | None:
        gx, gw, gb = ops.conv2d_layer_backward(
            self._plans,
            grad_y,
            self._x,
            self.w,
            stride=self.stride,
            padding=self.pads,
            dilation=self.dilation,
            groups=self.groups,
            need_input_grad=self.need_input_grad,
        )
        self.grads[0][...] = gw
        if self.b is not None:
            self.grads[1][...] = gb
        return gx


class _Pool2d(Layer):
    """What max and average pooling share: the window, as :mod:`cnnkit.ops` takes it."""

    kind = "pool"

    def __init__(
        self,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        ceil_mode: bool = False,
        name: str = "",
    ) -> None:
        super().__init__(name)
        self.kernel_size = kernel
        self.stride = stride
        self.padding = padding
        self.ceil_mode = ceil_mode
        self._x: np.ndarray | None = None


class MaxPool2d(_Pool2d):
    """Max pooling; the gradient goes to the position that held each window's maximum.

    Notes
    -----
    ``y[n, c, h, w] = max_{i, j} x_pad[n, c, h*s + i, w*s + j]``; ``dL/dx`` scatters
    ``dL/dy`` to the argmax recorded in the forward pass (ties: the first maximum).
    """

    _idx: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._x = x
        y, self._idx = ops.max_pool2d(
            x,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            ceil_mode=self.ceil_mode,
            return_indices=True,
        )
        return y

    def backward(self, grad_y: np.ndarray) -> np.ndarray | None:
        return ops.max_pool2d_backward(
            grad_y,
            self._x,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            ceil_mode=self.ceil_mode,
            indices=self._idx,
        )


class AvgPool2d(_Pool2d):
    """Average pooling; each window's gradient is shared equally by its inputs.

    Notes
    -----
    ``y = (1/k) sum_window x`` with ``k = kh*kw`` (``count_include_pad=True``), so
    ``dL/dx`` receives ``dL/dy / k`` from every window that covers it.
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._x = x
        return ops.avg_pool2d(
            x, self.kernel_size, stride=self.stride, padding=self.padding, ceil_mode=self.ceil_mode
        )

    def backward(self, grad_y: np.ndarray) -> np.ndarray | None:
        return ops.avg_pool2d_backward(
            grad_y,
            self._x,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            ceil_mode=self.ceil_mode,
        )


class GlobalAvgPool(Layer):
    """Global average pooling: (N, C, H, W) -> (N, C), the mean of each feature map.

    Notes
    -----
    ``y[n, c] = mean_{h, w} x[n, c, h, w]``; ``dL/dx[n, c, h, w] = dL/dy[n, c] / (H*W)``.
    """

    kind = "gap"

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._shape = x.shape
        return ops.global_avg_pool(x)

    def backward(self, grad_y: np.ndarray) -> np.ndarray | None:
        return ops.global_avg_pool_backward(grad_y, self._shape)


class ReLU(Layer):
    """``y = max(x, 0)``; ``dL/dx = dL/dy * [x > 0]`` (the gradient at 0 is taken as 0)."""

    kind = "relu"

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._mask = x > 0
        return np.multiply(x, self._mask)

    def backward(self, grad_y: np.ndarray) -> np.ndarray | None:
        return np.multiply(grad_y, self._mask)


class ReLU6(Layer):
    """``y = min(max(x, 0), 6)`` (MobileNetV2's activation); ``dL/dx = dL/dy * [0 < x < 6]``."""

    kind = "relu6"

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._mask = (x > 0) & (x < 6)
        return np.clip(x, 0, 6)

    def backward(self, grad_y: np.ndarray) -> np.ndarray | None:
        return np.multiply(grad_y, self._mask)


class LeakyReLU(Layer):
    """``y = x if x > 0 else slope * x``; ``dL/dx = dL/dy * (1 if x > 0 else slope)``."""

    kind = "leakyrelu"

    def __init__(self, slope: float = 0.01, name: str = "") -> None:
        super().__init__(name)
        self.slope = float(slope)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._factor = np.where(x > 0, x.dtype.type(1), x.dtype.type(self.slope))
        return x * self._factor

    def backward(self, grad_y: np.ndarray) -> np.ndarray | None:
        return grad_y * self._factor


class Tanh(Layer):
    """``y = tanh(x)``; ``dL/dx = dL/dy * (1 - y^2)``."""

    kind = "tanh"

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._y = np.tanh(x)
        return self._y

    def backward(self, grad_y: np.ndarray) -> np.ndarray | None:
        # one temporary instead of three: these maps are the largest arrays of a LeNet step
        out = np.multiply(self._y, self._y)
        np.subtract(1, out, out=out)
        return np.multiply(out, grad_y, out=out)


class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``; ``dL/dx = dL/dy * y * (1 - y)``.

    Notes
    -----
    With ``e = exp(-|x|)`` (never overflows): ``y = 1 / (1 + e)`` for ``x >= 0`` and
    ``y = e / (1 + e)`` for ``x < 0``, accurate in both tails.
    """

    kind = "sigmoid"

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        e = np.exp(-np.abs(x))
        self._y = np.where(x >= 0, 1, e) / (1 + e)
        return self._y

    def backward(self, grad_y: np.ndarray) -> np.ndarray | None:
        out = np.subtract(1, self._y)
        out *= self._y
        return np.multiply(out, grad_y, out=out)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in C order (PyTorch's ``flatten(1)``); backward reshapes."""

    kind = "flatten"

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_y: np.ndarray) -> np.ndarray | None:
        return grad_y.reshape(self._shape)


class Linear(Layer):
    """Fully connected layer ``y = x W^T + b`` with ``W`` of shape (out, in), as PyTorch.

    Notes
    -----
    An input with more than two dimensions is flattened first (the spec's implicit flatten).
    ``dL/dW = (dL/dy)^T x``, ``dL/db = sum_n dL/dy``, ``dL/dx = dL/dy W``.
    """

    kind = "fc"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        init: str = "glorot",
        rng: np.random.Generator | None = None,
        dtype: DTypeLike = np.float32,
        name: str = "",
    ) -> None:
        super().__init__(name)
        rng = rng if rng is not None else np.random.default_rng(0)
        shape = (out_features, in_features)
        self.w = init_weights(rng, init, shape, in_features, out_features).astype(dtype)
        self.b = np.zeros(out_features, dtype) if bias else None
        if bias and init == "torch":
            self.b[...] = torch_default(rng, (out_features,), in_features)
        self.params = [self.w] + ([self.b] if bias else [])
        self.grads = [np.zeros_like(p) for p in self.params]

    def rebind(self) -> None:
        self.w = self.params[0]
        self.b = self.params[1] if len(self.params) > 1 else None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._shape = x.shape
        x2 = x.reshape(x.shape[0], -1)
        self._x = x2
        y = x2 @ self.w.T
        if self.b is not None:
            y += self.b
        return y

    def backward(self, grad_y: np.ndarray) -> np.ndarray | None:
        np.matmul(grad_y.T, self._x, out=self.grads[0])
        if self.b is not None:
            np.sum(grad_y, axis=0, out=self.grads[1])
        if not self.need_input_grad:
            return None
        return (grad_y @ self.w).reshape(self._shape)


class Add(Layer):
    """Elementwise sum of two or more inputs of one shape: the merge of a residual block.

    Notes
    -----
    ``y = x_1 + ... + x_k``, so ``dL/dx_i = dL/dy`` for every input (the gradient flows down
    the shortcut unchanged, which is why deep residual networks train; He et al., 2016).
    """

    kind = "add"
    multi_input = True

    def forward(self, xs: list[np.ndarray], training: bool = False) -> np.ndarray:
        self._count = len(xs)
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y += x
        return y

    def backward(self, grad_y: np.ndarray) -> list[np.ndarray]:
        return [grad_y] * self._count


class Concat(Layer):
    """Concatenation of two or more inputs along the channel axis (Inception, DenseNet).

    Notes
    -----
    ``y = [x_1, ..., x_k]`` on axis 1; ``dL/dx_i`` is the slice of ``dL/dy`` that holds
    ``x_i``'s channels.
    """

    kind = "concat"
    multi_input = True

    def forward(self, xs: list[np.ndarray], training: bool = False) -> np.ndarray:
        self._sizes = [x.shape[1] for x in xs]
        return np.concatenate(xs, axis=1)

    def backward(self, grad_y: np.ndarray) -> list[np.ndarray]:
        bounds = np.cumsum(self._sizes)[:-1]
        return [np.ascontiguousarray(g) for g in np.split(grad_y, bounds, axis=1)]


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability ``rate`` and scale the
    survivors by ``1 / (1 - rate)``, so evaluation is the identity.

    Notes
    -----
    ``y = x * m / (1 - rate)`` with ``m ~ Bernoulli(1 - rate)``; ``dL/dx = dL/dy * m/(1-rate)``.
    The mask comes from ``rng`` (set by the trainer per epoch so ``--seed`` repeats exactly).
    """

    kind = "dropout"

    def __init__(self, rate: float, name: str = "") -> None:
        super().__init__(name)
        self.rate = float(rate)
        self.rng = np.random.default_rng(0)
        self._scale: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if not training or self.rate == 0:
            self._scale = None
            return x
        keep = self.rng.random(x.shape) >= self.rate
        self._scale = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
        return x * self._scale

    def backward(self, grad_y: np.ndarray) -> np.ndarray | None:
        return grad_y if self._scale is None else grad_y * self._scale


class BatchNorm(Layer):
    """Batch normalisation over (N, H, W) per channel for images, over N for features.

    Notes
    -----
    Training: ``x_hat = (x - mean_B) / sqrt(var_B + eps)``, ``y = gamma * x_hat + beta``, with
    the biased batch variance; the running statistics follow PyTorch,
    ``running = (1 - momentum) * running + momentum * batch`` (the unbiased variance).
    Evaluation uses the running statistics (``backward`` is meant for training-mode
    forwards: it differentiates through the batch statistics). With ``m`` values per channel,
    ``dL/dx = gamma / (m * std) * (m * g - sum(g) - x_hat * sum(g * x_hat))``
    (Ioffe & Szegedy, 2015).
    """

    kind = "bn"

    def __init__(
        self,
        channels: int,
        *,
        eps: float = 1e-5,
        momentum: float = 0.1,
        dtype: DTypeLike = np.float32,
        name: str = "",
    ) -> None:
        super().__init__(name)
        self.eps = eps
        self.momentum = momentum
        self.gamma = np.ones(channels, dtype)
        self.beta = np.zeros(channels, dtype)
        self.params = [self.gamma, self.beta]
        self.grads = [np.zeros_like(p) for p in self.params]
        self.buffers = {
            "running_mean": np.zeros(channels, dtype),
            "running_var": np.ones(channels, dtype),
        }

    def rebind(self) -> None:
        self.gamma, self.beta = self.params

    @staticmethod
    def _axes(x: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
        # Reduce over everything but the channel axis; broadcast back as (1, C, 1, ...).
        axes = (0, *range(2, x.ndim))
        return axes, (1, x.shape[1]) + (1,) * (x.ndim - 2)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        axes, bshape = self._axes(x)
        if training:
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            m = x.size // x.shape[1]
            mom = self.momentum
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            rm *= 1 - mom
            rm += mom * mean
            rv *= 1 - mom
            rv += mom * var * (m / max(m - 1, 1))
        else:
            mean = self.buffers["running_mean"]
            var = self.buffers["running_var"]
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
        self._x_hat = (x - mean.reshape(bshape)) * inv_std.reshape(bshape)
        self._inv_std = inv_std
        return self._x_hat * self.gamma.reshape(bshape) + self.beta.reshape(bshape)

    def backward(self, grad_y: np.ndarray) -> np.ndarray | None:
        axes, bshape = self._axes(grad_y)
        x_hat = self._x_hat
        sum_g = grad_y.sum(axis=axes)
        sum_gx = (grad_y * x_hat).sum(axis=axes)
        self.grads[0][...] = sum_gx
        self.grads[1][...] = sum_g
        m = grad_y.size // grad_y.shape[1]
        scale = (self.gamma * self._inv_std / m).reshape(bshape)
        return scale * (m * grad_y - sum_g.reshape(bshape) - x_hat * sum_gx.reshape(bshape))


__all__ = [
    "Add",
    "AvgPool2d",
    "BatchNorm",
    "Concat",
    "Conv2d",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "Layer",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "ReLU",
    "ReLU6",
    "Sigmoid",
    "Tanh",
    "glorot_uniform",
    "he_normal",
    "init_weights",
    "torch_default",
]
