"""Read an ONNX file safely into a neutral list of nodes (:func:`read_onnx`).

Safety: the file is read as bytes (after a size check) and parsed as a ``ModelProto``. Nothing
in it runs, and nothing it references is opened: tensors stored as external data are only
checked to point inside the model's folder, their bytes are never read (cnnkit needs shapes,
which the file itself records). Every problem is a :class:`OnnxError` (a ``ValueError``) with
a one-line message naming the file: truncated or corrupt files, files that are not ONNX,
cycles, inputs nobody produces, unknown opsets and domains, operators cnnkit does not know
(all listed at once, with their node names).

The result, :class:`OnnxGraph`, holds the nodes (name, op_type, attributes, inputs, outputs)
in topological order, the graph's data input with its declared shape, initializer shapes and
the values of small constants; :func:`cnnkit.onnx.resolve.resolve` maps it onto layer kinds.
"""

from __future__ import annotations

import heapq
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from cnnkit.onnx import require

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, TensorProto

MAX_BYTES = 2**31 - 1  # protobuf's own limit for one message
SMALL_CONSTANT = 4096  # elements: constants read for their values (shapes, clip bounds)
INPUT = "input"  # the name imported layers use for the graph's data input
STANDARD_DOMAINS = ("", "ai.onnx")
# Oldest default-domain opset read: Reshape takes its shape as an input from opset 5 on,
# Clip its bounds from 11 on (both spellings are read); older files predate both exporters.
MIN_OPSET = 7


class OnnxError(ValueError):
    """An ONNX file cnnkit cannot read (the message names the file and the problem)."""


@dataclass(frozen=True)
class OnnxNode:
    """One ONNX node, as the file states it (attributes as plain Python values)."""

    name: str
    op_type: str
    attrs: dict[str, Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class OnnxGraph:
    """The parts of an ONNX model that describe its architecture.

    Attributes
    ----------
    path : str
        The file it came from (for messages).
    name : str
        The graph's name, else the file's stem.
    opset : int
        The default-domain (``ai.onnx``) opset version.
    input_name : str
        The one data input (graph inputs that are initializers are weights, not data).
    input_shape : tuple of (int or None)
        Its declared shape, batch first; ``None`` where a dimension is symbolic or missing.
    outputs : tuple of str
        The graph's output tensor names.
    initializers : dict of str to tuple of int
        Shape of every initializer (and Constant node output).
    constants : dict of str to list
        Values of small initializers and constants (flattened), for shapes and bounds.
    nodes : tuple of OnnxNode
        In topological order, names made unique (``Conv_3`` for an unnamed Conv node).
    metadata : dict of str to str
        The model's ``metadata_props``.
    """

    path: str
    name: str
    opset: int
    input_name: str
    input_shape: tuple[int | None, ...]
    outputs: tuple[str, ...]
    initializers: dict[str, tuple[int, ...]]
    constants: dict[str, list[float]]
    nodes: tuple[OnnxNode, ...]
    metadata: dict[str, str] = field(default_factory=dict)


# Operators cnnkit reads, and the kind each becomes. Anything else is listed in one error.
KNOWN_OPS = {
    "Conv": "conv",
    "MaxPool": "pool",
    "AveragePool": "pool",
    "GlobalAveragePool": "gap",
    "Relu": "relu",
    "Clip": "relu6",
    "LeakyRelu": "leakyrelu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "BatchNormalization": "bn",
    "Add": "add",
    "Concat": "concat",
    "Gemm": "fc",
    "MatMul": "fc",
    "Flatten": "flatten",
    "Reshape": "flatten",
    "Dropout": "dropout",
    "Identity": "identity",
    "Softmax": "softmax",
    "Constant": "constant",
    "Sub": "elementwise",
    "Mul": "elementwise",
    "Div": "elementwise",
    # Shape arithmetic that feeds a Reshape: PyTorch writes x.view(x.size(0), -1) with a
    # dynamic batch as Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
    "Shape": "shape",
    "Gather": "shape",
    "Unsqueeze": "shape",
    "Squeeze": "shape",
    "Slice": "shape",
    "Cast": "shape",
    "Pad": "pad",  # zero padding, folded into the convolution or pooling that reads it
    # Read only when they compute from constants (PyTorch writes a Pad's amounts this way).
    "ConstantOfShape": "constant",
    "Transpose": "constant",
}
REFUSED_OPS = {
    "ConvTranspose": "transposed convolution (ConvTranspose) is not supported by cnnkit",
}


def read_onnx(path: str | os.PathLike[str]) -> OnnxGraph:
    """Open an ONNX file safely and return its architecture as :class:`OnnxGraph`.

    Parameters
    ----------
    path : path-like
        An ``.onnx`` file (a serialized ``ModelProto``).

    Returns
    -------
    OnnxGraph
        Nodes in topological order with their attributes; initializer shapes; the data input.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    OnnxError
        The file is not a readable ONNX model, uses operators or opsets cnnkit does not know,
        has a cycle, reads tensors nobody provides, or points at external data outside its
        folder. One line, naming the file.
    cnnkit.onnx.MissingExtra
        The ``onnx`` package is not installed.
    """
    onnx = require("onnx")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(2, "no such file", str(p))
    if not p.is_file():
        raise OnnxError(f"{p}: not a file")
    size = p.stat().st_size
    if size == 0:
        raise OnnxError(f"{p}: empty file, not an ONNX model")
    if size > MAX_BYTES:
        raise OnnxError(f"{p}: {size:,} bytes is more than one ONNX protobuf can hold (2 GiB)")
    data = p.read_bytes()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError and its C++ twin share no public base
        raise OnnxError(
            f"{p}: not an ONNX model (truncated or corrupt? {str(exc) or type(exc).__name__})"
        ) from None
    _check_envelope(onnx, model, p)
    opset = _default_opset(onnx, model, p)
    graph = model.graph
    _check_operators(graph, p)
    _check_external_data(onnx, graph, p)
    nodes = _named_nodes(onnx, graph)
    init_shapes, constants = _initializers(onnx, graph, nodes, p)
    input_name, input_shape = _data_input(graph, init_shapes, p)
    ordered = _topological(nodes, {input_name, *init_shapes}, p)
    _check_outputs(graph, ordered, p)
    try:
        onnx.checker.check_model(_structure(onnx, model))
    except Exception as exc:  # ValidationError, and C++ errors for malformed protos
        raise OnnxError(f"{p}: the ONNX checker rejects the file: {one_line(exc)}") from None
    return OnnxGraph(
        path=str(p),
        name=graph.name or p.stem,
        opset=opset,
        input_name=input_name,
        input_shape=input_shape,
        outputs=tuple(o.name for o in graph.output),
        initializers=init_shapes,
        constants=constants,
        nodes=tuple(ordered),
        metadata={m.key: m.value for m in model.metadata_props},
    )


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line (the checker's span several, with node dumps)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3].rsplit(" ", 1)[0] + " ..."


def _check_envelope(onnx: ModuleType, model: ModelProto, p: Path) -> None:
    # Protobuf parses many non-ONNX byte strings without complaint (unknown fields are
    # skipped), so a file only counts as ONNX when the fields every model has are there.
    if not model.HasField("graph") or not model.opset_import or model.ir_version < 3:
        raise OnnxError(f"{p}: not an ONNX model (no graph, opset or IR version in it)")
    if model.ir_version > onnx.IR_VERSION:
        raise OnnxError(
            f"{p}: ONNX IR version {model.ir_version} is newer than the installed onnx "
            f"package reads ({onnx.IR_VERSION}); upgrade onnx"
        )
    if not model.graph.node:
        raise OnnxError(f"{p}: the ONNX graph has no nodes")


def _default_opset(onnx: ModuleType, model: ModelProto, p: Path) -> int:
    newest = onnx.defs.onnx_opset_version()
    versions = [o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS]
    if not versions:
        domains = ", ".join(sorted({o.domain for o in model.opset_import}))
        raise OnnxError(f"{p}: the model imports no ai.onnx opset (only: {domains})")
    version = max(versions)
    if version > newest:
        raise OnnxError(
            f"{p}: opset ai.onnx {version} is newer than the installed onnx package knows "
            f"({newest}); upgrade onnx"
        )
    if version < MIN_OPSET:
        raise OnnxError(f"{p}: opset ai.onnx {version} is older than cnnkit reads ({MIN_OPSET}+)")
    return int(version)


def _check_operators(graph: GraphProto, p: Path) -> None:
    unknown: list[str] = []
    for i, node in enumerate(graph.node):
        label = node.name or f"#{i}"
        if node.domain not in STANDARD_DOMAINS:
            unknown.append(f"{node.domain}.{node.op_type} ({label})")
        elif node.op_type in REFUSED_OPS:
            raise OnnxError(f"{p}: node {label}: {REFUSED_OPS[node.op_type]}")
        elif node.op_type not in KNOWN_OPS:
            unknown.append(f"{node.op_type} ({label})")
    if unknown:
        shown = ", ".join(unknown[:12]) + (
            f", and {len(unknown) - 12} more" if len(unknown) > 12 else ""
        )
        raise OnnxError(f"{p}: operators cnnkit does not know: {shown}")


def _check_external_data(onnx: ModuleType, graph: GraphProto, p: Path) -> None:
    folder = p.resolve().parent
    tensors = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                tensors.append(attr.t)
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise OnnxError(
                f"{p}: tensor {tensor.name!r} points at external data outside the model's "
                f"folder ({location!r}); refused"
            )


def _structure(onnx: ModuleType, model: ModelProto) -> ModelProto:
    """``model`` with its initializers declared as typed graph inputs, for the checker.

    The checker then checks the graph's structure and every node against its schema without
    the weights' bytes: serialising them for it took most of the time on ResNet-50, and for
    external data it would look for files relative to the working folder. Weight values are
    never used here (small constants are decoded, and checked, by numpy_helper).
    """
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph, source = light.graph, model.graph
    graph.name = source.name
    for key in ("node", "input", "output", "value_info"):
        getattr(graph, key).extend(getattr(source, key))
    declared = {i.name for i in source.input}
    weights = [(t.name, t.data_type, t.dims) for t in source.initializer]
    weights += [(t.values.name, t.values.data_type, t.dims) for t in source.sparse_initializer]
    for name, data_type, dims in weights:
        if name not in declared:
            graph.input.append(onnx.helper.make_tensor_value_info(name, data_type, list(dims)))
    return light


def _named_nodes(onnx: ModuleType, graph: GraphProto) -> list[OnnxNode]:
    seen: set[str] = set()
    nodes = []
    for i, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{i}"
        base, k = name, 1
        while name in seen:
            k += 1
            name = f"{base}_{k}"
        seen.add(name)
        attrs = {}
        for attr in node.attribute:
            value = onnx.helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            attrs[attr.name] = value
        nodes.append(OnnxNode(name, node.op_type, attrs, tuple(node.input), tuple(node.output)))
    return nodes


def _tensor_values(onnx: ModuleType, tensor: TensorProto, p: Path) -> list[float] | None:
    n = math.prod(tensor.dims)
    if tensor.data_location == onnx.TensorProto.EXTERNAL or n > SMALL_CONSTANT:
        return None
    from onnx import numpy_helper

    try:
        return [float(v) for v in numpy_helper.to_array(tensor).reshape(-1)]
    except Exception as exc:  # data that does not fill the shape, an unknown type, ...
        detail = str(exc) or type(exc).__name__
        raise OnnxError(
            f"{p}: tensor {tensor.name!r}: its data does not decode ({detail})"
        ) from None


def _initializers(
    onnx: ModuleType, graph: GraphProto, nodes: list[OnnxNode], p: Path
) -> tuple[dict[str, tuple[int, ...]], dict[str, list[float]]]:
    shapes: dict[str, tuple[int, ...]] = {}
    values: dict[str, list[float]] = {}
    for tensor in graph.initializer:
        shapes[tensor.name] = tuple(int(d) for d in tensor.dims)
        small = _tensor_values(onnx, tensor, p)
        if small is not None:
            values[tensor.name] = small
    for sparse in graph.sparse_initializer:
        shapes[sparse.values.name] = tuple(int(d) for d in sparse.dims)
    for node, proto in zip(nodes, graph.node):
        if node.op_type != "Constant":
            continue
        tensor = next((a.t for a in proto.attribute if a.name == "value"), None)
        if tensor is None or len(node.outputs) != 1:
            raise OnnxError(f"{p}: node {node.name}: only tensor-valued Constant nodes are read")
        shapes[node.outputs[0]] = tuple(int(d) for d in tensor.dims)
        small = _tensor_values(onnx, tensor, p)
        if small is not None:
            values[node.outputs[0]] = small
    return shapes, values


def _data_input(
    graph: GraphProto, init_shapes: dict[str, tuple[int, ...]], p: Path
) -> tuple[str, tuple[int | None, ...]]:
    data = [i for i in graph.input if i.name not in init_shapes]
    if len(data) != 1:
        names = ", ".join(i.name for i in data) or "none"
        raise OnnxError(f"{p}: cnnkit reads graphs with one data input; this one has {names}")
    value = data[0]
    dims: list[int | None] = []
    if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
        for d in value.type.tensor_type.shape.dim:
            dims.append(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None)
    return value.name, tuple(dims)


def _topological(nodes: list[OnnxNode], available: set[str], p: Path) -> list[OnnxNode]:
    """Kahn's algorithm over tensors: a node is ready once every input it reads exists."""
    producer: dict[str, OnnxNode] = {}
    for node in nodes:
        for out in node.outputs:
            if out and out in producer:
                raise OnnxError(
                    f"{p}: tensor {out!r} is produced twice (nodes {producer[out].name} and "
                    f"{node.name})"
                )
            if out:
                producer[out] = node
    for node in nodes:
        for name in node.inputs:
            if name and name not in available and name not in producer:
                raise OnnxError(
                    f"{p}: node {node.name} ({node.op_type}) reads {name!r}, which is no graph "
                    "input, no initializer and no node's output (missing initializer?)"
                )
    # Each node waits for the tensors it reads; a heap keeps the file's order among the
    # ready ones, so a sorted file comes out as it is, in O(n log n) for any order.
    waiting: list[int] = []
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        missing = {t for t in node.inputs if t and t not in available}
        waiting.append(len(missing))
        for tensor in missing:
            readers.setdefault(tensor, []).append(i)
    heap = [i for i, count in enumerate(waiting) if count == 0]
    ordered: list[OnnxNode] = []
    while heap:
        i = heapq.heappop(heap)
        ordered.append(nodes[i])
        for out in nodes[i].outputs:
            for j in readers.get(out, ()):
                waiting[j] -= 1
                if waiting[j] == 0:
                    heapq.heappush(heap, j)
    if len(ordered) < len(nodes):
        stuck = [n.name for n, count in zip(nodes, waiting) if count]
        more = f" and {len(stuck) - 6} more" if len(stuck) > 6 else ""
        raise OnnxError(f"{p}: the graph has a cycle (through nodes {', '.join(stuck[:6])}{more})")
    return ordered


def _check_outputs(graph: GraphProto, nodes: list[OnnxNode], p: Path) -> None:
    produced = {o for n in nodes for o in n.outputs}
    for out in graph.output:
        if out.name not in produced:
            raise OnnxError(f"{p}: graph output {out.name!r} is produced by no node")


__all__ = [
    "INPUT",
    "KNOWN_OPS",
    "OnnxError",
    "OnnxGraph",
    "OnnxNode",
    "read_onnx",
]
