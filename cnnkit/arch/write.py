"""Writing graphs back out: canonical text (chains and nested blocks) and JSON (any graph)."""

from __future__ import annotations

from typing import Any

from cnnkit.arch.graph import INPUT, Graph, Node
from cnnkit.arch.kinds import KINDS
from cnnkit.arch.read import parse
from cnnkit.arch.values import SpecError


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def layer_text(layer: Node) -> str:
    """The canonical text spelling of a one-input node (every option written out)."""
    kind = KINDS[layer.kind]
    parts = [layer.kind]
    for key, value in kind.options(layer).items():
        parts.append(_value(value) if key == kind.positional else f"{key}={_value(value)}")
    return " ".join(parts)


def to_json(arch: Graph) -> dict[str, Any]:
    """The graph as a JSON-ready dict: ``{"name", "input", "layers": [{"layer", "name",
    "inputs", options...}]}``; :func:`cnnkit.arch.parse` reads it back to the same graph."""
    layers = []
    for node in arch.nodes:
        entry: dict[str, Any] = {"layer": node.kind, "name": node.name, "inputs": list(node.inputs)}
        entry.update(KINDS[node.kind].options(node))
        layers.append(entry)
    return {"name": arch.name, "input": list(arch.input_shape), "layers": layers}


def to_text(arch: Graph) -> str:
    """The spec as canonical text, one layer per line, merges as ``residual``/``concat``
    blocks; ``parse(to_text(a))`` gives the same layers back (names may differ).

    Raises
    ------
    SpecError
        For a graph that nested blocks cannot write (a branch read from outside its block,
        an add of three inputs); :func:`to_json` writes every graph.
    """
    nodes = {n.name: n for n in arch.nodes}
    order = {n.name: i for i, n in enumerate(arch.nodes)}
    order[INPUT] = -1
    ancestors: dict[str, frozenset[str]] = {INPUT: frozenset({INPUT})}
    for node in arch.nodes:
        ancestors[node.name] = frozenset({node.name}).union(*(ancestors[i] for i in node.inputs))

    def not_nested() -> SpecError:
        return SpecError(f"{arch.name}: this graph has no nested-block text form; write it as JSON")

    def sequence(start: str, end: str, indent: str) -> list[str]:
        chunks: list[list[str]] = []
        current = end
        while current != start:
            if current == INPUT:
                raise not_nested()
            node = nodes[current]
            if len(node.inputs) == 1:
                chunks.append([indent + layer_text(node)])
                current = node.inputs[0]
                continue
            common = frozenset.intersection(*(ancestors[i] for i in node.inputs))
            fork = max(common, key=order.__getitem__)
            inner = indent + "  "
            branches = [sequence(fork, source, inner) for source in node.inputs]
            if node.kind == "add":
                if len(branches) != 2 or not any(branches):
                    raise not_nested()
                body, short = branches if branches[0] else branches[::-1]
                block = [indent + "residual {", *body]
                if short:
                    block += [indent + "} shortcut {", *short]
            else:
                block = [indent + "concat {", *branches[0]]
                for branch in branches[1:]:
                    block += [indent + "} {", *branch]
            chunks.append([*block, indent + "}"])
            current = fork
        return [line for chunk in reversed(chunks) for line in chunk]

    lines = [f"input {' '.join(map(str, arch.input_shape))}"]
    lines += sequence(INPUT, arch.output, "")
    text = "\n".join(lines) + "\n"
    if not arch.is_chain:
        again = parse(text)
        if sorted(_signature(n) for n in again.nodes) != sorted(_signature(n) for n in arch.nodes):
            raise not_nested()
    return text


def _signature(node: Node) -> str:
    return f"{layer_text(node)}/{len(node.inputs)}"
