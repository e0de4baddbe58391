"""Architecture specs: parse a text or JSON description of a CNN and infer every layer's shape.

The one parser behind ``cnnkit shape``, ``cnnkit receptive-field`` and ``cnnkit train``.
Imports only the standard library and :mod:`cnnkit.geometry`, so the arithmetic commands start
in a few milliseconds.

The text form, one layer per line (or ``;`` between layers), ``#`` starts a comment::

    input 3 224 224          # C H W  (1-D: C L;  3-D: C D H W); also 3x224x224
    conv 64 k=3 s=1 p=1 d=1 groups=1 bias=true   # k, s, p, d take N or HxW; p also valid|same|full
    pool max k=2 s=2 p=0 ceil=false              # max|avg; s defaults to k
    gap                      # global average pooling
    relu | sigmoid | tanh | leakyrelu [slope]
    bn | dropout 0.5 | flatten
    fc 10 [bias=false]       # fully connected; flattens its input

The JSON form is a list of objects with the same keys (the layer name under ``"layer"``, the
positional value under its field name: ``{"layer": "conv", "out_channels": 64, "k": 3}``,
``{"layer": "input", "shape": [3, 224, 224]}``), or an object ``{"name": ..., "layers": [...]}``.

Counting conventions (they match PyTorch's ``sum(p.numel() for p in model.parameters())``):

- conv: ``O * C/groups * prod(k)`` weights, plus ``O`` biases.
- fc: ``in * units`` weights, plus ``units`` biases; ``in`` is the flattened input size.
- bn: ``2 * C`` (scale and shift). The running mean and variance are buffers, not parameters,
  and are not counted.
- MACs (multiply-accumulates): conv ``out_elements * C/groups * prod(k)``; fc ``in * units``.
  Pools, gap, bn and activations do no multiply-accumulates and count 0 MACs; the
  comparisons (max pool) or additions (avg pool, gap) they do are reported separately as
  ``other_ops`` (``out_elements * prod(k)``; gap: ``C * prod(spatial)``).
- Activation memory: the layer's output elements, at 4 bytes each (float32), batch size 1.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnkit import geometry

ARCH_DIR = Path(__file__).with_name("archs")

#: Largest size, channel count or unit count a spec may give (no such layer fits in memory).
MAX_INT = 2**31 - 1
#: Largest spec file read (the shipped VGG-16 is under 1 KiB).
MAX_SPEC_BYTES = 1 << 20
BYTES_PER_ELEMENT = 4  # float32 activations

# Canonical layer kinds and the aliases accepted for them.
KINDS = (
    "conv",
    "pool",
    "gap",
    "relu",
    "sigmoid",
    "tanh",
    "leakyrelu",
    "bn",
    "dropout",
    "flatten",
    "fc",
)
ACTIVATIONS = ("relu", "sigmoid", "tanh", "leakyrelu")
ALIASES = {
    "convolution": "conv",
    "conv1d": "conv",
    "conv2d": "conv",
    "conv3d": "conv",
    "pooling": "pool",
    "maxpool": "pool",  # with mode "max", see _POOL_ALIASES
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
}
_POOL_ALIASES = {"maxpool": "max", "avgpool": "avg"}

# key spellings -> canonical key, per layer kind (so "kernel_size=3" works like "k=3").
_KEY_ALIASES = {
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
    "shape": "shape",
}
_ALLOWED_KEYS = {
    "input": ("shape",),
    "conv": ("out_channels", "k", "s", "p", "d", "groups", "bias"),
    "pool": ("mode", "k", "s", "p", "ceil"),
    "gap": (),
    "relu": (),
    "sigmoid": (),
    "tanh": (),
    "leakyrelu": ("slope",),
    "bn": (),
    "dropout": ("rate",),
    "flatten": (),
    "fc": ("units", "bias"),
}
# The field a bare (positional) value fills, per kind.
_POSITIONAL = {
    "input": "shape",
    "conv": "out_channels",
    "pool": "mode",
    "leakyrelu": "slope",
    "dropout": "rate",
    "fc": "units",
}
_JSON_NAME_KEYS = ("layer", "type", "kind")


class SpecError(ValueError):
    """A spec that cannot be parsed or whose shapes do not work out (names line and value)."""


@dataclass(frozen=True)
class Layer:
    """One layer of an architecture, as written in the spec (kind is canonical)."""

    kind: str
    line: int
    text: str
    out_channels: int = 0
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: str | tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = True
    mode: str = ""
    ceil: bool = False
    units: int = 0
    rate: float = 0.0
    slope: float = 0.01


@dataclass(frozen=True)
class Architecture:
    """A parsed spec: the input shape ``(C, spatial...)`` and the layers in order.

    ``where`` is the word error messages use for ``Layer.line``: ``"line"`` for spec files,
    ``"item"`` for inline ``;``-separated text and JSON list entries.
    """

    name: str
    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    where: str = "line"


@dataclass(frozen=True)
class LayerInfo:
    """The arithmetic of one layer: shapes, resolved padding, parameters, cost, notes."""

    name: str
    kind: str
    layer: Layer
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
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


# ----------------------------------------------------------------------------- parsing


def shipped() -> list[str]:
    """Names of the architectures that ship with cnnkit (``cnnkit/archs/*.txt``)."""
    return sorted(p.stem for p in ARCH_DIR.glob("*.txt"))


def parse_shape(text: str, what: str = "input shape") -> tuple[int, ...]:
    """Parse ``"3x32x32"`` (or ``"3 32 32"``, ``"3,32,32"``) into ``(3, 32, 32)``.

    The first entry is the channel count, then 1 to 3 spatial sizes; all must be >= 1.
    """
    parts = [p for p in re.split(r"[x×,\s]+", text.strip().lower()) if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise SpecError(
            f"{what} must be integers like 3x32x32 (C then 1-3 spatial sizes), got {text!r}"
        ) from None
    _check_input_shape(shape, what, text)
    return shape


def _check_input_shape(shape: tuple[int, ...], what: str, text: Any) -> None:
    if not 2 <= len(shape) <= 4:
        raise SpecError(
            f"{what} needs C and 1-3 spatial sizes (C L, C H W or C D H W), got {text!r}"
        )
    if any(v < 1 for v in shape):
        raise SpecError(f"{what} sizes must be >= 1, got {text!r}")
    if any(v > MAX_INT for v in shape):
        raise SpecError(f"{what} sizes must be <= {MAX_INT:,}, got {_short(text)}")


def parse(source: str, input_shape: tuple[int, ...] | None = None) -> Architecture:
    """Parse an architecture spec.

    Parameters
    ----------
    source : str
        A shipped name (``"lenet5"``, see :func:`shipped`), a path to a ``.txt`` spec or a
        ``.json`` file, inline text with ``;`` (or newlines) between layers, or a JSON string.
    input_shape : tuple of int, optional
        ``(C, spatial...)``; overrides the spec's ``input`` line (and makes it optional).

    Returns
    -------
    Architecture

    Raises
    ------
    SpecError
        A ValueError whose message names the line (or item), its text and the bad value.
        Unknown layer names and keys come with the closest valid spelling.

    Examples
    --------
    >>> arch = parse("input 1 8 8; conv 4 k=3; relu; pool max k=2; fc 10")
    >>> [info.output_shape for info in infer(arch)]
    [(4, 6, 6), (4, 6, 6), (4, 3, 3), (10,)]
    >>> parse("input 1 8 8; cnov 4 k=3")
    Traceback (most recent call last):
    ...
    cnnkit.spec.SpecError: item 2 ('cnov 4 k=3'): unknown layer 'cnov'; did you mean 'conv'?
    """
    if not isinstance(source, str) or not source.strip():
        raise SpecError("spec is empty: give a shipped name, a file, or text like 'input 1 8 8'")
    text, name, where = _load(source)
    return parse_text(text, input_shape, name=name, where=where)


def parse_text(
    text: str,
    input_shape: tuple[int, ...] | None = None,
    *,
    name: str = "inline",
    where: str | None = None,
) -> Architecture:
    """Parse spec text as it is, never as a shipped name or a file path (model files).

    ``where`` is the word used for positions in errors ("line" or "item"); by default "line"
    for multi-line text without ``;``, else "item".
    """
    if not isinstance(text, str) or not text.strip():
        raise SpecError("spec is empty")
    if where is None:
        where = "line" if "\n" in text.strip() and ";" not in text else "item"
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        entries, name = _json_entries(text, name)
        where = "item"
    else:
        entries = _text_entries(text, where)
    return _build(entries, name, where, input_shape)


def source_text(source: str) -> str:
    """The spec text behind ``source`` (a shipped name, a file, inline text or JSON), resolved
    exactly as :func:`parse` resolves it; store this to rebuild the same network later."""
    return _load(source)[0]


def _read_spec_file(path: Path) -> str:
    """A spec file's text: UTF-8 (a byte-order mark is dropped), size-limited, named in errors."""
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(
                f"{path}: {size:,} bytes is too large for a spec file (limit {MAX_SPEC_BYTES:,})"
            )
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the spec as UTF-8"
        ) from None


def _load(source: str) -> tuple[str, str, str]:
    """(text, name, word for positions) for a name, a path or an inline spec."""
    candidate = source.strip().lstrip("\ufeff")
    if candidate.lower() in shipped():
        path = ARCH_DIR / f"{candidate.lower()}.txt"
        return path.read_text(encoding="utf-8"), candidate.lower(), "line"
    if candidate.startswith(("[", "{")):
        return candidate, "inline", "item"
    looks_inline = any(c in candidate for c in ";\n") or " " in candidate
    path = Path(os.path.expanduser(candidate))
    if not looks_inline or path.suffix.lower() in (".txt", ".json", ".spec"):
        if path.is_file():
            return _read_spec_file(path), path.stem, "line"
        if path.suffix or os.sep in candidate:
            raise FileNotFoundError(2, "no such file", candidate)
        hint = difflib.get_close_matches(candidate.lower(), shipped(), n=1)
        did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
        raise SpecError(
            f"{candidate!r} is not a shipped architecture, a file or a spec{did_you_mean} "
            f"(shipped: {', '.join(shipped())}; inline specs look like 'input 1 8 8; conv 4 k=3')"
        )
    where = "line" if "\n" in candidate and ";" not in candidate else "item"
    return candidate, "inline", where


# An entry is (position, source text, layer word, positional values, key -> raw value).
Entry = tuple[int, str, str, list[Any], dict[str, Any]]


def _text_entries(text: str, where: str) -> list[Entry]:
    """Entries of a text spec; positions are line numbers ("line") or ;-items ("item")."""
    entries: list[Entry] = []
    item = 0
    for line_number, raw_line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        for piece in raw_line.split("#", 1)[0].split(";"):
            item += 1
            position = line_number if where == "line" else item
            chunk = piece.strip()
            if not chunk:
                continue
            tokens = chunk.split()
            word = tokens[0].lower()
            args: list[Any] = []
            keys: dict[str, Any] = {}
            for token in tokens[1:]:
                if "=" in token:
                    key, _, value = token.partition("=")
                    if not value:
                        raise _Ctx(where, position, chunk).error(f"{key}= has no value")
                    if key.lower() in keys:
                        raise _Ctx(where, position, chunk).error(f"{key} given twice")
                    keys[key.lower()] = value
                else:
                    args.append(token)
            entries.append((position, chunk, word, args, keys))
    return entries


def _json_entries(text: str, name: str) -> tuple[list[Entry], str]:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [str(k).lower() for k, _ in pairs]
        twice = next((k for k in keys if keys.count(k) > 1), None)
        if twice is not None:
            raise SpecError(f"spec JSON: key {twice!r} given twice in one object")
        return dict(pairs)

    try:
        data = json.loads(text.lstrip("\ufeff"), object_pairs_hook=unique)
    except json.JSONDecodeError as exc:
        raise SpecError(f"spec is not valid JSON: {exc}") from None
    except RecursionError:
        raise SpecError("spec JSON is nested too deeply") from None
    except ValueError as exc:  # Python refuses integers of more than 4300 digits
        raise SpecError(f"spec is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        name = str(data.get("name", name))
        if "layers" not in data or not isinstance(data["layers"], list):
            raise SpecError('a JSON spec object needs a "layers" list')
        items = list(data["layers"])
        if "input" in data:
            items.insert(0, {"layer": "input", "shape": data["input"]})
    elif isinstance(data, list):
        items = data
    else:
        raise SpecError("a JSON spec is a list of layer objects (or {'layers': [...]})")
    entries: list[Entry] = []
    for position, item in enumerate(items, start=1):
        chunk = json.dumps(item)
        if not isinstance(item, dict):
            raise SpecError(f"item {position} ({chunk}): each layer must be a JSON object")
        keys = {str(k).lower(): v for k, v in item.items()}
        word = next((keys.pop(k) for k in _JSON_NAME_KEYS if k in keys), None)
        if not isinstance(word, str):
            raise SpecError(
                f'item {position} ({chunk}): missing the layer name, e.g. {{"layer": "conv"}}'
            )
        entries.append((position, chunk, word.lower(), [], keys))
    return entries, name


def _closest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


class _Ctx:
    """Formats error messages for one entry."""

    def __init__(self, where: str, position: int, text: str) -> None:
        self.prefix = f"{where} {position} ({text!r})"

    def error(self, message: str) -> SpecError:
        return SpecError(f"{self.prefix}: {message}")


def _build(
    entries: list[Entry], name: str, where: str, override: tuple[int, ...] | None
) -> Architecture:
    if override is not None:
        override = tuple(int(v) for v in override)
        _check_input_shape(override, "input shape", "x".join(map(str, override)))
    input_shape: tuple[int, ...] | None = override
    seen_input = False
    layers: list[Layer] = []
    for position, chunk, word, args, keys in entries:
        ctx = _Ctx(where, position, chunk)
        kind, implied = _kind(word, ctx)
        values = _collect(kind, args, keys, ctx)
        if implied is not None:
            if "mode" in values and str(values["mode"]).lower() != implied:
                raise ctx.error(f"{word} cannot have mode {values['mode']!r}")
            values["mode"] = implied
        if kind == "input":
            if seen_input:
                raise ctx.error("a second input line; a spec has exactly one")
            if layers:
                raise ctx.error("input must come before the first layer")
            seen_input = True
            shape = _input_values(values.get("shape"), ctx)
            if override is None:
                input_shape = shape
            continue
        if input_shape is None:
            raise ctx.error(
                "layer before input: start the spec with e.g. 'input 3 32 32' "
                "(or pass an input shape)"
            )
        layers.append(_layer(kind, values, len(input_shape) - 1, position, chunk, ctx))
    if input_shape is None:
        raise SpecError("spec has no input line (e.g. 'input 3 32 32') and no input shape")
    if not layers:
        raise SpecError("spec has no layers after the input")
    return Architecture(name=name, input_shape=input_shape, layers=tuple(layers), where=where)


def _kind(word: str, ctx: _Ctx) -> tuple[str, str | None]:
    if word in KINDS or word == "input":
        return word, None
    if word in ALIASES:
        return ALIASES[word], _POOL_ALIASES.get(word)
    choices = [*KINDS, "input", *ALIASES]
    raise ctx.error(f"unknown layer {word!r}{_closest(word, choices)}")


def _collect(kind: str, args: list[Any], keys: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
    """Keys normalised to canonical names, positional values placed, unknown keys refused."""
    allowed = _ALLOWED_KEYS[kind]
    values: dict[str, Any] = {}
    for key, value in keys.items():
        # PyTorch calls the dropout probability p; elsewhere p is padding.
        canonical = "rate" if kind == "dropout" and key == "p" else _KEY_ALIASES.get(key)
        if canonical is None or canonical not in allowed:
            spellings = [k for k, c in _KEY_ALIASES.items() if c in allowed]
            hint = _closest(key, spellings) if spellings else f"; {kind} takes no options"
            raise ctx.error(f"unknown option {key!r} for {kind}{hint}")
        if canonical in values:
            raise ctx.error(f"{key} given twice")
        values[canonical] = value
    if args:
        slot = _POSITIONAL.get(kind)
        if slot is None:
            raise ctx.error(f"{kind} takes no values, got {' '.join(map(str, args))!r}")
        if slot in values:
            raise ctx.error(f"{slot} given twice ({args[0]!r} and {slot}=)")
        if kind == "input":
            values[slot] = " ".join(args)
        elif len(args) > 1:
            raise ctx.error(f"{kind} takes one value ({slot}), got {' '.join(args)!r}")
        else:
            values[slot] = args[0]
    return values


def _input_values(raw: Any, ctx: _Ctx) -> tuple[int, ...]:
    if raw is None:
        raise ctx.error("input needs C and spatial sizes, e.g. 'input 3 32 32'")
    if isinstance(raw, list):
        raw = " ".join(str(v) for v in raw)
    try:
        return parse_shape(str(raw))
    except SpecError as exc:
        raise ctx.error(str(exc)) from None


def _int(raw: Any, name: str, ctx: _Ctx, minimum: int = 1) -> int:
    if isinstance(raw, bool):
        raise ctx.error(f"{name} must be an integer, got {raw!r}")
    try:
        value = int(raw) if not isinstance(raw, float) or raw.is_integer() else None
    except (TypeError, ValueError):
        value = None
    if value is None:
        raise ctx.error(f"{name} must be an integer, got {_short(raw)}")
    if value < minimum:
        raise ctx.error(f"{name} must be >= {minimum}, got {_short(value)}")
    if value > MAX_INT:
        raise ctx.error(f"{name} must be <= {MAX_INT:,}, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    """repr(value), cut in the middle when long (a 300-digit number in an error message)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:18]}...{text[-18:]} ({len(text)} characters)"


def _ints(raw: Any, name: str, ndim: int, ctx: _Ctx, minimum: int = 1) -> tuple[int, ...]:
    """``3`` or ``"3x3"`` or ``[3, 3]`` -> one int per spatial dimension."""
    if isinstance(raw, (list, tuple)):
        parts = list(raw)
    elif isinstance(raw, str):
        parts = [p for p in re.split(r"[x×,]", raw.strip().lower())]
    else:
        parts = [raw]
    values = tuple(_int(p, name, ctx, minimum) for p in parts)
    if len(values) == 1:
        return values * ndim
    if len(values) != ndim:
        raise ctx.error(
            f"{name} has {len(values)} sizes but the input has {ndim} spatial "
            f"dimension{'s' if ndim > 1 else ''}: give one number or {ndim}"
        )
    return values


def _bool(raw: Any, name: str, ctx: _Ctx) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in ("true", "1", "yes", "on"):
        return True
    if word in ("false", "0", "no", "off"):
        return False
    raise ctx.error(f"{name} must be true or false, got {raw!r}")


def _float(raw: Any, name: str, ctx: _Ctx) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise ctx.error(f"{name} must be a finite number, got {_short(raw)}") from None
    if not math.isfinite(value) or isinstance(raw, bool):
        raise ctx.error(f"{name} must be a finite number, got {raw!r}")
    return value


def _layer(kind: str, values: dict[str, Any], ndim: int, line: int, text: str, ctx: _Ctx) -> Layer:
    base = {"kind": kind, "line": line, "text": text}
    if kind == "conv":
        if "out_channels" not in values:
            raise ctx.error("conv needs the number of output channels, e.g. 'conv 16 k=3'")
        if "k" not in values:
            raise ctx.error("conv needs a kernel size, e.g. k=3 or k=3x3")
        kernel = _ints(values["k"], "kernel size k", ndim, ctx)
        stride = _ints(values.get("s", 1), "stride s", ndim, ctx)
        dilation = _ints(values.get("d", 1), "dilation d", ndim, ctx)
        padding = _padding(values.get("p", 0), ndim, ctx, words=True)
        return Layer(
            **base,
            out_channels=_int(values["out_channels"], "output channels", ctx),
            kernel=kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=_int(values.get("groups", 1), "groups", ctx),
            bias=_bool(values.get("bias", True), "bias", ctx),
        )
    if kind == "pool":
        mode = str(values.get("mode", "")).lower()
        if mode not in ("max", "avg"):
            shown = f"got {values['mode']!r}" if "mode" in values else "got none"
            raise ctx.error(f"pool needs a mode, max or avg ({shown}), e.g. 'pool max k=2'")
        if "k" not in values:
            raise ctx.error("pool needs a kernel size, e.g. k=2")
        kernel = _ints(values["k"], "kernel size k", ndim, ctx)
        stride = _ints(values["s"], "stride s", ndim, ctx) if "s" in values else kernel
        padding = _padding(values.get("p", 0), ndim, ctx, words=False)
        for p, k in zip(padding, kernel):
            if 2 * p > k:  # PyTorch refuses windows that could lie entirely in the padding
                raise ctx.error(f"pool padding p={p} must be at most half the kernel size {k}")
        return Layer(
            **base,
            kernel=kernel,
            stride=stride,
            padding=padding,
            mode=mode,
            ceil=_bool(values.get("ceil", False), "ceil", ctx),
        )
    if kind == "fc":
        if "units" not in values:
            raise ctx.error("fc needs the number of units, e.g. 'fc 10'")
        return Layer(
            **base,
            units=_int(values["units"], "units", ctx),
            bias=_bool(values.get("bias", True), "bias", ctx),
        )
    if kind == "dropout":
        rate = _float(values.get("rate", 0.5), "dropout rate", ctx)
        if not 0.0 <= rate < 1.0:
            raise ctx.error(f"dropout rate must be in [0, 1), got {rate}")
        return Layer(**base, rate=rate)
    if kind == "leakyrelu":
        slope = _float(values.get("slope", 0.01), "slope", ctx)
        return Layer(**base, slope=slope)
    return Layer(**base)


def _padding(raw: Any, ndim: int, ctx: _Ctx, words: bool) -> str | tuple[int, ...]:
    if isinstance(raw, str) and raw.strip().lower() in geometry.PADDING_WORDS:
        word = raw.strip().lower()
        if word == "valid":
            return (0,) * ndim if not words else "valid"
        if not words:
            raise ctx.error(f"pool padding must be integers (PyTorch semantics), got {raw!r}")
        return word
    if isinstance(raw, str) and not re.fullmatch(r"\s*-?\d+(\s*[x×,]\s*-?\d+)*\s*", raw):
        choices = "an integer, HxW" + (", valid, same or full" if words else "")
        raise ctx.error(f"padding p must be {choices}; got {raw!r}")
    return _ints(raw, "padding p", ndim, ctx, minimum=0)


# ----------------------------------------------------------------------------- inference

_DIM_NAMES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
_DIM_UNITS = {1: ("sample",), 2: ("row", "column"), 3: ("slice", "row", "column")}


def dim_names(ndim: int) -> tuple[str, ...]:
    """Human names of the spatial dimensions: ``("height", "width")`` for 2-D."""
    return _DIM_NAMES[ndim]


def layer_names(layers: tuple[Layer, ...] | list[Layer]) -> list[str]:
    """``conv1, relu1, pool1, conv2, ...``: kind plus a per-kind counter."""
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        counts[layer.kind] = counts.get(layer.kind, 0) + 1
        names.append(f"{layer.kind}{counts[layer.kind]}")
    return names


def describe(arch: Architecture, layer: Layer, name: str) -> str:
    """``conv2 (line 4: 'conv 16 k=5')`` for error messages."""
    return f"{name} ({arch.where} {layer.line}: {layer.text!r})"


def infer(arch: Architecture) -> list[LayerInfo]:
    """Shapes, parameters, MACs, activation memory and notes for every layer.

    Parameters
    ----------
    arch : Architecture

    Returns
    -------
    list of LayerInfo
        One per layer, in order.

    Raises
    ------
    SpecError
        When a layer cannot be applied to its input (output would be empty, channels not
        divisible by groups, a spatial layer after the input was flattened); the message
        names the layer, its line and the numbers.

    Notes
    -----
    Output sizes come from :func:`cnnkit.geometry.conv_output_size` (convolution) and
    :func:`cnnkit.geometry.pool_output_size` (pooling)::

        out = floor((n + pad_before + pad_after - d * (k - 1) - 1) / s) + 1

    See the module docstring for how parameters, MACs and memory are counted.
    """
    shape = arch.input_shape
    infos: list[LayerInfo] = []
    for layer, name in zip(arch.layers, layer_names(arch.layers)):
        info = _infer_one(arch, layer, name, shape)
        infos.append(info)
        shape = info.output_shape
    return infos


def _infer_one(arch: Architecture, layer: Layer, name: str, shape: tuple[int, ...]) -> LayerInfo:
    who = describe(arch, layer, name)
    channels, sizes = shape[0], shape[1:]
    ndim = len(sizes)
    kind = layer.kind
    out_shape = shape
    pads: tuple[tuple[int, int], ...] = ()
    params = macs = other = 0
    dropped: tuple[int, ...] = ()
    border: tuple[int, ...] = ()
    notes: list[str] = []
    if kind in ("conv", "pool", "gap") and ndim == 0:
        raise SpecError(
            f"{who}: needs spatial input, but its input is already flat with shape "
            f"{_fmt(shape)} (after fc/flatten/gap)"
        )
    if kind in ("conv", "pool") and len(layer.kernel) != ndim:
        raise SpecError(
            f"{who}: written for {len(layer.kernel)} spatial dimension(s) but the input "
            f"{_fmt(shape)} has {ndim}"
        )
    if kind == "conv":
        if channels % layer.groups or layer.out_channels % layer.groups:
            raise SpecError(
                f"{who}: groups={layer.groups} must divide the input channels ({channels}) "
                f"and the output channels ({layer.out_channels})"
            )
        pads = geometry.resolve_padding(
            layer.padding, sizes, layer.kernel, layer.stride, layer.dilation
        )
        spatial = geometry.conv_output_shape(
            sizes, layer.kernel, layer.stride, pads, layer.dilation
        )
        _check_nonempty(who, sizes, spatial, layer, pads)
        out_shape = (layer.out_channels, *spatial)
        taps = (channels // layer.groups) * math.prod(layer.kernel)
        params = layer.out_channels * taps + (layer.out_channels if layer.bias else 0)
        macs = math.prod(out_shape) * taps
        dropped, border = _losses(sizes, spatial, layer, pads, layer.dilation)
    elif kind == "pool":
        pads = tuple((p, p) for p in layer.padding)  # type: ignore[union-attr]
        spatial = geometry.pool_output_shape(
            sizes, layer.kernel, layer.stride, [p[0] for p in pads], layer.ceil
        )
        _check_nonempty(who, sizes, spatial, layer, pads)
        out_shape = (channels, *spatial)
        other = math.prod(out_shape) * math.prod(layer.kernel)
        dropped, border = _losses(sizes, spatial, layer, pads, (1,) * ndim)
    elif kind == "gap":
        out_shape = (channels,)
        other = math.prod(shape)
    elif kind == "flatten":
        out_shape = (math.prod(shape),)
    elif kind == "fc":
        n_in = math.prod(shape)
        out_shape = (layer.units,)
        params = n_in * layer.units + (layer.units if layer.bias else 0)
        macs = n_in * layer.units
    elif kind == "bn":
        params = 2 * channels
    units = _DIM_UNITS.get(ndim, ())
    for i, lost in enumerate(dropped):
        if lost:
            notes.append(
                f"stride {layer.stride[i]} drops the last {lost} input {units[i]}"
                f"{'s' if lost > 1 else ''} ({_DIM_NAMES[ndim][i]} {sizes[i]}): "
                "no window reaches them"
            )
    for i, lost in enumerate(border):
        if lost:
            notes.append(
                f"valid-style padding loses {lost} border {units[i]}"
                f"{'s' if lost > 1 else ''} of {_DIM_NAMES[ndim][i]} "
                f"({sizes[i]} -> {out_shape[1 + i]})"
            )
    if layer.kind == "pool" and layer.ceil:
        for i, (n, k, s, o, p) in enumerate(zip(sizes, layer.kernel, layer.stride, spatial, pads)):
            over = (o - 1) * s + k - (n + 2 * p[0])
            if over > 0:
                notes.append(
                    f"ceil mode keeps a last partial window in {_DIM_NAMES[ndim][i]} "
                    f"({over} position{'s' if over > 1 else ''} past the input)"
                )
    count = math.prod(out_shape)
    return LayerInfo(
        name=name,
        kind=kind,
        layer=layer,
        input_shape=shape,
        output_shape=out_shape,
        pads=pads,
        params=params,
        macs=macs,
        other_ops=other,
        activations=count,
        activation_bytes=count * BYTES_PER_ELEMENT,
        dropped=dropped,
        border_lost=border,
        notes=tuple(notes),
    )


def _check_nonempty(
    who: str,
    sizes: tuple[int, ...],
    spatial: tuple[int, ...],
    layer: Layer,
    pads: tuple[tuple[int, int], ...],
) -> None:
    dilation = layer.dilation or (1,) * len(sizes)
    names = _DIM_NAMES[len(sizes)]
    for i, out in enumerate(spatial):
        if out < 1:
            span = dilation[i] * (layer.kernel[i] - 1) + 1
            padded = sizes[i] + pads[i][0] + pads[i][1]
            kernel = f"k={layer.kernel[i]}" + (f", d={dilation[i]}" if dilation[i] > 1 else "")
            raise SpecError(
                f"{who}: output would be empty: {names[i]} {sizes[i]} + padding "
                f"{pads[i][0]}+{pads[i][1]} = {padded} is smaller than the kernel span "
                f"{span} ({kernel})"
            )


def _losses(
    sizes: tuple[int, ...],
    spatial: tuple[int, ...],
    layer: Layer,
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(real input positions a stride drops at the end, border shrink of stride-1 layers)."""
    dropped = []
    border = []
    for n, k, s, p, d, o in zip(sizes, layer.kernel, layer.stride, pads, dilation, spatial):
        span = geometry.dilated_span(k, d)
        if layer.ceil:
            lost = max(0, n + p[0] + p[1] - ((o - 1) * s + span))
        else:
            lost = geometry.dropped_by_stride(n, k, s, p, d)
        # Positions past the input are padding; only real rows/columns count as dropped.
        dropped.append(max(0, lost - p[1]))
        border.append(n - o if s == 1 and o < n else 0)
    return tuple(dropped), tuple(border)


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape)


def format_shape(shape: tuple[int, ...]) -> str:
    """``(64, 56, 56)`` -> ``"64x56x56"``."""
    return _fmt(shape)


def totals(infos: list[LayerInfo]) -> dict[str, int]:
    """Sum of params, MACs, other ops and activation memory over the layers."""
    return {
        "total_params": sum(i.params for i in infos),
        "total_macs": sum(i.macs for i in infos),
        "total_other_ops": sum(i.other_ops for i in infos),
        "total_activations": sum(i.activations for i in infos),
        "total_activation_bytes": sum(i.activation_bytes for i in infos),
    }


def with_input(arch: Architecture, input_shape: tuple[int, ...]) -> Architecture:
    """The same layers on another input shape."""
    return dataclasses.replace(arch, input_shape=tuple(input_shape))


def layer_text(layer: Layer) -> str:
    """The canonical text spelling of a layer (every option written out)."""

    def dims(values: tuple[int, ...]) -> str:
        return "x".join(map(str, values)) if len(set(values)) > 1 else str(values[0])

    kind = layer.kind
    if kind == "conv":
        pad = layer.padding if isinstance(layer.padding, str) else dims(layer.padding)
        return (
            f"conv {layer.out_channels} k={dims(layer.kernel)} s={dims(layer.stride)} "
            f"p={pad} d={dims(layer.dilation)} groups={layer.groups} "
            f"bias={str(layer.bias).lower()}"
        )
    if kind == "pool":
        return (
            f"pool {layer.mode} k={dims(layer.kernel)} s={dims(layer.stride)} "
            f"p={dims(layer.padding)} ceil={str(layer.ceil).lower()}"  # type: ignore[arg-type]
        )
    if kind == "fc":
        return f"fc {layer.units} bias={str(layer.bias).lower()}"
    if kind == "dropout":
        return f"dropout {layer.rate:g}"
    if kind == "leakyrelu":
        return f"leakyrelu {layer.slope:g}"
    return kind


def to_text(arch: Architecture) -> str:
    """The spec as canonical text, one layer per line; ``parse(to_text(a))`` gives ``a`` back
    up to line numbers and source text (what ``cnnkit train`` can save with a model)."""
    lines = [f"input {' '.join(map(str, arch.input_shape))}"]
    lines.extend(layer_text(layer) for layer in arch.layers)
    return "\n".join(lines) + "\n"


__all__ = [
    "ACTIVATIONS",
    "KINDS",
    "Architecture",
    "Layer",
    "LayerInfo",
    "SpecError",
    "describe",
    "dim_names",
    "format_shape",
    "infer",
    "layer_names",
    "layer_text",
    "parse",
    "parse_shape",
    "shipped",
    "source_text",
    "to_text",
    "totals",
    "with_input",
]
