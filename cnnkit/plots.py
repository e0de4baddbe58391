"""Figures (matplotlib, Agg backend) and image grids.

Shared by several subcommands: add functions, keep each one self-contained, import
matplotlib inside the function (through :func:`pyplot`) so that commands that draw nothing
never pay for it. Figures are saved with :func:`save_figure`, which writes atomically.
"""

from __future__ import annotations

import os
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot with the non-interactive Agg backend selected."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 120) -> None:
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
    regions: list[Any],
    image: Any = None,
    title: str = "",
) -> Any:
    """Receptive fields drawn over the input, one outline per layer, growing with depth.

    ``regions`` are :class:`cnnkit.receptive.Region` objects (``box`` per dimension, in input
    coordinates, possibly reaching into the padding). 2-D inputs show boxes over a pixel grid
    or over ``image`` (an array already resized to the input's height and width); 1-D inputs
    show one bar per layer under the samples.
    """
    from matplotlib.patches import Rectangle

    plt = pyplot()
    colors = plt.get_cmap("viridis")
    count = max(len(regions), 1)
    if len(input_sizes) == 1:
        (length,) = input_sizes
        fig, ax = plt.subplots(figsize=(max(4.0, min(12.0, length * 0.5)), 1 + 0.35 * count))
        ax.add_patch(Rectangle((-0.5, count), length, 0.8, facecolor="0.85", edgecolor="k"))
        for row, region in enumerate(regions):
            lo, hi = region.box[0]
            ax.add_patch(
                Rectangle((lo - 0.5, count - 1 - row), hi - lo + 1, 0.8, color=colors(row / count))
            )
            ax.text(hi + 0.7, count - 0.6 - row, region.layer, va="center", fontsize=8)
        lows = [r.box[0][0] for r in regions] + [0]
        highs = [r.box[0][1] for r in regions] + [length - 1]
        ax.set_xlim(min(lows) - 1, max(highs) + 4)
        ax.set_ylim(-0.5, count + 1)
        ax.set_yticks([])
        ax.set_xlabel("input position (grey: the input)")
    else:
        height, width = input_sizes[-2], input_sizes[-1]
        fig, ax = plt.subplots(figsize=(6, 6))
        if image is not None:
            ax.imshow(image, cmap="gray", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        else:
            ax.add_patch(Rectangle((-0.5, -0.5), width, height, facecolor="0.92", edgecolor="0.5"))
            if max(height, width) <= 64:
                for y in range(height + 1):
                    ax.plot([-0.5, width - 0.5], [y - 0.5, y - 0.5], color="0.75", lw=0.5)
                for x in range(width + 1):
                    ax.plot([x - 0.5, x - 0.5], [-0.5, height - 0.5], color="0.75", lw=0.5)
        for row, region in enumerate(regions):
            (y0, y1), (x0, x1) = region.box[-2], region.box[-1]
            ax.add_patch(
                Rectangle(
                    (x0 - 0.5, y0 - 0.5),
                    x1 - x0 + 1,
                    y1 - y0 + 1,
                    fill=False,
                    lw=2,
                    edgecolor=colors(row / count),
                    label=f"{region.layer}: {y1 - y0 + 1}x{x1 - x0 + 1}",
                )
            )
        lows = [min(r.box[-2][0], r.box[-1][0]) for r in regions] + [0]
        highs = [max(r.box[-2][1] - height, r.box[-1][1] - width) for r in regions] + [0]
        ax.set_xlim(min(lows) - 1, width + max(highs))
        ax.set_ylim(height + max(highs), min(lows) - 1)
        ax.set_aspect("equal")
        if regions:
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    ax.set_title(title)
    return fig


def compare_signals(
    path: str | os.PathLike[str],
    signal: Any,
    responses: Any,
    positions: Any,
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
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
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


def _tile(maps: Any, symmetric: bool) -> Any:
    """Arrange (K, H, W) maps in a near-square grid with 1-pixel gaps (NaN, drawn blank)."""
    import math

    import numpy as np

    maps = np.asarray(maps, dtype=np.float64)
    k, h, w = maps.shape
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    grid = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i in range(k):
        m = maps[i]
        if symmetric:
            # keep 0 at mid-grey so excitatory and inhibitory weights read at a glance
            scale = np.abs(m).max() or 1.0
            m = m / scale
        else:
            lo, hi = m.min(), m.max()
            m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
        r, c = divmod(i, cols)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = m
    return grid


def filter_grid_figure(weights: Any, path: str | os.PathLike[str], title: str = "") -> None:
    """First-layer kernels (O, C, kh, kw) as an image grid, each scaled to its own range.

    Single-channel kernels use a diverging map centred on 0; 3-channel kernels are shown as
    RGB; otherwise the channels are averaged.
    """
    import numpy as np

    plt = pyplot()
    w = np.asarray(weights, dtype=np.float64)
    o, c = w.shape[:2]
    fig = plt.figure(figsize=(min(12, 1 + 0.6 * np.ceil(np.sqrt(o)) * 1.2),) * 2)
    ax = fig.add_subplot(1, 1, 1)
    if c == 3:
        tiles = [_tile(w[:, ch], False) for ch in range(3)]
        rgb = np.nan_to_num(np.stack(tiles, axis=-1), nan=1.0)
        ax.imshow(rgb, interpolation="nearest")
    else:
        grid = _tile(w.mean(axis=1), True)
        cmap = plt.get_cmap("RdBu_r").with_extremes(bad="white")
        ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title or f"{o} first-layer kernels ({w.shape[2]}x{w.shape[3]})")
    save_figure(fig, path)


def activations_figure(
    image: Any,
    layers: list[tuple[str, Any]],
    path: str | os.PathLike[str],
    max_maps: int = 32,
    class_names: list[str] | None = None,
) -> None:
    """The input and every layer's output for one image: feature maps as grids, vectors as bars.

    ``layers`` is ``[(name, output), ...]`` with outputs of shape (C, H, W) or (F,). The last
    layer's bars are labelled with ``class_names`` when there is one name per value.
    """
    import numpy as np

    plt = pyplot()
    rows = 1 + len(layers)
    fig, axes = plt.subplots(rows, 1, figsize=(7, 2.6 * rows), squeeze=False)
    img = np.asarray(image, dtype=np.float64)
    ax = axes[0, 0]
    if img.shape[0] == 3:
        lo, hi = img.min(), img.max()
        ax.imshow(np.moveaxis((img - lo) / (hi - lo or 1), 0, -1), interpolation="nearest")
    else:
        ax.imshow(img.mean(axis=0), cmap="gray", interpolation="nearest")
    ax.set_title("input", fontsize=9)
    ax.set_axis_off()
    for (name, out), ax in zip(layers, axes[1:, 0]):
        a = np.asarray(out, dtype=np.float64)
        if a.ndim == 3 and a.shape[1] * a.shape[2] > 1:
            shown = a[:max_maps]
            cmap = plt.get_cmap("viridis").with_extremes(bad="white")
            ax.imshow(np.ma.masked_invalid(_tile(shown, False)), cmap=cmap, interpolation="nearest")
            more = f", first {max_maps} of {a.shape[0]}" if a.shape[0] > max_maps else ""
            ax.set_title(f"{name}: {a.shape[0]} maps {a.shape[1]}x{a.shape[2]}{more}", fontsize=9)
            ax.set_axis_off()
        else:
            v = a.ravel()
            ax.bar(np.arange(v.size), v, color="tab:blue", width=0.9)
            if class_names and name == layers[-1][0] and len(class_names) == v.size:
                ax.set_xticks(range(v.size), [str(c) for c in class_names], fontsize=7)
            ax.set_title(f"{name}: {v.size} values", fontsize=9)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def confusion_matrix_figure(
    cm: Any, class_names: list[str], path: str | os.PathLike[str], title: str = ""
) -> None:
    """A confusion matrix (rows: true class, columns: predicted) with the counts written in."""
    import numpy as np

    plt = pyplot()
    cm = np.asarray(cm)
    k = cm.shape[0]
    size = max(4.0, 0.5 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues", interpolation="nearest")
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
