"""A Model: the plain list of layers that an architecture spec describes.

The model is built only from :func:`cnnkit.spec.parse` / :func:`cnnkit.spec.infer`, so the
spec a user inspects with ``cnnkit shape`` is exactly the spec that trains. Shapes (a conv's
input channels, an fc layer's input features, resolved "same" padding) come from ``infer``.

Every parameter and every gradient lives in one flat array (``model.flat_params`` /
``model.flat_grads``); the layers hold views into it. The optimiser then updates the whole
network with a few vectorised numpy calls instead of a few calls per tensor.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit import memory
from cnnkit.nn import layers as L

RELU_FAMILY = ("relu", "leakyrelu")
# Layers that sit between a weight layer and its activation without changing which
# initialisation suits it.
_TRANSPARENT = ("bn", "dropout", "pool", "flatten", "gap")


def _pairs(pads: Any, ndim: int) -> tuple[tuple[int, int], ...]:
    if pads is None:
        return ((0, 0),) * ndim
    out = []
    for p in pads:
        if isinstance(p, int | np.integer):
            out.append((int(p), int(p)))
        else:
            lo, hi = p
            out.append((int(lo), int(hi)))
    return tuple(out)


def _init_for(layers: tuple[Any, ...], index: int) -> str:
    """ "he" if the next activation after layer ``index`` is relu-like, else "glorot"."""
    for spec in layers[index + 1 :]:
        if spec.kind in RELU_FAMILY:
            return "he"
        if spec.kind not in _TRANSPARENT:
            return "glorot"
    return "glorot"


def _tuple2(value: Any) -> tuple[int, int]:
    if isinstance(value, int | np.integer):
        return (int(value), int(value))
    items = tuple(int(v) for v in value)
    return (items[0], items[0]) if len(items) == 1 else (items[0], items[1])


class Model:
    """A feed-forward network built from a parsed architecture.

    Parameters
    ----------
    arch : cnnkit.spec.Architecture
        The parsed spec (``spec.parse``); its input shape must be (C, H, W).
    seed : int
        Seed of the weight initialisation.
    init : str
        ``"he"``: He normal for layers followed by relu/leaky relu, Glorot uniform otherwise.
        ``"torch"``: PyTorch's default ``U(+-1/sqrt(fan_in))`` for weights and biases.
    dtype : numpy dtype
        float32 (training) or float64 (gradient checks).
    source : str, optional
        The spec text the architecture was parsed from, stored in model files.

    Notes
    -----
    ``forward`` runs the layers in order; ``backward`` runs them in reverse, each one turning
    ``dL/d(output)`` into ``dL/d(input)`` and filling its parameter gradients.
    """

    def __init__(
        self,
        arch: Any,
        *,
        seed: int = 0,
        dtype: Any = np.float32,
        source: str | None = None,
        init: str = "he",
    ) -> None:
        from cnnkit import spec as spec_mod

        if init not in ("he", "torch"):
            raise ValueError(f"init must be he (He/Glorot) or torch, got {init!r}")
        self.init = init
        self.arch = arch
        self.source = source
        self.dtype = np.dtype(dtype)
        self.input_shape = tuple(int(s) for s in arch.input_shape)
        if len(self.input_shape) != 3:
            raise ValueError(
                f"training supports 2-D image inputs (C H W); the input shape "
                f"{' '.join(map(str, self.input_shape))} has {len(self.input_shape) - 1} "
                "spatial dimensions"
            )
        infos = spec_mod.infer(arch)
        params = sum(int(info.params) for info in infos)
        values = sum(int(getattr(info, "activations", 0)) for info in infos)
        # weights, gradients, two optimiser moments and one scratch copy; the activations
        # of one image and their gradients
        memory.check(
            (params * 5 + values * 2) * self.dtype.itemsize,
            f"{arch.name}: {params:,} parameters and {values:,} activations per image",
            "use smaller layers or a smaller input",
        )
        rng = np.random.default_rng(seed)
        self.layers: list[L.Layer] = []
        self.output_shapes: list[tuple[int, ...]] = []
        specs = tuple(arch.layers)
        for i, info in enumerate(infos):
            self.layers.append(self._build(info, specs, i, rng))
            self.output_shapes.append(tuple(int(s) for s in info.output_shape))
        if not self.layers:
            raise ValueError("the architecture has no layers")
        # One score per class is a flat vector; a (K, 1, 1) map also counts as K scores.
        out = self.output_shapes[-1]
        self.num_outputs = int(np.prod(out)) if all(s == 1 for s in out[1:]) else 0
        self.layers[0].need_input_grad = False
        self._flatten_parameters()

    def _init_for(self, specs: tuple[Any, ...], i: int) -> str:
        return "torch" if self.init == "torch" else _init_for(specs, i)

    def _build(self, info: Any, specs: tuple[Any, ...], i: int, rng: np.random.Generator):
        spec = info.layer
        kind = spec.kind
        name = getattr(info, "name", "") or f"{kind}{i + 1}"
        in_shape = tuple(int(s) for s in info.input_shape)
        ndim_sp = len(self.input_shape) - 1
        if kind == "conv":
            if len(in_shape) < 3 or ndim_sp != 2:
                raise ValueError(
                    f"{self.arch.where} {spec.line}: training supports 2-D convolutions only "
                    f"(input C H W); got input shape {in_shape}"
                )
            c_in = in_shape[-3]
            return L.Conv2d(
                c_in,
                int(spec.out_channels),
                _tuple2(spec.kernel),
                stride=_tuple2(spec.stride),
                pads=_pairs(info.pads, 2),
                dilation=_tuple2(spec.dilation),
                groups=int(spec.groups or 1),
                bias=bool(spec.bias),
                init=self._init_for(specs, i),
                rng=rng,
                dtype=self.dtype,
                name=name,
            )
        if kind == "pool":
            if ndim_sp != 2:
                raise ValueError(
                    f"{self.arch.where} {spec.line}: training supports 2-D pooling only"
                )
            pads = _pairs(info.pads, 2)
            if pads[0][0] != pads[0][1] or pads[1][0] != pads[1][1]:
                raise ValueError(
                    f"{self.arch.where} {spec.line}: pooling needs the same padding on both "
                    f"sides (an int), got {pads}"
                )
            cls = L.MaxPool2d if spec.mode == "max" else L.AvgPool2d
            stride = spec.stride if spec.stride is not None else spec.kernel
            return cls(
                _tuple2(spec.kernel),
                _tuple2(stride),
                (pads[0][0], pads[1][0]),
                ceil_mode=bool(spec.ceil),
                name=name,
            )
        if kind == "gap":
            return L.GlobalAvgPool(name)
        if kind == "relu":
            return L.ReLU(name)
        if kind == "leakyrelu":
            return L.LeakyReLU(spec.slope if spec.slope is not None else 0.01, name)
        if kind == "tanh":
            return L.Tanh(name)
        if kind == "sigmoid":
            return L.Sigmoid(name)
        if kind == "flatten":
            return L.Flatten(name)
        if kind == "dropout":
            return L.Dropout(spec.rate if spec.rate is not None else 0.5, name)
        if kind == "bn":
            return L.BatchNorm(in_shape[0], dtype=self.dtype, name=name)
        if kind == "fc":
            return L.Linear(
                int(np.prod(in_shape)),
                int(spec.units),
                bias=bool(spec.bias) if spec.bias is not None else True,
                init=self._init_for(specs, i),
                rng=rng,
                dtype=self.dtype,
                name=name,
            )
        raise ValueError(f"{self.arch.where} {spec.line}: layer kind {kind!r} cannot be trained")

    def _flatten_parameters(self) -> None:
        total = sum(p.size for layer in self.layers for p in layer.params)
        self.flat_params = np.zeros(total, self.dtype)
        self.flat_grads = np.zeros(total, self.dtype)
        offset = 0
        for layer in self.layers:
            new_p, new_g = [], []
            for p in layer.params:
                view = self.flat_params[offset : offset + p.size].reshape(p.shape)
                view[...] = p
                new_p.append(view)
                new_g.append(self.flat_grads[offset : offset + p.size].reshape(p.shape))
                offset += p.size
            layer.params, layer.grads = new_p, new_g
            if hasattr(layer, "rebind"):
                layer.rebind()

    # -- running -------------------------------------------------------------------------

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Logits for a batch ``x`` of shape (N, *input_shape)."""
        for layer in self.layers:
            x = layer.forward(x, training)
        return x.reshape(x.shape[0], -1)

    def backward(self, grad: np.ndarray) -> None:
        """Back-propagate ``dL/d(logits)``; fills ``flat_grads``."""
        grad = grad.reshape((grad.shape[0], *self.output_shapes[-1]))
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
            if grad is None:
                break

    def activations(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """(layer name, output) for every layer, evaluation mode."""
        out = []
        for layer in self.layers:
            x = layer.forward(x, False)
            out.append((layer.name, x))
        return out

    def predict_logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Evaluation-mode logits for any number of inputs, in batches."""
        x = np.asarray(x, self.dtype)
        chunks = [
            self.forward(np.ascontiguousarray(x[i : i + batch_size]), False)
            for i in range(0, len(x), batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.num_outputs), self.dtype)
        return np.concatenate(chunks)

    def predict_proba(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Softmax class probabilities, shape (N, classes)."""
        from cnnkit.nn.losses import softmax

        return softmax(self.predict_logits(x, batch_size))

    # -- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """Parameters and buffers by name (``conv1.0`` = conv1's weight, ``bn2.running_mean``)."""
        out: dict[str, np.ndarray] = {}
        for i, layer in enumerate(self.layers):
            for j, p in enumerate(layer.params):
                out[f"{i}.{layer.name}.p{j}"] = p
            for key, buf in layer.buffers.items():
                out[f"{i}.{layer.name}.{key}"] = buf
        return out

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy arrays from :meth:`state`'s naming into this model; shapes must match."""
        mine = self.state()
        missing = sorted(set(mine) - set(arrays))
        if missing:
            raise ValueError(f"the model file lacks the array {missing[0]!r} for this architecture")
        for key, target in mine.items():
            src = arrays[key]
            if src.shape != target.shape:
                raise ValueError(
                    f"array {key!r} has shape {src.shape}, the architecture needs {target.shape}"
                )
            target[...] = src

    def parameter_count(self) -> int:
        return int(self.flat_params.size)

    def first_conv(self) -> L.Conv2d | None:
        """The first convolution layer (its kernels are what ``visualize --filters`` shows)."""
        for layer in self.layers:
            if isinstance(layer, L.Conv2d):
                return layer
        return None

    def set_dropout_rng(self, rng: np.random.Generator) -> None:
        for layer in self.layers:
            if isinstance(layer, L.Dropout):
                layer.rng = rng


def build_model(
    source: str,
    input_shape: tuple[int, ...] | None = None,
    *,
    seed: int = 0,
    dtype: Any = np.float32,
    init: str = "he",
) -> Model:
    """Parse ``source`` with :func:`cnnkit.spec.parse` and build the model it describes."""
    from cnnkit import spec as spec_mod

    arch = spec_mod.parse(source, input_shape=input_shape)
    return Model(arch, seed=seed, dtype=dtype, source=spec_text(source), init=init)


def spec_text(source: str) -> str:
    """The spec text behind ``source`` (a shipped name, a file or inline text).

    Model files store the text itself, not a name or a path, so a model still loads after the
    file moves or a shipped architecture changes.
    """
    from cnnkit import spec as spec_mod

    # The parser's own resolution of names and paths: one place decides what a source means.
    return spec_mod._load(source)[0]


__all__ = ["Model", "build_model", "spec_text"]
