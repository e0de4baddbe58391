"""Model files: an ``.npz`` of arrays plus one JSON header, never pickles.

Layout of a file::

    header            0-d unicode array: JSON with the spec text, input shape, cnnkit
                      version, normalisation mean/std, class names (and, in checkpoints,
                      the epoch, optimiser settings and history)
    model/<name>      parameters and buffers (Model.state naming)
    optim/<name>      optimiser state (checkpoints only)

Files are read with ``np.load(..., allow_pickle=False)``, so opening a model never runs code,
and written atomically. A checkpoint is a complete model file: ``evaluate`` and ``predict``
accept it as it is.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "cnnkit-model"
FORMAT_VERSION = 1


def save_model(
    path: str | os.PathLike[str],
    model: Any,
    meta: dict[str, Any] | None = None,
    optim_state: dict[str, np.ndarray] | None = None,
) -> None:
    """Write ``model`` (and optional optimiser state) to ``path`` atomically.

    Parameters
    ----------
    path : path-like
        Output file; written to a temporary file and renamed into place.
    model : cnnkit.nn.Model
        Its ``source`` (spec text) and ``input_shape`` go into the header.
    meta : dict, optional
        JSON-serialisable extras: ``mean``, ``std``, ``class_names``, ``dataset``,
        ``checkpoint`` (epoch, optimiser config, history).
    optim_state : dict of str to ndarray, optional
        Optimiser arrays (momentum buffers, Adam moments) for ``--resume``.
    """
    from cnnkit import __version__
    from cnnkit.io import atomic_write

    if model.source is None:
        raise ValueError("the model has no spec text to store; build it with build_model")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "cnnkit_version": __version__,
        "spec": model.source,
        "input_shape": list(model.input_shape),
        "dtype": model.dtype.name,
    }
    header.update(meta or {})
    arrays: dict[str, np.ndarray] = {"header": np.array(json.dumps(header))}
    for key, value in model.state().items():
        arrays[f"model/{key}"] = value
    for key, value in (optim_state or {}).items():
        arrays[f"optim/{key}"] = value
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)


def read_model_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and check a model file: ``(header, arrays)``, without building the model.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is not a cnnkit model (corrupt, truncated, another format, or a newer
        format version); the message names the file and the problem.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(2, "no such file", str(p))
    if p.is_dir():
        raise ValueError(f"{p}: is a folder, not a model file")
    try:
        with np.load(p, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("a single .npy array, not a model .npz")
            arrays = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, EOFError, zlib.error, KeyError, OSError, ValueError) as exc:
        detail = str(exc) or type(exc).__name__
        if "pickled" in detail:
            detail = "unknown file format"
        raise ValueError(
            f"{p}: not a readable cnnkit model file (corrupt or truncated? {detail})"
        ) from None
    if "header" not in arrays:
        raise ValueError(f"{p}: not a cnnkit model file (no header); train one with cnnkit train")
    try:
        header = json.loads(str(arrays.pop("header")))
    except (json.JSONDecodeError, TypeError):
        raise ValueError(f"{p}: the model header is not valid JSON (corrupt file?)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{p}: not a cnnkit model file (header format is not {FORMAT!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{p}: model file format version {version!r} is newer than this cnnkit reads "
            f"({FORMAT_VERSION}); upgrade cnnkit"
        )
    for key in ("spec", "input_shape"):
        if key not in header:
            raise ValueError(f"{p}: the model header lacks {key!r} (incompatible file)")
    return header, arrays


def load_model(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """Load a model file written by :func:`save_model`.

    Returns
    -------
    model : cnnkit.nn.Model
        Rebuilt from the stored spec text with the stored weights.
    header : dict
        The JSON header (mean, std, class names, checkpoint info...). Optimiser arrays, if
        any, are in ``header["_optim_arrays"]``.
    """
    from cnnkit.nn.model import build_model

    header, arrays = read_model_file(path)
    try:
        model = build_model(
            header["spec"],
            tuple(int(s) for s in header["input_shape"]),
            dtype=np.dtype(header.get("dtype", "float32")),
        )
    except ValueError as exc:
        raise ValueError(f"{path}: the stored architecture does not build here: {exc}") from None
    weights = {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}
    try:
        model.load_state(weights)
    except ValueError as exc:
        raise ValueError(f"{path}: incompatible model file: {exc}") from None
    header["_optim_arrays"] = {
        k[len("optim/") :]: v for k, v in arrays.items() if k.startswith("optim/")
    }
    return model, header


__all__ = ["FORMAT", "FORMAT_VERSION", "load_model", "read_model_file", "save_model"]
