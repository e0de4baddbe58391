"""The implementations being timed: cnnkit's methods and the peers (NumPy, SciPy, OpenCV,
PyTorch), each a zero-argument callable returning the operation's outputs.

PyTorch, SciPy and OpenCV are never runtime dependencies: they are imported only inside the
worker process that times them, and only when installed.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from cnnkit.bench.cases import SEPARABLE, Case
from cnnkit.bench.oracle import as4, pad, taps

CONV_METHODS = ("loop", "im2col", "winograd", "auto")
PEERS = ("numpy", "scipy", "opencv", "torch")
LIBRARIES = ("cnnkit", *PEERS)

PEER_MODULES = {
    "cnnkit": "cnnkit.ops",
    "numpy": "numpy",
    "scipy": "scipy.ndimage",
    "opencv": "cv2",
    "torch": "torch",
}
PEER_INSTALL = {
    "scipy": "pip install 'cnnkit[compare]'",
    "opencv": "pip install 'cnnkit[compare]'",
    "torch": "pip install torch --index-url https://download.pytorch.org/whl/cpu",
}

# Which peers can compute which operation.
PEER_OPS = {
    "numpy": {"filter", "conv2d", "conv1d", "conv2d_backward", "max_pool2d", "avg_pool2d"},
    "scipy": {"filter"},
    "opencv": {"filter", "separable"},
    "torch": {"filter", "conv2d", "conv1d", "conv2d_backward", "max_pool2d", "avg_pool2d"},
}

Impl = Callable[[], tuple[Any, ...]]


def missing_peers(wanted: Iterable[str]) -> dict[str, str]:
    """``{peer: why}`` for the wanted peers that are not installed (nothing is imported)."""
    missing = {}
    for peer in wanted:
        top = PEER_MODULES[peer].split(".")[0]
        try:
            found = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing[peer] = f"{top} not installed ({PEER_INSTALL[peer]})"
    return missing


def import_library(library: str) -> Any:
    """The module that implements ``library`` (``cnnkit.ops`` for cnnkit)."""
    return importlib.import_module(PEER_MODULES[library])


def set_threads(library: str, module: Any, threads: int) -> None:
    """Set ``library``'s own thread pool (BLAS and Numba are fixed by ``fix_threads``)."""
    if library == "torch":
        if module.get_num_threads() != threads:
            module.set_num_threads(threads)
    elif library == "opencv":
        module.setNumThreads(threads)


def thread_choices(library: str, threads: int) -> tuple[int, ...]:
    """Thread counts a library is timed at: PyTorch at 1 and ``threads`` (its better one
    counts), everything else at ``threads``."""
    if library == "torch" and threads > 1:
        return (1, threads)
    return (threads,)


def implementations(
    library: str, module: Any, case: Case, arrays: dict[str, np.ndarray]
) -> dict[str, Impl]:
    """``{name: callable}`` for ``case`` in ``library`` (empty when it cannot compute it)."""
    if library == "cnnkit":
        return cnnkit_impls(case, module, arrays)
    if case.peer_op not in PEER_OPS[library]:
        return {}
    return {library: peer_impl(library, module, case, arrays)}


def _ops_kwargs(case: Case) -> dict[str, Any]:
    if case.op == "conv1d":
        return {"stride": case.stride[1], "padding": case.padding[1]}
    return {"stride": case.stride, "padding": case.padding}


def cnnkit_impls(case: Case, ops: Any, arrays: dict[str, np.ndarray]) -> dict[str, Impl]:
    """cnnkit's implementations of ``case``: one per method for convolutions.

    ``ops`` provides conv1d/conv2d/conv2d_backward/max_pool2d/avg_pool2d with the signatures
    of :mod:`cnnkit.ops` (tests pass stand-ins).
    """
    x = arrays["x"]
    kw = _ops_kwargs(case)
    methods = [m for m in CONV_METHODS if m != "winograd" or _winograd_case(case)]
    if case.op in ("conv2d", "conv1d"):
        fn = getattr(ops, case.op)
        w = arrays["w"]
        return {m: (lambda m=m: (fn(x, w, method=m, **kw),)) for m in methods}
    if case.op == "conv2d_backward":
        w, gy = arrays["w"], arrays["gy"]
        return {
            m: (lambda m=m: tuple(ops.conv2d_backward(gy, x, w, method=m, **kw))) for m in methods
        }
    fn = getattr(ops, case.op)
    return {"cnnkit": lambda: (fn(x, case.kernel, case.stride, case.padding),)}


def _winograd_case(case: Case) -> bool:
    """Whether cnnkit's ``method="winograd"`` is timed on ``case``: a 3x3 stride-1 conv layer
    (single-image filters have one channel, where it cannot win, and megapixel planes)."""
    layer = case.op != "conv1d" and case.group not in ("filter", "separable")
    return layer and case.kernel == (3, 3) and case.stride == (1, 1)


def auto_choice(case: Case, ops: Any) -> str | None:
    """The method ``method="auto"`` picks for ``case``, when ops exposes ``choose_method``."""
    choose = getattr(ops, "choose_method", None)
    if not case.is_conv or choose is None:
        return None
    factor = getattr(ops, "separable_factors", None)
    if factor is not None and case.op == "conv2d" and case.stride == (1, 1) and case.weights:
        col, row = SEPARABLE[case.weights]
        if factor(np.outer(col, row)[None, None].astype(np.float32), 1) is not None:
            return "separable"
    kh, kw = case.kernel
    oh, ow = case.out_hw
    n, c = case.x4[:2]
    o = case.w_shape[0]  # type: ignore[index]
    unit = case.stride == (1, 1)
    blocked = getattr(ops, "blocked_applies", None)
    nd = 1 if case.op == "conv1d" else 2
    try:
        return str(
            choose(
                c,
                kh * kw,
                o,
                n_batch=n,
                n_positions=oh * ow,
                out_width=ow if unit else None,
                backward=case.op == "conv2d_backward",
                winograd=_winograd_case(case),
                blocked=blocked is not None
                and blocked(nd, np.float32, case.kernel, case.stride, (1, 1), 1, o, ow),
            )
        )
    except TypeError:  # a stand-in with the older signature
        return str(choose(c, kh * kw, o))


def numpy_im2col(xp: np.ndarray, case: Case) -> np.ndarray:
    """Textbook im2col in numpy: ``(N, C*kh*kw, OH*OW)`` patch columns of a padded input."""
    n, c = xp.shape[:2]
    kh, kw = case.kernel
    oh, ow = case.out_hw
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=xp.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = taps(xp, i, j, case)
    return cols.reshape(n, c * kh * kw, oh * ow)


def numpy_impl(case: Case, arrays: dict[str, np.ndarray]) -> Impl:
    """The textbook peer: im2col + matmul (and col2im by tap sums for the input gradient)."""
    x4 = as4(arrays["x"])
    if case.op in ("max_pool2d", "avg_pool2d"):
        from numpy.lib.stride_tricks import sliding_window_view

        is_max = case.op == "max_pool2d"
        sh, sw = case.stride

        def pool() -> tuple[np.ndarray, ...]:
            xp = pad(x4, case, -np.inf if is_max else 0.0).astype(np.float32, copy=False)
            win = sliding_window_view(xp, case.kernel, axis=(2, 3))[:, :, ::sh, ::sw]
            return (win.max(axis=(4, 5)) if is_max else win.mean(axis=(4, 5), dtype=np.float32),)

        return pool

    w4 = as4(arrays["w"])
    o = w4.shape[0]
    wmat = w4.reshape(o, -1)
    oh, ow = case.out_hw

    if case.op != "conv2d_backward":

        def forward() -> tuple[np.ndarray, ...]:
            y = np.matmul(wmat, numpy_im2col(pad(x4, case), case))
            return (y.reshape(case.out_shape),)

        return forward

    gy = arrays["gy"]

    def backward() -> tuple[np.ndarray, ...]:
        xp = pad(x4, case)
        cols = numpy_im2col(xp, case)
        g = gy.reshape(gy.shape[0], o, oh * ow)
        gw = np.einsum("nol,nkl->ok", g, cols, optimize=True).reshape(w4.shape)
        gcols = np.matmul(wmat.T, g).reshape(xp.shape[0], xp.shape[1], *case.kernel, oh, ow)
        gxp = np.zeros_like(xp)
        sh, sw = case.stride
        for i in range(case.kernel[0]):
            for j in range(case.kernel[1]):
                gxp[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw] += gcols[
                    :, :, i, j
                ]
        ph, pw = case.padding
        gx = gxp[:, :, ph : ph + x4.shape[2], pw : pw + x4.shape[3]]
        return (gx, gw, gy.sum(axis=(0, 2, 3)))

    return backward


def peer_impl(peer: str, module: Any, case: Case, arrays: dict[str, np.ndarray]) -> Impl:
    """A peer's implementation of ``case`` (``module`` is the imported peer library)."""
    if peer == "numpy":
        return numpy_impl(case, arrays)
    x = arrays["x"]
    if peer == "scipy":
        img, k = x[0, 0], arrays["w"][0, 0]
        return lambda: (module.correlate(img, k, mode="constant", cval=0.0)[None, None],)
    if peer == "opencv" and case.weights:
        img = x[0, 0]
        col, row = (f.astype(np.float32) for f in SEPARABLE[case.weights])
        return lambda: (
            module.sepFilter2D(img, -1, row, col, borderType=module.BORDER_CONSTANT)[None, None],
        )
    if peer == "opencv":
        img, k = x[0, 0], arrays["w"][0, 0]
        # filter2D computes correlation (no kernel flip), anchored at the kernel centre.
        return lambda: (module.filter2D(img, -1, k, borderType=module.BORDER_CONSTANT)[None, None],)
    if peer == "torch":
        return _torch_impl(module, case, arrays)
    raise ValueError(f"unknown peer {peer!r}")


def _torch_impl(torch: Any, case: Case, arrays: dict[str, np.ndarray]) -> Impl:
    functional = torch.nn.functional
    x = torch.from_numpy(arrays["x"])
    if case.op in ("max_pool2d", "avg_pool2d"):
        fn = getattr(functional, case.op)
        return lambda: (fn(x, case.kernel, case.stride, case.padding),)
    w = torch.from_numpy(arrays["w"])
    if case.op == "conv1d":
        return lambda: (functional.conv1d(x, w, stride=case.stride[1], padding=case.padding[1]),)
    if case.op == "conv2d":
        return lambda: (functional.conv2d(x, w, stride=case.stride, padding=case.padding),)
    gy = torch.from_numpy(arrays["gy"])
    # The kernel autograd calls for Conv2d's backward, without the autograd bookkeeping.
    backward = torch.ops.aten.convolution_backward

    def run() -> tuple[Any, ...]:
        return tuple(
            backward(
                gy,
                x,
                w,
                [w.shape[0]],
                list(case.stride),
                list(case.padding),
                [1, 1],
                False,
                [0, 0],
                1,
                [True, True, True],
            )
        )

    return run


def to_numpy(outputs: Iterable[Any]) -> list[np.ndarray]:
    """Outputs (numpy arrays or torch tensors) as numpy arrays."""
    return [o.detach().numpy() if hasattr(o, "detach") else np.asarray(o) for o in outputs]
