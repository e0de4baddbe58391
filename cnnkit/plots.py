"""Figures (matplotlib, Agg backend) and image grids.

Shared by several subcommands: add functions, keep each one self-contained, import
matplotlib inside the function (through :func:`pyplot`) so that commands that draw nothing
never pay for it. Figures are saved with :func:`save_figure`, which writes atomically.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import TYPE_CHECKING

from cnnkit.geometry import format_shape

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike

    from cnnkit.arch.receptive import Region
    from cnnkit.filters import DisplayScale


def pyplot() -> ModuleType:
    """matplotlib.pyplot with the non-interactive Agg backend selected."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> None:
    """Save ``fig`` to ``path`` through a temporary file, then close it."""
    from cnnkit.io import atomic_path

    plt = pyplot()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)


def receptive_field_figure(
    input_sizes: tuple[int, ...],
    regions: list[Region],
    image: np.ndarray | None = None,
    title: str = "",
    note: str | None = None,
) -> Figure:
    """One unit's receptive field drawn over the input as it grows, one outline per layer.

    ``regions`` are :class:`cnnkit.arch.receptive.Region` objects, nested (from
    :func:`cnnkit.arch.receptive.growth`): ``box`` per dimension in input coordinates,
    possibly reaching into the padding. 2-D inputs show boxes over a pixel grid or over
    ``image`` (an array already resized to the input's height and width); 1-D inputs show
    one bar per layer under the samples. A field with holes (dilation, strides larger than
    the kernel) shows the pixels that reach the unit as dots instead of a filled box.
    ``note`` (e.g. that the photo was resized) goes under the title.
    """
    plt = pyplot()
    if len(input_sizes) == 1:
        fig, ax = _field_bars(plt, input_sizes, regions)
    else:
        fig, ax = _field_boxes(plt, input_sizes, regions, image)
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=10)
    return fig


def _has_holes(region: Region) -> bool:
    """Some pixels inside the field's box do not reach the unit (dilation, large strides)."""
    return region.seen < region.inside


def _field_bars(
    plt: ModuleType, input_sizes: tuple[int, ...], regions: list[Region]
) -> tuple[Figure, Axes]:
    """A 1-D input's fields: one bar per layer under the samples."""
    from matplotlib.patches import Rectangle

    colors = plt.get_cmap("viridis")
    count = max(len(regions), 1)
    (length,) = input_sizes
    fig, ax = plt.subplots(figsize=(max(5.0, min(12.0, length * 0.5)), 1.2 + 0.4 * count))
    ax.add_patch(Rectangle((-0.5, count), length, 0.8, facecolor="0.85", edgecolor="k"))
    ax.text(length - 0.5 + 0.3, count + 0.4, "input", va="center", fontsize=8)
    for row, region in enumerate(regions):
        lo, hi = region.box[0]
        y = count - 1 - row
        color = colors(row / count)
        ax.add_patch(
            Rectangle((lo - 0.5, y), hi - lo + 1, 0.8, fill=False, edgecolor=color, lw=1.5)
        )
        for p in region.positions[0]:
            ax.add_patch(Rectangle((p - 0.5, y), 1, 0.8, color=color, alpha=0.8))
        label = f"{region.layer}: {hi - lo + 1}" + (" (holes)" if _has_holes(region) else "")
        ax.text(hi + 0.7, y + 0.4, label, va="center", fontsize=8)
    lows = [r.box[0][0] for r in regions] + [0]
    highs = [r.box[0][1] for r in regions] + [length - 1]
    ax.set_xlim(min(lows) - 1, max(highs) + 6)
    ax.set_ylim(-0.5, count + 1)
    ax.set_yticks([])
    ax.set_xlabel("input position (outside 0..n-1: padding)")
    ax.set_ylabel("layer (deeper: lower)")
    return fig, ax


def _field_boxes(
    plt: ModuleType, input_sizes: tuple[int, ...], regions: list[Region], image: np.ndarray | None
) -> tuple[Figure, Axes]:
    """A 2-D input's fields: one outline per layer over a pixel grid or ``image``."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    colors = plt.get_cmap("viridis")
    count = max(len(regions), 1)
    height, width = input_sizes[-2], input_sizes[-1]
    fig, ax = plt.subplots(figsize=(7, 6))
    if image is not None:
        ax.imshow(image, cmap="gray", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    else:
        ax.add_patch(Rectangle((-0.5, -0.5), width, height, facecolor="0.92", edgecolor="0.5"))
        if max(height, width) <= 64:
            for y in range(height + 1):
                ax.plot([-0.5, width - 0.5], [y - 0.5, y - 0.5], color="0.75", lw=0.5)
            for x in range(width + 1):
                ax.plot([x - 0.5, x - 0.5], [-0.5, height - 0.5], color="0.75", lw=0.5)
    handles = []
    for row, region in enumerate(regions):
        (y0, y1), (x0, x1) = region.box[-2], region.box[-1]
        color = colors(row / max(count - 1, 1))
        ax.add_patch(
            Rectangle(
                (x0 - 0.5, y0 - 0.5),
                x1 - x0 + 1,
                y1 - y0 + 1,
                fill=False,
                lw=2,
                edgecolor=color,
            )
        )
        label = f"{region.layer}: {y1 - y0 + 1}x{x1 - x0 + 1}"
        if _has_holes(region) and region.seen <= 20_000:
            ys, xs = zip(*region.pixels())
            # inner (earlier) fields on top, so each layer's pixels keep their colour
            size = max(2.0, 2000.0 / max(height, width))
            ax.scatter(xs, ys, s=size, color=color, marker="s", zorder=3 + count - row)
            label += f" ({region.seen:,} of {region.inside:,} pixels reach it)"
        handles.append(Line2D([], [], color=color, lw=2, label=label))
    unit = regions[-1] if regions else None
    if unit is not None:
        cy = sum(unit.box[-2]) / 2
        cx = sum(unit.box[-1]) / 2
        ax.plot([cx], [cy], marker="+", color="red", markersize=12, mew=2, zorder=10 + count)
        handles.append(Line2D([], [], color="red", marker="+", lw=0, label="field centre"))
    lows = [min(r.box[-2][0], r.box[-1][0]) for r in regions] + [0]
    highs = [max(r.box[-2][1] - height, r.box[-1][1] - width) for r in regions] + [0]
    margin = 1 + 0.03 * (width + max(highs) - min(lows))
    ax.set_xlim(min(lows) - margin, width + max(highs) + margin)
    ax.set_ylim(height + max(highs) + margin, min(lows) - margin)
    ax.set_aspect("equal")
    where = "the image" if image is not None else "the grey area"
    ax.set_xlabel(f"input column x (outside {where}: padding)")
    ax.set_ylabel("input row y")
    if handles:
        ax.legend(
            handles=handles,
            title="layer: field (inner boxes: earlier layers)",
            loc="upper left",
            bbox_to_anchor=(1.02, 1),
            fontsize=8,
            title_fontsize=8,
        )
    return fig, ax


def compare_signals(
    path: str | os.PathLike[str],
    signal: np.ndarray,
    responses: np.ndarray,
    positions: ArrayLike,
    names: list[str],
    title: str = "",
) -> None:
    """Plot 1-D signals and their filtered versions on one time axis; save to ``path``.

    ``signal`` is ``(C, L)``; ``responses`` is ``(M, L_out)`` with ``positions`` (length
    ``L_out``) placing each output sample at the centre of the window that produced it, so a
    valid or strided response lines up with the input it came from.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for c, row in enumerate(signal):
        label = "input" if len(signal) == 1 else f"input ch{c}"
        ax.plot(range(len(row)), row, color="0.6", lw=1, marker=".", ms=3, label=label)
    for name, row in zip(names, responses):
        ax.plot(positions, row, lw=1.8, label=name)
    ax.set_xlabel("sample")
    ax.set_ylabel("value")
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
    save_figure(fig, path)


def _draw_matrix(ax: Axes, m: ArrayLike, title: str, xlabel: str = "column") -> None:
    """A small weight matrix as a signed heat map with its numbers written in."""
    import numpy as np

    plt = pyplot()
    m = np.asarray(m, dtype=np.float64)
    top = float(np.nanmax(np.abs(m))) or 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="white")
    image = ax.imshow(
        np.ma.masked_invalid(m), cmap=cmap, vmin=-top, vmax=top, interpolation="nearest"
    )
    if m.size <= 81:
        for (i, j), v in np.ndenumerate(m):
            if not np.isfinite(v):
                continue
            text = f"{v:.0f}" if float(v).is_integer() else f"{v:.2g}"
            colour = "white" if abs(v) > 0.6 * top else "black"
            size = 8 if m.shape[1] <= 7 else 6
            ax.text(j, i, text, ha="center", va="center", fontsize=size, color=colour)
    ax.set_xticks(range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]))
    ax.tick_params(labelsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("row")
    ax.set_title(title, fontsize=9)
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)


def _compare_axes(plt: ModuleType, shown: int) -> tuple[Figure, list[Axes]]:
    """The figure and its panels: input, kernel, then ``shown`` outputs. One row (input,
    kernel, output) for a single map; a bank's maps go two per row below."""
    import math

    if shown == 1:
        fig, grid = plt.subplots(1, 3, figsize=(13.5, 4.6), squeeze=False)
        return fig, list(grid[0])
    rows = 1 + math.ceil(shown / 2)
    fig, grid = plt.subplots(rows, 2, figsize=(10, 4.4 * rows), squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[2 + shown :]:
        ax.set_axis_off()
    return fig, axes[: 2 + shown]


def _draw_input(ax: Axes, data: ArrayLike, maxval: float, title: str) -> None:
    """The input image, ``maxval`` white (RGB when it has three channels)."""
    import numpy as np

    img = np.asarray(data, dtype=np.float64)
    shown_in = np.clip(img / maxval, 0, 1)
    if img.shape[0] == 3:
        ax.imshow(np.moveaxis(shown_in, 0, -1), interpolation="nearest")
    else:
        ax.imshow(shown_in[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (column)")
    ax.set_ylabel("y (row)")


def _draw_first_kernel(ax: Axes, kernels: list[tuple[str, ArrayLike]], title: str) -> None:
    """The first kernel's numbers; a ``(C, kh, kw)`` kernel as its matrices side by side."""
    import numpy as np

    label, w = kernels[0]
    w = np.asarray(w, dtype=np.float64)
    xlabel = "column"
    if w.ndim == 3:
        gap = np.full((w.shape[1], 1), np.nan)
        names = "R | G | B" if w.shape[0] == 3 else " | ".join(f"ch{c}" for c in range(w.shape[0]))
        w = np.concatenate([p for c in w for p in (c, gap)][:-1], axis=1)
        xlabel = f"column, per input channel: {names}"
    more = f" (+{len(kernels) - 1} more)" if len(kernels) > 1 else ""
    _draw_matrix(ax, w, f"{title}\n{label}{more}", xlabel)


def _response_colours(scale: DisplayScale) -> tuple[str, float, float, str]:
    """Colour map, value range and colour-bar label of a one-channel response map."""
    if scale.mode == "diverging":
        return "bwr", -scale.hi, scale.hi, "response (red +, blue -)"
    if scale.mode == "abs":
        return "gray", 0.0, scale.hi, "|response| (clipped at 99.5th pct)"
    if scale.mode == "clip":
        return "gray", scale.lo, scale.hi, "response (clipped to the input's range)"
    return "gray", scale.lo, scale.hi, "response (min to max)"


def filter_compare_figure(
    path: str | os.PathLike[str],
    data: ArrayLike,
    maxval: float,
    kernels: list[tuple[str, ArrayLike]],
    response: ArrayLike,
    map_names: list[str],
    scale: DisplayScale,
    *,
    input_title: str,
    kernel_title: str,
    output_title: str,
    channels: str = "",
    output_names: list[str] | None = None,
) -> None:
    """Input, kernel and output of ``cnnkit filter`` as labelled panels; save to ``path``.

    ``data`` is the input ``(C, H, W)`` in its own units (``maxval`` is white);
    ``kernels`` the kernels as applied, ``(label, matrix)`` with 2-D or ``(C, kh, kw)``
    matrices (the first is drawn, with its numbers); ``response`` is ``(K, C, H', W')`` and
    ``scale`` a :class:`cnnkit.filters.DisplayScale`: one-channel maps are drawn with a colour
    bar in the response's units, three-channel maps as RGB (``output_names``: one title per
    kernel).
    """
    import numpy as np

    from cnnkit.filters import to_pixels

    plt = pyplot()
    y = np.asarray(response, dtype=np.float64)
    maps = [(name, y[i // y.shape[1], i % y.shape[1]]) for i, name in enumerate(map_names)]
    rgb_out = y.shape[1] == 3
    outputs = y.shape[0] if rgb_out else len(maps)
    shown = min(outputs, 4)
    fig, axes = _compare_axes(plt, shown)
    _draw_input(axes[0], data, maxval, input_title)
    _draw_first_kernel(axes[1], kernels, kernel_title)
    cmap, lo, hi, what = _response_colours(scale)
    for k, ax in enumerate(axes[2:]):
        if rgb_out:
            ax.imshow(to_pixels(y[k], scale), interpolation="nearest")
            name = output_names[k] if output_names else f"output {k}"
            ax.set_title(
                f"{output_title}\n{name}: its R, G, B maps as one colour image\n"
                f"(one scale: {scale.lo:.4g} to {scale.hi:.4g}"
                + (" of |y|" if scale.mode == "abs" else "")
                + ")",
                fontsize=9,
            )
        else:
            name, m = maps[k]
            values = np.abs(m) if scale.mode == "abs" else m
            image = ax.imshow(values, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            bar = plt.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
            bar.set_label(what, fontsize=8)
            bar.ax.tick_params(labelsize=7)
            ax.set_title(f"{output_title}\n{name}", fontsize=9)
        ax.set_xlabel("x (column)")
        ax.set_ylabel("y (row)")
    if outputs > shown:
        axes[-1].text(
            1.0,
            -0.18,
            f"first {shown} of {outputs} outputs",
            transform=axes[-1].transAxes,
            ha="right",
            fontsize=8,
        )
    if channels:
        fig.suptitle(f"cnnkit filter ({channels})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def bench_figure(panels: list, path: str | os.PathLike[str], title: str = "") -> None:
    """One panel per entry of ``cnnkit.bench.plot_panels`` (a title, axis labels, a log
    y axis, and ``lines``: name -> [(x, y)]), one line per method or peer, with a legend."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for name, points in panel["lines"].items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", ls="--" if name == "auto" else "-", label=name)
        ax.set(yscale="log", xlabel=panel["xlabel"], ylabel=panel["ylabel"])
        if panel["xlog"]:
            ax.set_xscale("log")
        ticks = sorted({x for pts in panel["lines"].values() for x, _ in pts})
        ax.set_xticks(ticks, [str(v) for v in ticks])
        ax.minorticks_off()
        ax.set_title(panel["title"], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def _grid(maps: np.ndarray, cols: int) -> np.ndarray:
    """(K, H, W) maps in rows of ``cols``, 1-pixel NaN gaps (drawn blank), values unchanged."""
    import math

    import numpy as np

    maps = np.asarray(maps, dtype=np.float64)
    k, h, w = maps.shape
    rows = math.ceil(k / cols)
    grid = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i in range(k):
        r, c = divmod(i, cols)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = maps[i]
    return grid


def filter_grid_figure(weights: np.ndarray, path: str | os.PathLike[str], title: str = "") -> None:
    """First-layer kernels ``(O, C, kh, kw)``, one cell each, on one shared signed scale.

    Every cell uses the same diverging colour map centred on 0 (red positive, blue negative,
    white 0), so kernels can be compared with each other; a colour bar gives the weights.
    Multi-channel kernels show each input channel as its own cell, side by side.
    """
    import math

    import numpy as np

    plt = pyplot()
    w = np.asarray(weights, dtype=np.float64)
    o, c, kh, kw = w.shape
    shown = min(o, max(1, 96 // c))
    per_row = math.ceil(math.sqrt(shown))
    if shown % per_row and shown % (per_row + 1) == 0:
        per_row += 1  # 8 kernels: two full rows of four
    per_row = max(1, min(per_row, 12 // c))
    rows = math.ceil(shown / per_row)
    cell = 1.0 if max(kh, kw) <= 7 else 1.4
    fig, axes = plt.subplots(
        rows,
        per_row * c,
        figsize=(cell * per_row * c + 1.6, cell * rows + 1.2),
        squeeze=False,
    )
    top = float(np.abs(w).max()) or 1.0
    image = None
    names = ("R", "G", "B") if c == 3 else tuple(f"ch{i}" for i in range(c))
    for ax in axes.ravel():
        ax.set_axis_off()
    for k in range(shown):
        r, col = divmod(k, per_row)
        for ch in range(c):
            ax = axes[r, col * c + ch]
            image = ax.imshow(w[k, ch], cmap="RdBu_r", vmin=-top, vmax=top, interpolation="nearest")
            ax.set_title(f"{k}" + (f" {names[ch]}" if c > 1 else ""), fontsize=8, pad=2)
    more = f" (first {shown} of {o})" if shown < o else ""
    fig.suptitle(
        (title or f"{o} first-layer kernels")
        + f"{more}: {kh}x{kw} weights, one shared colour scale",
        fontsize=10,
    )
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.04, pad=0.03)
    bar.set_label("weight (red +, blue -, white 0)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    save_figure(fig, path)


def activations_figure(
    image: ArrayLike,
    layers: list[tuple[str, np.ndarray]],
    path: str | os.PathLike[str],
    max_maps: int = 32,
    class_names: list[str] | None = None,
    probabilities: ArrayLike | None = None,
    title: str = "",
) -> None:
    """The input and every layer's output for one image, with a colour scale per layer.

    ``layers`` is ``[(name, output), ...]`` with outputs of shape (C, H, W) or (F,). A layer's
    feature maps share one colour scale (its colour bar), so strong and weak maps compare.
    Vectors are bars; ``probabilities`` (the softmax of the last layer) are drawn next to
    the input as class probabilities labelled with ``class_names``.
    """
    import math

    import numpy as np

    plt = pyplot()
    img = np.asarray(image, dtype=np.float64)
    panels: list[tuple[str, np.ndarray]] = [(n, np.asarray(a)) for n, a in layers]
    heights = [2.2]  # the top row: the input, and the class probabilities beside it
    for _, a in panels:
        if a.ndim == 3 and a.shape[1] * a.shape[2] > 1:
            k = min(a.shape[0], max_maps)
            cols = min(k, 16)
            heights.append(max(0.9, 8.0 / cols * math.ceil(k / cols) * a.shape[1] / a.shape[2]))
        else:
            heights.append(1.5)
    fig = plt.figure(figsize=(9, sum(heights) + 0.45 * len(heights)), layout="constrained")
    grid = fig.add_gridspec(len(heights), 2, height_ratios=heights, width_ratios=[1, 2])
    ax = fig.add_subplot(grid[0, 0])
    if img.shape[0] == 3:
        lo, hi = img.min(), img.max()
        ax.imshow(np.moveaxis((img - lo) / (hi - lo or 1), 0, -1), interpolation="nearest")
    else:
        shown = ax.imshow(img.mean(axis=0), cmap="gray", interpolation="nearest")
        fig.colorbar(shown, ax=ax, fraction=0.05, pad=0.02).ax.tick_params(labelsize=7)
    ax.set_title(
        f"input{': ' + title if title else ''}\n{format_shape(img.shape)}, "
        "normalised as in training",
        fontsize=9,
    )
    ax.set_axis_off()
    if probabilities is not None:
        _draw_probabilities(fig.add_subplot(grid[0, 1]), probabilities, class_names, layers[-1][0])
    for row, (name, a) in enumerate(panels, start=1):
        ax = fig.add_subplot(grid[row, :])
        if a.ndim == 3 and a.shape[1] * a.shape[2] > 1:
            _draw_feature_maps(plt, fig, ax, name, a, max_maps)
        else:
            v = a.ravel()
            ax.bar(np.arange(v.size), v, color="tab:blue", width=0.9)
            last = name == layers[-1][0]
            if last and class_names and len(class_names) == v.size:
                ax.set_xticks(range(v.size), [str(c) for c in class_names], fontsize=7)
            ax.set_ylabel("score (logit)" if last else "value", fontsize=8)
            ax.set_xlabel("class" if last else "unit", fontsize=8)
            ax.set_title(f"{name}: {v.size} values", fontsize=9)
            ax.tick_params(labelsize=7)
    save_figure(fig, path)


def _draw_probabilities(
    ax: Axes, probabilities: ArrayLike, class_names: list[str] | None, layer: str
) -> None:
    """Class probabilities as bars, the top class in orange."""
    import numpy as np

    v = np.asarray(probabilities, dtype=np.float64).ravel()
    best = int(np.argmax(v))
    colours = ["tab:orange" if i == best else "tab:blue" for i in range(v.size)]
    ax.bar(np.arange(v.size), v, color=colours, width=0.8)
    labels = class_names if class_names and len(class_names) == v.size else None
    ax.set_xticks(range(v.size), [str(c) for c in (labels or range(v.size))], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability", fontsize=8)
    ax.set_xlabel("class", fontsize=8)
    top = labels[best] if labels else best
    ax.set_title(f"softmax of {layer}: top class {top} ({100 * v[best]:.1f} %)", fontsize=9)
    ax.tick_params(labelsize=7)


def _draw_feature_maps(
    plt: ModuleType, fig: Figure, ax: Axes, name: str, a: np.ndarray, max_maps: int
) -> None:
    """A layer's first ``max_maps`` maps tiled on one colour scale, with its colour bar."""
    import numpy as np

    k = min(a.shape[0], max_maps)
    tiles = _grid(a[:k], min(k, 16))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    shown = ax.imshow(np.ma.masked_invalid(tiles), cmap=cmap, interpolation="nearest")
    bar = fig.colorbar(shown, ax=ax, fraction=0.03, pad=0.01)
    bar.ax.tick_params(labelsize=7)
    more = f", first {max_maps} of {a.shape[0]}" if a.shape[0] > max_maps else ""
    ax.set_title(
        f"{name}: {a.shape[0]} maps {a.shape[1]}x{a.shape[2]}{more} (one colour scale)",
        fontsize=9,
    )
    ax.set_axis_off()


def confusion_matrix_figure(
    cm: np.ndarray, class_names: list[str], path: str | os.PathLike[str], title: str = ""
) -> None:
    """A confusion matrix (rows: true class, columns: predicted) with the counts written in."""
    import numpy as np

    plt = pyplot()
    cm = np.asarray(cm)
    k = cm.shape[0]
    size = max(4.0, 0.5 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).set_label("images", fontsize=8)
    top = cm.max() or 1
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    colour = "white" if cm[i, j] > top / 2 else "black"
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=colour, fontsize=8)
    ax.set_xticks(range(k), [str(c) for c in class_names], rotation=90 if k > 10 else 0)
    ax.set_yticks(range(k), [str(c) for c in class_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    save_figure(fig, path)
