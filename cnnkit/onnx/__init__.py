"""ONNX in both directions: export trained cnnkit models, read any ONNX file's architecture.

- :mod:`cnnkit.onnx.reader` opens an ONNX file safely (the protobuf is parsed, nothing in
  it is executed or loaded from elsewhere) into a neutral list of nodes;
  :mod:`cnnkit.onnx.resolve` maps those onto cnnkit's layer kinds and
  :mod:`cnnkit.onnx.to_graph` builds the :class:`cnnkit.arch.Graph` that ``cnnkit shape``
  and ``cnnkit receptive-field`` read (``arch.parse`` hands it any path ending ``.onnx``).
- :mod:`cnnkit.onnx.writer` turns a trained :class:`cnnkit.nn.Model` into an ONNX file
  (``cnnkit export``); :mod:`cnnkit.onnx.weights` brings an ONNX model with its weights
  back as a model file (``cnnkit import``).

Both need the optional ``onnx`` extra (``pip install "cnnkit[onnx]"``); without it every entry
point raises :class:`MissingExtra`, a ``ValueError`` whose message says what to install.
"""

from __future__ import annotations

from types import ModuleType

EXTRA_HINT = 'install the onnx extra: pip install "cnnkit[onnx]"'


class MissingExtra(ValueError):
    """The ``onnx`` package (or ``onnxruntime`` where needed) is not installed."""


def require(package: str = "onnx") -> ModuleType:
    """Import and return ``package`` (``onnx`` or ``onnxruntime``), or raise :class:`MissingExtra`.

    Parameters
    ----------
    package : str
        The module to import.

    Returns
    -------
    module
        The imported module.
    """
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise MissingExtra(
            f"reading and writing ONNX files needs {package}; {EXTRA_HINT}"
        ) from None


def is_onnx_path(source: str) -> bool:
    """True when ``source`` names an ONNX file (ends in ``.onnx``, any case)."""
    return str(source).lower().endswith(".onnx")


__all__ = ["EXTRA_HINT", "MissingExtra", "is_onnx_path", "require"]
