"""The graph every architecture becomes: nodes with named inputs, in topological order.

A chain spec is a graph in which every node reads the one before it; residual and concat
blocks add nodes with several inputs (``add``, ``concat``). Nothing here is specific to the
text syntax: an importer (ONNX, a Python script) builds the same :class:`Node` objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cnnkit.arch.kinds import KINDS
from cnnkit.arch.values import SpecError

INPUT = "input"  # the name every graph's input goes by; nodes list it in ``inputs``
BYTES_PER_ELEMENT = 4  # float32 activations


@dataclass(frozen=True)
class Node:
    """One operation of a graph.

    Parameters
    ----------
    kind : str
        A canonical kind from :data:`cnnkit.arch.kinds.KINDS` (``"conv"``, ``"add"``, ...).
    name : str
        Unique name, also what tables show. Dots nest: ``layer1.0.conv1`` sits in block
        ``layer1.0`` inside ``layer1`` (``cnnkit shape --depth`` folds on them).
    inputs : tuple of str
        Names of the nodes it reads (``"input"`` for the graph's input), earlier in the graph.
    attrs : mapping
        The kind's options in canonical form (``out_channels``, ``kernel``, ``stride``,
        ``padding``, ``dilation``, ``groups``, ``bias`` for a conv), as the kind's ``parse``
        returns them. They read as attributes too: ``node.kernel``.
    line, text : int, str
        Where the node came from (spec line or item number, the source text), for messages;
        0 and ``""`` for nodes built in code.
    """

    kind: str
    line: int = 0
    text: str = ""
    name: str = ""
    inputs: tuple[str, ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, key: str) -> Any:
        attrs = self.__dict__.get("attrs")
        if attrs is not None and key in attrs:
            return attrs[key]
        raise AttributeError(f"{self.kind} node has no attribute {key!r}")


@dataclass(frozen=True)
class Graph:
    """A parsed architecture: the input shape ``(C, spatial...)`` and the nodes in order.

    The last node is the output; every other node must be read by a later one. ``where`` is
    the word messages use for ``Node.line``: ``"line"`` for spec files, ``"item"`` for inline
    ``;``-separated text and JSON entries.
    """

    name: str
    input_shape: tuple[int, ...]
    nodes: tuple[Node, ...]
    where: str = "line"

    def __post_init__(self) -> None:
        if not self.nodes:
            raise SpecError("spec has no layers after the input")
        seen = {INPUT}
        used: set[str] = set()
        for node in self.nodes:
            if node.kind not in KINDS:
                raise SpecError(f"node {node.name!r}: unknown kind {node.kind!r}")
            if not node.name or node.name in seen:
                what = "has no name" if not node.name else "is used twice"
                raise SpecError(f"node name {node.name!r} {what} (kind {node.kind})")
            kind = KINDS[node.kind]
            if kind.arity == 1 and len(node.inputs) != 1:
                raise SpecError(f"node {node.name!r} ({node.kind}) reads exactly one input")
            if kind.arity != 1 and len(node.inputs) < 2:
                raise SpecError(f"node {node.name!r} ({node.kind}) needs two or more inputs")
            for source in node.inputs:
                if source not in seen:
                    raise SpecError(
                        f"node {node.name!r} reads {source!r}, which is not an earlier node"
                    )
                used.add(source)
            seen.add(node.name)
        unused = [n.name for n in self.nodes[:-1] if n.name not in used]
        if unused:
            raise SpecError(
                f"node {unused[0]!r}'s output is never used (the last node, "
                f"{self.nodes[-1].name!r}, is the graph's output)"
            )

    @property
    def layers(self) -> tuple[Node, ...]:
        """The nodes (the name chain specs have always used)."""
        return self.nodes

    @property
    def output(self) -> str:
        """Name of the output node."""
        return self.nodes[-1].name

    @property
    def is_chain(self) -> bool:
        """Whether every node reads the one before it (the specs of LeNet, VGG, ...)."""
        previous = INPUT
        for node in self.nodes:
            if node.inputs != (previous,):
                return False
            previous = node.name
        return True

    def consumers(self) -> dict[str, list[str]]:
        """For every node name (and ``"input"``), the names of the nodes that read it."""
        out: dict[str, list[str]] = {INPUT: [], **{n.name: [] for n in self.nodes}}
        for node in self.nodes:
            for source in node.inputs:
                out[source].append(node.name)
        return out


@dataclass(frozen=True)
class LayerInfo:
    """The arithmetic of one node: shapes, resolved padding, parameters, cost, notes.

    ``input_shape`` is the first input's shape; ``input_shapes`` has one per input.
    """

    name: str
    kind: str
    layer: Node
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    inputs: tuple[str, ...] = ()
    input_shapes: tuple[tuple[int, ...], ...] = ()
    pads: tuple[tuple[int, int], ...] = ()
    params: int = 0
    macs: int = 0
    other_ops: int = 0
    activations: int = 0
    activation_bytes: int = 0
    dropped: tuple[int, ...] = ()
    border_lost: tuple[int, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def spatial(self) -> bool:
        """Whether the output still has spatial dimensions."""
        return len(self.output_shape) > 1


def describe(graph: Graph, node: Node, name: str | None = None) -> str:
    """``conv2 (line 4: 'conv 16 k=5')`` for error messages."""
    name = node.name if name is None else name
    if not node.line:
        return name
    return f"{name} ({graph.where} {node.line}: {node.text!r})"
