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
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit import __version__
from cnnkit.arch import parse_text
from cnnkit.io import atomic_write, read_npz
from cnnkit.memory import MemoryBudgetError
from cnnkit.nn.layers import INIT_SCHEMES
from cnnkit.nn.model import Model

FORMAT = "cnnkit-model"
FORMAT_VERSION = 1


def save_model(
    path: str | os.PathLike[str],
    model: Model,
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


# ------------------------------------------------------------------------------ the schema
# Every header field a model file may carry, with its type and range. A file is checked
# against it as a whole before anything is built, so a tampered or damaged file ends in one
# line naming the field, never in a TypeError or KeyError deep inside the loader.

_MAX_TEXT = 1 << 20
_BIG = 2**31 - 1


class _Bad(Exception):
    """A schema violation: (what was expected, the value found)."""


#: A header check: returns None or raises _Bad saying what the value should have been.
Checker = Callable[[Any], None]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:28]}...{text[-28:]}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _text(max_len: int = 4096, optional: bool = False) -> Checker:
    def check(v: Any) -> None:
        if v is None and optional:
            return
        if not isinstance(v, str) or len(v) > max_len:
            raise _Bad(
                f"a string of at most {max_len:,} characters" + (" or null" if optional else "")
            )

    return check


def _integer(lo: int, hi: int) -> Checker:
    def check(v: Any) -> None:
        if not _is_int(v) or not lo <= v <= hi:
            raise _Bad(f"an integer in {lo:,} .. {hi:,}")

    return check


def _number(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Checker:
    def check(v: Any) -> None:
        ok = _is_num(v) and math.isfinite(v)
        ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if not ok:
            left, right = "(" if lo_open else "[", ")" if hi_open else "]"
            raise _Bad(f"a finite number in {left}{lo:g}, {hi:g}{right}")

    return check


def _any_number(optional: bool = False) -> Checker:
    def check(v: Any) -> None:
        if (v is None and optional) or _is_num(v):
            return
        raise _Bad("a number" + (" or null" if optional else ""))

    return check


def _boolean(v: Any) -> None:
    if not isinstance(v, bool):
        raise _Bad("true or false")


def _choice(*values: str) -> Checker:
    def check(v: Any) -> None:
        if v not in values:
            raise _Bad("one of " + ", ".join(values))

    return check


def _list(item: Checker, lo: int, hi: int) -> Checker:
    def check(v: Any) -> None:
        if not isinstance(v, list) or not lo <= len(v) <= hi:
            raise _Bad(f"a list of {lo:,} .. {hi:,} entries")
        for k, entry in enumerate(v):
            try:
                item(entry)
            except _Bad as exc:
                raise _Bad(f"a list whose entries are {exc} (entry {k} is not)") from None

    return check


def _object(
    fields: dict[str, Checker], required: tuple[str, ...] = (), exact: bool = False
) -> Checker:
    def check(v: Any) -> None:
        if not isinstance(v, dict):
            raise _Bad("a JSON object")
        missing = [k for k in required if k not in v]
        if missing:
            raise _Bad(f"an object with the key {missing[0]!r}")
        if exact and set(v) != set(fields):
            extra = sorted(set(v) ^ set(fields))
            raise _Bad(f"an object with exactly the keys {', '.join(fields)} (not {extra[0]!r})")
        for key, checker in fields.items():
            if key in v:
                try:
                    checker(v[key])
                except _Bad as exc:
                    raise _Bad(f"an object whose {key!r} is {exc}") from None

    return check


_PREPROCESS = _object(
    {
        "invert": _choice("never", "always", "auto"),
        "fit": _choice("stretch", "content"),
        "margin": _number(0.0, 0.5, hi_open=True),
        "native_size": lambda v: None if v is None else _list(_integer(1, 65536), 2, 2)(v),
        "resample": _choice("box", "bilinear"),
        "pixel_max": _number(0.0, 1e12, lo_open=True),
    }
)

_CONFIG = _object(
    {
        "epochs": _integer(1, 10**9),
        "batch_size": _integer(1, _BIG),
        "lr": _number(0.0, 1e6, lo_open=True),
        "optimizer": _choice("sgd", "adam"),
        "momentum": _number(0.0, 1e6),
        "nesterov": _boolean,
        "weight_decay": _number(0.0, 1e6),
        "schedule": _choice("none", "step", "cosine"),
        "seed": _integer(0, 2**63 - 1),
        "init": _choice(*INIT_SCHEMES),
        "val_fraction": _number(0.0, 1.0, hi_open=True),
        "augment": _boolean,
    }
)

_OPTIMIZER = _object(
    {
        "name": _choice("sgd", "adam"),
        "lr": _number(0.0, 1e6, lo_open=True),
        "t": _integer(0, 2**62),
        "momentum": _number(0.0, 1e6),
        "nesterov": _boolean,
        "weight_decay": _number(0.0, 1e6),
        "beta1": _number(0.0, 1.0, hi_open=True),
        "beta2": _number(0.0, 1.0, hi_open=True),
        "eps": _number(0.0, 1.0, lo_open=True),
    }
)

_EPOCH = _object(
    {
        "epoch": _integer(1, 10**9),
        "lr": _any_number(),
        "train_loss": _any_number(),
        "train_accuracy": _any_number(),
        "val_loss": _any_number(optional=True),
        "val_accuracy": _any_number(optional=True),
        "images_per_s": _any_number(),
        "seconds": _any_number(),
    },
    exact=True,
)

_CHECKPOINT = _object(
    {
        "epoch": _integer(0, 10**9),
        "config": _CONFIG,
        "optimizer": _OPTIMIZER,
        "history": _list(_EPOCH, 0, 10**6),
    },
    required=("epoch", "config", "optimizer"),
)

#: Every header field: its checker. ``format`` and ``format_version`` are checked first.
HEADER_SCHEMA: dict[str, Checker] = {
    "cnnkit_version": _text(100),
    "spec": _text(_MAX_TEXT),
    "input_shape": _list(_integer(1, _BIG), 3, 3),
    "dtype": _choice("float32", "float64"),
    "dataset": _text(100, optional=True),
    "split_seed": _integer(0, 2**63 - 1),
    "val_fraction": _number(0.0, 1.0, hi_open=True),
    "data_dir": _text(4096, optional=True),
    "class_names": _list(_text(1000), 1, 65536),
    "mean": _list(_number(-1e12, 1e12), 1, 4096),
    "std": _list(_number(0.0, 1e12, lo_open=True), 1, 4096),
    "preprocess": lambda v: None if v is None else _PREPROCESS(v),
    "checkpoint": lambda v: None if v is None else _CHECKPOINT(v),
}
_REQUIRED = ("spec", "input_shape")


def check_header(header: Any, where: str) -> dict[str, Any]:
    """Validate a decoded model header against :data:`HEADER_SCHEMA`; return it.

    Raises
    ------
    ValueError
        One line: the file, the field, what it must be and what it is.
    """
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{where}: not a cnnkit model file (header format is not {FORMAT!r})")
    version = header.get("format_version")
    if not _is_int(version) or version < 1:
        raise ValueError(f"{where}: the model header's format_version must be an integer >= 1")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where}: model file format version {version!r} is newer than this cnnkit reads "
            f"({FORMAT_VERSION}); upgrade cnnkit"
        )
    for key in _REQUIRED:
        if key not in header:
            raise ValueError(f"{where}: the model header lacks {key!r} (incompatible file)")
    for key, checker in HEADER_SCHEMA.items():
        if key in header:
            try:
                checker(header[key])
            except _Bad as exc:
                raise ValueError(
                    f"{where}: model header field {key!r} must be {exc}; "
                    f"found {_short(header[key])}"
                ) from None
    channels = header["input_shape"][0]
    for key in ("mean", "std"):
        if key in header and len(header[key]) not in (1, channels):
            raise ValueError(
                f"{where}: model header field {key!r} has {len(header[key])} values for "
                f"{channels} input channels"
            )
    return header


def _decode_header(raw: np.ndarray, where: str) -> Any:
    if raw.shape != () or raw.dtype.kind != "U":
        raise ValueError(f"{where}: the model header must be one text string")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{where}: the model header repeats a key")
        return dict(pairs)

    try:
        return json.loads(str(raw), object_pairs_hook=unique)
    except json.JSONDecodeError:
        raise ValueError(f"{where}: the model header is not valid JSON (corrupt file?)") from None
    except RecursionError:
        raise ValueError(f"{where}: the model header is nested too deeply") from None
    except ValueError as exc:  # also Python's limit on digits of an integer
        if str(exc).startswith(where):
            raise
        raise ValueError(f"{where}: the model header cannot be read ({exc})") from None


def read_model_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and check a model file: ``(header, arrays)``, without building the model.

    The archive is read member by member with size checks (:func:`cnnkit.io.read_npz`); the
    header is checked against :data:`HEADER_SCHEMA`; every array must be a finite float32 or
    float64 array named ``model/...`` or ``optim/...``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is not a cnnkit model (corrupt, truncated, another format, a newer format
        version, a header field of the wrong type or range, NaN or infinite weights); the
        message names the file and the problem.
    """

    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p}: is a folder, not a model file")
    try:
        arrays = read_npz(p, "model file", kinds="fU")
    except MemoryBudgetError:
        raise
    except ValueError as exc:
        message = str(exc).replace("not a readable .npz file", "not a readable cnnkit model file")
        raise ValueError(message) from None
    if "header" not in arrays:
        raise ValueError(f"{p}: not a cnnkit model file (no header); train one with cnnkit train")
    header = check_header(_decode_header(arrays.pop("header"), str(p)), str(p))
    for key, value in arrays.items():
        if not key.startswith(("model/", "optim/")):
            raise ValueError(f"{p}: unexpected array {key!r} in a model file")
        if value.dtype not in (np.float32, np.float64):
            raise ValueError(f"{p}: array {key!r} has dtype {value.dtype}, not float32/float64")
        if not np.isfinite(value).all():
            raise ValueError(f"{p}: array {key!r} holds NaN or infinite values (damaged file?)")
    return header, arrays


def load_model(path: str | os.PathLike[str]) -> tuple[Model, dict[str, Any]]:
    """Load a model file written by :func:`save_model`.

    The architecture is the spec text stored in the header, parsed as text: a model file
    never makes cnnkit read another file.

    Returns
    -------
    model : cnnkit.nn.Model
        Rebuilt from the stored spec text with the stored weights.
    header : dict
        The JSON header (mean, std, class names, checkpoint info...). Optimiser arrays, if
        any, are in ``header["_optim_arrays"]``.
    """

    header, arrays = read_model_file(path)
    try:
        arch = parse_text(header["spec"], tuple(header["input_shape"]), name="model")
        model = Model(arch, dtype=np.dtype(header.get("dtype", "float32")), source=header["spec"])
    except ValueError as exc:
        raise ValueError(f"{path}: the stored architecture does not build here: {exc}") from None
    names = header.get("class_names")
    if names is not None and model.num_outputs and len(names) != model.num_outputs:
        raise ValueError(
            f"{path}: the header names {len(names)} classes but the model outputs "
            f"{model.num_outputs} scores"
        )
    weights = {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}
    try:
        model.load_state(weights)
    except ValueError as exc:
        raise ValueError(f"{path}: incompatible model file: {exc}") from None
    header["_optim_arrays"] = {
        k[len("optim/") :]: v for k, v in arrays.items() if k.startswith("optim/")
    }
    return model, header


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "HEADER_SCHEMA",
    "check_header",
    "load_model",
    "read_model_file",
    "save_model",
]
