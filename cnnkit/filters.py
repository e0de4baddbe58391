"""The named kernel bank and the kernel syntax of ``cnnkit filter``.

A kernel is given in one of three ways (:func:`parse_kernel` decides which):

* a name with optional parameters: ``sobel-x``, ``box:5``, ``gaussian:sigma=2,size=7``.
  Parameters follow a colon, separated by commas, either ``key=value`` or positional in the
  order :data:`BANK` lists them (``gaussian:2,7`` is ``sigma=2, size=7``);
* an inline matrix: numbers separated by ``,`` (or spaces), rows separated by ``;``:
  ``"1,0,-1;2,0,-2;1,0,-1"``; a single row is a 1-D kernel;
* a file: ``.npy`` (a 1-D or 2-D numeric array) or ``.txt`` (one row per line, numbers
  separated by commas or spaces, ``#`` starts a comment).

All kernels are float64 and are used as cross-correlation kernels (as in CNN libraries):
``y[i, j] = sum_{u, v} w[u, v] * x[i + u, j + v]``. ``sobel-x`` therefore responds
positively where the image gets brighter from left to right.

This module imports only numpy and the standard library (no Numba).
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnkit import geometry
from cnnkit.errors import ParameterError
from cnnkit.geometry import format_shape

# ---------------------------------------------------------------------------------------------
# The bank


@dataclass(frozen=True)
class Param:
    """One kernel parameter: its name, default, type and allowed range."""

    name: str
    default: float | int | None
    kind: type = float
    minimum: float | None = None
    help: str = ""


@dataclass(frozen=True)
class KernelSpec:
    """A named kernel: description, parameters and the function that builds the matrix."""

    name: str
    description: str
    build: Callable[..., np.ndarray]
    params: tuple[Param, ...] = ()
    aliases: tuple[str, ...] = ()
    one_d: bool = False  # has a 1-D form for signals


#: Largest side of a kernel from the bank or a parameter (a 1025 x 1025 kernel already costs
#: a million multiply-adds per output pixel).
MAX_KERNEL_SIDE = 1025


def _odd_size(size: int | None, sigma: float, name: str) -> int:
    """Default size ``2 * ceil(3 * sigma) + 1`` (the Gaussian is below 1.1% beyond 3 sigma)."""
    if size is None:
        if 3 * sigma > MAX_KERNEL_SIDE:
            raise ValueError(
                f"{name}: sigma {sigma:g} needs a kernel wider than {MAX_KERNEL_SIDE}; "
                "use a smaller sigma or give size"
            )
        return 2 * math.ceil(3 * sigma) + 1
    if size % 2 == 0:
        raise ValueError(f"{name}: size must be odd so the kernel has a centre, got {size}")
    return size


def _grid(size: int, ndim: int) -> tuple[np.ndarray, ...]:
    """Centred integer coordinates; in 2-D ``(y, x)`` with y down the rows, x along columns."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    if ndim == 1:
        return (r,)
    y, x = np.meshgrid(r, r, indexing="ij")
    return y, x


def identity(size: int = 3, ndim: int = 2) -> np.ndarray:
    """A single 1 at the centre: the output equals the input (cropped, with valid padding).

    Parameters
    ----------
    size : int
        Side length; odd sizes have a true centre (index ``size // 2``).
    ndim : int
        1 for signals, 2 for images.

    Returns
    -------
    numpy.ndarray
        ``w[c, c] = 1`` with ``c = size // 2``, 0 elsewhere.

    Examples
    --------
    >>> identity(3, ndim=1)
    array([0., 1., 0.])
    """
    w = np.zeros((size,) * ndim)
    w[(size // 2,) * ndim] = 1.0
    return w


def box(size: int = 3, ndim: int = 2) -> np.ndarray:
    """The mean filter: ``size**ndim`` equal weights summing to 1.

    Parameters
    ----------
    size : int
        Side length.
    ndim : int
        1 for signals (the lecture's 3-tap average), 2 for images.

    Returns
    -------
    numpy.ndarray
        Every weight ``1 / size**ndim``, so ``y[i] = mean(x[i : i + size])``.

    Examples
    --------
    >>> box(3, ndim=1) * 3
    array([1., 1., 1.])
    """
    return np.full((size,) * ndim, 1.0 / size**ndim)


def gaussian(sigma: float = 1.0, size: int | None = None, ndim: int = 2) -> np.ndarray:
    """Sampled Gaussian blur kernel, normalised to sum to 1.

    Parameters
    ----------
    sigma : float
        Standard deviation in pixels.
    size : int, optional
        Odd side length; defaults to ``2 * ceil(3 * sigma) + 1`` (weights beyond 3 sigma are
        below 1.1% of the peak).
    ndim : int
        1 or 2.

    Returns
    -------
    numpy.ndarray

    Notes
    -----
    ``w(r) = exp(-r**2 / (2 sigma**2)) / sum(...)`` with ``r`` the distance from the centre.
    In 2-D it is the outer product of the 1-D kernel with itself (separable).

    Examples
    --------
    >>> gaussian(1.0).shape
    (7, 7)
    >>> bool(abs(gaussian(2.0, 9, ndim=1).sum() - 1) < 1e-12)
    True
    """
    size = _odd_size(size, sigma, "gaussian")
    coords = _grid(size, ndim)
    r2 = sum(c * c for c in coords)
    w = np.exp(-r2 / (2 * sigma * sigma))
    return w / w.sum()


def laplacian_of_gaussian(sigma: float = 1.0, size: int | None = None) -> np.ndarray:
    """Laplacian of Gaussian ("Mexican hat", negative centre), shifted to sum to 0.

    Parameters
    ----------
    sigma : float
        Scale of the blob it detects (responds most to blobs of radius ``sigma * sqrt(2)``).
    size : int, optional
        Odd side length; defaults to ``2 * ceil(3 * sigma) + 1``.

    Returns
    -------
    numpy.ndarray

    Notes
    -----
    ``LoG(r) = -1 / (pi sigma**4) * (1 - r**2 / (2 sigma**2)) * exp(-r**2 / (2 sigma**2))``.
    The sampled, truncated kernel does not sum to exactly 0, so its mean is subtracted: a flat
    region then gives exactly 0.
    """
    size = _odd_size(size, sigma, "log")
    y, x = _grid(size, 2)
    q = (x * x + y * y) / (2 * sigma * sigma)
    w = -1.0 / (math.pi * sigma**4) * (1 - q) * np.exp(-q)
    return w - w.mean()


def motion(length: int = 5, angle: float = 0.0) -> np.ndarray:
    """Motion blur: equal weights along a line of ``length`` pixels through the centre.

    Parameters
    ----------
    length : int
        Euclidean length of the streak in pixels.
    angle : float
        Degrees counter-clockwise from the x axis (0 = horizontal streak, 90 = vertical);
        rows grow downwards, so 45 runs from bottom-left to top-right.

    Returns
    -------
    numpy.ndarray
        ``s x s`` with ``s`` the smallest odd number >= ``length``.

    Notes
    -----
    The segment ``(c + t cos(angle), c - t sin(angle))``, ``|t| <= (length - 1) / 2``, is
    sampled finely; every pixel nearest to a sample gets weight 1, then the weights are
    normalised to sum to 1.

    Examples
    --------
    >>> motion(3) * 3
    array([[0., 0., 0.],
           [1., 1., 1.],
           [0., 0., 0.]])
    """
    s = length if length % 2 else length + 1
    c = (s - 1) / 2
    w = np.zeros((s, s))
    theta = math.radians(angle)
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, 8 * length + 1):
        col = math.floor(c + t * math.cos(theta) + 0.5)
        row = math.floor(c - t * math.sin(theta) + 0.5)  # rows grow downwards
        w[row, col] = 1.0
    return w / w.sum()


def gabor(
    sigma: float = 2.0,
    theta: float = 0.0,
    lambd: float = 6.0,
    gamma: float = 0.5,
    psi: float = 0.0,
    size: int | None = None,
) -> np.ndarray:
    """Real part of a Gabor filter, the lecture's model of first-layer CNN filters.

    Parameters
    ----------
    sigma : float
        Standard deviation of the Gaussian envelope.
    theta : float
        Orientation in degrees (0: vertical stripes, 90: horizontal stripes).
    lambd : float
        Wavelength of the cosine in pixels (``lambda`` on the command line).
    gamma : float
        Aspect ratio of the envelope (1 = round).
    psi : float
        Phase offset in degrees (0: even/symmetric, 90: odd/antisymmetric).
    size : int, optional
        Odd side length.

    Returns
    -------
    numpy.ndarray

    Notes
    -----
    ``x' = x cos(theta) + y sin(theta)``, ``y' = -x sin(theta) + y cos(theta)``,
    ``g = exp(-(x'**2 + gamma**2 y'**2) / (2 sigma**2)) * cos(2 pi x' / lambda + psi)``,
    with x along columns and y down the rows; ``theta`` and ``psi`` in degrees. With
    ``theta=0`` the stripes are vertical (it responds to vertical edges and bars).
    ``size`` defaults to ``2 * ceil(3 * sigma) + 1``. The kernel's mean is then subtracted
    (OpenCV's ``getGaborKernel`` is the same matrix before that step): a detector of edges
    and texture gives 0 on a flat region, whatever its brightness.
    """
    size = _odd_size(size, sigma, "gabor")
    y, x = _grid(size, 2)
    th, ph = math.radians(theta), math.radians(psi)
    xr = x * math.cos(th) + y * math.sin(th)
    yr = -x * math.sin(th) + y * math.cos(th)
    env = np.exp(-(xr * xr + gamma * gamma * yr * yr) / (2 * sigma * sigma))
    w = env * np.cos(2 * math.pi * xr / lambd + ph)
    return w - w.mean()


def _fixed(rows: list[list[float]]) -> Callable[[], np.ndarray]:
    def build() -> np.ndarray:
        return np.array(rows, dtype=np.float64)

    return build


def _laplacian(neighbours: int = 4) -> np.ndarray:
    if neighbours == 4:
        return np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)
    if neighbours == 8:
        return np.array([[1, 1, 1], [1, -8, 1], [1, 1, 1]], dtype=np.float64)
    raise ValueError(f"laplacian: neighbours must be 4 or 8, got {neighbours}")


_SOBEL = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
_PREWITT = [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]]
_SCHARR = [[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]]
_VERTICAL_EDGE = [[1, 0, -1], [1, 0, -1], [1, 0, -1]]


def _t(rows: list[list[float]]) -> list[list[float]]:
    return [list(r) for r in zip(*rows)]


_SIZE = Param("size", 3, int, 1, "side length")
_SIGMA = Param("sigma", 1.0, float, 1e-6, "standard deviation in pixels")
_SIZE_AUTO = Param("size", None, int, 1, "odd side length (default 2*ceil(3*sigma)+1)")

BANK: dict[str, KernelSpec] = {
    k.name: k
    for k in (
        KernelSpec("identity", "1 at the centre, 0 elsewhere", identity, (_SIZE,), one_d=True),
        KernelSpec(
            "box", "mean of a size x size window (sums to 1)", box, (_SIZE,), ("mean",), True
        ),
        KernelSpec(
            "gaussian", "Gaussian blur (sums to 1)", gaussian, (_SIGMA, _SIZE_AUTO), one_d=True
        ),
        KernelSpec("sobel-x", "Sobel derivative along x: vertical edges", _fixed(_SOBEL)),
        KernelSpec("sobel-y", "Sobel derivative along y: horizontal edges", _fixed(_t(_SOBEL))),
        KernelSpec("prewitt-x", "Prewitt derivative along x", _fixed(_PREWITT)),
        KernelSpec("prewitt-y", "Prewitt derivative along y", _fixed(_t(_PREWITT))),
        KernelSpec("scharr-x", "Scharr derivative along x (rotation-accurate)", _fixed(_SCHARR)),
        KernelSpec("scharr-y", "Scharr derivative along y", _fixed(_t(_SCHARR))),
        KernelSpec(
            "laplacian",
            "second derivative, 4 or 8 neighbours",
            _laplacian,
            (Param("neighbours", 4, int, 4, "4 or 8"),),
        ),
        KernelSpec(
            "sharpen",
            "identity plus negative laplacian",
            _fixed([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
        ),
        KernelSpec("emboss", "relief effect", _fixed([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])),
        KernelSpec(
            "vertical-edge",
            "the lecture's edge detector: bright-to-dark vertical edges",
            _fixed(_VERTICAL_EDGE),
        ),
        KernelSpec(
            "horizontal-edge",
            "the lecture's kernel transposed: horizontal edges",
            _fixed(_t(_VERTICAL_EDGE)),
        ),
        KernelSpec(
            "motion",
            "motion blur along a line (sums to 1)",
            motion,
            (
                Param("length", 5, int, 1, "line length in pixels"),
                Param("angle", 0.0, float, None, "degrees counter-clockwise from the x axis"),
            ),
        ),
        KernelSpec(
            "gabor",
            "Gabor filter (real part, mean removed): oriented stripes under a Gaussian; "
            "theta and psi in degrees",
            gabor,
            (
                Param("sigma", 2.0, float, 1e-6, "envelope standard deviation"),
                Param("theta", 0.0, float, None, "orientation in degrees, 0 = vertical stripes"),
                Param("lambda", 6.0, float, 1e-6, "wavelength in pixels"),
                Param("gamma", 0.5, float, 1e-6, "aspect ratio"),
                Param("psi", 0.0, float, None, "phase offset in degrees"),
                _SIZE_AUTO,
            ),
        ),
        KernelSpec(
            "log",
            "Laplacian of Gaussian, mean removed (sums to 0)",
            laplacian_of_gaussian,
            (_SIGMA, _SIZE_AUTO),
        ),
    )
}

ALIASES: dict[str, str] = {a: k.name for k in BANK.values() for a in k.aliases}


# ---------------------------------------------------------------------------------------------
# Parsing


@dataclass
class Kernel:
    """A parsed kernel: the matrix and a short label for tables and file names."""

    weights: np.ndarray
    label: str
    source: str = field(default="", repr=False)

    def split(self) -> list[Kernel]:
        """A bank ``(O, C, kh, kw)`` -> O kernels ``(C, kh, kw)`` labelled ``name[o]``;
        any other kernel -> ``[self]``."""
        if self.weights.ndim != 4:
            return [self]
        return [
            Kernel(np.ascontiguousarray(w), f"{self.label}[{o}]", self.source)
            for o, w in enumerate(self.weights)
        ]


def _number(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


def parse_matrix(text: str, origin: str, row_separator: str = ";") -> np.ndarray:
    """Parse rows of numbers; numbers separated by commas or spaces.

    Parameters
    ----------
    text : str
        The matrix text, e.g. ``"1,0,-1;2,0,-2;1,0,-1"``.
    origin : str
        How to name the text in error messages (``kernel '...'`` or a file name).
    row_separator : str
        ``";"`` for inline kernels, ``"\\n"`` for text files (where ``;`` also works).

    Returns
    -------
    numpy.ndarray
        1-D (one row) or 2-D float64 array.

    Raises
    ------
    ValueError
        Naming the row, column and token where parsing broke, or the row whose length differs.
    """
    inline = row_separator == ";"
    lines = text.split(";") if inline else text.replace(";", "\n").split("\n")
    rows: list[list[float]] = []
    for line_no, line in enumerate(lines, start=1):
        line = line.strip() if inline else line.split("#", 1)[0].strip()
        if not line:
            if inline:
                raise ValueError(f"{origin}: row {line_no} is empty (two ';' in a row?)")
            continue
        tokens = [t.strip() for t in line.split(",")] if "," in line else line.split()
        row: list[float] = []
        place = f"row {len(rows) + 1}" if inline else f"line {line_no}"
        for col, token in enumerate(tokens, start=1):
            where = f"{origin}: {place}, column {col}"
            if not token:
                raise ValueError(f"{where}: empty value (two ',' in a row?)")
            try:
                row.append(_number(token))
            except ValueError:
                raise ValueError(f"{where}: {token!r} is not a number") from None
        if rows and len(row) != len(rows[0]):
            raise ValueError(
                f"{origin}: {place} has {len(row)} value(s) but the first row has "
                f"{len(rows[0])}; every row needs the same number"
            )
        rows.append(row)
    if not rows:
        raise ValueError(f"{origin}: no numbers found")
    arr = np.array(rows, dtype=np.float64)
    return arr[0] if arr.shape[0] == 1 else arr


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _convert(param: Param, value: str, name: str) -> float | int:
    try:
        if param.kind is int:
            f = float(value)
            if not f.is_integer():
                raise ValueError
            out: float | int = int(f)
        else:
            out = _number(value)
    except ValueError:
        kind = "an integer" if param.kind is int else "a number"
        raise ValueError(f"{name}: {param.name} must be {kind}, got {value!r}") from None
    if param.minimum is not None and out < param.minimum:
        raise ValueError(f"{name}: {param.name} must be >= {param.minimum:g}, got {value}")
    if param.kind is int and out > MAX_KERNEL_SIDE:
        raise ValueError(f"{name}: {param.name} must be <= {MAX_KERNEL_SIDE}, got {value}")
    return out


def named_kernel(text: str, ndim: int = 2) -> Kernel:
    """Build a kernel from the bank: ``name`` or ``name:params``.

    Parameters
    ----------
    text : str
        ``"sobel-x"``, ``"box:5"``, ``"gaussian:sigma=2,size=7"``, ``"gabor:theta=45"``.
    ndim : int
        1 for signals (only kernels with a 1-D form), 2 for images.

    Returns
    -------
    Kernel
    """
    name, _, arg_text = text.partition(":")
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    spec = BANK.get(key)
    if spec is None:
        names = list(BANK) + list(ALIASES)
        raise ValueError(
            f"unknown kernel {name!r}{_suggest(key, names)} "
            "(cnnkit filter --list-kernels shows them all)"
        )
    if ndim == 1 and not spec.one_d:
        one = ", ".join(k.name for k in BANK.values() if k.one_d)
        raise ValueError(
            f"kernel {spec.name!r} is 2-D only; a 1-D signal takes {one} "
            "or an inline row like -k '1,0,-1'"
        )
    values: dict[str, float | int] = {}
    by_name = {p.name: p for p in spec.params}
    if arg_text.strip():
        for position, item in enumerate(arg_text.split(",")):
            item = item.strip()
            if "=" in item:
                k, _, v = item.partition("=")
                k = k.strip().lower()
                if k not in by_name:
                    allowed = ", ".join(by_name) or "none"
                    raise ValueError(
                        f"{spec.name} has no parameter {k!r}{_suggest(k, list(by_name))} "
                        f"(parameters: {allowed})"
                    )
                param = by_name[k]
            else:
                if position >= len(spec.params):
                    raise ValueError(
                        f"{spec.name} takes {len(spec.params)} parameter(s), got more: {text!r}"
                    )
                param = spec.params[position]
            if param.name in values:
                raise ValueError(f"{spec.name}: {param.name} given twice")
            values[param.name] = _convert(param, v if "=" in item else item, spec.name)
    kwargs = {("lambd" if k == "lambda" else k): v for k, v in values.items()}
    if spec.one_d:
        kwargs["ndim"] = ndim
    weights = spec.build(**kwargs)
    shown = ",".join(f"{k}={v:g}" for k, v in values.items())
    label = spec.name + (f":{shown}" if shown else "")
    return Kernel(weights, label, text)


#: Largest kernel text file read (a 1025 x 1025 kernel of 12-digit numbers is ~13 MB).
MAX_KERNEL_FILE_BYTES = 16 << 20


def load_kernel_file(path: str | os.PathLike[str]) -> np.ndarray:
    """A kernel from ``.npy`` or ``.txt``/``.csv`` (rows of numbers).

    A ``.npy`` kernel is 1-D or 2-D (one channel), 3-D ``(C, kh, kw)`` (one filter that sums
    over C input channels, like one unit of a conv layer) or 4-D ``(O, C, kh, kw)`` (a bank
    of O such filters, a conv layer's weight tensor).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        from cnnkit.io import read_npy

        arr = read_npy(p, "kernel")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{p}: kernel must be numeric, got dtype {arr.dtype}")
        if arr.ndim not in (1, 2, 3, 4) or arr.size == 0:
            raise ValueError(
                f"{p}: kernel must be a non-empty array of shape (k,), (kh, kw), "
                f"(C, kh, kw) or (O, C, kh, kw), got {arr.shape}"
            )
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError(f"{p}: kernel contains NaN or infinity")
        return arr
    if suffix in (".txt", ".csv"):
        from cnnkit.io import check_input_file

        size = check_input_file(p, "a kernel file").st_size
        if size > MAX_KERNEL_FILE_BYTES:
            raise ValueError(
                f"{p}: {size:,} bytes is too large for a kernel file "
                f"(limit {MAX_KERNEL_FILE_BYTES:,})"
            )
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError(f"{p}: not a UTF-8 text file") from None
        return parse_matrix(text, str(p), row_separator="\n")
    raise ValueError(f"{p}: kernel files must be .npy, .txt or .csv")


def parse_kernel(text: str, ndim: int = 2) -> Kernel:
    """Parse one ``-k`` value: a bank name, an inline matrix or a kernel file.

    A value ending in ``.npy``/``.txt``/``.csv`` or naming an existing file is a file; a value that
    starts with a letter is a bank name; anything else is an inline matrix.

    Parameters
    ----------
    text : str
        The ``-k`` value.
    ndim : int
        1 for signals, 2 for images. A one-row matrix is a 1-D kernel for signals and a
        ``1 x n`` kernel for images.

    Returns
    -------
    Kernel
        ``weights`` has ``ndim`` dimensions; for images a ``.npy`` file may also hold a
        ``(C, kh, kw)`` filter or an ``(O, C, kh, kw)`` bank (see :meth:`Kernel.split`).

    Examples
    --------
    >>> parse_kernel("1,0,-1;2,0,-2;1,0,-1").weights.shape
    (3, 3)
    >>> parse_kernel("gaussian:2,5").label
    'gaussian:sigma=2,size=5'
    >>> parse_kernel("box:3", ndim=1).weights * 3
    array([1., 1., 1.])
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty kernel; give a name (-k sobel-x) or numbers (-k '1,0,-1')")
    lowered = stripped.lower()
    if lowered.endswith((".npy", ".txt", ".csv")) or (
        os.sep in stripped and Path(stripped).exists()
    ):
        weights = load_kernel_file(stripped)
        label = Path(stripped).name
    elif stripped[0].isalpha() and lowered not in ("nan", "inf", "infinity"):
        return named_kernel(stripped, ndim)
    else:
        weights = parse_matrix(stripped, f"kernel {stripped!r}")
        label = "custom"
    if ndim == 1:
        if weights.ndim > 2:
            raise ValueError(
                f"kernel {label} has shape {weights.shape}; a 1-D signal needs a single row"
            )
        if weights.ndim == 2:
            if weights.shape[0] != 1:
                raise ValueError(
                    f"kernel {label} is {weights.shape[0]}x{weights.shape[1]}; a 1-D signal "
                    "needs a single row like -k '1,0,-1'"
                )
            weights = weights[0]
    elif weights.ndim == 1:
        weights = weights[None, :]
    return Kernel(weights, label, text)


def transform(
    weights: np.ndarray,
    *,
    transpose: bool = False,
    rotate: int = 0,
    normalize: bool = False,
    scale: float = 1.0,
) -> np.ndarray:
    """Apply the kernel options in a fixed order: transpose, rotate, normalize, scale.

    Parameters
    ----------
    weights : numpy.ndarray
        1-D or 2-D kernel, or ``(C, kh, kw)``: then every channel's matrix is transformed.
    transpose : bool
        Swap rows and columns (the lecture's vertical -> horizontal edge detector).
    rotate : int
        0, 90, 180 or 270 degrees counter-clockwise (``numpy.rot90``). 1-D kernels accept
        0 and 180 (a reversal).
    normalize : bool
        Divide by the sum so the weights sum to 1; an error for kernels summing to 0.
    scale : float
        Multiply every weight.

    Returns
    -------
    numpy.ndarray
        A new float64 array.
    """
    w = np.array(weights, dtype=np.float64)
    if rotate not in (0, 90, 180, 270):
        raise ParameterError(f"rotate must be 0, 90, 180 or 270, got {rotate}", "rotate")
    if w.ndim == 1:
        if transpose:
            raise ParameterError("transpose needs a 2-D kernel; this one is 1-D", "transpose")
        if rotate in (90, 270):
            raise ValueError("a 1-D kernel can only be rotated by 180 (reversed)")
        if rotate == 180:
            w = w[::-1].copy()
    else:
        if transpose:
            w = np.swapaxes(w, -1, -2).copy()
        w = np.rot90(w, rotate // 90, axes=(-2, -1)).copy()
    if normalize:
        total = w.sum()
        if abs(total) < 1e-12 * max(1.0, float(np.abs(w).sum())):
            raise ParameterError(
                "normalize divides by the kernel's sum, but this kernel sums to 0 "
                "(an edge detector); drop normalize or use scale",
                "normalize",
                "scale",
            )
        w = w / total
    if scale != 1.0:
        if not math.isfinite(scale):
            raise ParameterError(f"scale must be finite, got {scale}", "scale")
        w = w * scale
    return w


COLOR_MODES = ("per-channel", "gray", "rgb")
POOL_KINDS = ("max", "avg")


def parse_padding(text: str, ndim: int) -> str | int | tuple[int, ...]:
    """Padding text -> the ``padding`` argument of :func:`cnnkit.ops.conv2d`.

    ``valid``, ``same``, ``full``, ``N`` (every side) or, for images, ``HxW`` (``H`` rows
    above and below, ``W`` columns left and right).
    """
    value = geometry.padding_from_text(text, "xX")
    if isinstance(value, str):
        return value
    if value is not None and (len(value) == 1 or len(value) == ndim == 2):
        return value[0] if len(value) == 1 else value
    shapes = "N or HxW" if ndim == 2 else "N"
    raise ParameterError(
        f"padding must be valid, same, full or {shapes} (non-negative integers), got {text!r}",
        "padding",
    )


@dataclass
class FilterResult:
    """The response of a kernel bank and the facts the summary table shows.

    ``y`` has shape ``(K, C, *spatial)``: one map per kernel (K = 1 after
    ``combine="magnitude"``) and per filtered channel (C = 1 for ``gray``, ``rgb`` and
    ``(C, kh, kw)`` kernels). ``color`` is the colour mode used (``per-channel``, ``gray``,
    ``rgb``; ``rgb`` also for ``(C, kh, kw)`` kernels, which sum over the channels).
    ``seconds`` is the time of the convolutions (and combine/pool) with Numba's kernels
    already loaded. ``positions`` gives, for a 1-D output, each sample's position on the
    input's axis (the centre of the window that produced it), so signal and response can be
    plotted together.
    """

    y: np.ndarray
    pads: tuple[tuple[int, int], ...]
    seconds: float
    positions: np.ndarray | None = None
    color: str = "per-channel"


# Work (multiply-adds) per call of the compiled convolution when a filter is split into
# bands of output rows: a few tenths of a second at most, so progress moves and Ctrl-C
# (handled between calls) stops the command within a second.
CHUNK_MACS = 40_000_000


def _row_bands(rows: int, macs_per_row: int, chunk_macs: int) -> list[tuple[int, int]]:
    """Split ``rows`` output rows into bands of at most ``chunk_macs`` multiply-adds."""
    per = max(1, chunk_macs // max(1, macs_per_row))
    return [(r, min(rows, r + per)) for r in range(0, rows, per)]


def _check_bank(
    data: np.ndarray,
    kernels: list[np.ndarray],
    color: str | None,
    combine: str | None,
    pool: str | None,
) -> tuple[list[bool], str]:
    """The options of :func:`apply_bank` that ``ops`` does not own, checked; returns which
    kernels are ``(C, kh, kw)`` and the colour mode (``rgb`` for those)."""
    ndim = data.ndim - 1
    if not kernels:
        raise ValueError("kernels is empty: give at least one kernel")
    multi = [ndim == 2 and w.ndim == 3 for w in kernels]
    if ndim == 2 and any(multi):
        if not all(multi):
            raise ValueError(
                "a bank cannot mix 2-D kernels with (C, kh, kw) kernels; give one kind"
            )
        if color not in (None, "rgb"):
            raise ValueError(
                f"a (C, kh, kw) kernel sums over the channels itself; color {color!r} does "
                "not apply (use a 2-D kernel for per-channel or gray filtering)"
            )
        for w in kernels:
            if w.shape[0] != data.shape[0]:
                raise ValueError(
                    f"the kernel has {w.shape[0]} channel(s) (shape {w.shape}) but the input "
                    f"has {data.shape[0]}; a (C, kh, kw) kernel needs one matrix per channel"
                )
        color = "rgb"
    color = color or "per-channel"
    if color not in COLOR_MODES:
        raise ParameterError(
            f"color must be one of {', '.join(COLOR_MODES)}, got {color!r}", "color"
        )
    if ndim == 1 and color != "per-channel":
        raise ParameterError(
            "color applies to images; a signal's channels are filtered each alone", "color"
        )
    if combine not in (None, "magnitude"):
        raise ParameterError(f"combine must be magnitude, got {combine!r}", "combine")
    if combine and len(kernels) < 2:
        raise ParameterError(
            "combine=magnitude needs two or more kernels, e.g. -k sobel-x -k sobel-y", "combine"
        )
    if pool is not None and pool not in POOL_KINDS:
        raise ParameterError(f"pool must be max or avg, got {pool!r}", "pool")
    for w, m in zip(kernels, multi):
        if w.ndim != ndim + int(m):
            raise ValueError(f"a {ndim}-D input needs {ndim}-D kernels, got shape {w.shape}")
    return multi, color


def _bank_inputs(
    data: np.ndarray, kernels: list[np.ndarray], multi: list[bool], color: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The input batch and every kernel as a conv weight ``(1, C_in, *k)``: one output map
    per call. ``rgb`` is one multi-channel input; otherwise each channel is filtered alone."""
    weights = []
    for w, m in zip(kernels, multi):
        if m:
            weights.append(w[None])
        elif color == "rgb":
            weights.append(np.repeat(w[None, None], data.shape[0], axis=1) / data.shape[0])
        else:
            weights.append(w[None, None])
    if color in ("rgb",):
        x = data[None]  # (1, C, ...): one multi-channel input
    else:
        x = data[:, None]  # (C, 1, ...): channels as a batch, each filtered alone
    return x, weights


def _bank_geometry(
    sizes: tuple[int, ...],
    weights: list[np.ndarray],
    padding: str | int | tuple[int, ...],
    stride_t: tuple[int, ...],
    dil_t: tuple[int, ...],
) -> tuple[tuple[int, ...], list[tuple[tuple[int, int], ...]]]:
    """The one output size of every kernel and the padding, or an error saying how to fix a
    kernel that does not fit or kernels that disagree."""
    names = ("height", "width") if len(sizes) == 2 else ("length",)
    shapes, all_pads = [], []
    for wk in weights:
        ksize = wk.shape[2:]
        pads = geometry.resolve_padding(padding, sizes, ksize, stride_t, dil_t)
        out = geometry.conv_output_shape(sizes, ksize, stride_t, pads, dil_t)
        for i, o in enumerate(out):
            if o <= 0:
                span = dil_t[i] * (ksize[i] - 1) + 1
                padded = sizes[i] + pads[i][0] + pads[i][1]
                raise ParameterError(
                    f"kernel {format_shape(ksize)} (spanning {span} with dilation "
                    f"{dil_t[i]}) is larger than the padded input {names[i]} {padded}; "
                    "use padding=same or a smaller kernel",
                    "padding",
                )
        shapes.append(out)
        all_pads.append(pads)
    if len(set(shapes)) > 1:
        raise ParameterError(
            "the kernels give different output sizes ("
            + ", ".join(format_shape(s) for s in shapes)
            + "); use padding=same or kernels of one size",
            "padding",
        )
    return shapes[0], all_pads


def _pool_maps(
    y: np.ndarray, positions: np.ndarray | None, pool: str, pool_size: int, ps: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pool every map of ``y`` (K, C, ...) with windows of ``pool_size`` and stride ``ps``;
    a signal's sample positions move to the centres of the pooling windows."""
    from cnnkit import ops

    ndim = y.ndim - 2
    k, c = y.shape[:2]
    flat = y.reshape(k * c, 1, *y.shape[2:])
    if ndim == 2:
        fn = ops.max_pool2d if pool == "max" else ops.avg_pool2d
    else:
        fn = ops.max_pool1d if pool == "max" else ops.avg_pool1d
    names = ("height", "width") if ndim == 2 else ("length",)
    for i, n in enumerate(y.shape[2:]):
        if pool_size > n:
            raise ParameterError(
                f"pool_size={pool_size} is larger than the filtered {names[i]} {n}",
                "pool_size",
            )
    pooled = fn(flat, pool_size, ps)
    y = pooled.reshape(k, c, *pooled.shape[2:])
    if positions is not None:
        starts = np.arange(y.shape[-1]) * ps
        positions = (positions[starts] + positions[starts + pool_size - 1]) / 2
    return y, positions


def apply_bank(
    data: np.ndarray,
    kernels: list[np.ndarray],
    *,
    color: str | None = None,
    padding: str | int | tuple[int, ...] = "valid",
    pad_mode: str = "zeros",
    stride: int = 1,
    dilation: int = 1,
    method: str = "auto",
    flip: bool = False,
    bias: float = 0.0,
    combine: str | None = None,
    pool: str | None = None,
    pool_size: int = 2,
    pool_stride: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_macs: int | None = None,
) -> FilterResult:
    """Filter ``data`` with every kernel through :mod:`cnnkit.ops`, then combine and pool.

    Parameters
    ----------
    data : numpy.ndarray
        ``(C, H, W)`` image or ``(C, L)`` signal.
    kernels : list of numpy.ndarray
        2-D kernels for images, 1-D for signals; or, for images, ``(C, kh, kw)`` kernels
        with one matrix per input channel (all kernels of a bank alike).
    color : {None, "per-channel", "gray", "rgb"}
        Images only. ``per-channel`` (the default for 2-D kernels): every channel is filtered
        alone (C maps). ``gray``: BT.601 luma first (1 map). ``rgb``: one ``(C, kh, kw)``
        kernel made of the 2-D kernel repeated over the C channels and divided by C, so a
        blur keeps the mean brightness; one map, as one unit of a conv layer computes.
        A ``(C, kh, kw)`` kernel is such a unit itself: ``y = sum_c w[c] * x[c]``, one map,
        no division (``None`` or ``rgb``).
    padding, pad_mode, stride, dilation, method, flip
        As in :func:`cnnkit.ops.conv2d` (``flip=True`` is true convolution).
    bias : float
        Added to every response (the conv layer's bias), before ``combine``.
    combine : {None, "magnitude"}
        ``magnitude``: ``sqrt(sum_k y_k**2)``, the gradient magnitude of an x/y pair.
    pool, pool_size, pool_stride
        ``max`` or ``avg`` pooling applied after the filter (stride defaults to size).
    progress : callable, optional
        ``progress(done, total)`` after each call of the compiled convolution. A filter of
        more than ``chunk_macs`` multiply-adds is computed in bands of output rows, so the
        calls are short; an exception raised here (or Ctrl-C) stops between bands.
    chunk_macs : int, optional
        Largest number of multiply-adds per call (default :data:`CHUNK_MACS`).

    Returns
    -------
    FilterResult

    Notes
    -----
    Per spatial dimension the output has
    ``floor((n + pad_lo + pad_hi - dilation * (k - 1) - 1) / stride) + 1`` samples
    (:func:`cnnkit.geometry.conv_output_size`), then ``floor((m - pool) / pool_stride) + 1``
    after pooling.

    Examples
    --------
    The lecture's 8x8 image with a vertical edge and its 3x3 edge detector:

    >>> x = np.zeros((1, 8, 8))
    >>> x[:, :, :4] = 10
    >>> r = apply_bank(x, [parse_kernel("vertical-edge").weights])
    >>> r.y.shape, r.y[0, 0, 0]
    ((1, 1, 6, 6), array([ 0.,  0., 30., 30.,  0.,  0.]))
    """
    import time

    from cnnkit import ops

    ndim = data.ndim - 1
    multi, color = _check_bank(data, kernels, color, combine, pool)
    stride_t = geometry.positive_tuple(stride, ndim, "stride")
    dil_t = geometry.positive_tuple(dilation, ndim, "dilation")

    if ndim == 2 and color == "gray":
        from cnnkit.io import to_gray

        data = to_gray(data)
    x, weights = _bank_inputs(data, kernels, multi, color)
    out_shape, all_pads = _bank_geometry(data.shape[1:], weights, padding, stride_t, dil_t)
    conv = ops.conv2d if ndim == 2 else ops.conv1d
    b = np.array([bias], dtype=np.float64) if bias else None
    # Load the compiled kernels on a small input first, so ``seconds`` measures the filtering
    # and not Numba's one-off start-up (loading its cache costs a few hundred ms). 64x64
    # outputs take the kernels a large image takes (the plane kernel starts at 4096).
    extra = 63 if ndim == 2 else 0
    span = [geometry.dilated_span(k, d) + extra for d, k in zip(dil_t, weights[0].shape[2:])]
    conv(np.zeros((1, x.shape[1], *span)), weights[0], b, dilation=dil_t, method=method)
    row_macs = x.shape[0] * x.shape[1] * math.prod(weights[0].shape[2:]) * math.prod(out_shape[1:])
    bands = _row_bands(out_shape[0], row_macs, chunk_macs or CHUNK_MACS)
    total, done = len(weights) * len(bands), 0
    start = time.perf_counter()
    maps = []
    for wk, pads in zip(weights, all_pads):
        if len(bands) == 1:
            y = conv(
                x,
                wk,
                b,
                stride=stride_t,
                padding=padding,
                dilation=dil_t,
                pad_mode=pad_mode,
                flip=flip,
                method=method,
            )
            done += 1
            if progress is not None:
                progress(done, total)
        else:
            padded = ops.pad(x, pads, pad_mode)
            reach = dil_t[0] * (wk.shape[2] - 1) + 1
            parts = []
            for r0, r1 in bands:
                lo, hi = r0 * stride_t[0], (r1 - 1) * stride_t[0] + reach
                parts.append(
                    conv(
                        padded[:, :, lo:hi],
                        wk,
                        b,
                        stride=stride_t,
                        padding=0,
                        dilation=dil_t,
                        flip=flip,
                        method=method,
                    )
                )
                done += 1
                if progress is not None:
                    progress(done, total)
            y = np.concatenate(parts, axis=2)
        maps.append(y[:, 0])  # (C or 1, ...)
    y = np.stack(maps)  # (K, C, ...)
    if combine == "magnitude":
        y = np.sqrt((y * y).sum(axis=0, keepdims=True))
    positions = None
    pads = all_pads[0]
    if ndim == 1:
        reach = dil_t[0] * (kernels[0].shape[0] - 1) + 1
        positions = np.arange(y.shape[-1]) * stride_t[0] - pads[0][0] + (reach - 1) / 2
    if pool is not None:
        y, positions = _pool_maps(y, positions, pool, pool_size, pool_stride or pool_size)
    seconds = time.perf_counter() - start
    return FilterResult(np.ascontiguousarray(y), pads, seconds, positions, color)


# ---------------------------------------------------------------------------------------------
# Showing a response as pixels

DISPLAY_MODES = ("auto", "abs", "clip", "rescale", "diverging")
# Edge maps are scaled to this percentile of |y|, not to the single largest value: a few
# extreme responses (a sharp corner) would otherwise leave every other edge nearly black.
DISPLAY_PERCENTILE = 99.5


@dataclass(frozen=True)
class DisplayScale:
    """How a float response becomes pixels: the mode used and the values of full scale.

    ``lo`` and ``hi`` are the response values shown as black and white (``abs``, ``clip``,
    ``rescale``: of |y| for ``abs``) or as full blue and full red (``diverging``: ``-hi`` and
    ``hi``). Values beyond them are clipped.
    """

    mode: str
    lo: float
    hi: float

    def describe(self) -> str:
        """One line for the summary: what black, white (or the colours) mean."""
        hi = f"{self.hi:.4g}"
        if self.mode == "abs":
            return (
                f"abs: |y| from 0 (black) to {hi} (white, the {DISPLAY_PERCENTILE:g}th "
                "percentile of |y|; larger values clipped)"
            )
        if self.mode == "diverging":
            return (
                f"diverging: red = positive, blue = negative, white = 0; full colour at "
                f"+-{hi} (the {DISPLAY_PERCENTILE:g}th percentile of |y|)"
            )
        if self.mode == "clip":
            return f"clip: y from 0 (black) to {hi} (white, the input's full scale)"
        return f"rescale: y from {self.lo:.4g} (black) to {hi} (white)"


def display_scale(y: np.ndarray, maxval: float, mode: str = "auto") -> DisplayScale:
    """Choose how to show the response ``y`` (any shape) as an 8-bit image.

    Parameters
    ----------
    y : numpy.ndarray
        The response (every map of a bank shares one scale).
    maxval : float
        The input's full-scale value (255 for 8-bit images).
    mode : str
        ``clip``: ``clip(y, 0, maxval)``, the response in the input's units (blurs).
        ``abs``: ``|y|`` up to the 99.5th percentile of ``|y|`` (edge maps: signed edges
        bright on black). ``rescale``: ``min .. max`` to full contrast. ``diverging``:
        blue (negative) - white (0) - red (positive) up to the 99.5th percentile of ``|y|``.
        ``auto`` (the default): ``clip`` when no value is negative, else ``abs``.

    Returns
    -------
    DisplayScale
    """
    if mode not in DISPLAY_MODES:
        raise ParameterError(
            f"display must be one of {', '.join(DISPLAY_MODES)}, got {mode!r}", "display"
        )
    if mode == "auto":
        mode = "clip" if y.min() >= 0 else "abs"
    if mode == "clip":
        return DisplayScale(mode, 0.0, float(maxval))
    if mode == "rescale":
        return DisplayScale(mode, float(y.min()), float(y.max()))
    a = np.abs(y)
    hi = float(np.percentile(a, DISPLAY_PERCENTILE))
    if hi <= 0:  # mostly zeros (a sparse edge map): fall back to the peak
        hi = float(a.max())
    return DisplayScale(mode, 0.0, hi)


def to_pixels(y: np.ndarray, scale: DisplayScale) -> np.ndarray:
    """Map a float response ``(C, H, W)`` (1 or 3 channels) to uint8 pixels with ``scale``.

    Returns ``(H, W)`` for one channel, ``(H, W, 3)`` for three channels and for
    ``diverging`` (one channel in, RGB out).
    """
    if y.shape[0] not in (1, 3):
        raise ValueError(f"an image needs 1 or 3 channels, the response has {y.shape[0]}")
    span = scale.hi - scale.lo
    if scale.mode == "diverging":
        if y.shape[0] != 1:
            raise ParameterError(
                "display=diverging needs a one-channel response; add color=gray or rgb",
                "display",
                "color",
            )
        s = np.clip(y[0] / scale.hi, -1, 1) if scale.hi > 0 else np.zeros_like(y[0])
        # white at 0, towards pure red (+1) or pure blue (-1)
        pos, neg = np.clip(s, 0, 1), np.clip(-s, 0, 1)
        rgb = np.stack([1 - neg, 1 - pos - neg, 1 - pos], axis=-1)
        return np.round(rgb * 255).astype(np.uint8)
    v = np.abs(y) if scale.mode == "abs" else y
    v = np.clip((v - scale.lo) / span, 0, 1) if span > 0 else np.zeros_like(v)
    pixels = np.round(v * 255).astype(np.uint8)
    return pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, 2)


def default_matrices() -> list[tuple[KernelSpec, np.ndarray]]:
    """Every bank kernel built with its default parameters (for ``--list-kernels``)."""
    return [(spec, spec.build()) for spec in BANK.values()]


__all__ = [
    "ALIASES",
    "BANK",
    "CHUNK_MACS",
    "DISPLAY_MODES",
    "DisplayScale",
    "Kernel",
    "KernelSpec",
    "Param",
    "COLOR_MODES",
    "FilterResult",
    "apply_bank",
    "box",
    "default_matrices",
    "display_scale",
    "gabor",
    "gaussian",
    "identity",
    "laplacian_of_gaussian",
    "load_kernel_file",
    "motion",
    "named_kernel",
    "parse_kernel",
    "parse_matrix",
    "parse_padding",
    "to_pixels",
    "transform",
]
