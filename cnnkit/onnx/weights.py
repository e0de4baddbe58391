"""Import an ONNX model with its weights as a cnnkit model file (``cnnkit import``).

The architecture is read as for ``cnnkit shape`` (:func:`cnnkit.onnx.to_graph.onnx_graph`);
the weights are the file's initializers, copied into the layers of a
:class:`cnnkit.nn.Model` built from that graph. Only files that cnnkit computes exactly as
onnxruntime does are imported; everything else is refused with the node that differs:

- scaling by constants anywhere but cnnkit's own exported normalisation (cnnkit's layers
  have no such step), a Softmax anywhere but at the end;
- average pooling that leaves padding out of the mean (``count_include_pad=0`` with
  padding) or pads unevenly, a zero Pad in front of a max pool (ONNX pads max pools with
  -inf), batch norm with an epsilon other than cnnkit's 1e-5 (model files do not store it);
- weights stored as external data (cnnkit never opens other files).

A file that cnnkit exported carries its class names, normalisation and preprocessing in its
metadata; they go back into the model header, so ``predict`` and ``evaluate`` treat images
as before. Other files get class names ``0..K-1`` and no normalisation.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.geometry import format_shape
from cnnkit.nn.model import Model, build_model
from cnnkit.nn.serialize import save_model
from cnnkit.onnx import require
from cnnkit.onnx.reader import OnnxError, OnnxGraph, read_onnx
from cnnkit.onnx.resolve import ImportedLayer, resolve
from cnnkit.onnx.to_graph import onnx_graph

BN_EPS = 1e-5  # what cnnkit's BatchNorm uses and its model files assume
NORMALISE_NODES = ("normalise.sub", "normalise.div")  # cnnkit's exported normalisation


def _refuse(graph: OnnxGraph, node: str, why: str) -> OnnxError:
    return OnnxError(f"{graph.path}: node {node}: {why}; its weights cannot be imported")


def _check_exact(graph: OnnxGraph, layers: list[ImportedLayer]) -> None:
    """Refuse what cnnkit would compute differently from onnxruntime."""
    kept = {layer.name for layer in layers}
    consts = set(graph.initializers)
    producers = {o: n for n in graph.nodes for o in n.outputs}
    last = next(n for n in graph.nodes if graph.outputs[0] in n.outputs)
    at_input = {graph.input_name}  # tensors that are the input, maybe normalised
    for node in graph.nodes:
        if node.name in NORMALISE_NODES and node.inputs[0] in at_input:
            at_input.add(node.outputs[0])
            continue
        if node.op_type in ("Sub", "Mul", "Div", "Add") and node.name not in kept:
            data = [t for t in node.inputs if t and t not in consts]
            if data and not _is_bias_add(node, producers):
                raise _refuse(graph, node.name, f"{node.op_type} by a constant")
        if node.op_type == "Softmax" and node is not last:
            raise _refuse(graph, node.name, "a Softmax inside the network")
        if node.op_type == "Pad":
            readers = [n for n in graph.nodes if node.outputs[0] in n.inputs]
            if any(n.op_type == "MaxPool" for n in readers):
                raise _refuse(graph, node.name, "zero padding in front of a max pool")
    for layer in layers:
        s = layer.settings
        if layer.kind == "pool" and s["mode"] == "avg":
            pads = s["padding"]
            uneven = isinstance(pads, str) or any(lo != hi for lo, hi in pads)
            padded = isinstance(pads, str) or any(lo or hi for lo, hi in pads)
            if uneven and pads != "valid":
                raise _refuse(graph, layer.name, "average pooling with uneven padding")
            if padded and not s["count_include_pad"]:
                raise _refuse(graph, layer.name, "average pooling that leaves padding out")
        if layer.kind == "bn" and not math.isclose(s["eps"], BN_EPS, rel_tol=1e-6):
            raise _refuse(graph, layer.name, f"batch norm epsilon {s['eps']:g} (cnnkit: 1e-5)")


def _is_bias_add(node: Any, producers: dict[str, Any]) -> bool:
    return node.op_type == "Add" and any(
        t in producers and producers[t].op_type == "MatMul" for t in node.inputs
    )


def _tensors(path: str, names: set[str], graph: OnnxGraph) -> dict[str, np.ndarray]:
    """The named initializers' values (following Identity aliases), as float32 arrays."""
    onnx = require("onnx")
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.ParseFromString(Path(path).read_bytes())  # read_onnx has checked this file
    alias = {n.outputs[0]: n.inputs[0] for n in graph.nodes if n.op_type == "Identity"}
    stored = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value":
                stored[node.output[0]] = attr.t
    out = {}
    for name in names:
        source = name
        while source not in stored and source in alias:
            source = alias[source]
        tensor = stored[source]
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise OnnxError(f"{path}: weight {name!r} is stored in another file; not imported")
        out[name] = np.asarray(numpy_helper.to_array(tensor), np.float32)
    return out


def _gemm_weight(layer: ImportedLayer, attrs: dict[str, Any], w: np.ndarray) -> np.ndarray:
    """An fc weight as cnnkit holds it, (units, in_features)."""
    if layer.op_type == "MatMul":
        return w.T
    scale = float(attrs.get("alpha", 1.0))
    return (w if attrs.get("transB", 0) else w.T) * scale


def _copy_weights(
    model: Model, graph: OnnxGraph, layers: dict[str, ImportedLayer], source: str
) -> None:
    """Read the weights of ``layers`` from the file into the model's layers."""
    nodes = {n.name: n for n in graph.nodes}
    wanted = {t for layer in layers.values() for t in layer.weights}
    values = _tensors(source, wanted, graph)
    for layer, node in zip(model.layers, model.arch.nodes):
        imported = layers.get(node.name)
        if imported is None or not imported.weights:
            continue
        onnx_node = nodes[imported.name]
        # the weight, then the bias: the node's inputs, or for MatMul + Add the pair it owns
        names = list(imported.weights) if imported.op_type == "MatMul" else onnx_node.inputs[1:]
        if node.kind == "conv":
            layer.w[...] = values[names[0]].reshape(layer.w.shape)
            if layer.b is not None:
                layer.b[...] = values[names[1]].reshape(-1)
        elif node.kind == "fc":
            layer.w[...] = _gemm_weight(imported, onnx_node.attrs, values[names[0]])
            if layer.b is not None:
                bias = values[names[1]].reshape(-1)
                layer.b[...] = bias * float(onnx_node.attrs.get("beta", 1.0))
        elif node.kind == "bn":
            scale, shift, mean, var = (values[n].reshape(-1) for n in names[:4])
            layer.gamma[...], layer.beta[...] = scale, shift
            layer.buffers["running_mean"][...] = mean
            layer.buffers["running_var"][...] = var


def _header(meta: dict[str, str], model: Model) -> tuple[dict[str, Any], bool]:
    """The model file's header from the ONNX metadata, and whether that metadata (written
    by ``cnnkit export``) gave the normalisation; other files get classes 0..K-1 and
    none."""
    channels = model.input_shape[0]
    normalised = "cnnkit.mean" in meta and "cnnkit.std" in meta
    header = {
        "mean": json.loads(meta["cnnkit.mean"]) if normalised else [0.0] * channels,
        "std": json.loads(meta["cnnkit.std"]) if normalised else [1.0] * channels,
        "class_names": json.loads(meta.get("cnnkit.class_names", "[]"))
        or [str(i) for i in range(model.num_outputs)],
        "preprocess": json.loads(meta.get("cnnkit.preprocess", "{}")),
        "dataset": meta.get("cnnkit.dataset") or None,
        **json.loads(meta.get("cnnkit.split", "{}")),
    }
    return header, normalised


def import_onnx(
    path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    input_shape: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Write the ONNX model ``path``, architecture and weights, as a cnnkit model file.

    Parameters
    ----------
    path : path-like
        An ``.onnx`` file whose operators cnnkit computes exactly (see the module notes).
    output : path-like
        The model file (``.npz``) to write, atomically.
    input_shape : tuple of int, optional
        ``(C, H, W)`` when the file's input shape is dynamic.

    Returns
    -------
    dict
        ``output``, ``parameters``, ``input_shape``, ``classes``, ``normalised`` (whether the
        file's cnnkit metadata gave the normalisation).

    Raises
    ------
    OnnxError
        The file cannot be read, or cnnkit would not compute it as onnxruntime does.
    """
    source = str(path)
    target = Path(output)
    if target.exists() and target.resolve() == Path(source).resolve():
        raise ValueError(f"output {str(output)!r} is the ONNX file itself; name another file")
    graph = read_onnx(source)
    layers = {layer.name: layer for layer in resolve(graph)}
    _check_exact(graph, list(layers.values()))
    arch = onnx_graph(source, input_shape)
    model = build_model(source, arch.input_shape)
    if not model.num_outputs:
        raise OnnxError(
            f"{source}: the output is a {format_shape(model.output_shapes[-1])} map, "
            "not one score per class; cnnkit model files hold classifiers"
        )
    _copy_weights(model, graph, layers, source)
    header, normalised = _header(graph.metadata, model)
    save_model(output, model, header)
    return {
        "output": str(output),
        "parameters": model.parameter_count(),
        "input_shape": list(model.input_shape),
        "classes": header["class_names"],
        "normalised": normalised,
    }


__all__ = ["import_onnx"]
