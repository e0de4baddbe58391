"""What a command loads: `cnnkit filter` on a PNG loads its kernels without Numba's
compiler registries, and nothing it does not use (checked by module lists, not by timing)."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from numba.core.dispatcher import Dispatcher
from PIL import Image

import cnnkit.kernels
from cnnkit import cache
from cnnkit.kernels import KernelCache

CAMERA = Path(__file__).resolve().parent.parent / "sample_images" / "camera.png"

# Runs `cnnkit filter ARGS...` in this process as the console script does, then prints what
# was imported and which kernels hold compiled code, as JSON on the last line of stdout.
PROBE = """
import json, sys
from cnnkit.cli.app import main
sys.argv = ["cnnkit", "filter", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
from numba.core.dispatcher import Dispatcher
loaded = sorted(
    f"{name}.{attr}"
    for name, module in list(sys.modules.items())
    if name.startswith("cnnkit.kernels.")
    for attr, value in vars(module).items()
    if isinstance(value, Dispatcher) and value.overloads
)
print(json.dumps({"modules": sorted(sys.modules), "loaded": loaded}))
"""


def _filter_process(cache_dir: Path, *args: str) -> dict[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env[cache.ENV_VAR] = str(cache_dir)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_every_kernel_loads_from_the_cache_lightly():
    """Each kernel module ends with load_lightly(globals()), new modules included."""
    modules = [
        importlib.import_module(f"cnnkit.kernels.{info.name}")
        for info in pkgutil.iter_modules(cnnkit.kernels.__path__)
    ]
    kernels = [
        (module.__name__, name, value)
        for module in modules
        for name, value in vars(module).items()
        if isinstance(value, Dispatcher) and value.__module__ == module.__name__
    ]
    assert len(kernels) >= 10
    plain = [f"{m}.{n}" for m, n, k in kernels if not isinstance(k._cache, KernelCache)]
    assert plain == []


def test_filter_on_a_png_loads_only_filter_kernels_and_no_registries(tmp_path):
    """A first run with an empty cache compiles (Numba's registries load); the second loads
    the kernels from the cache: the same picture, without the registries
    (numba.np.arraymath imports scipy.linalg) and without plotting."""
    kernels, first, second = tmp_path / "kernels", tmp_path / "first.png", tmp_path / "second.png"
    compiled = _filter_process(kernels, str(CAMERA), "-k", "sobel-x", "-o", str(first))
    loaded = _filter_process(kernels, str(CAMERA), "-k", "sobel-x", "-o", str(second))
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))
    assert "numba.np.arraymath" in compiled["modules"]
    modules = set(loaded["modules"])
    unwanted = {"numba.np.arraymath", "numba.np.linalg", "scipy.linalg", "matplotlib"}
    unwanted |= {"rich.progress", "cnnkit.plots", "cnnkit.train", "cnnkit.nn"}
    assert modules & unwanted == set()
    # a kernel that another one calls is compiled on its own but loaded inside its caller
    assert set(loaded["loaded"]) <= set(compiled["loaded"])
    assert loaded["loaded"], "no kernel ran"
    families = {name.rsplit(".", 1)[0] for name in loaded["loaded"]}
    assert families <= {"cnnkit.kernels.conv", "cnnkit.kernels.filter2d"}
