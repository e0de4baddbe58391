"""Option values of a spec: integers, per-dimension tuples, booleans, numbers, padding.

Every reader (text, JSON, programmatic) goes through these, so one bad value gets one message.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

from cnnkit import geometry

#: Largest size, channel count or unit count a spec may give (no such layer fits in memory).
MAX_INT = 2**31 - 1


class SpecError(ValueError):
    """A spec that cannot be parsed or whose shapes do not work out (names line and value)."""


class Ctx:
    """Formats error messages for one spec entry: ``line 4 ('conv 16 k=5'): ...``."""

    def __init__(self, where: str, position: int, text: str) -> None:
        self.prefix = f"{where} {position} ({text!r})" if position else f"{text!r}"

    def error(self, message: str) -> SpecError:
        return SpecError(f"{self.prefix}: {message}")


def closest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """``"; did you mean 'conv'?"`` for the nearest spelling, or ``""``."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def to_int(raw: Any, name: str, ctx: Ctx, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (``"3"``, ``3`` or ``3.0``)."""
    if isinstance(raw, bool):
        raise ctx.error(f"{name} must be an integer, got {raw!r}")
    try:
        value = int(raw) if not isinstance(raw, float) or raw.is_integer() else None
    except (TypeError, ValueError):
        value = None
    if value is None:
        raise ctx.error(f"{name} must be an integer, got {short(raw)}")
    if value < minimum:
        raise ctx.error(f"{name} must be >= {minimum}, got {short(value)}")
    if value > MAX_INT:
        raise ctx.error(f"{name} must be <= {MAX_INT:,}, got {short(value)}")
    return value


def short(value: Any) -> str:
    """repr(value), cut in the middle when long (a 300-digit number in an error message)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:18]}...{text[-18:]} ({len(text)} characters)"


def to_ints(raw: Any, name: str, ndim: int, ctx: Ctx, minimum: int = 1) -> tuple[int, ...]:
    """``3`` or ``"3x3"`` or ``[3, 3]`` -> one int per spatial dimension."""
    if isinstance(raw, (list, tuple)):
        parts = list(raw)
    elif isinstance(raw, str):
        parts = [p for p in re.split(r"[x×,]", raw.strip().lower())]
    else:
        parts = [raw]
    values = tuple(to_int(p, name, ctx, minimum) for p in parts)
    if len(values) == 1:
        return values * ndim
    if len(values) != ndim:
        raise ctx.error(
            f"{name} has {len(values)} sizes but the input has {ndim} spatial "
            f"dimension{'s' if ndim > 1 else ''}: give one number or {ndim}"
        )
    return values


def to_bool(raw: Any, name: str, ctx: Ctx) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off`` or a JSON boolean."""
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in ("true", "1", "yes", "on"):
        return True
    if word in ("false", "0", "no", "off"):
        return False
    raise ctx.error(f"{name} must be true or false, got {raw!r}")


def to_float(raw: Any, name: str, ctx: Ctx) -> float:
    """A finite number."""
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise ctx.error(f"{name} must be a finite number, got {short(raw)}") from None
    if not math.isfinite(value) or isinstance(raw, bool):
        raise ctx.error(f"{name} must be a finite number, got {raw!r}")
    return value


def to_padding(raw: Any, ndim: int, ctx: Ctx, words: bool) -> str | tuple:
    """Integers per dimension, or (``words=True``, convolutions) valid, same, full, or a
    ``(before, after)`` pair per dimension: ``"0+1x0+1"`` in text, ``[[0, 1], [0, 1]]`` in
    JSON (ONNX's asymmetric pads)."""
    if words and isinstance(raw, str) and "+" in raw:
        parts = [p.split("+") for p in re.split(r"[x×,]", raw.strip())]
        if any(len(p) != 2 for p in parts):
            raise ctx.error(f"padding pairs are written before+after per dimension, got {raw!r}")
        raw = parts
    if (
        words
        and isinstance(raw, (list, tuple))
        and raw
        and all(isinstance(p, (list, tuple)) for p in raw)
    ):
        if len(raw) != ndim or any(len(p) != 2 for p in raw):
            raise ctx.error(
                f"padding pairs need one (before, after) pair per spatial dimension ({ndim}), "
                f"got {raw!r}"
            )
        return tuple(
            (to_int(a, "padding p", ctx, 0), to_int(b, "padding p", ctx, 0)) for a, b in raw
        )
    if isinstance(raw, str):
        parsed = geometry.padding_from_text(raw, "x×,", signed=True)
        if parsed is None:
            choices = "an integer, HxW" + (", valid, same or full" if words else "")
            raise ctx.error(f"padding p must be {choices}; got {raw!r}")
        if parsed == "valid":
            return (0,) * ndim if not words else "valid"
        if isinstance(parsed, str):
            if not words:
                raise ctx.error(f"pool padding must be integers (PyTorch semantics), got {raw!r}")
            return parsed
    return to_ints(raw, "padding p", ndim, ctx, minimum=0)


def dims(values: tuple) -> str:
    """``(3, 3)`` -> ``"3"``, ``(3, 5)`` -> ``"3x5"``: one number when every dimension agrees;
    ``((0, 1), (0, 1))`` -> ``"0+1x0+1"`` (padding before+after)."""
    shown = [f"{v[0]}+{v[1]}" if isinstance(v, tuple) else str(v) for v in values]
    return "x".join(shown) if len(set(shown)) > 1 or isinstance(values[0], tuple) else shown[0]


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
    check_input_shape(shape, what, text)
    return shape


def check_input_shape(shape: tuple[int, ...], what: str, text: Any) -> None:
    """C and 1-3 spatial sizes, all >= 1."""
    if not 2 <= len(shape) <= 4:
        raise SpecError(
            f"{what} needs C and 1-3 spatial sizes (C L, C H W or C D H W), got {text!r}"
        )
    if any(v < 1 for v in shape):
        raise SpecError(f"{what} sizes must be >= 1, got {text!r}")
    if any(v > MAX_INT for v in shape):
        raise SpecError(f"{what} sizes must be <= {MAX_INT:,}, got {short(text)}")
