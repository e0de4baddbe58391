"""Shape inference: walk the graph once, asking each node's kind for its arithmetic."""

from __future__ import annotations

import dataclasses
import math

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


def with_input(arch: Graph, input_shape: tuple[int, ...]) -> Graph:
    """The same nodes on another input shape."""
    return dataclasses.replace(arch, input_shape=tuple(input_shape))
