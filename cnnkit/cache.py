"""Where cnnkit keeps Numba's compiled kernels: a per-user cache folder, never the package.

Numba's default (``cache=True`` without ``NUMBA_CACHE_DIR``) writes ``.nbi``/``.nbc`` files
into the installed package's ``__pycache__``. That breaks two ways: a read-only
site-packages cannot hold them, and ``pip uninstall`` leaves them behind, so a later install
finds ``site-packages/cnnkit`` as a namespace package and the kernels fail to import.

Order of choice:

1. ``NUMBA_CACHE_DIR``, when the user set it (Numba reads it itself);
2. ``CNNKIT_CACHE_DIR``;
3. the platform's per-user cache folder + ``cnnkit``: ``$XDG_CACHE_HOME`` or ``~/.cache`` on
   Linux and other Unix, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows;
4. a per-user folder in the system's temporary directory, when none of those is writable.

Numba keeps one sub-folder per source folder (a hash of its path), so two installs or
checkouts never share compiled code.
"""

from __future__ import annotations

import getpass
import os
import sys
import tempfile
from pathlib import Path

ENV_VAR = "CNNKIT_CACHE_DIR"


def user_cache_root() -> Path:
    """The platform's per-user cache folder (not created)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def kernel_cache_dir() -> Path:
    """The folder Numba's compiled kernels go to (created if needed).

    Returns
    -------
    Path
        ``NUMBA_CACHE_DIR`` if set, else ``CNNKIT_CACHE_DIR``, else ``<user cache>/cnnkit``;
        a per-user folder under the temporary directory when that is not writable.
    """
    for variable in ("NUMBA_CACHE_DIR", ENV_VAR):
        chosen = os.environ.get(variable)
        if chosen:
            return Path(chosen).expanduser()
    try:
        preferred = user_cache_root() / "cnnkit"
    except RuntimeError:  # no home folder to be found
        preferred = None
    if preferred is not None and _writable(preferred):
        return preferred
    user = os.getuid() if hasattr(os, "getuid") else getpass.getuser()
    return Path(tempfile.gettempdir()) / f"cnnkit-cache-{user}"


def configure_numba() -> Path:
    """Point Numba's cache at :func:`kernel_cache_dir`; call before any ``@njit(cache=True)``.

    Sets both the environment (for worker processes) and ``numba.config.CACHE_DIR`` (Numba
    read its environment when it was first imported, which may have been before cnnkit).
    """
    import numba

    folder = kernel_cache_dir()
    os.environ.setdefault("NUMBA_CACHE_DIR", str(folder))
    numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
    return folder
