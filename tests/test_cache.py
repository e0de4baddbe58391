"""Compiled kernels are cached per user, never inside the installed package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import cnnkit
from cnnkit import cache

PACKAGE = Path(cnnkit.__file__).resolve().parent


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("NUMBA_CACHE_DIR", cache.ENV_VAR, "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG layout is for Linux")
def test_default_is_the_xdg_cache_folder(clean_env, tmp_path):
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.kernel_cache_dir() == tmp_path / "xdg" / "cnnkit"
    clean_env.delenv("XDG_CACHE_HOME")
    clean_env.setenv("HOME", str(tmp_path / "home"))
    assert cache.kernel_cache_dir() == tmp_path / "home" / ".cache" / "cnnkit"


def test_cnnkit_variable_overrides_and_numba_variable_wins(clean_env, tmp_path):
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    clean_env.setenv(cache.ENV_VAR, str(tmp_path / "mine"))
    assert cache.kernel_cache_dir() == tmp_path / "mine"
    clean_env.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    assert cache.kernel_cache_dir() == tmp_path / "numba"


def test_unusable_cache_root_falls_back_to_a_temporary_folder(clean_env, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("a file where the cache folder should be")
    clean_env.setenv("XDG_CACHE_HOME", str(not_a_folder))
    clean_env.setenv("LOCALAPPDATA", str(not_a_folder))
    clean_env.setenv("HOME", str(not_a_folder))
    chosen = cache.kernel_cache_dir()
    assert not str(chosen).startswith(str(not_a_folder))
    assert chosen.name.startswith("cnnkit-cache-")


def test_compiled_kernels_land_in_the_cache_folder_not_the_package(tmp_path):
    """A real process compiles a pooling kernel: its cache files go to the chosen folder."""
    before = set(PACKAGE.rglob("*.nbi"))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env[cache.ENV_VAR] = str(tmp_path / "kernels")
    code = (
        "import numpy as np, cnnkit, numba\n"
        "x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)\n"
        "print(float(cnnkit.max_pool2d(x, 2).sum()), numba.config.CACHE_DIR)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    total, where = done.stdout.split()
    assert float(total) == 5 + 7 + 13 + 15
    assert Path(where) == tmp_path / "kernels"
    assert list((tmp_path / "kernels").rglob("*.nbi")), "no index files in the cache folder"
    assert set(PACKAGE.rglob("*.nbi")) == before, "Numba wrote into the package"


def test_kernel_caches_are_stamped_with_every_kernel_module():
    """A kernel compiles in what it calls from other kernel modules, so its cache entries
    must go stale when any of them changes, not only its own file."""
    from cnnkit import kernels
    from cnnkit.kernels import winograd

    stamp = kernels.kernels_stamp()
    assert {"spin.py", "blas.py", "core.py", "direct.py", "winograd.py"} <= {s[0] for s in stamp}
    cache = winograd.forward_chunk._cache
    if not isinstance(cache, kernels.KernelCache):
        pytest.skip("this Numba lacks the private pieces KernelCache relies on")
    assert cache._cache_file._source_stamp == stamp
