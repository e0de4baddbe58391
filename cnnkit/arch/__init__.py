"""Architectures as one graph: parse, infer shapes and counts, receptive fields, write.

Every spec (a chain like LeNet's, a residual or branching network, text or JSON, a shipped
name) becomes a :class:`Graph`: nodes with named inputs, in topological order. Shape
inference, parameter/MAC/memory counts, receptive fields, the text and JSON writers and
:class:`cnnkit.nn.Model` all walk that one graph. What each layer kind does (parse its
options, infer its shape, count, print, build its ``cnnkit.nn`` layer) lives in one table,
:data:`cnnkit.arch.kinds.KINDS`. This package imports only the standard library and
:mod:`cnnkit.geometry`, so ``cnnkit shape`` answers in milliseconds.

Building a graph in code (what an importer such as ONNX does)
------------------------------------------------------------
Use :class:`Builder`: it validates every option as the spec parsers do and names nodes that
are not given a name (``conv1``, ``relu2``, ...). ``inputs`` default to the node added last;
``"input"`` is the graph's input. Options use the spec's keys (``out_channels``, ``k``,
``s``, ``p``, ``d``, ``groups``, ``bias`` for conv; ``mode``, ``k``, ``s``, ``p``, ``ceil``
for pool; ``units``, ``bias`` for fc; ``rate``, ``slope``):

>>> from cnnkit import arch
>>> b = arch.Builder("block", (64, 56, 56))
>>> x = b.add("conv", name="layer1.0.conv1", out_channels=64, k=3, p=1, bias=False)
>>> x = b.add("bn", name="layer1.0.bn1")
>>> x = b.add("relu", name="layer1.0.relu")
>>> x = b.add("conv", name="layer1.0.conv2", out_channels=64, k=3, p=1, bias=False)
>>> x = b.add("bn", name="layer1.0.bn2")
>>> x = b.add("add", inputs=[x, "input"], name="layer1.0.add")
>>> x = b.add("relu", name="layer1.0.relu2")
>>> graph = b.build()  # validated: inputs exist, every node is used
>>> infos = arch.infer(graph)  # shapes, params, MACs, memory per node
>>> infos[-1].output_shape, arch.totals(infos)["total_params"]
((64, 56, 56), 73984)
>>> arch.receptive.fields(graph)[-1].receptive_field  # through every path
(5, 5)

A node is a :class:`Node` (``kind``, ``name``, ``inputs``, ``attrs`` in the canonical form a
kind's ``parse`` returns: tuples per spatial dimension, e.g. ``kernel=(3, 3)``). Names are
unique; dots in them are the nesting that tables fold (``cnnkit shape --depth``). The last
node is the output. Nodes can have any number of consumers; ``add`` and ``concat`` take two
or more inputs. :func:`to_json` writes any graph so that :func:`parse` reads it back.
"""

from cnnkit.arch import receptive
from cnnkit.arch.graph import INPUT, Graph, LayerInfo, Node, describe
from cnnkit.arch.kinds import ACTIVATIONS, KINDS, dim_names
from cnnkit.arch.read import Builder, parse, parse_text, shipped, source_text
from cnnkit.arch.shapes import infer, totals, with_input
from cnnkit.arch.values import SpecError, parse_shape
from cnnkit.arch.write import layer_text, to_json, to_text
from cnnkit.geometry import format_shape

Architecture = Graph  # the name chain-era code used
Layer = Node

__all__ = [
    "ACTIVATIONS",
    "INPUT",
    "KINDS",
    "Architecture",
    "Builder",
    "Graph",
    "Layer",
    "LayerInfo",
    "Node",
    "SpecError",
    "describe",
    "dim_names",
    "format_shape",
    "infer",
    "layer_text",
    "parse",
    "parse_text",
    "parse_shape",
    "receptive",
    "shipped",
    "source_text",
    "to_json",
    "to_text",
    "totals",
    "with_input",
]
