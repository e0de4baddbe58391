"""Shape inference: walk the graph once, asking each node's kind for its arithmetic."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from cnnkit.arch.graph import BYTES_PER_ELEMENT, INPUT, Graph, LayerInfo, describe
from cnnkit.arch.kinds import KINDS


def infer(arch: Graph) -> list[LayerInfo]:
    """Shapes, parameters, MACs, activation memory and notes for every node.

    Parameters
    ----------
    arch : Graph

    Returns
    -------
    list of LayerInfo
        One per node, in the graph's (topological) order.

    Raises
    ------
    SpecError
        When a node cannot be applied to its inputs (output would be empty, channels not
        divisible by groups, a spatial layer after the input was flattened, branches whose
        shapes do not agree where they meet); the message names the node, its line and the
        numbers.

    Notes
    -----
    Output sizes come from :func:`cnnkit.geometry.conv_output_size` (convolution) and
    :func:`cnnkit.geometry.pool_output_size` (pooling)::

        out = floor((n + pad_before + pad_after - d * (k - 1) - 1) / s) + 1

    :mod:`cnnkit.arch.kinds` says how parameters, MACs and memory are counted.
    """
    shapes = {INPUT: arch.input_shape}
    infos: list[LayerInfo] = []
    for node in arch.nodes:
        in_shapes = [shapes[source] for source in node.inputs]
        result = KINDS[node.kind].infer(node, in_shapes, describe(arch, node))
        count = math.prod(result.output_shape)
        infos.append(
            LayerInfo(
                name=node.name,
                kind=node.kind,
                layer=node,
                input_shape=in_shapes[0],
                output_shape=result.output_shape,
                inputs=node.inputs,
                input_shapes=tuple(in_shapes),
                pads=result.pads,
                params=result.params,
                macs=result.macs,
                other_ops=result.other_ops,
                activations=count,
                activation_bytes=count * BYTES_PER_ELEMENT,
                dropped=result.dropped,
                border_lost=result.border_lost,
                notes=result.notes,
            )
        )
        shapes[node.name] = result.output_shape
    return infos


def totals(infos: list[LayerInfo]) -> dict[str, int]:
    """Sum of params, MACs, other ops and activation memory over the nodes."""
    return {
        "total_params": sum(i.params for i in infos),
        "total_macs": sum(i.macs for i in infos),
        "total_other_ops": sum(i.other_ops for i in infos),
        "total_activations": sum(i.activations for i in infos),
        "total_activation_bytes": sum(i.activation_bytes for i in infos),
    }


def fc_comparison(arch: Graph, infos: list[LayerInfo]) -> dict[str, Any]:
    """What fully connected layers would need where the graph uses convolutions.

    Returns ``weights_per_fc_unit_on_input`` (one unit on the whole input) and, per conv
    node, its parameters against those of an fc layer mapping the same input to the same
    output (``n_in * n_out`` weights, plus ``n_out`` biases if the conv has a bias).
    """
    rows = []
    for info in infos:
        if info.kind != "conv":
            continue
        n_in, n_out = math.prod(info.input_shape), math.prod(info.output_shape)
        fc_params = n_in * n_out + (n_out if info.layer.bias else 0)
        rows.append(
            {
                "name": info.name,
                "input_shape": list(info.input_shape),
                "output_shape": list(info.output_shape),
                "conv_params": info.params,
                "fc_params": fc_params,
                "ratio": fc_params / info.params,
            }
        )
    return {"weights_per_fc_unit_on_input": math.prod(arch.input_shape), "layers": rows}


def report(arch: Graph, infos: list[LayerInfo], compare_fc: bool = False) -> dict[str, Any]:
    """Everything :func:`infer` found, as plain JSON values (``cnnkit shape --json``)."""
    out: dict[str, Any] = {
        "name": arch.name,
        "input_shape": list(arch.input_shape),
        "layers": [
            {
                "name": i.name,
                "kind": i.kind,
                "inputs": list(i.inputs),
                "line": i.layer.line,
                "text": i.layer.text,
                "input_shape": list(i.input_shape),
                "output_shape": list(i.output_shape),
                "pads": [list(p) for p in i.pads],
                "params": i.params,
                "macs": i.macs,
                "other_ops": i.other_ops,
                "activations": i.activations,
                "activation_bytes": i.activation_bytes,
                "dropped_by_stride": list(i.dropped),
                "border_lost": list(i.border_lost),
                "notes": list(i.notes),
            }
            for i in infos
        ],
        **totals(infos),
    }
    if compare_fc:
        out["compare_fc"] = fc_comparison(arch, infos)
    return out


@dataclasses.dataclass
class Block:
    """Consecutive nodes under one name prefix, summed (or a single node when unfolded).

    ``key`` is the shared prefix (``layer1``) of a folded block, None for a node shown alone;
    ``first`` is the block's first node, ``output_shape`` its last node's output.
    """

    key: str | None
    name: str
    first: LayerInfo
    count: int
    output_shape: tuple[int, ...]
    params: int
    macs: int
    activation_bytes: int


def fold(infos: list[LayerInfo], depth: int | None) -> list[Block]:
    """The nodes, with those nested deeper than ``depth`` (``layer1.0.conv1`` is depth 3)
    folded into one :class:`Block` per prefix; every node alone when ``depth`` is None."""
    out: list[Block] = []
    for info in infos:
        parts = info.name.split(".")
        key = ".".join(parts[:depth]) if depth is not None and len(parts) > depth else None
        if key is not None and out and out[-1].key == key:
            block = out[-1]
            block.count += 1
            block.output_shape = info.output_shape
            block.params += info.params
            block.macs += info.macs
            block.activation_bytes += info.activation_bytes
            continue
        out.append(
            Block(
                key=key,
                name=key or info.name,
                first=info,
                count=1,
                output_shape=info.output_shape,
                params=info.params,
                macs=info.macs,
                activation_bytes=info.activation_bytes,
            )
        )
    return out


def with_input(arch: Graph, input_shape: tuple[int, ...]) -> Graph:
    """The same nodes on another input shape."""
    return dataclasses.replace(arch, input_shape=tuple(input_shape))
