"""The memory budget: refuse a job from its declared sizes before allocating it.

A header (an image's width and height, an ``.npy`` shape, a zip member's size, a spec's
``fc 1000000000``) says how much memory a command will need long before the allocation
fails. :func:`check` compares that estimate with what this process can still get and raises
:class:`MemoryBudgetError` (a ValueError, so the CLI prints one line and exits 2) with the
numbers, instead of a MemoryError traceback after a minute of swapping.

What the process can get is the smallest of: the machine's available memory
(``MemAvailable`` in ``/proc/meminfo``) and the head-room left under the address-space and
data-segment limits (``ulimit -v`` / ``ulimit -d``). A job may use :data:`FRACTION` of it.
Only the standard library is imported, so the fast commands stay fast.
"""

from __future__ import annotations

#: Share of the available memory one allocation may take (the rest is head-room for copies
#: the estimate leaves out and for the other programs on the machine).
FRACTION = 0.75

#: Used when the platform reports nothing (no /proc, no limits).
FALLBACK_BYTES = 4 << 30

#: Needs up to this size pass without a look at /proc: the hot paths (a layer's forward pass
#: in a training step) then pay nothing for the check.
SMALL_BYTES = 64 << 20


class MemoryBudgetError(ValueError):
    """A job would need more memory than this process can get."""


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _rlimit_headroom() -> int | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    room: int | None = None
    for limit, field in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft, _ = resource.getrlimit(limit)
        if soft == resource.RLIM_INFINITY or soft < 0:
            continue
        used = _status_bytes(field) or 0
        free = max(soft - used, 0)
        room = free if room is None else min(room, free)
    return room


def available_bytes() -> int:
    """Bytes this process can still allocate: machine memory and ulimits, whichever is less."""
    candidates = [v for v in (_meminfo_available(), _rlimit_headroom()) if v is not None]
    return min(candidates) if candidates else FALLBACK_BYTES


def budget_bytes() -> int:
    """The most one job may allocate: :data:`FRACTION` of :func:`available_bytes`."""
    return int(available_bytes() * FRACTION)


def human_bytes(n: float, table: bool = False) -> str:
    """Bytes in binary units: ``1536`` -> ``"1.5 KiB"``.

    Prose (messages) gives three significant digits, ``"512 bytes"`` up to PiB; ``table``
    gives one decimal (two for GiB), ``"512 B"`` up to GiB, so a column of sizes lines up.
    """
    value = float(n)
    units = ("B", "KiB", "MiB", "GiB") if table else ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")
    for unit in units:
        if abs(value) < 1024 or unit == units[-1]:
            break
        value /= 1024
    if not table:
        return f"{int(value)} bytes" if unit == "bytes" else f"{value:.3g} {unit}"
    decimals = {"B": 0, "GiB": 2}.get(unit, 1)
    return f"{value:.{decimals}f} {unit}"


def check(need: int, what: str, hint: str = "") -> None:
    """Raise :class:`MemoryBudgetError` when ``need`` bytes exceed :func:`budget_bytes`.

    Needs of at most :data:`SMALL_BYTES` always pass (without reading /proc).

    Parameters
    ----------
    need : int
        The estimate, in bytes (Python ints: a declared size may be astronomically large).
    what : str
        What needs it, e.g. ``"photo.png: 13000 x 13000 pixels as float32"``.
    hint : str, optional
        How to go around the limit (a smaller input, an option), appended to the message.
    """
    if need <= SMALL_BYTES:
        return
    limit = budget_bytes()
    if need > limit:
        tail = f"; {hint}" if hint else ""
        raise MemoryBudgetError(
            f"{what} needs about {human_bytes(need)}, more than the {human_bytes(limit)} this "
            f"process can use ({FRACTION:.0%} of the {human_bytes(available_bytes())} "
            f"available){tail}"
        )


__all__ = [
    "FRACTION",
    "SMALL_BYTES",
    "MemoryBudgetError",
    "available_bytes",
    "budget_bytes",
    "check",
    "human_bytes",
]
