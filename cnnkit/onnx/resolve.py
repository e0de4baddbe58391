"""ONNX nodes as cnnkit layer kinds (:func:`resolve`).

Each node of an :class:`cnnkit.onnx.reader.OnnxGraph` becomes an :class:`ImportedLayer`: a
cnnkit kind (conv, pool, gap, relu, relu6, leakyrelu, sigmoid, tanh, bn, add, concat, fc,
flatten, dropout, softmax) with its settings and the names of the layers it reads. Identity
nodes, constant plumbing and arithmetic with a constant (Sub, Mul, Div, Add: input scaling)
disappear; ``MatMul`` followed by ``Add`` of a bias becomes one ``fc``. The shape arithmetic
of a dynamic-batch ``x.view(x.size(0), -1)`` (Shape, Gather, Unsqueeze, Slice, Concat) is
followed as far as the batch entry, so its Reshape reads as a flatten. A zero Pad joins the
padding of the convolution or pooling that reads it; nodes computing only from small
constants (a Pad's amounts, as PyTorch writes them) are computed (:data:`FOLDABLE`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnkit.onnx.reader import INPUT, SMALL_CONSTANT, OnnxError, OnnxGraph, OnnxNode

SHAPE_OPS = ("Shape", "Gather", "Unsqueeze", "Squeeze", "Slice", "Cast")
BATCH = "N"  # a shape entry that is the batch size


@dataclass(frozen=True)
class ImportedLayer:
    """One ONNX node as a cnnkit layer kind.

    ``settings`` holds the kind's fields with cnnkit's names: conv ``out_channels, kernel,
    stride, padding, dilation, groups, bias``; pool ``mode, kernel, stride, padding, ceil,
    count_include_pad``; fc ``units, bias``; leakyrelu ``slope``; dropout ``rate``; bn ``eps``.
    ``padding`` is a tuple of ``(before, after)`` pairs, or ``"same"`` (extra after, ONNX
    SAME_UPPER), ``"same_lower"`` (extra before) or ``"valid"``. ``weights`` gives the
    initializer shapes the layer owns, so a reader can check them against inferred shapes.
    """

    name: str
    kind: str
    op_type: str
    inputs: tuple[str, ...]
    settings: dict[str, Any]
    weights: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _slice(attrs: dict[str, Any], args: list[Any]) -> np.ndarray:
    data, starts, ends = args[0], args[1], args[2]
    axes = args[3] if len(args) > 3 and args[3] is not None else np.arange(len(starts))
    steps = args[4] if len(args) > 4 and args[4] is not None else np.ones(len(starts))
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        n = data.shape[int(axis)]
        # int64 extremes (exporters' "to the end") arrive as floats: clamp before int()
        start, end = (int(max(min(v, n + 1), -n - 1)) for v in (start, end))
        index[int(axis)] = slice(start, end, int(step))
    return data[tuple(index)]


def _axes(attrs: dict[str, Any], args: list[Any]) -> list[int]:
    axes = attrs.get("axes")
    if axes is None and len(args) > 1 and args[1] is not None:
        axes = args[1].reshape(-1)
    return [int(a) for a in axes] if axes is not None else []


def _reshape(attrs: dict[str, Any], args: list[Any]) -> np.ndarray:
    data, shape = args[0], [int(v) for v in args[1].reshape(-1)]
    shape = [data.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return data.reshape(shape)


def _constant_of_shape(attrs: dict[str, Any], args: list[Any]) -> np.ndarray:
    from onnx import numpy_helper

    shape = [int(v) for v in args[0].reshape(-1)]
    if any(d < 0 for d in shape) or math.prod(shape) > SMALL_CONSTANT:
        raise ValueError(f"shape {shape} is not a small constant")
    value = attrs.get("value")
    fill = float(numpy_helper.to_array(value).reshape(-1)[0]) if value is not None else 0.0
    return np.full(shape, fill)


def _squeeze(attrs: dict[str, Any], args: list[Any]) -> np.ndarray:
    axes = _axes(attrs, args)
    return np.squeeze(args[0], axis=tuple(axes)) if axes else np.squeeze(args[0])


def _binary(op: Any) -> Any:
    """An elementwise operator whose broadcast result is checked for size before it exists
    (a (4096, 1) by (1, 4096) product would otherwise allocate 16 M values)."""

    def run(attrs: dict[str, Any], args: list[Any]) -> np.ndarray:
        shape = np.broadcast_shapes(args[0].shape, args[1].shape)
        if math.prod(shape) > SMALL_CONSTANT:
            raise ValueError(f"a broadcast to {list(shape)} is not a small constant")
        return op(args[0], args[1])

    return run


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Values are held as floats, so an integer tensor's truncating division cannot be told
    # from true division; fold only where both agree.
    with np.errstate(divide="ignore", invalid="ignore"):
        result = a / b
    if not np.all(np.isfinite(result)):
        raise ValueError("division by zero")
    integral = np.all(a == np.round(a)) and np.all(b == np.round(b))
    if integral and not np.all(result == np.round(result)):
        raise ValueError("an integer division with a remainder")
    return result


# Operators computed when all their inputs are constants: attrs, input arrays -> array.
FOLDABLE: dict[str, Any] = {
    "Identity": lambda attrs, args: args[0],
    "Shape": lambda attrs, args: np.array(args[0].shape[attrs.get("start", 0) : attrs.get("end")]),
    "Cast": lambda attrs, args: args[0],
    "ConstantOfShape": _constant_of_shape,
    "Concat": lambda attrs, args: np.concatenate(
        [a for a in args if a is not None], axis=int(attrs.get("axis", 0))
    ),
    "Reshape": _reshape,
    "Slice": _slice,
    "Transpose": lambda attrs, args: np.transpose(args[0], attrs.get("perm")),
    "Unsqueeze": lambda attrs, args: np.expand_dims(args[0], tuple(_axes(attrs, args))),
    "Squeeze": _squeeze,
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(_divide),
    "Gather": lambda attrs, args: np.take(
        args[0], args[1].astype(np.int64), axis=int(attrs.get("axis", 0))
    ),
}


class _Resolver:
    """Walks the nodes once, mapping tensor names to the layer that produces them."""

    def __init__(self, graph: OnnxGraph) -> None:
        self.g = graph
        self.source: dict[str, str] = {graph.input_name: INPUT}  # tensor -> layer name
        self.layers: list[ImportedLayer] = []
        self.by_name: dict[str, ImportedLayer] = {}
        # Shape values computed from data tensors: entries are ints, BATCH, or None where
        # unknown; a trailing ... stands for the unknown rest of a Shape(x).
        self.sym: dict[str, tuple[Any, ...]] = {}
        self.pending: dict[str, tuple[tuple[int, int], ...]] = {}  # Pad output -> its pads
        self.readers: dict[str, list[OnnxNode]] = {}  # tensor -> the nodes that read it
        for node in graph.nodes:
            for tensor in dict.fromkeys(node.inputs):
                self.readers.setdefault(tensor, []).append(node)

    def error(self, node: OnnxNode, message: str) -> OnnxError:
        return OnnxError(f"{self.g.path}: node {node.name} ({node.op_type}): {message}")

    def is_constant(self, tensor: str) -> bool:
        return tensor in self.g.initializers

    def data_inputs(self, node: OnnxNode) -> list[str]:
        return [t for t in node.inputs if t and not self.is_constant(t) and t not in self.sym]

    def one_input(self, node: OnnxNode) -> str:
        data = self.data_inputs(node)
        if len(data) != 1:
            raise self.error(node, f"expected one data input, got {len(data)}")
        if data[0] not in self.source:
            raise self.error(node, f"reads {data[0]!r}, which is computed from constants only")
        return self.source[data[0]]

    def weight(self, node: OnnxNode, index: int, what: str) -> tuple[int, ...]:
        if len(node.inputs) <= index or node.inputs[index] not in self.g.initializers:
            raise self.error(node, f"its {what} must be a constant initializer")
        return self.g.initializers[node.inputs[index]]

    def value(self, tensor: str) -> list[float] | None:
        return self.g.constants.get(tensor)

    def emit(self, node: OnnxNode, kind: str, inputs: list[str], **settings: Any) -> None:
        weights = {t: self.g.initializers[t] for t in node.inputs if t and t in self.g.initializers}
        layer = ImportedLayer(node.name, kind, node.op_type, tuple(inputs), settings, weights)
        self.layers.append(layer)
        self.by_name[node.name] = layer
        self.source[node.outputs[0]] = node.name

    def alias(self, node: OnnxNode) -> None:
        self.source[node.outputs[0]] = self.one_input(node)

    def run(self) -> list[ImportedLayer]:
        for node in self.g.nodes:
            if node.op_type == "Constant":
                continue
            if all(not t or self.is_constant(t) for t in node.inputs):
                self.fold(node)
                continue
            if node.op_type in SHAPE_OPS or (
                node.op_type == "Concat" and any(t in self.sym for t in node.inputs)
            ):
                try:
                    self.shape_op(node)
                except OnnxError:
                    raise
                except (ValueError, TypeError, IndexError) as exc:  # the batch used as a number
                    raise self.error(node, f"cannot follow this shape arithmetic ({exc})") from None
                continue
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None:
                raise self.error(node, "is read only where it computes from constants")
            handler(node)
        if len(self.g.outputs) != 1:
            raise OnnxError(
                f"{self.g.path}: cnnkit reads graphs with one output; this one has "
                f"{len(self.g.outputs)} ({', '.join(self.g.outputs)})"
            )
        output = self.source.get(self.g.outputs[0], INPUT)
        if output == INPUT:
            raise OnnxError(f"{self.g.path}: the graph output is its input: no layers")
        # Only what the output depends on, so the output's layer comes last.
        keep = {output}
        for layer in reversed(self.layers):
            if layer.name in keep:
                keep.update(layer.inputs)
        return [layer for layer in self.layers if layer.name in keep]

    def array(self, node: OnnxNode, tensor: str) -> np.ndarray:
        values = self.value(tensor)
        if values is None:
            raise self.error(node, f"computes from {tensor!r}, a constant too large to follow")
        return np.asarray(values, np.float64).reshape(self.g.initializers[tensor])

    def fold(self, node: OnnxNode) -> None:
        """Compute a node whose inputs are all constants (small integer tensors such as the
        amounts of a Pad), so the layers that read it see a constant."""
        op, out = node.op_type, node.outputs[0]
        if op == "Identity" and node.inputs[0] not in self.g.constants:
            self.g.initializers[out] = self.g.initializers[node.inputs[0]]  # a weight's alias
            return
        if op not in FOLDABLE:
            raise self.error(node, "computes from constants only; cnnkit reads layers")
        args = [self.array(node, t) if t else None for t in node.inputs]
        try:
            result = FOLDABLE[op](node.attrs, args)
        except (ValueError, IndexError, TypeError) as exc:
            raise self.error(node, f"cannot compute it from its constants ({exc})") from None
        if result.size > SMALL_CONSTANT:
            raise self.error(node, f"its {result.size:,} values are more than cnnkit follows")
        self.g.initializers[out] = tuple(int(d) for d in result.shape)
        self.g.constants[out] = [float(v) for v in result.reshape(-1)]

    def shape_value(self, node: OnnxNode, tensor: str) -> tuple[Any, ...]:
        if tensor in self.sym:
            return self.sym[tensor]
        values = self.value(tensor)
        if values is None:
            raise self.error(node, f"reads {tensor!r}, which is not a shape cnnkit can follow")
        return tuple(int(v) for v in values)

    def shape_op(self, node: OnnxNode) -> None:
        """Follow the small integer arithmetic exporters write to compute a Reshape target."""
        op, out = node.op_type, node.outputs[0]
        if op == "Shape":
            if node.inputs[0] not in self.source:
                raise self.error(node, "the shape of a constant is not followed")
            self.sym[out] = (BATCH, ...)
            return
        value = self.shape_value(node, node.inputs[0])
        if op == "Cast":
            self.sym[out] = value
        elif op == "Gather":
            index = self.shape_value(node, node.inputs[1])
            if len(index) != 1:
                raise self.error(node, "only a single index into a shape is followed")
            i = int(index[0])
            known = value[:-1] if value and value[-1] is ... else value
            self.sym[out] = (known[i] if -len(known) <= i < len(known) else None,)
        elif op in ("Unsqueeze", "Squeeze"):
            self.sym[out] = value  # a scalar and a 1-vector hold the same entry here
        elif op == "Slice":
            starts = self.shape_value(node, node.inputs[1])
            ends = self.shape_value(node, node.inputs[2])
            if value and value[-1] is ... and starts == (0,) and ends == (1,):
                self.sym[out] = value[:1]
            elif value and value[-1] is not ...:
                self.sym[out] = value[int(starts[0]) : int(ends[0])]
            else:
                raise self.error(node, "only the batch entry of a shape is followed")
        else:  # Concat of shape pieces
            parts = [self.shape_value(node, t) for t in node.inputs if t]
            if any(p and p[-1] is ... for p in parts):
                raise self.error(node, "concatenating a whole shape is not followed")
            self.sym[out] = tuple(v for p in parts for v in p)

    # -- one method per operator ---------------------------------------------------------

    def op_Pad(self, node: OnnxNode) -> None:
        if str(node.attrs.get("mode", "constant")) != "constant":
            raise self.error(node, f"only zero padding is read, not mode {node.attrs['mode']!r}")
        if len(node.inputs) > 3 and node.inputs[3]:
            raise self.error(node, "padding selected axes (the axes input) is not supported")
        if "pads" in node.attrs:  # opset < 11: amounts and value are attributes
            pads, value = list(node.attrs["pads"]), float(node.attrs.get("value", 0.0))
        else:
            pads = self.value(node.inputs[1]) if len(node.inputs) > 1 else None
            fill = self.value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else [0]
            if pads is None or fill is None:
                raise self.error(node, "the padding amounts must be constants")
            value = float(fill[0])
        rank = len(pads) // 2
        begins, ends = [int(v) for v in pads[:rank]], [int(v) for v in pads[rank:]]
        if value != 0 or rank < 3 or begins[:2] + ends[:2] != [0] * 4 or min(pads) < 0:
            raise self.error(
                node, f"only zero padding of the spatial dimensions is read, got {list(pads)}"
            )
        readers = self.readers.get(node.outputs[0], [])
        if not readers or any(
            n.op_type not in ("Conv", "MaxPool", "AveragePool") or n.inputs[0] != node.outputs[0]
            for n in readers
        ):
            raise self.error(node, "a Pad is read only in front of a convolution or pooling")
        self.pending[node.outputs[0]] = tuple(zip(begins[2:], ends[2:]))
        self.alias(node)

    def _padding(self, node: OnnxNode, ndim: int) -> Any:
        extra = self.pending.get(node.inputs[0])
        own = self._own_padding(node, ndim)
        if extra is None:
            return own
        if isinstance(own, str) and own != "valid":
            raise self.error(node, f"auto_pad {own} after a Pad node is not supported")
        if len(extra) != ndim:
            raise self.error(node, "the Pad before it does not fit its spatial dimensions")
        own = ((0, 0),) * ndim if own == "valid" else own
        return tuple((a + c, b + d) for (a, b), (c, d) in zip(own, extra))

    def _own_padding(self, node: OnnxNode, ndim: int) -> Any:
        auto = str(node.attrs.get("auto_pad", "NOTSET"))
        if auto == "SAME_UPPER":
            return "same"
        if auto == "SAME_LOWER":
            return "same_lower"
        if auto == "VALID":
            return "valid"
        if auto != "NOTSET":
            raise self.error(node, f"unknown auto_pad {auto!r}")
        pads = [int(v) for v in node.attrs.get("pads", [0] * (2 * ndim))]
        if len(pads) != 2 * ndim or min(pads) < 0:
            raise self.error(node, f"pads {pads} do not fit {ndim} spatial dimensions")
        return tuple((pads[i], pads[i + ndim]) for i in range(ndim))

    def _ints(self, node: OnnxNode, key: str, ndim: int, default: int) -> tuple[int, ...]:
        values = tuple(int(v) for v in node.attrs.get(key, [default] * ndim))
        if len(values) != ndim or min(values) < 1:
            raise self.error(node, f"{key} {list(values)} do not fit {ndim} spatial dimensions")
        return values

    def op_Conv(self, node: OnnxNode) -> None:
        w = self.weight(node, 1, "weight")
        if len(w) < 3:
            raise self.error(node, f"weight shape {w} has no spatial dimensions")
        ndim = len(w) - 2
        kernel = tuple(int(v) for v in node.attrs.get("kernel_shape", w[2:]))
        if kernel != tuple(w[2:]):
            raise self.error(node, f"kernel_shape {list(kernel)} disagrees with weight {w}")
        has_bias = len(node.inputs) > 2 and bool(node.inputs[2])
        if has_bias:
            self.weight(node, 2, "bias")
        self.emit(
            node,
            "conv",
            [self.one_input(node)],
            out_channels=int(w[0]),
            kernel=kernel,
            stride=self._ints(node, "strides", ndim, 1),
            padding=self._padding(node, ndim),
            dilation=self._ints(node, "dilations", ndim, 1),
            groups=int(node.attrs.get("group", 1)),
            bias=has_bias,
            in_channels_per_group=int(w[1]),
        )

    def _pool(self, node: OnnxNode, mode: str) -> None:
        if len(node.outputs) > 1 and node.outputs[1]:
            raise self.error(node, "max-pool indices (a second output) are not supported")
        kernel = tuple(int(v) for v in node.attrs.get("kernel_shape", ()))
        if not kernel:
            raise self.error(node, "kernel_shape is missing")
        ndim = len(kernel)
        if any(d != 1 for d in self._ints(node, "dilations", ndim, 1)):
            raise self.error(node, "dilated pooling is not supported")
        self.emit(
            node,
            "pool",
            [self.one_input(node)],
            mode=mode,
            kernel=kernel,
            stride=self._ints(node, "strides", ndim, 1),
            padding=self._padding(node, ndim),
            ceil=bool(node.attrs.get("ceil_mode", 0)),
            count_include_pad=bool(node.attrs.get("count_include_pad", 0)),
        )

    def op_MaxPool(self, node: OnnxNode) -> None:
        self._pool(node, "max")

    def op_AveragePool(self, node: OnnxNode) -> None:
        self._pool(node, "avg")

    def op_GlobalAveragePool(self, node: OnnxNode) -> None:
        self.emit(node, "gap", [self.one_input(node)])

    def op_Relu(self, node: OnnxNode) -> None:
        self.emit(node, "relu", [self.one_input(node)])

    def op_Sigmoid(self, node: OnnxNode) -> None:
        self.emit(node, "sigmoid", [self.one_input(node)])

    def op_Tanh(self, node: OnnxNode) -> None:
        self.emit(node, "tanh", [self.one_input(node)])

    def op_LeakyRelu(self, node: OnnxNode) -> None:
        self.emit(
            node, "leakyrelu", [self.one_input(node)], slope=float(node.attrs.get("alpha", 0.01))
        )

    def op_Clip(self, node: OnnxNode) -> None:
        if "min" in node.attrs or "max" in node.attrs:  # opset < 11: bounds are attributes
            lo, hi = node.attrs.get("min"), node.attrs.get("max")
        else:
            bounds = []
            for index in (1, 2):
                name = node.inputs[index] if len(node.inputs) > index else ""
                vals = self.value(name) if name else None
                if name and (vals is None or len(vals) != 1):
                    raise self.error(node, "clip bounds must be scalar constants")
                bounds.append(vals[0] if vals else None)
            lo, hi = bounds
        if lo is None or hi is None or float(lo) != 0.0 or float(hi) != 6.0:
            raise self.error(node, f"only Clip(0, 6) (relu6) is supported, got Clip({lo}, {hi})")
        self.emit(node, "relu6", [self.one_input(node)])

    def op_BatchNormalization(self, node: OnnxNode) -> None:
        for index, what in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")):
            self.weight(node, index, what)
        if len([o for o in node.outputs if o]) > 1:
            raise self.error(node, "training-mode batch norm (running statistics as outputs)")
        self.emit(node, "bn", [self.one_input(node)], eps=float(node.attrs.get("epsilon", 1e-5)))

    def op_Dropout(self, node: OnnxNode) -> None:
        rate = float(node.attrs.get("ratio", 0.5))
        if len(node.inputs) > 1 and node.inputs[1]:
            vals = self.value(node.inputs[1])
            rate = vals[0] if vals else rate
        self.emit(node, "dropout", [self.one_input(node)], rate=rate)

    def op_Identity(self, node: OnnxNode) -> None:
        self.alias(node)

    def op_Softmax(self, node: OnnxNode) -> None:
        self.emit(node, "softmax", [self.one_input(node)], axis=int(node.attrs.get("axis", -1)))

    def op_Flatten(self, node: OnnxNode) -> None:
        if int(node.attrs.get("axis", 1)) != 1:
            raise self.error(node, "only Flatten(axis=1) is supported")
        self.emit(node, "flatten", [self.one_input(node)])

    def op_Reshape(self, node: OnnxNode) -> None:
        name = node.inputs[1] if len(node.inputs) > 1 else ""
        if name in self.sym:
            shape: Any = self.sym[name]
            if any(v is None or v is ... for v in shape):
                raise self.error(node, "the target shape depends on sizes other than the batch")
            shape = [0 if v == BATCH else v for v in shape]
        else:
            shape = self.value(name) if name else None
        if shape is None:
            raise self.error(node, "the target shape must be a constant")
        target = [int(v) for v in shape]
        # (N, -1) in any of the spellings exporters use: [0, -1], [1, -1], [-1, K], [N, -1].
        if len(target) != 2 or not (target[1] == -1 or target[0] in (-1, 0)):
            raise self.error(node, f"only a reshape to (N, -1) is supported, got {target}")
        self.emit(node, "flatten", [self.one_input(node)], target=tuple(target))

    def op_Gemm(self, node: OnnxNode) -> None:
        if int(node.attrs.get("transA", 0)):
            raise self.error(node, "transA=1 is not supported (the data must be A)")
        if node.inputs[0] not in self.source:
            raise self.error(node, "the data must be the first input")
        w = self.weight(node, 1, "weight B")
        if len(w) != 2:
            raise self.error(node, f"weight shape {w} is not 2-D")
        trans_b = bool(node.attrs.get("transB", 0))
        has_bias = len(node.inputs) > 2 and bool(node.inputs[2])
        if has_bias:
            self.weight(node, 2, "bias C")
        self.emit(
            node,
            "fc",
            [self.source[node.inputs[0]]],
            units=int(w[0] if trans_b else w[1]),
            in_features=int(w[1] if trans_b else w[0]),
            bias=has_bias,
        )

    def op_MatMul(self, node: OnnxNode) -> None:
        if node.inputs[0] not in self.source:
            raise self.error(node, "the data must be the first input")
        w = self.weight(node, 1, "weight")
        if len(w) != 2:
            raise self.error(node, f"weight shape {w} is not 2-D")
        self.emit(
            node,
            "fc",
            [self.source[node.inputs[0]]],
            units=int(w[1]),
            in_features=int(w[0]),
            bias=False,
        )

    def op_Add(self, node: OnnxNode) -> None:
        consts = [t for t in node.inputs if self.is_constant(t)]
        data = self.data_inputs(node)
        if len(data) == 2:
            self.emit(node, "add", [self.source[t] for t in data])
            return
        # x @ W + b, as exporters write a linear layer with MatMul: the bias joins the fc.
        producer = self.by_name.get(self.source.get(data[0], ""))
        bias = self.g.initializers[consts[0]] if consts else ()
        if (
            producer is not None
            and producer.op_type == "MatMul"
            and not producer.settings["bias"]
            and math.prod(bias) == producer.settings["units"]
            and self.layers[-1] is producer
        ):
            settings = {**producer.settings, "bias": True}
            weights = {**producer.weights, consts[0]: bias}
            merged = ImportedLayer(
                producer.name, "fc", "MatMul", producer.inputs, settings, weights
            )
            self.layers[-1] = merged
            self.by_name[producer.name] = merged
            self.source[node.outputs[0]] = producer.name
            return
        self.op_Sub(node)

    def op_Sub(self, node: OnnxNode) -> None:
        # x - c, x * c, x / c with a constant c: input scaling such as cnnkit's own exported
        # normalisation; no parameters to train, same shape, so no layer of its own.
        if len(self.data_inputs(node)) != 1:
            raise self.error(node, "only arithmetic with a constant (input scaling) is read")
        self.alias(node)

    op_Mul = op_Sub
    op_Div = op_Sub

    def op_Concat(self, node: OnnxNode) -> None:
        axis = int(node.attrs.get("axis", 1))
        if axis != 1:
            raise self.error(node, f"only channel concatenation (axis=1) is supported, got {axis}")
        data = self.data_inputs(node)
        if len(data) != len([t for t in node.inputs if t]):
            raise self.error(node, "concatenating constants is not supported")
        self.emit(node, "concat", [self.source[t] for t in data])


def resolve(graph: OnnxGraph) -> list[ImportedLayer]:
    """Map the nodes of ``graph`` onto cnnkit layer kinds, in topological order.

    Parameters
    ----------
    graph : OnnxGraph
        From :func:`cnnkit.onnx.reader.read_onnx`.

    Returns
    -------
    list of ImportedLayer
        Each with the names of the layers it reads (``"input"`` for the graph's input); only
        the layers the graph's one output depends on, that output's layer last.

    Raises
    ------
    OnnxError
        A known operator used in a way cnnkit does not model (a Concat along the width, a
        Clip other than 0..6, weights computed at run time, ...), naming the node.
    """
    copy = OnnxGraph(
        **{
            **graph.__dict__,
            "initializers": dict(graph.initializers),
            "constants": dict(graph.constants),
        }
    )
    return _Resolver(copy).run()


__all__ = ["FOLDABLE", "ImportedLayer", "resolve"]
