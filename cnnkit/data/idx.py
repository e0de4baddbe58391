"""IDX files (the MNIST format) and the ``mnist`` / ``fashion-mnist`` loaders.

IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic number
``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the values in
row-major order, big-endian. Type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64. Images are ``0x00000803`` (N, rows, cols) and labels
``0x00000801`` (N,). Files may be gzip-compressed (recognised by their content, not name).
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit import memory
from cnnkit.errors import ParameterError
from cnnkit.geometry import format_shape
from cnnkit.io import check_input_file

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_CLASSES = [str(d) for d in range(10)]

# role -> canonical file name; the official archives also spell it with a dot
# (train-images.idx3-ubyte), which is accepted too.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a native-endian numpy array.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    numpy.ndarray
        Shape and dtype from the file's header.

    Raises
    ------
    ValueError
        Missing file, corrupt gzip data, a bad magic number, or a data section whose length
        does not match the header (``prod(sizes) * itemsize`` bytes).
    """
    path = Path(path)
    try:
        check_input_file(path, "an IDX file")
        with path.open("rb") as plain:
            compressed = plain.read(2) == b"\x1f\x8b"
        # a gzip member is read as a stream: only the bytes the header promises are inflated
        with gzip.open(path, "rb") if compressed else path.open("rb") as handle:
            return _read_idx_stream(handle, path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path}: corrupt gzip data ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _read_idx_stream(handle: Any, path: Path) -> np.ndarray:
    head = handle.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in IDX_TYPES or head[3] == 0:
        magic = head.hex() or "empty file"
        raise ValueError(
            f"{path}: not an IDX file (magic number {magic}; expected 0000 then a type code "
            "and a dimension count, e.g. 00000803 for images)"
        )
    ndim = head[3]
    sizes = handle.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise ValueError(
            f"{path}: truncated IDX header ({4 + len(sizes)} bytes, needs {4 + 4 * ndim})"
        )
    dims = tuple(int(v) for v in np.frombuffer(sizes, dtype=">u4", count=ndim))
    dtype = np.dtype(IDX_TYPES[head[2]])
    expected = math.prod(dims) * dtype.itemsize
    shape = format_shape(dims)
    # the raw bytes, then the native-endian and float32 copies the loaders make
    memory.check(expected * 3, f"{path}: an IDX array of {shape} {dtype.name}")
    data = handle.read(expected)
    if len(data) < expected:
        raise ValueError(
            f"{path}: truncated: header says {shape} values ({expected} bytes) but the file "
            f"has {len(data)} bytes of data"
        )
    if handle.read(1):
        raise ValueError(
            f"{path}: has trailing bytes: header says {shape} values ({expected} bytes) but "
            "the file has more data"
        )
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def find_idx_file(folders: list[Path], name: str) -> Path:
    """First existing spelling of IDX file ``name`` (plain or .gz, dash or dot) in ``folders``."""
    dotted = name.replace("-idx", ".idx")
    for folder in folders:
        for candidate in (name, name + ".gz", dotted, dotted + ".gz"):
            if (folder / candidate).is_file():
                return folder / candidate
    where = " or ".join(str(f) for f in folders)
    raise ValueError(f"missing {name} (or {name}.gz) in {where}")


def _images_and_labels(
    folders: list[Path], images_name: str, labels_name: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    images_path = find_idx_file(folders, images_name)
    labels_path = find_idx_file(folders, labels_name)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: expected uint8 images (N, rows, cols), got {images.dtype} "
            f"with shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"{labels_path}: expected uint8 labels (N,), got {labels.dtype} "
            f"with shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path.name} has {len(images)} images but {labels_path.name} has "
            f"{len(labels)} labels"
        )
    if len(labels) and int(labels.max()) >= num_classes:
        raise ValueError(
            f"{labels_path}: label {int(labels.max())} out of range 0..{num_classes - 1}"
        )
    x = images.astype(np.float32)[:, None] / np.float32(255.0)
    return x, labels.astype(np.int64)


def load_mnist_raw(
    data_dir: str | os.PathLike[str] | None, name: str = "mnist", limit: int | None = None
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Read the four MNIST-format IDX files: ((x_train, y_train), (x_test, y_test)).

    Parameters
    ----------
    data_dir : path-like
        Folder holding the files (``data_dir/<name>/`` is searched too, so MNIST and
        Fashion-MNIST, whose files have the same names, can live side by side).
    name : str
        ``"mnist"`` or ``"fashion-mnist"``: only changes messages and the search folder.
    limit : int, optional
        Keep only the first ``limit`` training images (quick experiments).

    Returns
    -------
    tuple
        float32 images (N, 1, 28, 28) on the 0..1 scale (byte / 255) and int64 labels.
    """
    if data_dir is None:
        files = ", ".join(f"{f}[.gz]" for f in MNIST_FILES.values())
        raise ParameterError(f"{name} needs data_dir: a folder with {files}", "data_dir")
    base = Path(data_dir)
    if not base.is_dir():
        raise ValueError(f"{name}: data_dir {base} is not a folder")
    folders = [base, base / name]
    train = _images_and_labels(
        folders, MNIST_FILES["train_images"], MNIST_FILES["train_labels"], 10
    )
    test = _images_and_labels(folders, MNIST_FILES["test_images"], MNIST_FILES["test_labels"], 10)
    if train[0].shape[1:] != test[0].shape[1:]:
        raise ValueError(
            f"{name}: training images are {train[0].shape[2:]} but test images {test[0].shape[2:]}"
        )
    if limit is not None:
        limit = int(limit)
        if limit < 1:
            raise ValueError(f"{name}: limit must be a positive number of images, got {limit}")
        train = (train[0][:limit], train[1][:limit])
    return train, test
