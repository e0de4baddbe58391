"""Receptive fields: how much of the input each unit sees, where, and with what step.

Follows Araujo, Norris and Sim, "Computing Receptive Fields of Convolutional Neural Networks",
Distill, 2019 (https://distill.pub/2019/computing-receptive-fields/). Every quantity is per
spatial dimension; pixel ``i`` of the input sits at coordinate ``i``. Like :mod:`cnnkit.spec`,
this module imports only the standard library, so ``cnnkit receptive-field`` starts fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cnnkit import geometry, spec
from cnnkit.spec import Architecture, LayerInfo, SpecError


@dataclass(frozen=True)
class Field:
    """The receptive-field arithmetic after one layer, one entry per spatial dimension.

    ``receptive_field`` (r), ``effective_stride`` (j, the input distance between neighbouring
    units), ``effective_padding`` (P), ``start`` (the first input coordinate the field of unit
    0 covers, ``-P``) and ``center`` (the centre of unit 0's field, ``-P + (r - 1) / 2``).
    Unit ``y`` sees input coordinates ``y * j - P`` to ``y * j - P + r - 1``.
    """

    name: str
    kind: str
    output_shape: tuple[int, ...]
    receptive_field: tuple[int, ...]
    effective_stride: tuple[int, ...]
    effective_padding: tuple[int, ...]
    start: tuple[int, ...]
    center: tuple[float, ...]

    @property
    def spatial(self) -> bool:
        """Whether the layer's output still has spatial positions (units with a place)."""
        return len(self.output_shape) > 1


@dataclass(frozen=True)
class Region:
    """The input region one unit sees.

    ``box`` is the unclipped field ``(first, last)`` per dimension (it may reach into the
    padding); ``clipped`` the part inside the input (None in a dimension where the field lies
    entirely in the padding); ``positions`` the exact input coordinates that reach the unit
    per dimension (dilation and strides larger than the kernel leave holes; padding added
    by intermediate layers is removed). The pixels that reach the unit are the Cartesian
    product of ``positions``.
    """

    layer: str
    layer_index: int
    unit: tuple[int, ...]
    box: tuple[tuple[int, int], ...]
    clipped: tuple[tuple[int, int] | None, ...]
    positions: tuple[tuple[int, ...], ...]

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

    @property
    def seen(self) -> int:
        """Input pixels that actually reach the unit (``len`` of the exact set)."""
        return math.prod(len(p) for p in self.positions)


def _window(info: LayerInfo) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(effective kernel span, stride, padding before) per dimension, for a layer's windows."""
    layer = info.layer
    sizes = info.input_shape[1:]
    if info.kind == "conv":
        span = tuple(geometry.dilated_span(k, d) for k, d in zip(layer.kernel, layer.dilation))
        return span, layer.stride, tuple(p[0] for p in info.pads)
    if info.kind == "pool":
        return layer.kernel, layer.stride, tuple(p[0] for p in info.pads)
    if info.kind in ("gap", "fc") and sizes:
        # One output that sees the whole map: a window as large as the input, stride 1.
        return tuple(sizes), (1,) * len(sizes), (0,) * len(sizes)
    ndim = len(sizes)
    return (1,) * ndim, (1,) * ndim, (0,) * ndim


def fields(arch: Architecture, infos: list[LayerInfo] | None = None) -> list[Field]:
    """Receptive field, effective stride, effective padding and start/centre per layer.

    Parameters
    ----------
    arch : Architecture
    infos : list of LayerInfo, optional
        ``spec.infer(arch)``, if already computed.

    Returns
    -------
    list of Field
        One per layer. Layers after the output became flat (gap, fc, flatten) see the whole
        input; their field is reported in the input's dimensions.

    Notes
    -----
    Araujo et al.'s recurrences, applied from the input (``r_0 = 1``, ``j_0 = 1``,
    ``P_0 = 0``) through each layer with kernel ``k``, stride ``s``, left padding ``p`` and
    dilation ``d`` (effective kernel ``k' = d * (k - 1) + 1``)::

        r_l = r_{l-1} + (k' - 1) * j_{l-1}
        j_l = j_{l-1} * s
        P_l = P_{l-1} + p * j_{l-1}

    which unroll to Araujo et al.'s closed forms ``r = 1 + sum_l (k'_l - 1) prod_{i<l} s_i``,
    ``j = prod_l s_l`` and ``P = sum_l p_l prod_{i<l} s_i``. Activations, batch norm and
    dropout are 1x1 and change nothing. Pooling is a window like a convolution; ``ceil_mode``
    adds windows at the far end but does not move the first one. Global average pooling and
    fully connected layers are windows as large as their input. ``"same"`` padding with an
    odd total puts the extra row after, so ``p`` is the smaller half.

    Examples
    --------
    The lecture's 1-D conv-pool-conv stack: the last unit sees all 8 samples.

    >>> from cnnkit import spec
    >>> arch = spec.parse("input 1 8; conv 1 k=3; pool max k=2; conv 1 k=3")
    >>> [f.receptive_field for f in fields(arch)]
    [(3,), (4,), (8,)]
    """
    infos = spec.infer(arch) if infos is None else infos
    ndim = len(arch.input_shape) - 1
    r, j, p = [1] * ndim, [1] * ndim, [0] * ndim
    # A flatten keeps each position's own field; the fc after it unions them over the map.
    flattened: tuple[int, ...] | None = None
    out: list[Field] = []
    for info in infos:
        window = None
        if len(info.input_shape) > 1:
            window = _window(info)
            if info.kind == "flatten":
                flattened = info.input_shape[1:]
        elif info.kind == "fc" and flattened is not None:
            window = (flattened, (1,) * ndim, (0,) * ndim)
            flattened = None
        if window is not None:
            span, stride, before = window
            for i in range(ndim):
                r[i] += (span[i] - 1) * j[i]
                p[i] += before[i] * j[i]
                j[i] *= stride[i]
        out.append(
            Field(
                name=info.name,
                kind=info.kind,
                output_shape=info.output_shape,
                receptive_field=tuple(r),
                effective_stride=tuple(j),
                effective_padding=tuple(p),
                start=tuple(-v for v in p),
                center=tuple(-pv + (rv - 1) / 2 for pv, rv in zip(p, r)),
            )
        )
    return out


def select_layer(arch: Architecture, infos: list[LayerInfo], layer: str | int | None) -> int:
    """0-based index of the layer named by ``layer``: a 1-based number, a name like
    ``"conv2"``, or None for the last layer whose output still has spatial positions."""
    names = [i.name for i in infos]
    if layer is None:
        spatial = [k for k, info in enumerate(infos) if len(info.output_shape) > 1]
        if not spatial:
            raise SpecError("no layer has a spatial output, so no unit has a place to look at")
        return spatial[-1]
    text = str(layer).strip().lower()
    if text.lstrip("-").isdigit():
        number = int(text)
        if not 1 <= number <= len(infos):
            raise SpecError(f"layer {number} does not exist: layers are numbered 1-{len(infos)}")
        index = number - 1
    elif text in names:
        index = names.index(text)
    else:
        from difflib import get_close_matches

        hint = get_close_matches(text, names, n=1)
        did = f"; did you mean {hint[0]!r}?" if hint else ""
        raise SpecError(f"no layer named {layer!r}{did} (layers: {', '.join(names)})")
    if len(infos[index].output_shape) <= 1:
        raise SpecError(
            f"layer {infos[index].name} has a flat output "
            f"{spec.format_shape(infos[index].output_shape)}: each of its units sees the whole "
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


def unit_region(
    arch: Architecture,
    unit: Sequence[int],
    layer: str | int | None = None,
    infos: list[LayerInfo] | None = None,
) -> Region:
    """The input region seen by one unit of one layer.

    Parameters
    ----------
    arch : Architecture
    unit : sequence of int
        The unit's position in the layer's output, one index per spatial dimension
        (0-based, like array indices: ``(y, x)`` in 2-D).
    layer : int, str or None
        1-based layer number, a layer name (``"conv2"``), or None for the last spatial layer.

    Returns
    -------
    Region

    Notes
    -----
    The box is Araujo et al.'s ``[y * j - P, y * j - P + r - 1]``. The exact positions walk
    back from the unit through every layer: an output position ``y`` of a layer with stride
    ``s``, left padding ``p``, dilation ``d`` and kernel ``k`` reads input positions
    ``y * s - p + t * d`` for ``t = 0 .. k - 1``, of which only those inside the layer's input
    (``0 .. n - 1``) are real; the rest are padding and carry nothing from the image.

    Examples
    --------
    >>> from cnnkit import spec
    >>> region = unit_region(spec.parse("input 1 8 8; conv 1 k=3 p=1; conv 1 k=3 p=1"), (0, 0))
    >>> region.box, region.clipped, region.padding
    (((-2, 2), (-2, 2)), ((0, 2), (0, 2)), 16)
    """
    infos = spec.infer(arch) if infos is None else infos
    index = select_layer(arch, infos, layer)
    info = infos[index]
    sizes = info.output_shape[1:]
    unit = tuple(int(u) for u in unit)
    if len(unit) != len(sizes):
        raise SpecError(
            f"unit {','.join(map(str, unit))} has {len(unit)} index(es) but {info.name}'s "
            f"output {spec.format_shape(info.output_shape)} has {len(sizes)} spatial "
            "dimension(s)"
        )
    for u, n, dim in zip(unit, sizes, spec.dim_names(len(sizes))):
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
    input_sizes = arch.input_shape[1:]
    clipped = tuple(
        (max(lo, 0), min(hi, n - 1)) if hi >= 0 and lo <= n - 1 else None
        for (lo, hi), n in zip(box, input_sizes)
    )
    positions = []
    for dim, u in enumerate(unit):
        current = {u}
        for back in infos[index::-1]:
            span, stride, before = _window(back)
            if back.kind in ("conv",):
                d = back.layer.dilation[dim]
                taps = range(0, span[dim], d)
            else:
                taps = range(span[dim])
            n = back.input_shape[1 + dim]
            current = {
                y * stride[dim] - before[dim] + t
                for y in current
                for t in taps
                if 0 <= y * stride[dim] - before[dim] + t < n
            }
        positions.append(tuple(sorted(current)))
    return Region(
        layer=info.name,
        layer_index=index,
        unit=unit,
        box=box,
        clipped=clipped,
        positions=tuple(positions),
    )


def growth(arch: Architecture, infos: list[LayerInfo] | None = None) -> list[Region]:
    """The centre unit's region after every conv/pool layer: the field growing with depth."""
    infos = spec.infer(arch) if infos is None else infos
    regions = []
    for index, info in enumerate(infos):
        if info.kind in ("conv", "pool") and len(info.output_shape) > 1:
            centre = tuple((n - 1) // 2 for n in info.output_shape[1:])
            regions.append(unit_region(arch, centre, index + 1, infos))
    return regions


def summary(arch: Architecture, infos: list[LayerInfo] | None = None) -> dict[str, object]:
    """What ``--compare`` puts side by side: final field, parameters, MACs, non-linearities."""
    infos = spec.infer(arch) if infos is None else infos
    all_fields = fields(arch, infos)
    # The field of the last layer that has one of its own (a conv or pool with places).
    windows = [f for f in all_fields if f.spatial and f.kind in ("conv", "pool")]
    last = windows[-1] if windows else all_fields[-1]
    totals = spec.totals(infos)
    return {
        "name": arch.name,
        "input_shape": list(arch.input_shape),
        "output_shape": list(infos[-1].output_shape),
        "receptive_field": list(last.receptive_field),
        "receptive_field_layer": last.name,
        "effective_stride": list(last.effective_stride),
        "params": totals["total_params"],
        "macs": totals["total_macs"],
        "nonlinearities": sum(1 for i in infos if i.kind in spec.ACTIVATIONS),
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
