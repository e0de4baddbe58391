"""One file through ``cnnkit filter``: load, build the kernels, filter, write, describe.

:func:`filter_file` is what the command runs per input: :mod:`cnnkit.io` loads the file,
:mod:`cnnkit.filters` builds the kernels and filters (through :mod:`cnnkit.ops`), the outputs
are written atomically (and the ``compare`` figure drawn, :mod:`cnnkit.plots`), and the facts
come back as one JSON-ready dict, which the command prints as a table or as JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit import filters, io
from cnnkit.errors import ParameterError
from cnnkit.geometry import format_shape

# Results up to this size (per side; signals twice that) come with their values.
GRID_LIMIT = 16


@dataclass(frozen=True)
class FilterSettings:
    """Everything a ``cnnkit filter`` call applies to each of its inputs.

    ``kernels`` are kernel texts (:func:`cnnkit.filters.parse_kernel`); ``transpose``,
    ``rotate``, ``normalize`` and ``scale`` change them (:func:`cnnkit.filters.transform`);
    the filtering options are those of :func:`cnnkit.filters.apply_bank`; ``display`` is how
    an image output shows the response (:func:`cnnkit.filters.display_scale`); ``column``
    and ``max_pixels`` are how inputs are read (:func:`cnnkit.io.load`); ``force`` lets an
    output replace a read-only file.
    """

    kernels: tuple[str, ...]
    padding: str = "valid"
    pad_mode: str = "zeros"
    stride: int = 1
    dilation: int = 1
    method: str = "auto"
    flip: bool = False
    transpose: bool = False
    rotate: int = 0
    normalize: bool = False
    scale: float = 1.0
    bias: float = 0.0
    combine: str | None = None
    color: str | None = None
    display: str = "auto"
    pool: str | None = None
    pool_size: int = 2
    pool_stride: int | None = None
    column: str | None = None
    max_pixels: int | None = None
    force: bool = False

    def __post_init__(self) -> None:
        # checked before any file is read: display and pooling act only after filtering
        if self.display not in filters.DISPLAY_MODES:
            *first, last = filters.DISPLAY_MODES
            raise ParameterError(
                f"display must be {', '.join(first)} or {last}, got {self.display!r}", "display"
            )
        if self.pool is None and self.pool_stride is not None:
            raise ParameterError("pool_stride needs pool max|avg", "pool_stride", "pool")
        if self.pool_size < 1 or (self.pool_stride is not None and self.pool_stride < 1):
            raise ParameterError(
                "pool_size and pool_stride must be >= 1", "pool_size", "pool_stride"
            )

    def check_kernels(self, dims: set[int]) -> None:
        """Parse the kernels for inputs of each number of dimensions in ``dims``, and the
        padding, so that a mistake is reported before any file is read or written."""
        for ndim in sorted(dims):
            for k in self.kernels:
                filters.parse_kernel(k, ndim)
        filters.parse_padding(self.padding, 2)

    def options(self, result: filters.FilterResult, ndim: int) -> dict[str, Any]:
        """The filtering options as the facts report them."""
        return {
            "padding": self.padding,
            "pad_mode": self.pad_mode,
            "stride": self.stride,
            "dilation": self.dilation,
            "method": self.method,
            "flip": self.flip,
            "color": result.color if ndim == 2 else None,
            "bias": self.bias,
            "combine": self.combine,
            "pool": self.pool,
            "pool_size": self.pool_size if self.pool else None,
            "pool_stride": (self.pool_stride or self.pool_size) if self.pool else None,
        }


def input_dims(path: Path) -> int:
    """1 for a signal file (.csv, .txt, .wav), 2 for everything else."""
    return 1 if path.suffix.lower() in (".csv", ".txt", ".wav") else 2


def output_kind(path: Path) -> str:
    """``image``, ``npy``, ``csv`` or ``wav``, from the suffix of an output file."""
    kind = io.OUTPUT_KINDS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(
            f"{path}: unknown output format {path.suffix or '(no suffix)'!r}; use an image "
            "suffix (.png .jpg .bmp .tif .gif .webp), .npy, .csv (1-D) or .wav (audio)"
        )
    return kind


def _check_output_kind(kind: str, loaded: io.Loaded, maps: int) -> None:
    if kind == "image" and loaded.ndim == 1:
        raise ValueError("a 1-D signal cannot be saved as an image; use .csv, .npy or .wav")
    if kind in ("csv", "wav") and loaded.ndim != 1:
        raise ValueError(f".{kind} output is for 1-D signals; use an image suffix or .npy")
    if kind == "wav":
        if loaded.fmt != "wav":
            raise ValueError(".wav output needs a .wav input (its sample rate and width)")
        if maps > 1:
            raise ParameterError(".wav output takes one kernel (or combine=magnitude)", "combine")


def filter_file(
    source: Path,
    settings: FilterSettings,
    output: Path | None = None,
    compare: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Filter one input file and write its outputs.

    Parameters
    ----------
    source : Path
        An image, ``.npy``, ``.csv``/``.txt`` or ``.wav`` file.
    settings : FilterSettings
        The kernels and options.
    output : Path, optional
        Where the response goes; its suffix picks the format (:func:`output_kind`).
    compare : Path, optional
        A ``.png`` of input, kernel and output side by side (signals: one plot).
    progress : callable, optional
        ``progress(done, total)`` after each band of rows (:func:`cnnkit.filters.apply_bank`).

    Returns
    -------
    dict
        The facts of the run, JSON-ready: input, kernels, options, padding per side, output
        shape, statistics, timing, the values of a small result, and the files written.
    """
    s = settings
    loaded = io.load(source, s.column, max_pixels=s.max_pixels)
    parsed = [part for k in s.kernels for part in filters.parse_kernel(k, loaded.ndim).split()]
    weights = [
        filters.transform(
            k.weights, transpose=s.transpose, rotate=s.rotate, normalize=s.normalize, scale=s.scale
        )
        for k in parsed
    ]
    kernel_labels = [k.label for k in parsed]
    if output is not None:
        maps = 1 if s.combine else len(weights)
        _check_output_kind(output_kind(output), loaded, maps)
    result = filters.apply_bank(
        loaded.data,
        weights,
        color=s.color,
        padding=filters.parse_padding(s.padding, loaded.ndim),
        pad_mode=s.pad_mode,
        stride=s.stride,
        dilation=s.dilation,
        method=s.method,
        flip=s.flip,
        bias=s.bias,
        combine=s.combine,
        pool=s.pool,
        pool_size=s.pool_size,
        pool_stride=s.pool_stride,
        progress=progress,
    )
    labels = kernel_labels
    if s.combine:
        labels = ["magnitude(" + ", ".join(kernel_labels) + ")"]
    display = None
    if loaded.ndim == 2:
        # a gradient magnitude is an edge map although it has no sign
        mode = "abs" if s.combine and s.display == "auto" else s.display
        display = filters.display_scale(result.y, loaded.maxval, mode)
    facts = _facts(
        source, output, compare, loaded, result, labels, kernel_labels, weights,
        s.options(result, loaded.ndim), display,
    )  # fmt: skip
    if output is not None:
        _write(output, loaded, result, labels, display, s.force)
    if compare is not None:
        _compare(compare, loaded, result, labels, facts, display)
    return facts


def map_names(labels: list[str], channels: int) -> list[str]:
    """One name per output map: the kernel's label, with the channel when there are several
    (``filtered`` for the one map of one kernel on one channel)."""
    names = []
    for label in labels:
        for c in range(channels):
            if len(labels) == 1 and channels == 1:
                names.append("filtered")
            elif channels == 1:
                names.append(label)
            elif len(labels) == 1:
                names.append(f"ch{c}")
            else:
                names.append(f"{label}_ch{c}")
    return names


def _write(
    path: Path,
    loaded: io.Loaded,
    result: filters.FilterResult,
    labels: list[str],
    scale: filters.DisplayScale | None,
    force: bool,
) -> None:
    y = result.y
    kind = output_kind(path)
    if kind == "npy":
        # drop the kernel and channel axes when they have one entry
        arr = y
        if arr.shape[0] == 1:
            arr = arr[0]
            if arr.shape[0] == 1:
                arr = arr[0]
        elif arr.shape[1] == 1:
            arr = arr[:, 0]
        io.save_array(path, arr, force=force)
    elif kind == "csv":
        flat = y.reshape(-1, y.shape[-1])
        io.save_signal_csv(path, flat, map_names(labels, y.shape[1]), force=force)
    elif kind == "wav":
        io.save_wav(path, y[0], loaded.sample_rate, loaded.sample_width, force=force)
    else:
        io.save_image(path, _pixels(loaded, y, scale), force=force)


def _pixels(loaded: io.Loaded, y: np.ndarray, scale: filters.DisplayScale | None) -> np.ndarray:
    tiles = [filters.to_pixels(y[k], scale) for k in range(y.shape[0])]
    if len(tiles) == 1:
        return io.attach_alpha(tiles[0], loaded.alpha)
    return io.tile(tiles)


def _compare(
    path: Path,
    loaded: io.Loaded,
    result: filters.FilterResult,
    labels: list[str],
    facts: dict[str, Any],
    scale: filters.DisplayScale | None,
) -> None:
    from cnnkit import plots  # only --compare draws; a plain filter run never loads it

    y = result.y
    if loaded.ndim == 1:
        plots.compare_signals(
            path,
            loaded.data,
            y.reshape(-1, y.shape[-1]),
            result.positions,
            [
                n if n != "filtered" else f"filtered ({labels[0]})"
                for n in map_names(labels, y.shape[1])
            ],
            title=loaded.path.name,
        )
        return
    flip = bool(facts["flip"])
    kernels = []
    for k in facts["kernels"]:
        w = np.asarray(k["weights"])
        kernels.append((k["label"], w[..., ::-1, ::-1] if flip else w))  # images: 2-D or 3-D
    pads = ", ".join(f"{a}+{b}" for a, b in facts["padding_pairs"])
    out_shape = format_shape(facts["output_shape"])
    plots.filter_compare_figure(
        path,
        loaded.data,
        loaded.maxval,
        kernels,
        y,
        facts["map_names"],
        scale,
        input_title=f"input: {loaded.path.name} ({format_shape(loaded.data.shape)})",
        kernel_title="kernel as applied" + (" (flipped: true convolution)" if flip else ""),
        output_title=(
            f"output {out_shape}\npadding {facts['padding']} ({pads}), "
            f"stride {facts['stride']}, dilation {facts['dilation']}"
        ),
        channels=facts["channels"],
        output_names=labels,
    )


def channels_text(
    loaded: io.Loaded, result: filters.FilterResult, weights: list[np.ndarray]
) -> str:
    """How the input's channels were handled, in words."""
    c = loaded.data.shape[0]
    names = " (R, G, B)" if c == 3 and loaded.ndim == 2 else ""
    per_kernel = result.y.shape[1]
    maps = f"{per_kernel} map{'s' if per_kernel > 1 else ''} per kernel"
    if c == 1:
        return f"1 channel: {maps}"
    if result.color == "gray":
        return f"{c} channels{names} -> gray (0.299 R + 0.587 G + 0.114 B) first: {maps}"
    if result.color == "rgb":
        if weights[0].ndim == 3:
            return f"{c} channels{names} summed by the {c}-channel kernel: {maps}"
        return (
            f"{c} channels{names} summed: the 2-D kernel / {c} on every channel (one "
            f"{c}-channel kernel): {maps}"
        )
    return f"{c} channels{names} filtered each alone: {maps}"


def _is_small(y: np.ndarray) -> bool:
    spatial = y.shape[2:]
    limit = GRID_LIMIT if len(spatial) == 2 else GRID_LIMIT * 2
    return all(n <= limit for n in spatial)


def _facts(
    source: Path,
    output: Path | None,
    compare: Path | None,
    loaded: io.Loaded,
    result: filters.FilterResult,
    labels: list[str],
    kernel_labels: list[str],
    kernels: list[np.ndarray],
    opts: dict[str, Any],
    scale: filters.DisplayScale | None,
) -> dict[str, Any]:
    y = result.y
    small = _is_small(y)
    names = [n if n != "filtered" else labels[0] for n in map_names(labels, y.shape[1])]
    image_out = (output is not None and output_kind(output) == "image") or (
        compare is not None and loaded.ndim == 2
    )
    return {
        "input": str(source),
        "kind": loaded.kind,
        "input_shape": list(loaded.data.shape),
        "kernels": [
            {"label": lab, "shape": list(w.shape), "weights": w.tolist()}
            for lab, w in zip(kernel_labels, kernels)
        ],
        **opts,
        "channels": channels_text(loaded, result, kernels),
        "padding_pairs": [list(p) for p in result.pads],
        "output_shape": list(y.shape[2:]),
        "maps": int(y.shape[0] * y.shape[1]),
        "map_names": names,
        "seconds": round(result.seconds, 6),
        "min": float(y.min()),
        "max": float(y.max()),
        "mean": float(y.mean()),
        "display": scale.describe() if image_out and scale is not None else None,
        "values": y.reshape(-1, *y.shape[2:]).tolist() if small else None,
        "output": str(output) if output else None,
        "compare": str(compare) if compare else None,
    }
