"""Export a trained cnnkit model as a standard ONNX file.

The file takes the images as cnnkit's image loader produces them *before* normalisation
(digits: 0..16 ink counts; other data sets: 0..1 pixels), because the model header's
per-channel ``(x - mean) / std`` is the graph's first two nodes. The metadata records the
class names, the statistics, the preprocessing and the spec text, so a user serving the file
with onnxruntime, opening it in Netron or loading it into PyTorch has everything cnnkit had.
The output ``logits`` are the scores ``cnnkit predict`` turns into probabilities (softmax).

One emitter per layer kind (the table :data:`EMITTERS`) writes that layer's ONNX nodes and
initializers; the file is checked by ``onnx.checker`` and written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnkit import __version__
from cnnkit.errors import ParameterError
from cnnkit.io import atomic_write
from cnnkit.nn.layers import MaxPool2d
from cnnkit.nn.serialize import load_model
from cnnkit.onnx import require
from cnnkit.onnx.reader import one_line

if TYPE_CHECKING:
    import onnx

    from cnnkit.nn.layers import (
        AvgPool2d,
        BatchNorm,
        Conv2d,
        Dropout,
        Layer,
        LeakyReLU,
        Linear,
        ReLU6,
    )
    from cnnkit.nn.model import Model

MIN_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
INPUT_NODE = "input"  # what model.inputs calls the network's input


@dataclass
class _Graph:
    """The ONNX graph under construction: nodes, initializers, and unique tensor names."""

    helper: ModuleType  # onnx.helper
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    used: set[str] = field(default_factory=set)

    def name(self, wanted: str) -> str:
        name, k = wanted, 1
        while name in self.used:
            k += 1
            name = f"{wanted}_{k}"
        self.used.add(name)
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, order="C"), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        out = self.name(name)
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _onnx_pads(pads: tuple[tuple[int, int], ...]) -> list[int]:
    pairs = [(int(lo), int(hi)) for lo, hi in pads]
    return [lo for lo, _ in pairs] + [hi for _, hi in pairs]


def _conv(g: _Graph, layer: Conv2d, x: list[str], in_shape: tuple[int, ...]) -> str:
    ndim = layer.w.ndim - 2
    inputs = [x[0], g.const(f"{layer.name}.weight", _f32(layer.w))]
    if layer.b is not None:
        inputs.append(g.const(f"{layer.name}.bias", _f32(layer.b)))
    return g.node(
        "Conv",
        inputs,
        layer.name,
        kernel_shape=list(layer.w.shape[2:]),
        strides=list(layer.stride)[:ndim],
        pads=_onnx_pads(layer.pads),
        dilations=list(layer.dilation)[:ndim],
        group=int(layer.groups),
    )


def _pool(g: _Graph, layer: MaxPool2d | AvgPool2d, x: list[str], in_shape: tuple[int, ...]) -> str:
    pads = [int(p) for p in layer.padding]
    attrs: dict[str, Any] = dict(
        kernel_shape=[int(k) for k in layer.kernel_size],
        strides=[int(s) for s in layer.stride],
        pads=pads + pads,
        ceil_mode=int(bool(layer.ceil_mode)),
    )
    if isinstance(layer, MaxPool2d):
        return g.node("MaxPool", [x[0]], layer.name, **attrs)
    # cnnkit's average pool divides by the window size, padding included
    return g.node("AveragePool", [x[0]], layer.name, count_include_pad=1, **attrs)


def _gap(g: _Graph, layer: Layer, x: list[str], in_shape: tuple[int, ...]) -> str:
    # cnnkit's gap returns (N, C); ONNX's keeps (N, C, 1, 1)
    pooled = g.node("GlobalAveragePool", [x[0]], layer.name)
    return g.node("Flatten", [pooled], f"{layer.name}.flatten", axis=1)


def _unary(op: str, **fixed: Any) -> Callable[..., str]:
    def emit(g: _Graph, layer: Layer, x: list[str], in_shape: tuple[int, ...]) -> str:
        return g.node(op, [x[0]], layer.name, **fixed)

    return emit


def _leaky(g: _Graph, layer: LeakyReLU, x: list[str], in_shape: tuple[int, ...]) -> str:
    return g.node("LeakyRelu", [x[0]], layer.name, alpha=float(layer.slope))


def _relu6(g: _Graph, layer: ReLU6, x: list[str], in_shape: tuple[int, ...]) -> str:
    lo = g.const(f"{layer.name}.min", np.array(0.0, np.float32))
    hi = g.const(f"{layer.name}.max", np.array(6.0, np.float32))
    return g.node("Clip", [x[0], lo, hi], layer.name)


def _fc(g: _Graph, layer: Linear, x: list[str], in_shape: tuple[int, ...]) -> str:
    src = x[0]
    if len(in_shape) > 1:  # cnnkit's fc flattens its input; Gemm wants (N, features)
        src = g.node("Flatten", [src], f"{layer.name}.flatten", axis=1)
    inputs = [src, g.const(f"{layer.name}.weight", _f32(layer.w))]
    if layer.b is not None:
        inputs.append(g.const(f"{layer.name}.bias", _f32(layer.b)))
    return g.node("Gemm", inputs, layer.name, transB=1)


def _dropout(g: _Graph, layer: Dropout, x: list[str], in_shape: tuple[int, ...]) -> str:
    ratio = g.const(f"{layer.name}.ratio", np.array(layer.rate, np.float32))
    return g.node("Dropout", [x[0], ratio], layer.name)


def _bn(g: _Graph, layer: BatchNorm, x: list[str], in_shape: tuple[int, ...]) -> str:
    inputs = [
        x[0],
        g.const(f"{layer.name}.weight", _f32(layer.gamma)),
        g.const(f"{layer.name}.bias", _f32(layer.beta)),
        g.const(f"{layer.name}.running_mean", _f32(layer.buffers["running_mean"])),
        g.const(f"{layer.name}.running_var", _f32(layer.buffers["running_var"])),
    ]
    return g.node("BatchNormalization", inputs, layer.name, epsilon=float(layer.eps))


def _add(g: _Graph, layer: Layer, x: list[str], in_shape: tuple[int, ...]) -> str:
    out = x[0]
    for other in x[1:]:
        out = g.node("Add", [out, other], layer.name)
    return out


def _concat(g: _Graph, layer: Layer, x: list[str], in_shape: tuple[int, ...]) -> str:
    return g.node("Concat", list(x), layer.name, axis=1)


# Layer kind (``Layer.kind``) -> emitter(graph, layer, input tensor names, input shape).
EMITTERS: dict[str, Callable[..., str]] = {
    "conv": _conv,
    "pool": _pool,
    "gap": _gap,
    "relu": _unary("Relu"),
    "relu6": _relu6,
    "leakyrelu": _leaky,
    "sigmoid": _unary("Sigmoid"),
    "tanh": _unary("Tanh"),
    "flatten": _unary("Flatten", axis=1),
    "fc": _fc,
    "dropout": _dropout,
    "bn": _bn,
    "add": _add,
    "concat": _concat,
}


def _emitter(layer: Layer) -> Callable[..., str]:
    if layer.kind not in EMITTERS:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has no ONNX export")
    return EMITTERS[layer.kind]


def _steps(model: Model) -> list[tuple[Layer, str, tuple[str, ...], tuple[int, ...]]]:
    """(layer, node name, names of the nodes it reads, output shape), in execution order."""
    return list(zip(model.layers, model.names, model.inputs, model.output_shapes))


def check_opset(opset: int) -> int:
    """Return ``opset`` if cnnkit can write it with the installed onnx, else raise
    :class:`~cnnkit.errors.ParameterError`."""
    onnx = require("onnx")
    newest = int(onnx.defs.onnx_opset_version())
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ParameterError(
            f"opset must be between {MIN_OPSET} and {newest} (the installed onnx package's "
            f"newest), got {opset!r}",
            "opset",
        )
    return opset


def model_to_onnx(model: Model, header: dict[str, Any], opset: int = MIN_OPSET) -> onnx.ModelProto:
    """Build the ``onnx.ModelProto`` of a trained model, checked by ``onnx.checker``.

    Parameters
    ----------
    model : cnnkit.nn.Model
        A built model with its weights.
    header : dict
        The model file's header (``mean``, ``std``, ``class_names``, ``preprocess``,
        ``dataset``, ``spec``), as :func:`cnnkit.nn.serialize.load_model` returns it.
    opset : int
        Default-domain opset, from 17 to the installed onnx package's newest.

    Returns
    -------
    onnx.ModelProto

    Raises
    ------
    ValueError
        An opset outside the range, or a layer without an ONNX form.
    """
    onnx = require("onnx")
    opset = check_opset(opset)
    helper = onnx.helper
    g = _Graph(helper)
    g.used.update({INPUT_NAME, OUTPUT_NAME})
    in_shape = tuple(int(s) for s in model.input_shape)
    channels = in_shape[0]
    mean = np.asarray(header.get("mean", [0.0]), np.float32).reshape(-1)
    std = np.asarray(header.get("std", [1.0]), np.float32).reshape(-1)
    if mean.size not in (1, channels) or std.size not in (1, channels):
        raise ValueError(
            f"the header's mean/std have {mean.size}/{std.size} values for {channels} channels"
        )
    x = _normalise(g, INPUT_NAME, mean, std, len(in_shape))
    tensors = {INPUT_NODE: x}  # node name -> the ONNX tensor holding its output
    shapes = {INPUT_NODE: in_shape}
    for layer, name, sources, out_shape in _steps(model):
        names = [tensors[s] for s in sources]
        tensors[name] = _emitter(layer)(g, layer, names, shapes[sources[0]])
        shapes[name] = tuple(out_shape)
    last_shape = shapes[model.names[-1]]
    last = tensors[model.names[-1]]
    if len(last_shape) > 1:
        last = g.node("Flatten", [last], "logits.flatten", axis=1)
    g.nodes.append(helper.make_node("Identity", [last], [OUTPUT_NAME], name=OUTPUT_NAME))
    n_out = int(np.prod(last_shape))
    graph = helper.make_graph(
        g.nodes,
        header.get("dataset") or "cnnkit",
        [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, ["N", n_out])],
        initializer=g.initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets),
        producer_name="cnnkit",
        producer_version=__version__,
        doc_string=(
            "Exported by cnnkit. Input: images as cnnkit's image loader produces them before "
            "normalisation; (x - mean) / std per channel is part of the graph. Output: logits "
            "(softmax gives cnnkit predict's probabilities)."
        ),
    )
    helper.set_model_props(proto, _metadata(header, mean, std))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # ValidationError / InferenceError: a bug or an opset clash
        raise ValueError(
            f"the exported graph fails onnx.checker at opset {opset}: {one_line(exc)}"
        ) from None
    return proto


def _normalise(g: _Graph, x: str, mean: np.ndarray, std: np.ndarray, ndim: int) -> str:
    """The model header's per-channel ``(x - mean) / std`` as the graph's first nodes
    (none where the mean is 0 or the std 1); returns the normalised tensor's name."""
    stat_shape = (1, mean.size) + (1,) * (ndim - 1)
    if np.any(mean != 0):
        x = g.node("Sub", [x, g.const("normalise.mean", mean.reshape(stat_shape))], "normalise.sub")
    if np.any(std != 1):
        std_shape = (1, std.size) + (1,) * (ndim - 1)
        x = g.node("Div", [x, g.const("normalise.std", std.reshape(std_shape))], "normalise.div")
    return x


def _metadata(header: dict[str, Any], mean: np.ndarray, std: np.ndarray) -> dict[str, str]:
    """The file's metadata: what cnnkit needs to use the model as it was trained."""
    return {
        "cnnkit.class_names": json.dumps([str(c) for c in header.get("class_names") or []]),
        "cnnkit.mean": json.dumps([float(v) for v in mean]),
        "cnnkit.std": json.dumps([float(v) for v in std]),
        "cnnkit.normalisation": "folded into the graph: (input - mean) / std per channel",
        "cnnkit.preprocess": json.dumps(header.get("preprocess") or {}),
        "cnnkit.dataset": str(header.get("dataset") or ""),
        # the train/val/test split, so a model imported back is evaluated on its test images
        "cnnkit.split": json.dumps(
            {k: header[k] for k in ("split_seed", "val_fraction", "data_dir") if k in header}
        ),
        "cnnkit.spec": str(header.get("spec") or ""),
    }


class ExportMismatch(RuntimeError):
    """onnxruntime's logits for the exported file differ from cnnkit's (a bug to report)."""


def verify_onnx(
    data: bytes, model: Model, header: dict[str, Any], count: int = 32, seed: int = 0
) -> float:
    """Run the serialized ONNX model in onnxruntime and compare with cnnkit's logits.

    The inputs are ``count`` random images whose normalised values are standard normal, as
    training data's are; onnxruntime gets them before normalisation, as the file expects.

    Returns
    -------
    float
        The largest absolute difference between the two sets of logits.

    Raises
    ------
    ExportMismatch
        The difference exceeds ``1e-4`` times the logits' scale (at least 1).
    cnnkit.onnx.MissingExtra
        onnxruntime is not installed.
    """
    ort = require("onnxruntime")
    shape = tuple(int(s) for s in model.input_shape)
    stat = (1, -1) + (1,) * (len(shape) - 1)
    x = np.random.default_rng(seed).standard_normal((count, *shape)).astype(np.float32)
    mean = np.asarray(header.get("mean", [0.0]), np.float32).reshape(stat)
    std = np.asarray(header.get("std", [1.0]), np.float32).reshape(stat)
    ours = np.asarray(model.predict_logits(x), np.float64)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    theirs = session.run([OUTPUT_NAME], {INPUT_NAME: (x * std + mean).astype(np.float32)})[0]
    diff = float(np.abs(theirs - ours).max())
    if diff > 1e-4 * max(1.0, float(np.abs(ours).max())):
        raise ExportMismatch(
            f"onnxruntime's logits differ from cnnkit's by {diff:.3g} on random inputs; "
            "nothing was written (please report this)"
        )
    return diff


def export_onnx(
    model_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    opset: int = MIN_OPSET,
    verify: bool = False,
) -> dict[str, Any]:
    """Export the model file ``model_path`` to the ONNX file ``output`` (written atomically).

    Parameters
    ----------
    model_path : path-like
        A cnnkit model or checkpoint (``.npz``).
    output : path-like
        The ONNX file to write; replaced only once the whole file is written.
    opset : int
        Default-domain opset (17 or newer).
    verify : bool
        Before writing, run the file in onnxruntime and compare its logits with cnnkit's
        (:func:`verify_onnx`); a mismatch writes nothing.

    Returns
    -------
    dict
        What was written: ``output``, ``opset``, ``nodes``, ``parameters``, ``input``
        (name and shape), ``output_name``, ``classes``, ``bytes``, and with ``verify`` the
        largest logit difference ``verified_max_abs_diff``.
    """
    check_opset(opset)
    target = Path(output)
    if target.exists() and target.resolve() == Path(model_path).resolve():
        raise ValueError(f"output {str(output)!r} is the model file itself; name another file")
    if target.is_dir():
        raise ValueError(f"output {str(output)!r} is a folder; name the .onnx file to write")
    model, header = load_model(model_path)
    proto = model_to_onnx(model, header, opset)
    data = proto.SerializeToString()
    diff = verify_onnx(data, model, header) if verify else None
    with atomic_write(output, "wb") as handle:
        handle.write(data)
    return {
        "output": str(output),
        "opset": opset,
        "nodes": len(proto.graph.node),
        "parameters": model.parameter_count(),
        "input": {"name": INPUT_NAME, "shape": ["N", *model.input_shape]},
        "output_name": OUTPUT_NAME,
        "classes": [str(c) for c in header.get("class_names") or []],
        "bytes": len(data),
        **({"verified_max_abs_diff": diff} if verify else {}),
    }


__all__ = [
    "EMITTERS",
    "MIN_OPSET",
    "ExportMismatch",
    "check_opset",
    "export_onnx",
    "model_to_onnx",
    "verify_onnx",
]
