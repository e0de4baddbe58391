"""Reading and writing images, arrays and signals; every output is written atomically.

Heavy imports (pillow, wave) happen inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; rename it onto ``path`` only on success.

    A crash, an exception or Ctrl-C while writing leaves ``path`` as it was (absent or the
    previous complete version) and no temporary file behind.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(2, "output folder does not exist", str(folder))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Like :func:`atomic_write`, for writers that want a file name (savefig, np.savez).

    The temporary name keeps ``path``'s suffix so libraries that choose a format from the
    suffix (matplotlib, pillow, numpy) behave as they would for ``path``.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(2, "output folder does not exist", str(folder))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=folder)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------
# Loading and saving images, arrays and signals (used by ``cnnkit filter``).
#
# Everything loads to float64 in the file's own units (0..255 for 8-bit images, 0..65535 for
# 16-bit ones, integer sample values for WAV), so a filter's raw response (``.npy`` output)
# reads like the lecture's arithmetic. Images and arrays become (C, H, W); signals (C, L).

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
SIGNAL_SUFFIXES = (".csv", ".txt")
INPUT_SUFFIXES = (*IMAGE_SUFFIXES, ".npy", *SIGNAL_SUFFIXES, ".wav")
OUTPUT_KINDS = {
    **dict.fromkeys(IMAGE_SUFFIXES, "image"),
    ".npy": "npy",
    ".csv": "csv",
    ".wav": "wav",
}

# ITU-R BT.601 luma, the weights pillow's convert("L") uses.
LUMA = (0.299, 0.587, 0.114)


@dataclass
class Loaded:
    """An input ready for filtering.

    Attributes
    ----------
    path : Path
    kind : str
        ``"image"`` (pillow), ``"array"`` (``.npy`` with 2 or 3 dims) or ``"signal"``
        (CSV/TXT, WAV or 1-D ``.npy``).
    data : numpy.ndarray
        float64, ``(C, H, W)`` for images and arrays, ``(C, L)`` for signals.
    maxval : float
        Full-scale value used to display responses as images: 255 (8-bit), 65535 (16-bit),
        the input's largest absolute value for float arrays.
    alpha : numpy.ndarray or None
        An image's alpha channel ``(H, W)`` in 0..255, kept aside (never filtered).
    fmt : str
        Pillow mode, ``"npy"``, ``"csv"`` or ``"wav"``.
    sample_rate, sample_width : int or None
        WAV frame rate and bytes per sample, reused when writing a ``.wav`` output.
    """

    path: Path
    kind: str
    data: np.ndarray
    maxval: float = 255.0
    alpha: np.ndarray | None = None
    fmt: str = ""
    sample_rate: int | None = None
    sample_width: int | None = None

    @property
    def ndim(self) -> int:
        """Spatial dimensions: 1 for signals, 2 for images and arrays."""
        return self.data.ndim - 1


def _bad_file(path: Path, what: str, exc: BaseException | str) -> ValueError:
    detail = str(exc).strip() or type(exc).__name__
    return ValueError(f"{path}: cannot read as {what} ({detail})")


def _check_input(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(2, "no such file", str(path))
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; use --out-dir to filter every file in it")


def load(path: str | os.PathLike[str], column: str | None = None) -> Loaded:
    """Load an image, array or signal, chosen by the file's suffix.

    Parameters
    ----------
    path : str or PathLike
        ``.png .jpg .jpeg .bmp .tif .tiff .gif .webp`` (pillow), ``.npy``, ``.csv``/``.txt``
        (a signal), ``.wav``.
    column : str, optional
        For CSV/TXT: the column's header name or its 0-based index.

    Returns
    -------
    Loaded

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Unknown suffix, unreadable or truncated content, unsupported layout.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise ValueError(
            f"{p}: unknown input format {suffix or '(no suffix)'!r}; "
            f"expected one of {' '.join(INPUT_SUFFIXES)}"
        )
    _check_input(p)
    if column is not None and suffix not in SIGNAL_SUFFIXES:
        raise ValueError(f"--column applies to CSV/TXT signals, not to {suffix} files")
    if suffix in IMAGE_SUFFIXES:
        return load_image(p)
    if suffix == ".npy":
        return load_array(p)
    if suffix == ".wav":
        return load_wav(p)
    return load_signal_text(p, column)


def load_image(path: Path) -> Loaded:
    """Read an image with pillow (first frame of an animation).

    Gray, gray+alpha, RGB, RGBA, palette (to RGB, or RGBA when it has transparency; to gray
    when every palette colour is gray), 1-bit,
    CMYK/YCbCr (to RGB), 16-bit and 32-bit integer gray ("I;16", "I": full scale 65535) and
    float ("F") images. Alpha is split off into ``Loaded.alpha``.
    """
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.seek(0)
            im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode == "PA":
                im = im.convert("RGBA")
            elif mode == "1":
                im = im.convert("L")
            elif mode not in ("L", "LA", "RGB", "RGBA", "F") and not mode.startswith("I"):
                im = im.convert("RGB")
            arr = np.asarray(im)
    except (SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _bad_file(path, "an image", exc) from None
    except OSError as exc:
        if exc.errno is not None:  # permission, I/O: a real OS failure, not the content
            raise
        raise _bad_file(path, "an image", exc) from None
    alpha = None
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        alpha = arr[:, :, -1].copy()
        arr = arr[:, :, :-1]
    if mode in ("P", "PA") and (arr == arr[:, :, :1]).all():
        arr = arr[:, :, 0]  # a gray palette (as GIF stores gray images) stays one channel
    if arr.dtype == np.uint8:
        maxval = 255.0
    elif arr.dtype.kind in "iu":
        maxval = max(65535.0, float(arr.max()))
    else:
        maxval = max(1.0, float(np.abs(arr).max()))
    data = arr.astype(np.float64)
    data = data[None] if data.ndim == 2 else np.moveaxis(data, 2, 0)
    return Loaded(path, "image", np.ascontiguousarray(data), maxval, alpha, mode)


def load_array(path: Path) -> Loaded:
    """Read a numeric ``.npy`` (never unpickling).

    1-D: a signal. 2-D: ``(H, W)``. 3-D: channels-last ``(H, W, C)`` when the last dimension
    is 1, 3 or 4, otherwise channels-first ``(C, H, W)`` (so ``(3, 5, 3)`` is channels-last).
    """
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise _bad_file(path, "a .npy array", exc) from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{path}: array must be numeric, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{path}: array is empty {arr.shape}")
    if arr.ndim not in (1, 2, 3):
        raise ValueError(
            f"{path}: expected a 1-D signal, a 2-D image or a 3-D (H, W, C) / (C, H, W) "
            f"array, got shape {arr.shape}"
        )
    data = arr.astype(np.float64)
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: array contains NaN or infinity")
    if arr.dtype == np.uint8:
        maxval = 255.0
    elif arr.dtype == np.uint16:
        maxval = 65535.0
    else:
        maxval = max(float(np.abs(data).max()), 1e-12)
    if arr.ndim == 1:
        return Loaded(path, "signal", data[None].copy(), maxval, fmt="npy")
    if arr.ndim == 2:
        data = data[None]
    elif arr.shape[2] in (1, 3, 4):
        data = np.moveaxis(data, 2, 0)
    return Loaded(path, "array", np.ascontiguousarray(data), maxval, fmt="npy")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def load_signal_text(path: Path, column: str | None = None) -> Loaded:
    """Read a 1-D signal from CSV or TXT.

    One value per line, or several columns (comma-separated, or whitespace-separated in a
    ``.txt`` without commas) with ``column`` naming one by header or 0-based index. A first
    row that is not all numbers is the header. Blank lines and lines starting with ``#`` are
    skipped.
    """
    import csv

    import numpy as np

    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    lines = [
        (n, line)
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise ValueError(f"{path}: no values found")
    comma = path.suffix.lower() == ".csv" or "," in lines[0][1]
    rows = (
        [(n, [t.strip() for t in r]) for (n, _), r in zip(lines, csv.reader(l for _, l in lines))]
        if comma
        else [(n, line.split()) for n, line in lines]
    )
    header: list[str] | None = None
    if not all(_is_number(t) for t in rows[0][1]):
        header = rows[0][1]
        rows = rows[1:]
    width = len(header) if header else len(rows[0][1]) if rows else 0
    if column is None:
        if width > 1:
            names = ", ".join(header) if header else f"0..{width - 1}"
            raise ValueError(
                f"{path} has {width} columns ({names}); choose one with --column NAME|INDEX"
            )
        index = 0
    elif header and column in header:
        index = header.index(column)
    elif column.lstrip("-").isdigit():
        index = int(column)
        if not 0 <= index < width:
            raise ValueError(f"--column {column}: {path} has columns 0..{width - 1}")
    else:
        known = f" (columns: {', '.join(header)})" if header else " (the file has no header)"
        raise ValueError(f"--column {column!r} not found in {path}{known}")
    label = header[index] if header else str(index)
    values: list[float] = []
    for n, tokens in rows:
        if index >= len(tokens):
            raise ValueError(f"{path}: line {n} has no column {label!r}")
        try:
            v = float(tokens[index])
        except ValueError:
            raise ValueError(
                f"{path}: line {n}, column {label!r}: {tokens[index]!r} is not a number"
            ) from None
        if not np.isfinite(v):
            raise ValueError(f"{path}: line {n}, column {label!r}: {tokens[index]!r} is not finite")
        values.append(v)
    if not values:
        raise ValueError(f"{path}: no values found below the header")
    data = np.array(values, dtype=np.float64)[None]
    return Loaded(path, "signal", data, max(float(np.abs(data).max()), 1e-12), fmt="csv")


def load_wav(path: Path) -> Loaded:
    """Read PCM WAV audio (stdlib ``wave``): 8, 16, 24 or 32-bit, any number of channels.

    Samples are kept in integer units (8-bit unsigned samples are centred on 0); each channel
    is a row of ``data``.
    """
    import wave

    import numpy as np

    try:
        with wave.open(str(path), "rb") as f:
            channels, width = f.getnchannels(), f.getsampwidth()
            rate, frames = f.getframerate(), f.getnframes()
            raw = f.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise _bad_file(path, "WAV audio", exc) from None
    if width not in (1, 2, 3, 4):
        raise ValueError(f"{path}: unsupported sample width {width} bytes")
    expected = frames * channels * width
    if len(raw) < expected or frames == 0:
        found = len(raw) // (channels * width)
        raise ValueError(f"{path}: truncated WAV (header says {frames} frames, found {found})")
    if width == 1:
        ints = np.frombuffer(raw, np.uint8).astype(np.int64) - 128
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int64)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
    else:
        ints = np.frombuffer(raw, f"<i{width}").astype(np.int64)
    data = ints.reshape(frames, channels).T.astype(np.float64)
    full = float(1 << (8 * width - 1))
    return Loaded(
        path,
        "signal",
        np.ascontiguousarray(data),
        full,
        fmt="wav",
        sample_rate=rate,
        sample_width=width,
    )


def to_gray(data: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (1, H, W) with the BT.601 luma weights; 1 channel passes through."""
    import numpy as np

    if data.shape[0] == 1:
        return data
    if data.shape[0] != 3:
        raise ValueError(f"gray conversion needs 1 or 3 channels, this input has {data.shape[0]}")
    return np.tensordot(np.array(LUMA), data, axes=1)[None]


def attach_alpha(pixels: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Re-attach a kept-aside alpha channel when the pixels still have the input's size."""
    import numpy as np

    if alpha is None or pixels.shape[:2] != alpha.shape:
        return pixels
    if pixels.ndim == 2:
        return np.stack([pixels, alpha], axis=-1)
    return np.concatenate([pixels, alpha[:, :, None]], axis=-1)


def save_image(path: str | os.PathLike[str], pixels: np.ndarray) -> None:
    """Write uint8 pixels (gray, gray+alpha, RGB, RGBA) atomically; format from the suffix.

    JPEG has no alpha channel, so alpha is dropped there.
    """
    import numpy as np
    from PIL import Image

    p = Path(path)
    if p.suffix.lower() in (".jpg", ".jpeg") and pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        pixels = pixels[:, :, :-1]
        if pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
    im = Image.fromarray(np.ascontiguousarray(pixels))
    with atomic_path(p) as tmp:
        im.save(tmp)


def save_array(path: str | os.PathLike[str], arr: np.ndarray) -> None:
    """Write ``arr`` as ``.npy`` atomically."""
    import numpy as np

    with atomic_write(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def save_signal_csv(path: str | os.PathLike[str], y: np.ndarray, names: list[str]) -> None:
    """Write ``(C, L)`` values as CSV: a header of ``names``, then one row per sample."""

    if y.ndim != 2 or y.shape[0] != len(names):
        raise ValueError(f"CSV output needs one name per row of a (C, L) array, got {y.shape}")
    lines = [",".join(names)] + [",".join(f"{v:.10g}" for v in row) for row in y.T]
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def save_wav(path: str | os.PathLike[str], y: np.ndarray, rate: int, width: int) -> None:
    """Write ``(C, L)`` samples (integer units) as PCM WAV, rounded and clipped to the width."""
    import wave

    import numpy as np

    full = 1 << (8 * width - 1)
    ints = np.clip(np.round(y.T), -full, full - 1).astype(np.int64).reshape(-1)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    elif width == 3:
        u = ints & 0xFFFFFF
        raw = (
            np.stack([u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF], axis=1)
            .astype(np.uint8)
            .tobytes()
        )
    else:
        raw = ints.astype(f"<i{width}").tobytes()
    with atomic_write(path, "wb") as f:
        with wave.open(f, "wb") as w:
            w.setnchannels(y.shape[0])
            w.setsampwidth(width)
            w.setframerate(rate)
            w.writeframes(raw)


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    """Two uint8 images next to each other on a white background, vertically centred.

    Gray images are promoted to RGB and alpha is dropped, so any two can be joined.
    """
    import numpy as np

    def rgb(a: np.ndarray) -> np.ndarray:
        if a.ndim == 2:
            return np.repeat(a[:, :, None], 3, axis=2)
        if a.shape[2] in (2, 4):
            a = a[:, :, :-1]
        return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a

    a, b = rgb(left), rgb(right)
    height = max(a.shape[0], b.shape[0])
    canvas = np.full((height, a.shape[1] + gap + b.shape[1], 3), 255, np.uint8)
    for img, x0 in ((a, 0), (b, a.shape[1] + gap)):
        y0 = (height - img.shape[0]) // 2
        canvas[y0 : y0 + img.shape[0], x0 : x0 + img.shape[1]] = img
    return canvas


def tile(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """uint8 images of one size in a row, separated by white gaps (a kernel bank's maps)."""
    out = images[0]
    for img in images[1:]:
        out = side_by_side(out, img, gap)
    return out
