"""Receptive fields: how much of the input each unit sees, where, and with what step.

Follows Araujo, Norris and Sim, "Computing Receptive Fields of Convolutional Neural Networks",
Distill, 2019 (https://distill.pub/2019/computing-receptive-fields/), including its section
"Arbitrary computation graphs": where paths meet (add, concat) the field is the union of the
paths' fields. Every quantity is per spatial dimension; pixel ``i`` of the input sits at
coordinate ``i``. Imports only the standard library, so ``cnnkit receptive-field`` starts fast.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from cnnkit.arch.graph import INPUT, Graph, LayerInfo, describe
from cnnkit.arch.kinds import ACTIVATIONS, KINDS, dim_names
from cnnkit.arch.shapes import infer, totals
from cnnkit.arch.values import SpecError
from cnnkit.geometry import format_shape

Product = tuple[frozenset[int], ...]  # a box of positions with holes: one set per dimension


@dataclass(frozen=True)
class Field:
    """The receptive-field arithmetic after one node, one entry per spatial dimension.

    ``receptive_field`` (r), ``effective_stride`` (j, the input distance between neighbouring
    units), ``effective_padding`` (P), ``start`` (the first input coordinate the field of unit
    0 covers, ``-P``) and ``center`` (the centre of unit 0's field, ``-P + (r - 1) / 2``).
    Unit ``y`` sees input coordinates ``y * j - P`` to ``y * j - P + r - 1``. ``aligned`` is
    False once paths whose fields have different centres were merged: the unit then does not
    sit in the middle of what it sees.
    """

    name: str
    kind: str
    output_shape: tuple[int, ...]
    receptive_field: tuple[int, ...]
    effective_stride: tuple[int, ...]
    effective_padding: tuple[int, ...]
    start: tuple[int, ...]
    center: tuple[float, ...]
    aligned: bool = True

    @property
    def spatial(self) -> bool:
        """Whether the node's output still has spatial positions (units with a place)."""
        return len(self.output_shape) > 1

    def to_json(self) -> dict[str, object]:
        """The field as plain JSON values (``cnnkit receptive-field --json``)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "output_shape": list(self.output_shape),
            "receptive_field": list(self.receptive_field),
            "effective_stride": list(self.effective_stride),
            "effective_padding": list(self.effective_padding),
            "start": list(self.start),
            "center": list(self.center),
            "aligned": self.aligned,
        }


@dataclass(frozen=True)
class Region:
    """The input region one unit sees.

    ``box`` is the unclipped field ``(first, last)`` per dimension (it may reach into the
    padding); ``clipped`` the part inside the input (None in a dimension where the field lies
    entirely in the padding); ``positions`` the input coordinates that reach the unit, per
    dimension (dilation and strides larger than the kernel leave holes; padding added by
    intermediate layers is removed). ``parts`` are boxes with holes (one set of coordinates
    per dimension) whose union is exactly the set of pixels that reach the unit: one part for
    a chain, where the pixels are the Cartesian product of ``positions``; on a graph, paths
    that see differently shaped regions add parts.
    """

    layer: str
    layer_index: int
    unit: tuple[int, ...]
    box: tuple[tuple[int, int], ...]
    clipped: tuple[tuple[int, int] | None, ...]
    positions: tuple[tuple[int, ...], ...]
    parts: tuple[tuple[tuple[int, ...], ...], ...] = ()

    @property
    def field_size(self) -> int:
        """Positions in the full (unclipped) field: ``prod(r)``."""
        return math.prod(hi - lo + 1 for lo, hi in self.box)

    @property
    def inside(self) -> int:
        """Positions of the field that lie inside the input."""
        return math.prod(0 if c is None else c[1] - c[0] + 1 for c in self.clipped)

    @property
    def padding(self) -> int:
        """Positions of the field that lie in the padding (outside the input)."""
        return self.field_size - self.inside

    def pixels(self) -> set[tuple[int, ...]]:
        """The exact set of input pixels that reach the unit."""
        return set().union(*(itertools.product(*part) for part in self.parts))

    @property
    def seen(self) -> int:
        """Input pixels that actually reach the unit (the size of :meth:`pixels`)."""
        if len(self.parts) == 1:
            return math.prod(len(p) for p in self.parts[0])
        return len(self.pixels())

    def to_json(self) -> dict[str, object]:
        """The region as plain JSON values (``cnnkit receptive-field --unit --json``)."""
        return {
            "layer": self.layer,
            "unit": list(self.unit),
            "box": [list(b) for b in self.box],
            "clipped": [list(c) if c is not None else None for c in self.clipped],
            "field_size": self.field_size,
            "inside": self.inside,
            "padding": self.padding,
            "padding_fraction": self.padding / self.field_size,
            "pixels_seen": self.seen,
            "positions": [list(p) for p in self.positions],
            "parts": [[list(p) for p in part] for part in self.parts],
        }


def _window(info: LayerInfo):
    """(span, stride, padding before, tap step) of a node's windows, or None (1x1 node)."""
    if len(info.input_shape) <= 1:
        return None
    return KINDS[info.kind].window(info)


def fields(arch: Graph, infos: list[LayerInfo] | None = None) -> list[Field]:
    """Receptive field, effective stride, effective padding and start/centre per node.

    Parameters
    ----------
    arch : Graph
    infos : list of LayerInfo, optional
        ``infer(arch)``, if already computed.

    Returns
    -------
    list of Field
        One per node. Nodes after the output became flat (gap, fc, flatten) see the whole
        input; their field is reported in the input's dimensions.

    Raises
    ------
    SpecError
        When paths that meet at an add or concat have different effective strides (their
        units do not step over the input alike, so the merged unit has no single stride).

    Notes
    -----
    Araujo et al.'s recurrences, applied from the input (``r_0 = 1``, ``j_0 = 1``,
    ``P_0 = 0``) through each layer with kernel ``k``, stride ``s``, left padding ``p`` and
    dilation ``d`` (effective kernel ``k' = d * (k - 1) + 1``)::

        r_l = r_{l-1} + (k' - 1) * j_{l-1}
        j_l = j_{l-1} * s
        P_l = P_{l-1} + p * j_{l-1}

    which unroll to ``r = 1 + sum_l (k'_l - 1) prod_{i<l} s_i``, ``j = prod_l s_l`` and
    ``P = sum_l p_l prod_{i<l} s_i``. They are carried as unit 0's first and last input
    coordinate (``-P`` and ``r - 1 - P``). Where paths meet, the field is their union: the
    smallest first and the largest last coordinate, provided every path has the same ``j``.
    Activations, batch norm and dropout are 1x1 and change nothing. Pooling is a window like
    a convolution; ``ceil_mode`` adds windows at the far end but does not move the first
    one. Global average pooling and fully connected layers are windows as large as their
    input. ``"same"`` padding with an odd total puts the extra row after, so ``p`` is the
    smaller half.

    Examples
    --------
    The lecture's 1-D conv-pool-conv stack: the last unit sees all 8 samples.

    >>> from cnnkit.arch import parse
    >>> arch = parse("input 1 8; conv 1 k=3; pool max k=2; conv 1 k=3")
    >>> [f.receptive_field for f in fields(arch)]
    [(3,), (4,), (8,)]
    """
    infos = infer(arch) if infos is None else infos
    ndim = len(arch.input_shape) - 1
    state = {INPUT: _Walk((1,) * ndim, (0,) * ndim, (0,) * ndim, True, None)}
    out: list[Field] = []
    for info in infos:
        ins = [state[source] for source in info.layer.inputs]
        walk = _merge(arch, info, ins) if len(ins) > 1 else _step(info, ins[0])
        state[info.name] = walk
        lo, hi = walk.first, walk.last
        out.append(
            Field(
                name=info.name,
                kind=info.kind,
                output_shape=info.output_shape,
                receptive_field=tuple(h - lw + 1 for lw, h in zip(lo, hi)),
                effective_stride=walk.stride,
                effective_padding=tuple(-v for v in lo),
                start=lo,
                center=tuple((lw + h) / 2 for lw, h in zip(lo, hi)),
                aligned=walk.aligned,
            )
        )
    return out


class _Walk(NamedTuple):
    """Unit 0's field after a node: effective stride, first and last input coordinate,
    whether the paths that met were centred alike, and the spatial sizes of a map that a
    flatten turned into features (None otherwise)."""

    stride: tuple[int, ...]
    first: tuple[int, ...]
    last: tuple[int, ...]
    aligned: bool
    flat: tuple[int, ...] | None


def _step(info: LayerInfo, walk: _Walk) -> _Walk:
    """One single-input node: its window (if any) grows the field and the stride."""
    ndim = len(walk.stride)
    j, lo, hi, aligned, flat = walk
    window = _window(info)
    if info.kind == "flatten" and len(info.input_shape) > 1:
        flat = info.input_shape[1:]
    elif info.kind == "fc" and window is None and flat is not None:
        ones = (1,) * ndim
        window, flat = (flat, ones, (0,) * ndim, ones), None
    if window is not None:
        span, stride, before, _ = window
        lo = tuple(lo[i] - before[i] * j[i] for i in range(ndim))
        hi = tuple(hi[i] + (span[i] - 1 - before[i]) * j[i] for i in range(ndim))
        j = tuple(j[i] * stride[i] for i in range(ndim))
    return _Walk(j, lo, hi, aligned, flat)


def _merge(arch: Graph, info: LayerInfo, ins: list[_Walk]) -> _Walk:
    """Where paths meet: the union of their fields, if they step alike."""
    node = info.layer
    ndim = len(ins[0].stride)
    if len({w.stride for w in ins}) > 1:
        shown = " and ".join(
            f"{','.join(map(str, w.stride))} (from {n})" for n, w in zip(node.inputs, ins)
        )
        raise SpecError(
            f"{describe(arch, node)}: the paths that meet here have different "
            f"effective strides, {shown}; their union has no single stride"
        )
    lo = tuple(min(w.first[i] for w in ins) for i in range(ndim))
    hi = tuple(max(w.last[i] for w in ins) for i in range(ndim))
    centres = {tuple(a + b for a, b in zip(w.first, w.last)) for w in ins}
    aligned = all(w.aligned for w in ins) and len(centres) == 1
    return _Walk(ins[0].stride, lo, hi, aligned, ins[0].flat)


def select_layer(arch: Graph, infos: list[LayerInfo], layer: str | int | None) -> int:
    """0-based index of the node named by ``layer``: a 1-based number, a name like
    ``"conv2"``, or None for the last node whose output still has spatial positions."""
    names = [i.name for i in infos]
    if layer is None:
        spatial = [k for k, info in enumerate(infos) if len(info.output_shape) > 1]
        if not spatial:
            raise SpecError("no layer has a spatial output, so no unit has a place to look at")
        return spatial[-1]
    text = str(layer).strip()
    folded = [name.lower() for name in names]  # ONNX node names have capitals
    if text.lstrip("-").isdigit():
        number = int(text)
        if not 1 <= number <= len(infos):
            raise SpecError(f"layer {number} does not exist: layers are numbered 1-{len(infos)}")
        index = number - 1
    elif text in names:
        index = names.index(text)
    elif text.lower() in folded:
        index = folded.index(text.lower())
    else:
        from difflib import get_close_matches

        hint = get_close_matches(text, names, n=1)
        did = f"; did you mean {hint[0]!r}?" if hint else ""
        shown = ", ".join(names) if len(names) <= 30 else ", ".join(names[:30]) + ", ..."
        raise SpecError(f"no layer named {layer!r}{did} (layers: {shown})")
    if len(infos[index].output_shape) <= 1:
        raise SpecError(
            f"layer {infos[index].name} has a flat output "
            f"{format_shape(infos[index].output_shape)}: each of its units sees the whole "
            "input; pick a conv or pool layer for --unit"
        )
    return index


def parse_unit(text: str) -> tuple[int, ...]:
    """``"3,4"`` (or ``"3x4"``) -> ``(3, 4)``: a unit's position, one index per dimension."""
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise SpecError(
            f"unit must be integers like 3,4 (one per dimension), got {text!r}"
        ) from None


def _prune(parts: list[Product]) -> list[Product]:
    """Drop duplicate parts and parts inside another one."""
    unique = list(dict.fromkeys(parts))
    return [
        p
        for k, p in enumerate(unique)
        if not any(
            q is not p and all(a <= b for a, b in zip(p, q)) and (p != q or m < k)
            for m, q in enumerate(unique)
        )
    ]


def _walk_back(
    infos: list[LayerInfo], index: int, parts: list[Product], until: str = INPUT
) -> list[Product]:
    """The positions, at the output of ``until``, that reach ``parts`` of node ``index``.

    An output position ``y`` of a window with stride ``s``, left padding ``p``, dilation
    ``d`` and kernel ``k`` reads input positions ``y * s - p + t * d`` for ``t = 0 .. k-1``;
    only those inside the input (``0 .. n - 1``) are real, the rest are padding.
    """
    pending: dict[str, list[Product]] = {infos[index].name: parts}
    for info in reversed(infos[: index + 1]):
        if info.name == until:
            break
        here = pending.pop(info.name, None)
        if not here:
            continue
        window = _window(info)
        if window is not None:
            span, stride, before, step = window
            sizes = info.input_shape[1:]
            moved = []
            for part in here:
                new = tuple(
                    frozenset(
                        y * stride[d] - before[d] + t
                        for y in part[d]
                        for t in range(0, span[d], step[d])
                        if 0 <= y * stride[d] - before[d] + t < sizes[d]
                    )
                    for d in range(len(part))
                )
                if all(new):
                    moved.append(new)
            here = moved
        for source in info.layer.inputs:
            pending[source] = _prune(pending.get(source, []) + here)
    return pending.get(until, [])


def unit_region(
    arch: Graph,
    unit: Sequence[int],
    layer: str | int | None = None,
    infos: list[LayerInfo] | None = None,
) -> Region:
    """The input region seen by one unit of one node.

    Parameters
    ----------
    arch : Graph
    unit : sequence of int
        The unit's position in the node's output, one index per spatial dimension
        (0-based, like array indices: ``(y, x)`` in 2-D).
    layer : int, str or None
        1-based node number, a node name (``"conv2"``), or None for the last spatial node.

    Returns
    -------
    Region

    Notes
    -----
    The box is Araujo et al.'s ``[y * j - P, y * j - P + r - 1]``. The exact pixels walk back
    from the unit through every path to the input (see :func:`_walk_back`); where paths
    split, each one's pixels join the union.

    Examples
    --------
    >>> from cnnkit.arch import parse
    >>> region = unit_region(parse("input 1 8 8; conv 1 k=3 p=1; conv 1 k=3 p=1"), (0, 0))
    >>> region.box, region.clipped, region.padding
    (((-2, 2), (-2, 2)), ((0, 2), (0, 2)), 16)
    """
    infos = infer(arch) if infos is None else infos
    index = select_layer(arch, infos, layer)
    info = infos[index]
    sizes = info.output_shape[1:]
    unit = tuple(int(u) for u in unit)
    if len(unit) != len(sizes):
        raise SpecError(
            f"unit {','.join(map(str, unit))} has {len(unit)} index(es) but {info.name}'s "
            f"output {format_shape(info.output_shape)} has {len(sizes)} spatial dimension(s)"
        )
    for u, n, dim in zip(unit, sizes, dim_names(len(sizes))):
        if not 0 <= u < n:
            raise SpecError(
                f"unit {','.join(map(str, unit))} is outside {info.name}'s output: "
                f"{dim} index {u} must be in 0..{n - 1}"
            )
    field = fields(arch, infos)[index]
    box = tuple(
        (u * jv - pv, u * jv - pv + rv - 1)
        for u, jv, pv, rv in zip(
            unit, field.effective_stride, field.effective_padding, field.receptive_field
        )
    )
    clipped = tuple(
        (max(lo, 0), min(hi, n - 1)) if hi >= 0 and lo <= n - 1 else None
        for (lo, hi), n in zip(box, arch.input_shape[1:])
    )
    parts = _walk_back(infos, index, [tuple(frozenset({u}) for u in unit)])
    positions = tuple(tuple(sorted(set().union(*(p[d] for p in parts)))) for d in range(len(unit)))
    return Region(
        layer=info.name,
        layer_index=index,
        unit=unit,
        box=box,
        clipped=clipped,
        positions=positions,
        parts=tuple(tuple(tuple(sorted(s)) for s in p) for p in parts),
    )


def growth(
    arch: Graph,
    infos: list[LayerInfo] | None = None,
    unit: Sequence[int] | None = None,
    layer: str | int | None = None,
) -> list[Region]:
    """One unit's field built up layer by layer: nested regions, one per conv/pool node.

    The last region is that of ``unit`` of ``layer`` (default: the centre unit of the last
    spatial node). Going back along the path with the largest fields (through a residual
    block's body, not its shortcut), each conv/pool node contributes the one of its units
    that feeds the next chosen unit and whose field is centred nearest the last one's, so
    every region lies inside the next.
    """
    infos = infer(arch) if infos is None else infos
    index = select_layer(arch, infos, layer)
    if unit is None:
        unit = tuple((n - 1) // 2 for n in infos[index].output_shape[1:])
    last = unit_region(arch, unit, index + 1, infos)
    target = [(lo + hi) / 2 for lo, hi in last.box]
    all_fields = fields(arch, infos)
    # The path whose fields are largest: where paths meet, the body of a residual block
    # rather than its shortcut.
    size = {f.name: math.prod(f.receptive_field) for f in all_fields}
    nodes = {info.name: info.layer for info in infos}
    path, current = set(), infos[index].name
    while current != INPUT:
        path.add(current)
        current = max(nodes[current].inputs, key=lambda n: size.get(n, 0))
    chosen = [(index, tuple(last.unit))]
    for k in range(index - 1, -1, -1):
        info = infos[k]
        if info.name not in path or info.kind not in ("conv", "pool"):
            continue
        if len(info.output_shape) <= 1:
            continue
        after, after_unit = chosen[-1]
        parts = _walk_back(infos, after, [tuple(frozenset({u}) for u in after_unit)], info.name)
        if not parts:
            continue
        f = all_fields[k]
        pick = []
        for d in range(len(after_unit)):
            step, centre, goal = f.effective_stride[d], f.center[d], target[d]
            options = sorted(set().union(*(p[d] for p in parts)))
            pick.append(min(options, key=lambda y: (abs(y * step + centre - goal), y)))
        chosen.append((k, tuple(pick)))
    regions = [unit_region(arch, u, k + 1, infos) for k, u in reversed(chosen)]
    keep = ("conv", "pool")
    return [r for r in regions if infos[r.layer_index].kind in keep or r.layer_index == index]


def summary(arch: Graph, infos: list[LayerInfo] | None = None) -> dict[str, object]:
    """What ``--compare`` puts side by side: final field, parameters, MACs, non-linearities."""
    infos = infer(arch) if infos is None else infos
    all_fields = fields(arch, infos)
    # The field of the last node that has one of its own (a conv or pool with places).
    windows = [f for f in all_fields if f.spatial and f.kind in ("conv", "pool")]
    last = windows[-1] if windows else all_fields[-1]
    sums = totals(infos)
    return {
        "name": arch.name,
        "input_shape": list(arch.input_shape),
        "output_shape": list(infos[-1].output_shape),
        "receptive_field": list(last.receptive_field),
        "receptive_field_layer": last.name,
        "effective_stride": list(last.effective_stride),
        "params": sums["total_params"],
        "macs": sums["total_macs"],
        "nonlinearities": sum(1 for i in infos if i.kind in ACTIVATIONS),
        "layers": len(infos),
    }


__all__ = [
    "Field",
    "Region",
    "fields",
    "growth",
    "parse_unit",
    "select_layer",
    "summary",
    "unit_region",
]
