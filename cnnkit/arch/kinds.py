"""The table of layer kinds: each entry knows how to parse, infer, count, print and build.

A new kind is one class below plus one line in :data:`KINDS`. Shape inference, parameter and
MAC counts, receptive fields, the text and JSON writers and :class:`cnnkit.nn.Model` all ask
this table instead of switching on the kind themselves.

Counting conventions (they match PyTorch's ``sum(p.numel() for p in model.parameters())``):

- conv: ``O * C/groups * prod(k)`` weights, plus ``O`` biases.
- fc: ``in * units`` weights, plus ``units`` biases; ``in`` is the flattened input size.
- bn: ``2 * C`` (scale and shift). The running mean and variance are buffers, not parameters,
  and are not counted.
- MACs (multiply-accumulates): conv ``out_elements * C/groups * prod(k)``; fc ``in * units``.
  Pools, gap, bn, add, concat and activations do no multiply-accumulates and count 0 MACs;
  the comparisons (max pool) or additions (avg pool, gap, add) they do are reported
  separately as ``other_ops`` (``out_elements * prod(k)``; gap: ``C * prod(spatial)``; add:
  ``(inputs - 1) * out_elements``).
- Activation memory: the node's output elements, at 4 bytes each (float32), batch size 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from cnnkit import geometry
from cnnkit.arch.values import (
    Ctx,
    SpecError,
    closest,
    dims,
    to_bool,
    to_float,
    to_int,
    to_ints,
    to_padding,
)
from cnnkit.geometry import format_shape

if TYPE_CHECKING:
    from cnnkit.arch.graph import LayerInfo, Node

_DIM_NAMES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
DIM_UNITS = {1: ("sample",), 2: ("row", "column"), 3: ("slice", "row", "column")}


def dim_names(ndim: int) -> tuple[str, ...]:
    """Human names of the spatial dimensions: ``("height", "width")`` for 2-D."""
    return _DIM_NAMES[ndim]


@dataclass(frozen=True)
class Arith:
    """What a kind's ``infer`` works out for one node."""

    output_shape: tuple[int, ...]
    pads: tuple[tuple[int, int], ...] = ()
    params: int = 0
    macs: int = 0
    other_ops: int = 0
    dropped: tuple[int, ...] = ()
    border_lost: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()


Window = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def _nn_layers() -> ModuleType:
    """:mod:`cnnkit.nn.layers`, imported on first build: arch itself must not load numpy or
    Numba, so ``cnnkit shape`` starts fast."""
    from cnnkit.nn import layers

    return layers


class Kind:
    """One kind of layer. Subclasses override what differs from a 1-input, shape-keeping,
    parameter-free layer (an activation)."""

    name: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()  # canonical option names
    positional: ClassVar[str | None] = None  # the option a bare value fills
    arity: ClassVar[int] = 1  # 1, or 0 for "two or more inputs"
    activation: ClassVar[bool] = False  # a non-linearity (counted by --compare)
    transparent: ClassVar[bool] = False  # sits between a weight layer and its activation

    def parse(self, values: dict[str, Any], ndim: int, ctx: Ctx) -> dict[str, Any]:
        """Canonical attributes from raw option values (strings, numbers, lists)."""
        return {}

    def infer(self, node: Node, shapes: list[tuple[int, ...]], who: str) -> Arith:
        """Output shape and counts for inputs of ``shapes``."""
        return Arith(output_shape=shapes[0])

    def window(self, info: LayerInfo) -> Window | None:
        """(span, stride, padding before, tap step) per dimension, or None for 1x1 layers."""
        return None

    def options(self, node: Node) -> dict[str, Any]:
        """Every option, canonical key -> value, in writing order (text and JSON writers)."""
        return {}

    def build(self, node: Node, info: LayerInfo, init: str, rng: Any, dtype: Any) -> Any:
        """The :mod:`cnnkit.nn.layers` layer that computes this node."""
        raise SpecError(f"{node.name}: layer kind {node.kind!r} cannot be trained")


def _spatial(who: str, shape: tuple[int, ...], kernel: tuple[int, ...] = ()) -> None:
    ndim = len(shape) - 1
    if ndim == 0:
        raise SpecError(
            f"{who}: needs spatial input, but its input is already flat with shape "
            f"{format_shape(shape)} (after fc/flatten/gap)"
        )
    if kernel and len(kernel) != ndim:
        raise SpecError(
            f"{who}: written for {len(kernel)} spatial dimension(s) but the input "
            f"{format_shape(shape)} has {ndim}"
        )


def _check_nonempty(who, sizes, spatial, kernel, dilation, pads) -> None:
    names = dim_names(len(sizes))
    for i, out in enumerate(spatial):
        if out < 1:
            span = geometry.dilated_span(kernel[i], dilation[i])
            padded = sizes[i] + pads[i][0] + pads[i][1]
            shown = f"k={kernel[i]}" + (f", d={dilation[i]}" if dilation[i] > 1 else "")
            raise SpecError(
                f"{who}: output would be empty: {names[i]} {sizes[i]} + padding "
                f"{pads[i][0]}+{pads[i][1]} = {padded} is smaller than the kernel span "
                f"{span} ({shown})"
            )


def _window_notes(sizes, spatial, kernel, stride, dilation, pads, ceil) -> tuple:
    """(dropped, border lost, notes) of a sliding window: what the arithmetic hides."""
    dropped, border = [], []
    for n, k, s, p, d, o in zip(sizes, kernel, stride, pads, dilation, spatial):
        span = geometry.dilated_span(k, d)
        if ceil:
            lost = max(0, n + p[0] + p[1] - ((o - 1) * s + span))
        else:
            lost = geometry.dropped_by_stride(n, k, s, p, d)
        # Positions past the input are padding; only real rows/columns count as dropped.
        dropped.append(max(0, lost - p[1]))
        border.append(n - o if s == 1 and o < n else 0)
    ndim = len(sizes)
    units, names = DIM_UNITS[ndim], dim_names(ndim)
    notes = []
    for i, lost in enumerate(dropped):
        if lost:
            notes.append(
                f"stride {stride[i]} drops the last {lost} input {units[i]}"
                f"{'s' if lost > 1 else ''} ({names[i]} {sizes[i]}): no window reaches them"
            )
    for i, lost in enumerate(border):
        if lost:
            notes.append(
                f"valid-style padding loses {lost} border {units[i]}{'s' if lost > 1 else ''} "
                f"of {names[i]} ({sizes[i]} -> {spatial[i]})"
            )
    if ceil:
        for i, (n, k, s, o, p) in enumerate(zip(sizes, kernel, stride, spatial, pads)):
            over = (o - 1) * s + k - (n + 2 * p[0])
            if over > 0:
                notes.append(
                    f"ceil mode keeps a last partial window in {names[i]} "
                    f"({over} position{'s' if over > 1 else ''} past the input)"
                )
    return tuple(dropped), tuple(border), tuple(notes)


class Conv(Kind):
    name = "conv"
    keys = ("out_channels", "k", "s", "p", "d", "groups", "bias")
    positional = "out_channels"

    def parse(self, values, ndim, ctx):
        if "out_channels" not in values:
            raise ctx.error("conv needs the number of output channels, e.g. 'conv 16 k=3'")
        if "k" not in values:
            raise ctx.error("conv needs a kernel size, e.g. k=3 or k=3x3")
        return {
            "out_channels": to_int(values["out_channels"], "output channels", ctx),
            "kernel": to_ints(values["k"], "kernel size k", ndim, ctx),
            "stride": to_ints(values.get("s", 1), "stride s", ndim, ctx),
            "padding": to_padding(values.get("p", 0), ndim, ctx, words=True),
            "dilation": to_ints(values.get("d", 1), "dilation d", ndim, ctx),
            "groups": to_int(values.get("groups", 1), "groups", ctx),
            "bias": to_bool(values.get("bias", True), "bias", ctx),
        }

    def infer(self, node, shapes, who):
        shape = shapes[0]
        _spatial(who, shape, node.kernel)
        channels, sizes = shape[0], shape[1:]
        if channels % node.groups or node.out_channels % node.groups:
            raise SpecError(
                f"{who}: groups={node.groups} must divide the input channels ({channels}) "
                f"and the output channels ({node.out_channels})"
            )
        pads = geometry.resolve_padding(
            node.padding, sizes, node.kernel, node.stride, node.dilation
        )
        spatial = geometry.conv_output_shape(sizes, node.kernel, node.stride, pads, node.dilation)
        _check_nonempty(who, sizes, spatial, node.kernel, node.dilation, pads)
        out = (node.out_channels, *spatial)
        taps = (channels // node.groups) * math.prod(node.kernel)
        dropped, border, notes = _window_notes(
            sizes, spatial, node.kernel, node.stride, node.dilation, pads, False
        )
        return Arith(
            output_shape=out,
            pads=pads,
            params=node.out_channels * taps + (node.out_channels if node.bias else 0),
            macs=math.prod(out) * taps,
            dropped=dropped,
            border_lost=border,
            notes=notes,
        )

    def window(self, info):
        node = info.layer
        span = tuple(geometry.dilated_span(k, d) for k, d in zip(node.kernel, node.dilation))
        return span, node.stride, tuple(p[0] for p in info.pads), node.dilation

    def options(self, node):
        pad = node.padding if isinstance(node.padding, str) else dims(node.padding)
        return {
            "out_channels": node.out_channels,
            "k": dims(node.kernel),
            "s": dims(node.stride),
            "p": pad,
            "d": dims(node.dilation),
            "groups": node.groups,
            "bias": node.bias,
        }

    def build(self, node, info, init, rng, dtype):
        L = _nn_layers()
        if len(info.input_shape) != 3:
            raise SpecError(f"{node.name}: training supports 2-D convolutions only (C H W)")
        return L.Conv2d(
            info.input_shape[0],
            node.out_channels,
            node.kernel,
            stride=node.stride,
            pads=info.pads,
            dilation=node.dilation,
            groups=node.groups,
            bias=node.bias,
            init=init,
            rng=rng,
            dtype=dtype,
            name=node.name,
        )


class Pool(Kind):
    name = "pool"
    keys = ("mode", "k", "s", "p", "ceil")
    positional = "mode"
    transparent = True

    def parse(self, values, ndim, ctx):
        mode = str(values.get("mode", "")).lower()
        if mode not in ("max", "avg"):
            shown = f"got {values['mode']!r}" if "mode" in values else "got none"
            raise ctx.error(f"pool needs a mode, max or avg ({shown}), e.g. 'pool max k=2'")
        if "k" not in values:
            raise ctx.error("pool needs a kernel size, e.g. k=2")
        kernel = to_ints(values["k"], "kernel size k", ndim, ctx)
        stride = to_ints(values["s"], "stride s", ndim, ctx) if "s" in values else kernel
        padding = to_padding(values.get("p", 0), ndim, ctx, words=False)
        for p, k in zip(padding, kernel):
            if 2 * p > k:  # PyTorch refuses windows that could lie entirely in the padding
                raise ctx.error(f"pool padding p={p} must be at most half the kernel size {k}")
        return {
            "mode": mode,
            "kernel": kernel,
            "stride": stride,
            "padding": padding,
            "dilation": (1,) * ndim,
            "ceil": to_bool(values.get("ceil", False), "ceil", ctx),
        }

    def infer(self, node, shapes, who):
        shape = shapes[0]
        _spatial(who, shape, node.kernel)
        sizes = shape[1:]
        pads = tuple((p, p) for p in node.padding)
        spatial = geometry.pool_output_shape(
            sizes, node.kernel, node.stride, [p[0] for p in pads], node.ceil
        )
        _check_nonempty(who, sizes, spatial, node.kernel, node.dilation, pads)
        out = (shape[0], *spatial)
        dropped, border, notes = _window_notes(
            sizes, spatial, node.kernel, node.stride, node.dilation, pads, node.ceil
        )
        return Arith(
            output_shape=out,
            pads=pads,
            other_ops=math.prod(out) * math.prod(node.kernel),
            dropped=dropped,
            border_lost=border,
            notes=notes,
        )

    def window(self, info):
        node = info.layer
        return node.kernel, node.stride, tuple(p[0] for p in info.pads), node.dilation

    def options(self, node):
        return {
            "mode": node.mode,
            "k": dims(node.kernel),
            "s": dims(node.stride),
            "p": dims(node.padding),
            "ceil": node.ceil,
        }

    def build(self, node, info, init, rng, dtype):
        L = _nn_layers()
        if len(info.input_shape) != 3:
            raise SpecError(f"{node.name}: training supports 2-D pooling only (C H W)")
        cls = L.MaxPool2d if node.mode == "max" else L.AvgPool2d
        return cls(node.kernel, node.stride, node.padding, ceil_mode=node.ceil, name=node.name)


def _whole(info: LayerInfo) -> Window | None:
    """One output that sees the whole map: a window as large as the input, stride 1."""
    sizes = info.input_shape[1:]
    if not sizes:
        return None
    ones = (1,) * len(sizes)
    return tuple(sizes), ones, (0,) * len(sizes), ones


class GlobalAvgPool(Kind):
    name = "gap"
    transparent = True

    def infer(self, node, shapes, who):
        _spatial(who, shapes[0])
        return Arith(output_shape=(shapes[0][0],), other_ops=math.prod(shapes[0]))

    def window(self, info):
        return _whole(info)

    def build(self, node, info, init, rng, dtype):
        L = _nn_layers()
        return L.GlobalAvgPool(node.name)


class Activation(Kind):
    """relu, relu6, sigmoid, tanh: elementwise, no options."""

    activation = True
    layer_class: ClassVar[str] = ""

    def build(self, node, info, init, rng, dtype):
        L = _nn_layers()
        return getattr(L, self.layer_class)(node.name)


class ReLU(Activation):
    name = "relu"
    layer_class = "ReLU"


class ReLU6(Activation):
    name = "relu6"
    layer_class = "ReLU6"


class Sigmoid(Activation):
    name = "sigmoid"
    layer_class = "Sigmoid"


class Tanh(Activation):
    name = "tanh"
    layer_class = "Tanh"


class LeakyReLU(Activation):
    name = "leakyrelu"
    keys = ("slope",)
    positional = "slope"

    def parse(self, values, ndim, ctx):
        return {"slope": to_float(values.get("slope", 0.01), "slope", ctx)}

    def options(self, node):
        return {"slope": node.slope}

    def build(self, node, info, init, rng, dtype):
        L = _nn_layers()
        return L.LeakyReLU(node.slope, node.name)


class BatchNorm(Kind):
    name = "bn"
    transparent = True

    def infer(self, node, shapes, who):
        return Arith(output_shape=shapes[0], params=2 * shapes[0][0])

    def build(self, node, info, init, rng, dtype):
        L = _nn_layers()
        return L.BatchNorm(info.input_shape[0], dtype=dtype, name=node.name)


class Dropout(Kind):
    name = "dropout"
    keys = ("rate",)
    positional = "rate"
    transparent = True

    def parse(self, values, ndim, ctx):
        rate = to_float(values.get("rate", 0.5), "dropout rate", ctx)
        if not 0.0 <= rate < 1.0:
            raise ctx.error(f"dropout rate must be in [0, 1), got {rate}")
        return {"rate": rate}

    def options(self, node):
        return {"rate": node.rate}

    def build(self, node, info, init, rng, dtype):
        L = _nn_layers()
        return L.Dropout(node.rate, node.name)


class Flatten(Kind):
    name = "flatten"
    transparent = True

    def infer(self, node, shapes, who):
        return Arith(output_shape=(math.prod(shapes[0]),))

    def build(self, node, info, init, rng, dtype):
        L = _nn_layers()
        return L.Flatten(node.name)


class Linear(Kind):
    name = "fc"
    keys = ("units", "bias")
    positional = "units"

    def parse(self, values, ndim, ctx):
        if "units" not in values:
            raise ctx.error("fc needs the number of units, e.g. 'fc 10'")
        return {
            "units": to_int(values["units"], "units", ctx),
            "bias": to_bool(values.get("bias", True), "bias", ctx),
        }

    def infer(self, node, shapes, who):
        n_in = math.prod(shapes[0])
        return Arith(
            output_shape=(node.units,),
            params=n_in * node.units + (node.units if node.bias else 0),
            macs=n_in * node.units,
        )

    def window(self, info):
        return _whole(info)

    def options(self, node):
        return {"units": node.units, "bias": node.bias}

    def build(self, node, info, init, rng, dtype):
        L = _nn_layers()
        return L.Linear(
            math.prod(info.input_shape),
            node.units,
            bias=node.bias,
            init=init,
            rng=rng,
            dtype=dtype,
            name=node.name,
        )


def _merge_error(who: str, info_names: list[str], shapes: list[tuple[int, ...]], need: str):
    parts = [f"{format_shape(s)} (from {n})" for n, s in zip(info_names, shapes)]
    return SpecError(f"{who}: {need} where the branches meet, got {' and '.join(parts)}")


class Add(Kind):
    """Elementwise sum of two or more inputs of one shape (a residual connection)."""

    name = "add"
    arity = 0
    transparent = True

    def infer(self, node, shapes, who):
        if any(s != shapes[0] for s in shapes):
            raise _merge_error(who, list(node.inputs), shapes, "add needs equal shapes")
        return Arith(output_shape=shapes[0], other_ops=(len(shapes) - 1) * math.prod(shapes[0]))

    def build(self, node, info, init, rng, dtype):
        L = _nn_layers()
        return L.Add(node.name)


class Concat(Kind):
    """Channel concatenation (axis 0 of ``(C, spatial...)``) of two or more inputs."""

    name = "concat"
    arity = 0
    transparent = True

    def infer(self, node, shapes, who):
        if any(len(s) != len(shapes[0]) or s[1:] != shapes[0][1:] for s in shapes):
            raise _merge_error(who, list(node.inputs), shapes, "concat needs equal spatial sizes")
        return Arith(output_shape=(sum(s[0] for s in shapes), *shapes[0][1:]))

    def build(self, node, info, init, rng, dtype):
        L = _nn_layers()
        return L.Concat(node.name)


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Conv(),
        Pool(),
        GlobalAvgPool(),
        ReLU(),
        ReLU6(),
        Sigmoid(),
        Tanh(),
        LeakyReLU(),
        BatchNorm(),
        Dropout(),
        Flatten(),
        Linear(),
        Add(),
        Concat(),
    )
}
ACTIVATIONS = tuple(name for name, kind in KINDS.items() if kind.activation)

# Other spellings accepted for kinds; a pool alias also fixes the pool's mode.
ALIASES = {
    "convolution": "conv",
    "conv1d": "conv",
    "conv2d": "conv",
    "conv3d": "conv",
    "pooling": "pool",
    "maxpool": "pool",
    "avgpool": "pool",
    "globalavgpool": "gap",
    "global_avg_pool": "gap",
    "globalavgpooling": "gap",
    "leaky_relu": "leakyrelu",
    "lrelu": "leakyrelu",
    "batchnorm": "bn",
    "batch_norm": "bn",
    "drop": "dropout",
    "linear": "fc",
    "dense": "fc",
    "sum": "add",
    "cat": "concat",
}
POOL_ALIASES = {"maxpool": "max", "avgpool": "avg"}

# Option spellings -> canonical option (so "kernel_size=3" works like "k=3").
KEY_ALIASES = {
    "k": "k",
    "kernel": "k",
    "kernel_size": "k",
    "s": "s",
    "stride": "s",
    "p": "p",
    "pad": "p",
    "padding": "p",
    "d": "d",
    "dilation": "d",
    "g": "groups",
    "groups": "groups",
    "bias": "bias",
    "ceil": "ceil",
    "ceil_mode": "ceil",
    "mode": "mode",
    "out": "out_channels",
    "out_channels": "out_channels",
    "channels": "out_channels",
    "filters": "out_channels",
    "units": "units",
    "out_features": "units",
    "rate": "rate",
    "slope": "slope",
    "negative_slope": "slope",
}


def canonical_kind(word: str, ctx: Ctx, extra: tuple[str, ...] = ()) -> tuple[str, str | None]:
    """(canonical kind, implied pool mode) for a layer word; unknown words get a hint."""
    if word in KINDS:
        return word, None
    if word in ALIASES:
        return ALIASES[word], POOL_ALIASES.get(word)
    choices = [*KINDS, *extra, *ALIASES]
    raise ctx.error(f"unknown layer {word!r}{closest(word, choices)}")


def collect(kind: Kind, args: list[Any], keys: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Keys normalised to canonical names, positional values placed, unknown keys refused."""
    allowed = kind.keys
    values: dict[str, Any] = {}
    for key, value in keys.items():
        # PyTorch calls the dropout probability p; elsewhere p is padding.
        canonical = "rate" if kind.name == "dropout" and key == "p" else KEY_ALIASES.get(key)
        if canonical is None or canonical not in allowed:
            spellings = [k for k, c in KEY_ALIASES.items() if c in allowed]
            hint = closest(key, spellings) if spellings else f"; {kind.name} takes no options"
            raise ctx.error(f"unknown option {key!r} for {kind.name}{hint}")
        if canonical in values:
            raise ctx.error(f"{key} given twice")
        values[canonical] = value
    if args:
        slot = kind.positional
        if slot is None:
            raise ctx.error(f"{kind.name} takes no values, got {' '.join(map(str, args))!r}")
        if slot in values:
            raise ctx.error(f"{slot} given twice ({args[0]!r} and {slot}=)")
        if len(args) > 1:
            raise ctx.error(f"{kind.name} takes one value ({slot}), got {' '.join(args)!r}")
        values[slot] = args[0]
    return values
