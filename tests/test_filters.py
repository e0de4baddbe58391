"""cnnkit.filters: the kernel bank against independent definitions (scipy, OpenCV, explicit
formulas), the kernel syntax and its error messages, and ``apply_bank`` (which runs
cnnkit.ops) against scipy.ndimage / scipy.signal / numpy for every option."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnkit import filters
from cnnkit.geometry import conv_output_size

ndi = pytest.importorskip("scipy.ndimage")
signal = pytest.importorskip("scipy.signal")

# cnnkit pad_mode -> scipy.ndimage mode. PyTorch's "reflect" does not repeat the edge sample,
# which scipy calls "mirror".
SCIPY_MODE = {"zeros": "constant", "reflect": "mirror", "replicate": "nearest", "circular": "wrap"}


# ---------------------------------------------------------------------------------------------
# The bank


@pytest.mark.parametrize(
    "name, smooth, diff",
    [
        ("sobel", [1, 2, 1], [-1, 0, 1]),
        ("prewitt", [1, 1, 1], [-1, 0, 1]),
        ("scharr", [3, 10, 3], [-1, 0, 1]),
    ],
)
def test_derivative_kernels_are_smoothing_times_difference(name, smooth, diff):
    x = filters.parse_kernel(f"{name}-x").weights
    y = filters.parse_kernel(f"{name}-y").weights
    np.testing.assert_array_equal(x, np.outer(smooth, diff))
    np.testing.assert_array_equal(y, np.outer(diff, smooth))


def test_sobel_x_matches_scipy_sobel_on_an_image(rng):
    img = rng.random((9, 11))
    w = filters.parse_kernel("sobel-x").weights
    # scipy.ndimage.sobel(axis=1) is the same cross-correlation (derivative along columns)
    np.testing.assert_allclose(
        ndi.correlate(img, w, mode="nearest"), ndi.sobel(img, axis=1, mode="nearest")
    )


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.0])
def test_gaussian_is_scipys_impulse_response(sigma):
    w = filters.parse_kernel(f"gaussian:sigma={sigma}").weights
    n = w.shape[0]
    assert n == 2 * math.ceil(3 * sigma) + 1
    delta = np.zeros((n, n))
    delta[n // 2, n // 2] = 1
    # scipy truncates at radius int(3 sigma + 0.5); for these sigmas that is our radius
    ref = ndi.gaussian_filter(delta, sigma, mode="constant", truncate=3.0)
    np.testing.assert_allclose(w, ref / ref.sum(), atol=1e-12)
    np.testing.assert_allclose(w.sum(), 1.0)


def test_gaussian_one_d_and_explicit_size():
    w = filters.parse_kernel("gaussian:1,5", ndim=1).weights
    r = np.arange(5) - 2
    ref = np.exp(-(r**2) / 2.0)
    np.testing.assert_allclose(w, ref / ref.sum())


def test_log_matches_formula_loop_and_sums_to_zero():
    sigma, size = 1.4, 9
    w = filters.parse_kernel(f"log:sigma={sigma},size={size}").weights
    ref = np.empty((size, size))
    for i in range(size):
        for j in range(size):
            r2 = (i - size // 2) ** 2 + (j - size // 2) ** 2
            ref[i, j] = (
                -1
                / (math.pi * sigma**4)
                * (1 - r2 / (2 * sigma**2))
                * math.exp(-r2 / (2 * sigma**2))
            )
    ref -= ref.mean()
    np.testing.assert_allclose(w, ref, atol=1e-15)
    assert abs(w.sum()) < 1e-12
    assert w[size // 2, size // 2] == w.min()


@pytest.mark.parametrize("theta", [0.0, 30.0, 90.0, 135.0])
def test_gabor_matches_opencv(theta):
    cv2 = pytest.importorskip("cv2")
    sigma, lambd, gamma = 2.0, 5.0, 0.6
    w = filters.parse_kernel(
        f"gabor:sigma={sigma},theta={theta},lambda={lambd},gamma={gamma},psi=0,size=11"
    ).weights
    ref = cv2.getGaborKernel((11, 11), sigma, math.radians(theta), lambd, gamma, 0, cv2.CV_64F)
    # OpenCV's matrix, then the mean removed: a flat region gives 0
    np.testing.assert_allclose(w, ref - ref.mean(), atol=1e-12)


@pytest.mark.parametrize("params", ["", "theta=30,psi=0", "sigma=3,lambda=4,psi=45"])
def test_gabor_is_zero_mean_and_states_its_units(params):
    w = filters.parse_kernel("gabor" + (f":{params}" if params else "")).weights
    assert abs(w.sum()) < 1e-12
    flat = filters.apply_bank(np.full((1, 20, 20), 200.0), [w])
    np.testing.assert_allclose(flat.y, 0, atol=1e-9)
    theta = {p.name: p for p in filters.BANK["gabor"].params}["theta"]
    assert "degrees" in theta.help and "degrees" in filters.BANK["gabor"].description


def test_gabor_phase_shifts_the_cosine():
    w0 = filters.gabor(sigma=2, theta=0, lambd=6, gamma=1, psi=0, size=7)
    w90 = filters.gabor(sigma=2, theta=0, lambd=6, gamma=1, psi=90, size=7)
    x = np.arange(7) - 3
    env = np.exp(-(x**2) / 8)
    # the middle row of the raw Gabor, shifted by the kernel's mean
    np.testing.assert_allclose(
        w0[3] - w0[3].mean(),
        (env * np.cos(2 * np.pi * x / 6)) - (env * np.cos(2 * np.pi * x / 6)).mean(),
        atol=1e-12,
    )
    np.testing.assert_allclose(w90[3], env * -np.sin(2 * np.pi * x / 6), atol=1e-12)


def test_motion_blur_lines():
    h = filters.parse_kernel("motion:length=5").weights
    ref = np.zeros((5, 5))
    ref[2, :] = 1 / 5
    np.testing.assert_allclose(h, ref)
    np.testing.assert_allclose(filters.parse_kernel("motion:5,90").weights, ref.T)
    d = filters.parse_kernel("motion:length=7,angle=45").weights
    # 45 degrees counter-clockwise: from bottom-left to top-right (rows grow downwards)
    nz = sorted(zip(*np.nonzero(d)))
    assert all(r + c == 6 for r, c in nz)
    np.testing.assert_allclose(d.sum(), 1.0)
    assert filters.parse_kernel("motion:4").weights.shape == (5, 5)
    assert np.count_nonzero(filters.parse_kernel("motion:4").weights) == 4


def test_fixed_kernels():
    k = {n: filters.parse_kernel(n).weights for n in filters.BANK}
    np.testing.assert_array_equal(k["vertical-edge"], [[1, 0, -1]] * 3)
    np.testing.assert_array_equal(k["horizontal-edge"], k["vertical-edge"].T)
    np.testing.assert_array_equal(filters.parse_kernel("laplacian:8").weights.sum(), 0)
    assert filters.parse_kernel("laplacian").weights[1, 1] == -4
    identity = np.zeros((3, 3))
    identity[1, 1] = 1
    # sharpen = identity minus the 4-neighbour laplacian
    np.testing.assert_array_equal(k["sharpen"], identity - k["laplacian"])
    np.testing.assert_allclose(filters.parse_kernel("mean:5").weights, np.full((5, 5), 1 / 25))
    np.testing.assert_array_equal(k["identity"], identity)


# ---------------------------------------------------------------------------------------------
# Kernel syntax


def test_inline_kernels():
    np.testing.assert_array_equal(
        filters.parse_kernel("1,0,-1;2,0,-2;1,0,-1").weights, [[1, 0, -1], [2, 0, -2], [1, 0, -1]]
    )
    assert filters.parse_kernel("1,1,1").weights.shape == (1, 3)
    assert filters.parse_kernel("1,1,1", ndim=1).weights.shape == (3,)
    np.testing.assert_array_equal(filters.parse_kernel("1 2; 3 4").weights, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(filters.parse_kernel("-.5,1e-1").weights, [[-0.5, 0.1]])


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("1,0,-1;2,x,-2", ["row 2, column 2", "'x'"]),
        ("1,0;1,2,3", ["row 2 has 3", "first row has 2"]),
        ("1,,2", ["row 1, column 2", "empty"]),
        ("1,2;;3,4", ["row 2 is empty"]),
        ("1,nan", ["row 1, column 2"]),
        ("sobelx", ["unknown kernel 'sobelx'", "did you mean 'sobel-x'"]),
        ("gausian:2", ["did you mean 'gaussian'"]),
        ("gaussian:sgima=2", ["no parameter 'sgima'", "did you mean 'sigma'"]),
        ("gaussian:size=4", ["odd"]),
        ("gaussian:sigma=abc", ["sigma must be a number"]),
        ("box:2.5", ["size must be an integer"]),
        ("box:0", ["size must be >= 1"]),
        ("box:3,4", ["takes 1 parameter"]),
        ("laplacian:6", ["4 or 8"]),
        ("gaussian:2,sigma=3", ["sigma given twice"]),
        ("", ["empty kernel"]),
    ],
)
def test_kernel_errors_say_where(text, fragments):
    with pytest.raises(ValueError) as info:
        filters.parse_kernel(text)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_two_d_kernel_refused_for_signals():
    with pytest.raises(ValueError, match="2-D only"):
        filters.parse_kernel("sobel-x", ndim=1)
    with pytest.raises(ValueError, match="single row"):
        filters.parse_kernel("1,2;3,4", ndim=1)


def test_kernel_files(tmp_path):
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "k.npy", w)
    np.testing.assert_array_equal(filters.parse_kernel(str(tmp_path / "k.npy")).weights, w)
    (tmp_path / "k.txt").write_text("# a comment\n1 0 -1\n\n2, 0, -2  # trailing\n")
    np.testing.assert_array_equal(
        filters.parse_kernel(str(tmp_path / "k.txt")).weights, [[1, 0, -1], [2, 0, -2]]
    )
    (tmp_path / "k.csv").write_text("1,2\n3,4\n")
    np.testing.assert_array_equal(
        filters.parse_kernel(str(tmp_path / "k.csv")).weights, [[1, 2], [3, 4]]
    )
    (tmp_path / "bad.txt").write_text("1 0\n1 q\n")
    with pytest.raises(ValueError, match=r"line 2, column 2: 'q'"):
        filters.parse_kernel(str(tmp_path / "bad.txt"))
    np.save(tmp_path / "five.npy", np.zeros((2, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"\(C, kh, kw\) or \(O, C, kh, kw\)"):
        filters.parse_kernel(str(tmp_path / "five.npy"))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="must be numeric"):
        filters.parse_kernel(str(tmp_path / "obj.npy"))
    with pytest.raises(FileNotFoundError):
        filters.parse_kernel(str(tmp_path / "missing.npy"))


def test_transforms():
    w = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(filters.transform(w, transpose=True), w.T)
    r90 = filters.transform(w, rotate=90)
    # counter-clockwise: out[i, j] = w[j, n - 1 - i]
    assert r90.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            assert r90[i, j] == w[j, 2 - i]
    np.testing.assert_array_equal(filters.transform(w, rotate=180), w[::-1, ::-1])
    np.testing.assert_array_equal(
        filters.transform(w, rotate=270), filters.transform(r90, rotate=180)
    )
    np.testing.assert_allclose(filters.transform(w, normalize=True), w / 15)
    np.testing.assert_allclose(filters.transform(w, normalize=True, scale=3), 3 * w / 15)
    # order: transpose, then rotate
    np.testing.assert_array_equal(filters.transform(w, transpose=True, rotate=90), np.rot90(w.T))
    np.testing.assert_array_equal(filters.transform(np.array([1.0, 2, 3]), rotate=180), [3, 2, 1])
    with pytest.raises(ValueError, match="sums to 0"):
        filters.transform(filters.parse_kernel("sobel-x").weights, normalize=True)
    with pytest.raises(ValueError, match="0, 90, 180 or 270"):
        filters.transform(w, rotate=45)
    with pytest.raises(ValueError, match="2-D kernel"):
        filters.transform(np.ones(3), transpose=True)


def test_parse_padding():
    assert filters.parse_padding("same", 2) == "same"
    assert filters.parse_padding("3", 2) == 3
    assert filters.parse_padding("2x1", 2) == (2, 1)
    for bad, nd in (("2x1", 1), ("-1", 2), ("big", 2), ("1x2x3", 2)):
        with pytest.raises(ValueError, match="^padding must"):
            filters.parse_padding(bad, nd)


# ---------------------------------------------------------------------------------------------
# apply_bank against scipy


def _scipy_valid(img: np.ndarray, w: np.ndarray) -> np.ndarray:
    return signal.correlate2d(img, w, mode="valid")


@pytest.mark.parametrize("method", ["loop", "im2col"])
def test_valid_cross_correlation(rng, method):
    img = rng.random((1, 12, 10))
    w = rng.standard_normal((3, 4))
    r = filters.apply_bank(img, [w], method=method)
    np.testing.assert_allclose(r.y[0, 0], _scipy_valid(img[0], w), atol=1e-12)


@pytest.mark.parametrize("pad_mode", ["zeros", "reflect", "replicate", "circular"])
def test_same_padding_modes_match_scipy(rng, pad_mode):
    img = rng.random((1, 9, 11))
    w = rng.standard_normal((3, 5))
    r = filters.apply_bank(img, [w], padding="same", pad_mode=pad_mode)
    ref = ndi.correlate(img[0], w, mode=SCIPY_MODE[pad_mode], cval=0.0)
    np.testing.assert_allclose(r.y[0, 0], ref, atol=1e-12)


def test_full_padding_and_true_convolution(rng):
    img = rng.random((1, 7, 8))
    w = rng.standard_normal((3, 2))
    full = filters.apply_bank(img, [w], padding="full")
    np.testing.assert_allclose(full.y[0, 0], signal.correlate2d(img[0], w, "full"), atol=1e-12)
    conv = filters.apply_bank(img, [w], padding="full", flip=True)
    np.testing.assert_allclose(conv.y[0, 0], signal.convolve2d(img[0], w, "full"), atol=1e-12)
    odd = rng.standard_normal((3, 3))
    same = filters.apply_bank(img, [odd], padding="same", pad_mode="replicate", flip=True)
    np.testing.assert_allclose(same.y[0, 0], ndi.convolve(img[0], odd, mode="nearest"))


def test_explicit_padding_stride_dilation(rng):
    img = rng.random((1, 13, 11))
    w = rng.standard_normal((3, 3))
    # padding HxW: 2 rows above/below, 1 column left/right, then stride 2
    r = filters.apply_bank(img, [w], padding=(2, 1), stride=2)
    padded = np.pad(img[0], ((2, 2), (1, 1)))
    np.testing.assert_allclose(r.y[0, 0], _scipy_valid(padded, w)[::2, ::2], atol=1e-12)
    # dilation 2 == the kernel with a zero between every tap
    holes = np.zeros((5, 5))
    holes[::2, ::2] = w
    d = filters.apply_bank(img, [w], dilation=2)
    np.testing.assert_allclose(d.y[0, 0], _scipy_valid(img[0], holes), atol=1e-12)


def test_output_size_is_conv_output_size(rng):
    img = rng.random((1, 17, 14))
    for k, s, d, pad in [
        (3, 1, 1, "valid"),
        (5, 2, 1, "same"),
        (3, 3, 2, "full"),
        (4, 2, 1, 3),
        (2, 1, 3, (1, 2)),
    ]:
        w = np.ones((k, k))
        r = filters.apply_bank(img, [w], padding=pad, stride=s, dilation=d)
        for axis, n in enumerate(img.shape[1:]):
            expected = conv_output_size(n, k, s, r.pads[axis], d)
            assert r.y.shape[2 + axis] == expected


def test_color_modes(rng):
    img = rng.random((3, 8, 9)) * 255
    w = rng.standard_normal((3, 3))
    per = filters.apply_bank(img, [w])
    assert per.y.shape == (1, 3, 6, 7)
    for c in range(3):
        np.testing.assert_allclose(per.y[0, c], _scipy_valid(img[c], w), atol=1e-9)
    gray = filters.apply_bank(img, [w], color="gray")
    luma = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    np.testing.assert_allclose(gray.y[0, 0], _scipy_valid(luma, w), atol=1e-9)
    rgb = filters.apply_bank(img, [w], color="rgb")
    assert rgb.y.shape == (1, 1, 6, 7)
    # one 3-channel kernel w/3 on every channel: the mean of the per-channel responses
    np.testing.assert_allclose(rgb.y[0, 0], per.y[0].mean(axis=0), atol=1e-9)


def test_bank_magnitude_bias_and_pools(rng):
    img = rng.random((1, 10, 12))
    gx = filters.parse_kernel("sobel-x").weights
    gy = filters.parse_kernel("sobel-y").weights
    bank = filters.apply_bank(img, [gx, gy])
    assert bank.y.shape == (2, 1, 8, 10)
    mag = filters.apply_bank(img, [gx, gy], combine="magnitude")
    ref = np.hypot(_scipy_valid(img[0], gx), _scipy_valid(img[0], gy))
    np.testing.assert_allclose(mag.y[0, 0], ref, atol=1e-12)
    biased = filters.apply_bank(img, [gx], bias=0.25)
    np.testing.assert_allclose(biased.y[0, 0], _scipy_valid(img[0], gx) + 0.25, atol=1e-12)
    resp = _scipy_valid(img[0], gx)  # 8 x 10
    mx = filters.apply_bank(img, [gx], pool="max", pool_size=2)
    np.testing.assert_allclose(mx.y[0, 0], resp.reshape(4, 2, 5, 2).max(axis=(1, 3)))
    av = filters.apply_bank(img, [gx], pool="avg", pool_size=3, pool_stride=2)
    ref_av = np.array(
        [[resp[i * 2 : i * 2 + 3, j * 2 : j * 2 + 3].mean() for j in range(4)] for i in range(3)]
    )
    np.testing.assert_allclose(av.y[0, 0], ref_av, atol=1e-12)


def test_one_d_signals(rng):
    a = rng.standard_normal((2, 20))
    w = np.array([0.25, 0.5, 0.25, -1.0])
    r = filters.apply_bank(a, [w])
    for c in range(2):
        np.testing.assert_allclose(r.y[0, c], np.correlate(a[c], w, "valid"), atol=1e-12)
    # output sample i sits at the centre of its window
    np.testing.assert_allclose(r.positions, np.arange(17) + 1.5)
    same = filters.apply_bank(a, [w[:3]], padding="same", pad_mode="reflect")
    ref = ndi.correlate1d(a[0], w[:3], mode="mirror")
    np.testing.assert_allclose(same.y[0, 0], ref, atol=1e-12)
    conv = filters.apply_bank(a[:1], [w], padding="full", flip=True)
    np.testing.assert_allclose(conv.y[0, 0], np.convolve(a[0], w), atol=1e-12)
    pooled = filters.apply_bank(a[:1], [w[:3]], stride=2, pool="max", pool_size=2)
    strided = np.correlate(a[0], w[:3], "valid")[::2]
    np.testing.assert_allclose(
        pooled.y[0, 0], strided[: len(strided) // 2 * 2].reshape(-1, 2).max(1)
    )
    # positions: window centres 1, 3, 5, ...; a pool of two averages neighbouring centres
    np.testing.assert_allclose(pooled.positions, 2 + 4 * np.arange(pooled.y.shape[-1]))


def test_apply_bank_errors(rng):
    img = rng.random((1, 5, 5))
    with pytest.raises(ValueError, match="larger than the padded input height 5"):
        filters.apply_bank(img, [np.ones((7, 3))])
    with pytest.raises(ValueError, match="larger than the padded input"):
        filters.apply_bank(img, [np.ones((3, 3))], dilation=3)
    with pytest.raises(ValueError, match="different output sizes"):
        filters.apply_bank(img, [np.ones((3, 3)), np.ones((5, 5))])
    same = filters.apply_bank(img, [np.ones((3, 3)), np.ones((5, 5))], padding="same")
    assert same.y.shape == (2, 1, 5, 5)
    with pytest.raises(ValueError, match="two or more kernels"):
        filters.apply_bank(img, [np.ones((3, 3))], combine="magnitude")
    with pytest.raises(ValueError, match="^color applies"):
        filters.apply_bank(rng.random((1, 9)), [np.ones(3)], color="gray")
    with pytest.raises(ValueError, match="1-D kernels"):
        filters.apply_bank(rng.random((1, 9)), [np.ones((3, 3))])
    with pytest.raises(ValueError, match="^pool_size=9 is larger"):
        filters.apply_bank(img, [np.ones((3, 3))], pool="max", pool_size=9)
    with pytest.raises(ValueError, match="gray conversion needs 1 or 3"):
        filters.apply_bank(rng.random((4, 5, 5)), [np.ones((3, 3))], color="gray")


def test_rgb_kernel_sums_over_channels_and_a_4d_file_is_a_bank(rng, tmp_path):
    img = rng.random((3, 9, 8)) * 255
    w3 = rng.standard_normal((3, 3, 3))
    r = filters.apply_bank(img, [w3])
    assert r.y.shape == (1, 1, 7, 6) and r.color == "rgb"
    ref = sum(_scipy_valid(img[c], w3[c]) for c in range(3))  # the lecture's sum over R, G, B
    np.testing.assert_allclose(r.y[0, 0], ref, atol=1e-9)
    np.save(tmp_path / "rgb.npy", w3)
    k = filters.parse_kernel(str(tmp_path / "rgb.npy"))
    assert k.weights.shape == (3, 3, 3) and k.split() == [k]
    bank = rng.standard_normal((4, 3, 3, 3))
    np.save(tmp_path / "bank.npy", bank)
    parts = filters.parse_kernel(str(tmp_path / "bank.npy")).split()
    assert [p.label for p in parts] == [f"bank.npy[{o}]" for o in range(4)]
    out = filters.apply_bank(img, [p.weights for p in parts])
    assert out.y.shape == (4, 1, 7, 6)
    for o in range(4):
        ref = sum(_scipy_valid(img[c], bank[o, c]) for c in range(3))
        np.testing.assert_allclose(out.y[o, 0], ref, atol=1e-9)
    # transforms act on every channel's matrix
    t = filters.transform(w3, transpose=True, rotate=90)
    np.testing.assert_allclose(t, np.stack([np.rot90(m.T) for m in w3]))
    with pytest.raises(ValueError, match="1 channel.*input has 3|kernel has 1"):
        filters.apply_bank(img, [rng.random((1, 3, 3))])
    with pytest.raises(ValueError, match="the input has 1"):
        filters.apply_bank(img[:1], [w3])
    with pytest.raises(ValueError, match="mix"):
        filters.apply_bank(img, [w3, np.ones((3, 3))])
    with pytest.raises(ValueError, match="sums over the channels"):
        filters.apply_bank(img, [w3], color="gray")
    with pytest.raises(ValueError, match="single row"):
        filters.parse_kernel(str(tmp_path / "rgb.npy"), ndim=1)


@pytest.mark.parametrize("pad_mode", ["zeros", "reflect", "replicate", "circular"])
def test_long_filters_run_in_bands_with_the_same_result(rng, pad_mode):
    img = rng.random((3, 23, 17))
    kernels = [rng.standard_normal((3, 5)), rng.standard_normal((3, 5))]
    opts = dict(padding="same", pad_mode=pad_mode, stride=2, dilation=2, bias=0.5)
    whole = filters.apply_bank(img, kernels, **opts)
    calls = []
    banded = filters.apply_bank(
        img, kernels, chunk_macs=200, progress=lambda d, t: calls.append((d, t)), **opts
    )
    np.testing.assert_allclose(banded.y, whole.y, atol=1e-12)
    assert len(calls) > 4 and calls[-1][0] == calls[-1][1] and calls[0] == (1, calls[-1][1])
    rgb = filters.apply_bank(img, [rng.standard_normal((3, 3, 3))], chunk_macs=100, flip=True)
    ref = filters.apply_bank(img, [rgb_w := rng.standard_normal((3, 3, 3))], flip=True)
    assert rgb.y.shape == ref.y.shape
    np.testing.assert_allclose(
        filters.apply_bank(img, [rgb_w], chunk_macs=100, flip=True).y, ref.y, atol=1e-12
    )


def test_an_interrupt_stops_a_long_filter_between_bands(rng):
    img = rng.random((1, 64, 64))
    seen = []

    def interrupt(done, total):
        seen.append(done)
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        filters.apply_bank(img, [np.ones((3, 3))], chunk_macs=500, progress=interrupt)
    assert seen == [1, 2]  # the remaining bands never ran


def test_display_scales_edges_to_a_high_percentile():
    y = np.zeros((1, 20, 20))
    y[0, :, 10] = -100.0  # an edge
    y[0, 0, 0] = 10_000.0  # one extreme value
    scale = filters.display_scale(y, 255)
    assert scale.mode == "abs" and scale.hi == pytest.approx(np.percentile(np.abs(y), 99.5))
    px = filters.to_pixels(y, scale)
    assert px[5, 10] == 255 and px[0, 0] == 255 and px[5, 5] == 0
    assert "99.5th percentile" in scale.describe()
    # against the peak the edge would be 100/10000 of white: nearly black
    peak = filters.DisplayScale("abs", 0.0, 10_000.0)
    assert filters.to_pixels(y, peak)[5, 10] < 5
    div = filters.display_scale(y, 255, "diverging")
    rgb = filters.to_pixels(y, div)
    assert tuple(rgb[5, 10]) == (0, 0, 255) and tuple(rgb[0, 0]) == (255, 0, 0)
    assert tuple(rgb[5, 5]) == (255, 255, 255)
    assert "red = positive" in div.describe() and "blue = negative" in div.describe()
    assert filters.display_scale(np.abs(y), 255).mode == "clip"
    lin = filters.display_scale(y, 255, "rescale")
    assert (lin.lo, lin.hi) == (-100.0, 10_000.0)
    with pytest.raises(ValueError, match="^display must"):
        filters.display_scale(y, 255, "log")
    with pytest.raises(ValueError, match="one-channel"):
        filters.to_pixels(np.zeros((3, 2, 2)), div)
    assert not filters.to_pixels(
        np.zeros((1, 2, 2)), filters.display_scale(np.zeros((1, 2, 2)), 255)
    ).any()


def test_display_modes_map_values_as_documented():
    y = np.array([[[-100.0, 0.0, 50.0, 300.0]]])
    px = filters.to_pixels
    np.testing.assert_array_equal(px(y, filters.display_scale(y, 255, "clip")), [[0, 0, 50, 255]])
    lin = px(y, filters.display_scale(y, 255, "rescale"))
    np.testing.assert_array_equal(lin, np.round((y[0] + 100) / 400 * 255).astype(np.uint8))
    hi = np.percentile([100.0, 0.0, 50.0, 300.0], 99.5)
    ab = px(y, filters.display_scale(y, 255, "abs"))
    np.testing.assert_array_equal(ab, np.round(np.clip(np.abs(y[0]) / hi, 0, 1) * 255))
    div = px(np.array([[[-2.0, 0.0, 2.0, 1.0]]]), filters.DisplayScale("diverging", 0.0, 2.0))
    np.testing.assert_array_equal(
        div[0], [[0, 0, 255], [255, 255, 255], [255, 0, 0], [255, 128, 128]]
    )
    rgb = px(np.stack([y[0], y[0] * 0, y[0]]), filters.display_scale(np.abs(y), 255, "clip"))
    assert rgb.shape == (1, 4, 3)


def test_docstring_examples_run():
    import doctest

    failed, tried = doctest.testmod(filters, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried >= 8 and failed == 0
