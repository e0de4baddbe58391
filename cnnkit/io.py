"""Reading and writing images, arrays and signals: the one image loader and the one writer.

Every output goes through :func:`atomic_write` / :func:`atomic_path`; every image through
:func:`open_image`. Heavy imports (numpy, pillow, wave) happen inside the functions.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cnnkit import memory
from cnnkit.errors import ParameterError
from cnnkit.geometry import format_shape

if TYPE_CHECKING:
    import zipfile

    import numpy as np

# ---------------------------------------------------------------------------------------------
# The one output writer.
#
# A temporary file ``.<name>.cnnkit-<pid>-<8 hex><suffix>`` is created in the target's own
# folder (so the final rename cannot cross file systems) with mode 0666 less the umask, or with
# the mode of the file it replaces; it is written, fsync'ed and renamed onto the target. Any
# exception, Ctrl-C or SIGTERM (which the CLI turns into an exception) removes it; a SIGKILL
# leaves it, and the next write into that folder removes temporaries whose process is gone.

_TEMP_RE = re.compile(r"^\..*\.cnnkit-(\d+)-[0-9a-f]{8}(\.[A-Za-z0-9]{1,8})?$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files of cnnkit's naming in ``folder`` whose writer no longer runs.

    Returns the removed paths. A process killed with SIGKILL cannot clean up after itself;
    the next write into the same folder does.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def check_output(path: str | os.PathLike[str], force: bool = False) -> Path:
    """Check that ``path`` may be (re)written; return the file that will actually be replaced.

    A symbolic link is written through (the file it points to is replaced, the link stays).
    Refused with a ValueError: a missing folder, a target that is a folder, a device, FIFO or
    socket, a file with several hard links (replacing it would split them), and a read-only
    file unless ``force``.
    """
    target = Path(path)
    if str(path) == "":
        raise ValueError("output path is empty")
    real = Path(os.path.realpath(target)) if target.is_symlink() else target
    folder = real.parent
    if not folder.is_dir():
        raise FileNotFoundError(2, "output folder does not exist", str(folder))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return real
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{target}: is a folder; give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(
            f"{target}: is not a regular file (a device, FIFO or socket); cnnkit only "
            "replaces regular files"
        )
    if st.st_nlink > 1:
        raise ValueError(
            f"{target}: has {st.st_nlink} hard links; replacing it would split them "
            "(remove it first or write to another name)"
        )
    if not force and not st.st_mode & 0o222:
        raise ValueError(f"{target}: is read-only; make it writable (chmod u+w) to replace it")
    return real


def _create_temp(real: Path) -> tuple[int, Path]:
    """Create the temporary file next to ``real`` with the mode the result must have."""
    try:
        st: os.stat_result | None = os.stat(real)
    except FileNotFoundError:
        st = None
    suffix = real.suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", real.suffix) else ".tmp"
    stem = real.name[:120]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = real.parent / f".{stem}.cnnkit-{os.getpid()}-{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask
        except FileExistsError:
            continue
        break
    if st is not None:
        try:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            if hasattr(os, "fchown") and (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, st.st_uid, st.st_gid)
        except BaseException:
            os.close(fd)
            _discard(tmp)
            raise
    return fd, tmp


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _user_error(exc: OSError, tmp: Path, target: Path) -> OSError:
    """The same error, naming the user's path instead of the hidden temporary file."""
    if exc.filename not in (None, str(tmp), tmp):
        return exc
    code = exc.errno if exc.errno is not None else errno.EIO
    return OSError(code, exc.strerror or str(exc) or os.strerror(code), str(target))


def check_writable(path: str | os.PathLike[str], force: bool = False) -> Path:
    """:func:`check_output`, then create and remove a temporary file where ``path`` will go.

    For long jobs (training) that must find an unwritable folder before the work, not after.
    """
    _, real, fd, tmp = _open_temp(path, force)
    os.close(fd)
    _discard(tmp)
    return real


def _open_temp(path: str | os.PathLike[str], force: bool) -> tuple[Path, Path, int, Path]:
    """Check ``path``, sweep stale temporaries beside it and create a new one: the target as
    given, its real path, the temporary's descriptor and path."""
    target = Path(path)
    real = check_output(target, force)
    remove_stale_temporaries(real.parent)
    try:
        fd, tmp = _create_temp(real)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from None
    return target, real, fd, tmp


@contextlib.contextmanager
def _temporary(path: str | os.PathLike[str], force: bool) -> Iterator[tuple[int, Path]]:
    target, real, fd, tmp = _open_temp(path, force)
    try:
        yield fd, tmp
        os.replace(tmp, real)
    except OSError as exc:
        _discard(tmp)
        raise _user_error(exc, tmp, target) from None
    except BaseException:
        _discard(tmp)
        raise
    _fsync_folder(real.parent)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "wb", *, force: bool = False
) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; rename it onto ``path`` only on success.

    Parameters
    ----------
    path : path-like
        The output. See :func:`check_output` for what is refused; a symbolic link is written
        through.
    mode : str
        ``"wb"`` or ``"w"`` (text, UTF-8).
    force : bool
        Replace a read-only file too.

    Notes
    -----
    A crash, an exception, Ctrl-C or SIGTERM while writing leaves ``path`` as it was (absent
    or the previous complete version) and no temporary file behind. The file gets mode 0666
    less the umask, or keeps the mode of the file it replaces.
    """
    with _temporary(path, force) as (fd, tmp):
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Like :func:`atomic_write`, for writers that want a file name (savefig, pillow).

    The temporary name keeps ``path``'s suffix so libraries that choose a format from the
    suffix (matplotlib, pillow, numpy) behave as they would for ``path``.
    """
    with _temporary(path, force) as (fd, tmp):
        os.close(fd)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# The one input check and the one image loader.


def check_input_file(path: str | os.PathLike[str], what: str) -> os.stat_result:
    """Stat an input before opening it: it must exist and be a regular file.

    A FIFO named ``photo.png`` would block ``open`` forever and a device could be endless, so
    both are refused with a ValueError, as is a folder.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FileNotFoundError(2, "no such file", str(p)) from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{p}: is a folder, not {what}")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{p}: is not a regular file (a FIFO, device or socket), not {what}")
    return st


#: The default pixel limit of :func:`open_image`: the size at which pillow itself calls a
#: file a decompression bomb (2 x ``PIL.Image.MAX_IMAGE_PIXELS``).
MAX_PIXELS = 178_956_970


def open_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> Any:
    """Open an image file with pillow: the one image loader of every command.

    The header is read first; an image with more than ``max_pixels`` pixels, or whose pixels
    as float32 would not fit in the memory budget (:mod:`cnnkit.memory`), is refused before
    it is decoded. Then the first frame is decoded and its EXIF orientation applied (phone
    cameras store rotation as metadata). Float images with NaN or infinite pixels are refused.

    Parameters
    ----------
    path : path-like
        Any image pillow reads (PNG, JPEG, BMP, GIF, TIFF, WebP...).
    max_pixels : int, optional
        Largest width x height accepted; default :data:`MAX_PIXELS`.

    Returns
    -------
    PIL.Image.Image
        Decoded, in the file's own mode.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a regular file, not an image, damaged, too large, or non-finite pixels; the
        message names the file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    check_input_file(p, "an image")
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if limit < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels!r}")
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the size checks below replace pillow's bomb warning
    try:
        # damaged metadata that pillow skips is not worth a warning on the terminal
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                width, height = im.size
                pixels = width * height
                if pixels > limit:
                    raise memory.MemoryBudgetError(
                        f"{p}: {width} x {height} = {pixels:,} pixels, more than the limit of "
                        f"{limit:,} (raise max_pixels to allow it, or use a smaller image)"
                    )
                bands = len(im.getbands())
                # decoded pixels plus one float32 copy of every band
                need = pixels * bands * 5
                memory.check(
                    need, f"{p}: {width} x {height} x {bands} image", "use a smaller image"
                )
                im.seek(0)
                im.load()
                image = ImageOps.exif_transpose(im)
    except memory.MemoryBudgetError:
        raise
    except UnidentifiedImageError:
        raise ValueError(
            f"{p}: cannot read as an image (not an image pillow knows, or damaged)"
        ) from None
    except OSError as exc:
        if exc.errno is not None:  # permission, I/O: a real OS failure, not the content
            raise
        raise _bad_file(p, "an image", exc) from None
    except Exception as exc:  # any decoder failure on damaged content is the file's fault
        raise _bad_file(p, "an image", exc) from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    if image.mode == "F":
        import numpy as np

        bad = int(np.count_nonzero(~np.isfinite(np.asarray(image))))
        if bad:
            raise ValueError(f"{p}: {bad:,} pixels are NaN or infinite; cnnkit needs finite values")
    return image


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


def read_rgb(
    path: str | os.PathLike[str], height: int, width: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """The image at ``path`` as (height, width, 3) uint8 RGB, resized (bilinear) if its size
    differs, and its original (width, height)."""
    import numpy as np
    from PIL import Image

    image = open_image(path).convert("RGB")
    size = image.size
    if size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image), size


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
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give one of its files")
    check_input_file(path, "an input file")


def load(
    path: str | os.PathLike[str], column: str | None = None, *, max_pixels: int | None = None
) -> Loaded:
    """Load an image, array or signal, chosen by the file's suffix.

    Parameters
    ----------
    path : str or PathLike
        ``.png .jpg .jpeg .bmp .tif .tiff .gif .webp`` (pillow), ``.npy``, ``.csv``/``.txt``
        (a signal), ``.wav``.
    column : str, optional
        For CSV/TXT: the column's header name or its 0-based index.
    max_pixels : int, optional
        Images: the largest width x height accepted (default :data:`MAX_PIXELS`).

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
        raise ParameterError(f"column applies to CSV/TXT signals, not to {suffix} files", "column")
    if suffix in IMAGE_SUFFIXES:
        return load_image(p, max_pixels)
    if suffix == ".npy":
        return load_array(p)
    if suffix == ".wav":
        return load_wav(p)
    return load_signal_text(p, column)


def load_image(path: Path, max_pixels: int | None = None) -> Loaded:
    """Read an image with :func:`open_image` (first frame of an animation) as float32.

    Gray, gray+alpha, RGB, RGBA, palette (to RGB, or RGBA when it has transparency; to gray
    when every palette colour is gray), 1-bit,
    CMYK/YCbCr (to RGB), 16-bit and 32-bit integer gray ("I;16", "I": full scale 65535) and
    float ("F") images. Alpha is split off into ``Loaded.alpha``.
    """
    import numpy as np

    im = open_image(path, max_pixels=max_pixels)
    mode = im.mode
    try:
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode == "PA":
            im = im.convert("RGBA")
        elif mode == "1":
            im = im.convert("L")
        elif mode not in ("L", "LA", "RGB", "RGBA", "F") and not mode.startswith("I"):
            im = im.convert("RGB")
        arr = np.asarray(im)
    except (ValueError, OSError) as exc:
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
    data = arr.astype(np.float32)
    data = data[None] if data.ndim == 2 else np.moveaxis(data, 2, 0)
    return Loaded(path, "image", np.ascontiguousarray(data), maxval, alpha, mode)


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def _npy_header(handle: IO[bytes], where: str) -> tuple[tuple[int, ...], Any, bool]:
    """Shape, dtype and order of an ``.npy`` stream positioned at its start (data not read)."""
    import numpy as np

    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(handle)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:  # numpy's header parser fails in many ways on damaged bytes
        raise ValueError(f"{where}: cannot read as a .npy array ({exc})") from None
    return tuple(shape), dtype, fortran


def read_npy(path: str | os.PathLike[str], what: str = "array") -> np.ndarray:
    """Read one ``.npy`` file safely: never unpickles, checks size and kind before reading.

    The header's shape and dtype are checked first: object, structured and complex dtypes
    are refused, and the array must fit in the memory budget (:mod:`cnnkit.memory`). An
    ``.npz`` archive or another format given a ``.npy`` name is named as such.
    """
    import numpy as np

    p = Path(path)
    size = check_input_file(p, f"a .npy {what}").st_size
    with p.open("rb") as handle:
        magic = handle.read(6)
        if magic != NPY_MAGIC:
            kind = "an .npz archive" if magic[:4] == ZIP_MAGIC else "not a .npy file"
            raise ValueError(f"{p}: {kind} (expected a single .npy {what})")
        handle.seek(0)
        shape, dtype, fortran = _npy_header(handle, str(p))
        if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf":
            raise ValueError(f"{p}: {what} must be numeric (real numbers), got dtype {dtype}")
        count = 1
        for n in shape:
            count *= int(n)
        nbytes = count * dtype.itemsize
        if nbytes > size:
            raise ValueError(
                f"{p}: cannot read as a .npy array: truncated (header says "
                f"{format_shape(shape)} {dtype}, {nbytes:,} bytes, the file has {size:,})"
            )
        memory.check(nbytes * 2, f"{p}: a {' x '.join(map(str, shape))} {dtype} array")
        try:
            data = np.fromfile(handle, dtype=dtype, count=count)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{p}: cannot read as a .npy array ({exc})") from None
    if data.size != count:
        raise ValueError(f"{p}: truncated .npy array")
    return data.reshape(shape, order="F" if fortran else "C")


def load_array(path: Path) -> Loaded:
    """Read a numeric ``.npy`` (never unpickling).

    1-D: a signal. 2-D: ``(H, W)``. 3-D: channels-last ``(H, W, C)`` when the last dimension
    is 1, 3 or 4, otherwise channels-first ``(C, H, W)`` (so ``(3, 5, 3)`` is channels-last).
    """
    import numpy as np

    arr = read_npy(path)
    if arr.size == 0:
        raise ValueError(f"{path}: array is empty {arr.shape}")
    if arr.ndim not in (1, 2, 3):
        raise ValueError(
            f"{path}: expected a 1-D signal, a 2-D image or a 3-D (H, W, C) / (C, H, W) "
            f"array, got shape {arr.shape}"
        )
    data = arr.astype(np.float64 if arr.dtype == np.float64 else np.float32)
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


def _read_npz_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, p: Path, what: str, kinds: str
) -> tuple[str, np.ndarray]:
    """One ``.npy`` member of an archive: its key and its array, the dtype and the declared
    size checked against what the member holds before anything is read."""
    import numpy as np

    if not info.filename.endswith(".npy") or info.is_dir():
        raise ValueError(f"{p}: member {info.filename!r} is not a .npy array")
    key = info.filename[: -len(".npy")]
    where = f"{p}: array {key!r}"
    with archive.open(info) as stream:
        shape, dtype, fortran = _npy_header(stream, where)
        if dtype.hasobject:
            raise ValueError(
                f"{where} holds Python objects, which cnnkit never unpickles; save "
                "plain numeric arrays (and strings as a unicode array)"
            )
        if dtype.fields is not None or dtype.kind not in kinds:
            raise ValueError(f"{where} has dtype {dtype}, which a {what} cannot hold")
        count = 1
        for n in shape:
            count *= int(n)
        nbytes = count * dtype.itemsize
        if nbytes > info.file_size:
            raise ValueError(
                f"{where}: header says {format_shape(shape)} {dtype} "
                f"({nbytes:,} bytes) but the member holds {info.file_size:,}"
            )
        raw = stream.read(nbytes)
    if len(raw) != nbytes:
        raise ValueError(f"{where} is truncated")
    array = np.frombuffer(raw, dtype=dtype, count=count)
    return key, array.reshape(shape, order="F" if fortran else "C").copy()


def read_npz(
    path: str | os.PathLike[str], what: str = "archive", kinds: str = "biufUS"
) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` archive safely, member by member, checking sizes first.

    Parameters
    ----------
    path : path-like
    what : str
        What the archive is to the caller ("model file", "data set"), for messages.
    kinds : str
        Accepted dtype kinds (numpy's ``dtype.kind`` letters). Object, structured and
        complex arrays are always refused: nothing is ever unpickled.

    Returns
    -------
    dict of str to numpy.ndarray
        Keyed by member name without ``.npy``.

    Raises
    ------
    ValueError
        Not a zip archive (a lone ``.npy`` is named as such), a member that is not a
        ``.npy`` array, a refused dtype, a damaged member, or members whose declared sizes
        exceed the memory budget (checked before anything is decompressed).
    """
    import zipfile
    import zlib

    p = Path(path)
    check_input_file(p, f"a {what}")
    with p.open("rb") as handle:
        magic = handle.read(6)
    if magic == NPY_MAGIC:
        raise ValueError(f"{p}: a single .npy array, not a {what} (an .npz archive)")
    if magic[:4] != ZIP_MAGIC:
        raise ValueError(f"{p}: not a readable .npz file (not a zip archive)")
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(p) as archive:
            members = archive.infolist()
            if len(members) > 100_000:
                raise ValueError(f"{p}: {len(members):,} members is too many for a {what}")
            total = sum(info.file_size for info in members)
            memory.check(total, f"{p}: {len(members)} arrays of {what}")
            for info in members:
                key, array = _read_npz_member(archive, info, p, what, kinds)
                arrays[key] = array
    except memory.MemoryBudgetError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        detail = str(exc) or type(exc).__name__
        raise ValueError(f"{p}: not a readable .npz file (damaged? {detail})") from None
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise ValueError(f"{p}: not a readable .npz file (damaged? {exc})") from None
    return arrays


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

    size = check_input_file(path, "a text file").st_size
    # every value becomes a Python float in a list, and each line a list of strings first
    memory.check(size * 16, f"{path}: a {memory.human_bytes(size)} text file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason}); save it as UTF-8"
        ) from None
    lines = [
        (n, line)
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise ValueError(f"{path}: no values found")
    comma = path.suffix.lower() == ".csv" or "," in lines[0][1]
    if comma:
        # a field may be as long as the line it is on (the csv module's default stops at 128 KiB)
        csv.field_size_limit(max(csv.field_size_limit(), max(len(line) for _, line in lines)))
        try:
            parsed = list(csv.reader(line for _, line in lines))
        except csv.Error as exc:
            raise ValueError(f"{path}: not a readable CSV file ({exc})") from None
        rows = [(n, [t.strip() for t in r]) for (n, _), r in zip(lines, parsed)]
    else:
        rows = [(n, line.split()) for n, line in lines]
    header: list[str] | None = None
    if not all(_is_number(t) for t in rows[0][1]):
        header = rows[0][1]
        rows = rows[1:]
    width = len(header) if header else len(rows[0][1]) if rows else 0
    if column is None:
        if width > 1:
            names = ", ".join(header) if header else f"0..{width - 1}"
            raise ParameterError(
                f"{path} has {width} columns ({names}); choose one with column NAME|INDEX",
                "column",
            )
        index = 0
    elif header and column in header:
        index = header.index(column)
    elif column.lstrip("-").isdigit():
        index = int(column)
        if not 0 <= index < width:
            raise ParameterError(f"column {column}: {path} has columns 0..{width - 1}", "column")
    else:
        known = f" (columns: {', '.join(header)})" if header else " (the file has no header)"
        raise ParameterError(f"column {column!r} not found in {path}{known}", "column")
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

    check_input_file(path, "WAV audio")
    try:
        with wave.open(str(path), "rb") as f:
            channels, width = f.getnchannels(), f.getsampwidth()
            rate, frames = f.getframerate(), f.getnframes()
            raw = f.readframes(frames)
    except OSError as exc:
        if exc.errno is not None:  # permission, I/O: a real OS failure, not the content
            raise
        raise _bad_file(path, "WAV audio", exc) from None
    except Exception as exc:  # the stdlib reader fails in many ways on damaged headers
        raise _bad_file(path, "WAV audio", exc) from None
    if width not in (1, 2, 3, 4):
        raise ValueError(f"{path}: unsupported sample width {width} bytes")
    if channels < 1:
        raise ValueError(f"{path}: the header says {channels} channels")
    if rate < 1:
        raise ValueError(f"{path}: the header says a sample rate of {rate} Hz; it must be >= 1")
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


def save_image(path: str | os.PathLike[str], pixels: np.ndarray, *, force: bool = False) -> None:
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
    # zlib level 4 takes a third to a half of the default 6's time for PNGs 0.5-4 % larger
    options = {"compress_level": 4} if p.suffix.lower() == ".png" else {}
    with atomic_path(p, force=force) as tmp:
        im.save(tmp, **options)


def save_array(path: str | os.PathLike[str], arr: np.ndarray, *, force: bool = False) -> None:
    """Write ``arr`` as ``.npy`` atomically."""
    import numpy as np

    with atomic_write(path, "wb", force=force) as f:
        np.save(f, arr, allow_pickle=False)


def save_signal_csv(
    path: str | os.PathLike[str], y: np.ndarray, names: list[str], *, force: bool = False
) -> None:
    """Write ``(C, L)`` values as CSV: a header of ``names``, then one row per sample."""

    if y.ndim != 2 or y.shape[0] != len(names):
        raise ValueError(f"CSV output needs one name per row of a (C, L) array, got {y.shape}")
    lines = [",".join(names)] + [",".join(f"{v:.10g}" for v in row) for row in y.T]
    with atomic_write(path, "w", force=force) as f:
        f.write("\n".join(lines) + "\n")


def save_wav(
    path: str | os.PathLike[str], y: np.ndarray, rate: int, width: int, *, force: bool = False
) -> None:
    """Write ``(C, L)`` samples (integer units) as PCM WAV, rounded and clipped to the width."""
    import wave

    import numpy as np

    if not isinstance(rate, int) or isinstance(rate, bool) or not 1 <= rate < 1 << 32:
        raise ValueError(f"rate must be a sample rate in Hz (1 .. 2**32 - 1), got {rate!r}")
    if width not in (1, 2, 3, 4):
        raise ValueError(f"width must be 1, 2, 3 or 4 bytes, got {width!r}")

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
    with atomic_write(path, "wb", force=force) as f:
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
