"""An ONNX file as a cnnkit architecture graph, so ``shape`` and ``receptive-field`` read it.

:func:`onnx_graph` reads the file (:func:`cnnkit.onnx.reader.read_onnx`), resolves its nodes
into layer kinds (:func:`cnnkit.onnx.resolve.resolve`) and builds a :class:`cnnkit.arch.Graph`
whose node names are the ONNX node names. Shapes are inferred node by node as the graph is
built, so every weight the file holds is checked against the shape it meets (a conv's input
channels, an fc layer's input features, a batch norm's channels).

What maps to what (``infer`` then counts parameters, MACs and memory as for any spec):

- Conv -> conv (groups, dilations, strides; pads, or auto_pad SAME_UPPER/SAME_LOWER/VALID
  resolved to explicit pads). MaxPool/AveragePool -> pool (an ONNX stride defaults to 1);
  extra padding at the end only becomes ``ceil=true`` where that gives the same windows.
- GlobalAveragePool -> gap when only flattening layers read it (cnnkit's gap is flat, as
  ``gap; fc`` specs write it), else ``pool avg`` over the whole map, keeping ONNX's 1x1.
- Flatten and Reshape to (N, -1) -> flatten, left out where the input is already flat or
  only fc layers read it (cnnkit's fc flattens its input, as ``pool; fc`` specs write it);
  Identity and Softmax are left out too (cnnkit reports logits: no parameters, same shape).
- Gemm and MatMul (+ the Add of its bias) -> fc; Clip(0, 6) -> relu6; the rest one to one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from cnnkit import geometry
from cnnkit.arch import INPUT, Builder, Graph, Node, SpecError, format_shape, to_json
from cnnkit.arch.kinds import KINDS
from cnnkit.arch.values import dims
from cnnkit.onnx.reader import OnnxError, OnnxGraph, read_onnx
from cnnkit.onnx.resolve import ImportedLayer, resolve

_FLATTENERS = ("flatten", "fc")
# Options left out of a node's text when they have the spec's default value.
_DEFAULTS = {"s": "1", "p": "0", "d": "1", "groups": 1, "bias": True, "ceil": False}


def short_text(node: Node) -> str:
    """A node as spec text with default options left out: ``conv 64 k=7 s=2 p=3 bias=false``
    (uneven pads read ``p=0+1x1+2``, before+after per dimension)."""
    kind = KINDS[node.kind]
    parts = [node.kind]
    for key, value in kind.options(node).items():
        if key == "s" and node.kind == "pool" and value == dims(node.kernel):
            continue
        if key != kind.positional and key in _DEFAULTS and value == _DEFAULTS[key]:
            continue
        shown = (
            str(value).lower()
            if isinstance(value, bool)
            else f"{value:g}"
            if isinstance(value, float)
            else str(value)
        )
        parts.append(shown if key == kind.positional else f"{key}={shown}")
    return " ".join(parts)


def onnx_graph(path: str | os.PathLike[str], input_shape: tuple[int, ...] | None = None) -> Graph:
    """Read an ONNX file into a :class:`cnnkit.arch.Graph` named after its ONNX nodes.

    Parameters
    ----------
    path : path-like
        An ``.onnx`` file.
    input_shape : tuple of int, optional
        ``(C, spatial...)`` without the batch; replaces the file's declared input shape
        (needed when that shape is dynamic, e.g. ``N x 3 x H x W``).

    Returns
    -------
    cnnkit.arch.Graph
        Ready for :func:`cnnkit.arch.infer` and :func:`cnnkit.arch.receptive.fields`.

    Raises
    ------
    OnnxError
        The file cannot be read or uses operators, or operators in ways, cnnkit does not
        model; its weights do not fit the shapes they meet. One line naming file and node.
    """
    graph = read_onnx(path)
    shape = _input_shape(graph, input_shape)
    layers = resolve(graph)
    return _Build(graph, shape, layers).run()


def _input_shape(graph: OnnxGraph, override: tuple[int, ...] | None) -> tuple[int, ...]:
    declared = graph.input_shape
    if override is not None:
        shape = tuple(int(v) for v in override)
        if declared and len(declared) != len(shape) + 1:
            raise OnnxError(
                f"{graph.path}: input shape {format_shape(shape)} has {len(shape)} dimensions, "
                f"the file's input {graph.input_name!r} has {len(declared) - 1} besides the batch"
            )
        return shape
    shown = "x".join("?" if d is None else str(d) for d in declared) or "unknown"
    if len(declared) < 3 or any(d is None for d in declared[1:]):
        raise OnnxError(
            f"{graph.path}: the input {graph.input_name!r} has no fixed shape ({shown}, batch "
            "first); give the input shape without the batch, e.g. 3x224x224"
        )
    return tuple(int(d) for d in declared[1:])  # type: ignore[arg-type]


class _Build:
    """Adds one cnnkit node per imported layer, inferring shapes as it goes."""

    def __init__(self, graph: OnnxGraph, shape: tuple[int, ...], layers: list[ImportedLayer]):
        self.g = graph
        self.layers = layers
        try:
            self.builder = Builder(Path(graph.path).name, shape, where="node")
        except SpecError as exc:
            raise OnnxError(f"{graph.path}: {exc}") from None
        self.shapes: dict[str, tuple[int, ...]] = {INPUT: shape}
        self.rename: dict[str, str] = {INPUT: INPUT}  # imported layer -> graph node it became
        self.readers: dict[str, list[str]] = {}
        for layer in self.layers:
            for source in layer.inputs:
                self.readers.setdefault(source, []).append(layer.kind)

    def error(self, layer: ImportedLayer, message: str) -> OnnxError:
        return OnnxError(f"{self.g.path}: node {layer.name} ({layer.op_type}): {message}")

    def run(self) -> Graph:
        for layer in self.layers:
            sources = [self.rename[s] for s in layer.inputs]
            in_shapes = [self.shapes[s] for s in sources]
            try:
                self.rename[layer.name] = self.add(layer, sources, in_shapes)
            except SpecError as exc:
                raise self.error(layer, str(exc)) from None
        nodes = [dataclasses.replace(n, text=short_text(n)) for n in self.builder.nodes]
        try:
            return Graph(self.builder.name, self.builder.input_shape, tuple(nodes), "node")
        except SpecError as exc:
            raise OnnxError(f"{self.g.path}: {exc}") from None

    def node(self, layer: ImportedLayer, kind: str, sources: list[str], **options: Any) -> str:
        name = layer.name if layer.name != INPUT else f"{INPUT}_node"
        added = self.builder.add(kind, inputs=sources, name=name, **options)
        node = self.builder.nodes[-1]
        shapes = [self.shapes[s] for s in sources]
        self.shapes[added] = KINDS[node.kind].infer(node, shapes, name).output_shape
        return added

    def add(self, layer: ImportedLayer, sources: list[str], shapes: list[tuple[int, ...]]) -> str:
        kind, s = layer.kind, layer.settings
        shape = shapes[0]
        if kind == "conv":
            return self.conv(layer, sources, shape)
        if kind == "pool":
            return self.pool(layer, sources, shape)
        if kind == "gap":
            if all(k in _FLATTENERS for k in self.readers.get(layer.name, [])):
                return self.node(layer, "gap", sources)
            return self.node(layer, "pool", sources, mode="avg", k=list(shape[1:]), s=1)
        if kind == "softmax":
            return sources[0]
        if kind == "flatten":
            if "target" in s:
                self.check_reshape(layer, shape)
            if len(shape) == 1 or set(self.readers.get(layer.name, [])) == {"fc"}:
                return sources[0]  # a no-op, or what cnnkit's fc does to its input anyway
            return self.node(layer, "flatten", sources)
        if kind == "fc":
            if layer.op_type == "MatMul" and len(shape) != 1:
                raise self.error(layer, f"MatMul on a {format_shape(shape)} map, not a vector")
            features = math.prod(shape)
            if features != s["in_features"]:
                raise self.error(
                    layer, f"weight takes {s['in_features']} features, input has {features}"
                )
            return self.node(layer, "fc", sources, units=s["units"], bias=s["bias"])
        if kind == "bn":
            for tensor, found in layer.weights.items():  # scale, bias, mean, variance
                if found != (shape[0],):
                    raise self.error(layer, f"{tensor!r} has shape {found} for {shape[0]} channels")
            return self.node(layer, "bn", sources)
        if kind == "leakyrelu":
            return self.node(layer, kind, sources, slope=s["slope"])
        if kind == "dropout":
            return self.node(layer, kind, sources, rate=s["rate"])
        return self.node(layer, kind, sources)  # relu, relu6, sigmoid, tanh, add, concat

    def check_reshape(self, layer: ImportedLayer, shape: tuple[int, ...]) -> None:
        # The first entry (0, -1 or the batch) is the batch by the reader's check.
        features = layer.settings["target"][1]
        if features != -1 and features != math.prod(shape):
            raise self.error(layer, f"reshape to (N, {features}) of a {format_shape(shape)} input")

    def pads(self, layer: ImportedLayer, shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        s = layer.settings
        padding = s["padding"]
        if not isinstance(padding, str):
            return padding
        dilation = s.get("dilation", (1,) * len(s["kernel"]))
        if padding == "valid":
            return tuple((0, 0) for _ in s["kernel"])
        pairs = [
            geometry.same_padding(n, k, st, d)
            for n, k, st, d in zip(shape[1:], s["kernel"], s["stride"], dilation)
        ]
        return tuple((hi, lo) if padding == "same_lower" else (lo, hi) for lo, hi in pairs)

    def conv(self, layer: ImportedLayer, sources: list[str], shape: tuple[int, ...]) -> str:
        s = layer.settings
        if len(shape) != len(s["kernel"]) + 1:
            raise self.error(
                layer, f"a {len(s['kernel'])}-D kernel on a {format_shape(shape)} input"
            )
        if s["in_channels_per_group"] * s["groups"] != shape[0]:
            raise self.error(
                layer,
                f"weight expects {s['in_channels_per_group']} x {s['groups']} group(s) input "
                f"channels, the input has {shape[0]}",
            )
        pads = self.pads(layer, shape)
        even = all(lo == hi for lo, hi in pads)
        return self.node(
            layer,
            "conv",
            sources,
            out_channels=s["out_channels"],
            k=list(s["kernel"]),
            s=list(s["stride"]),
            p=[lo for lo, _ in pads] if even else [list(pair) for pair in pads],
            d=list(s["dilation"]),
            groups=s["groups"],
            bias=s["bias"],
        )

    def pool(self, layer: ImportedLayer, sources: list[str], shape: tuple[int, ...]) -> str:
        s = layer.settings
        if len(shape) != len(s["kernel"]) + 1:
            raise self.error(
                layer, f"a {len(s['kernel'])}-D window on a {format_shape(shape)} input"
            )
        pads = self.pads(layer, shape)
        ceil = s["ceil"]
        if any(lo != hi for lo, hi in pads):
            # Extra padding at the end only (TensorFlow's SAME) is where ceil mode's last
            # window reaches: same windows, same output, when the sizes agree.
            exact = [
                geometry.conv_output_size(n, k, st, pair)
                for n, k, st, pair in zip(shape[1:], s["kernel"], s["stride"], pads)
            ]
            ceiled = [
                geometry.pool_output_size(n, k, st, lo, 1, True)
                for n, k, st, (lo, _) in zip(shape[1:], s["kernel"], s["stride"], pads)
            ]
            if ceil or exact != ceiled or any(lo > hi for lo, hi in pads):
                raise self.error(layer, f"uneven pooling pads {list(pads)} are not supported")
            ceil = True
        return self.node(
            layer,
            "pool",
            sources,
            mode=s["mode"],
            k=list(s["kernel"]),
            s=list(s["stride"]),
            p=[lo for lo, _ in pads],
            ceil=ceil,
        )


def onnx_spec_text(path: str | os.PathLike[str], input_shape: tuple[int, ...] | None = None) -> str:
    """The JSON spec of an ONNX file's architecture (what a model trained from it stores);
    ``input_shape`` as for :func:`onnx_graph`."""
    return json.dumps(to_json(onnx_graph(path, input_shape)))


__all__ = ["onnx_graph", "onnx_spec_text", "short_text"]
