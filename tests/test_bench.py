"""The benchmark harness: its oracle, its correctness gate, FLOP and memory formulas, reports,
error paths and --explain. Tiny shapes and --repeat 1; nothing here asserts on a time."""

from __future__ import annotations

import csv
import json
import math
import sys
import types

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnkit import bench
from cnnkit.bench import Peers


# ------------------------------------------------------------------------------ plain loops
def loop_conv2d(x, w, stride=(1, 1), padding=(0, 0)):
    """Cross-correlation straight from the definition, one output element at a time."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ph, pw = padding
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph : ph + h, pw : pw + wd] = x
    oh = (h + 2 * ph - kh) // stride[0] + 1
    ow = (wd + 2 * pw - kw) // stride[1] + 1
    y = np.zeros((n, o, oh, ow))
    for b in range(n):
        for q in range(o):
            for i in range(oh):
                for j in range(ow):
                    total = 0.0
                    for ch in range(c):
                        for a in range(kh):
                            for e in range(kw):
                                total += (
                                    w[q, ch, a, e] * xp[b, ch, i * stride[0] + a, j * stride[1] + e]
                                )
                    y[b, q, i, j] = total
    return y


def loop_conv2d_backward(gy, x, w, stride=(1, 1), padding=(0, 0)):
    """Gradients by the chain rule applied to every term of the forward sum."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ph, pw = padding
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph : ph + h, pw : pw + wd] = x
    gxp = np.zeros_like(xp)
    gw = np.zeros(w.shape)
    for b, q, i, j in np.ndindex(*gy.shape):
        for ch, a, e in np.ndindex(c, kh, kw):
            r, s = i * stride[0] + a, j * stride[1] + e
            gw[q, ch, a, e] += gy[b, q, i, j] * xp[b, ch, r, s]
            gxp[b, ch, r, s] += gy[b, q, i, j] * w[q, ch, a, e]
    return gxp[:, :, ph : ph + h, pw : pw + wd], gw, gy.sum(axis=(0, 2, 3))


def loop_pool2d(x, k, stride, padding, mode):
    n, c, h, wd = x.shape
    oh = (h + 2 * padding - k) // stride + 1
    ow = (wd + 2 * padding - k) // stride + 1
    y = np.zeros((n, c, oh, ow))
    for b, ch, i, j in np.ndindex(n, c, oh, ow):
        vals = []
        for a, e in np.ndindex(k, k):
            r, s = i * stride + a - padding, j * stride + e - padding
            inside = 0 <= r < h and 0 <= s < wd
            vals.append(x[b, ch, r, s] if inside else (-np.inf if mode == "max" else 0.0))
        y[b, ch, i, j] = max(vals) if mode == "max" else sum(vals) / (k * k)
    return y


class LoopOps:
    """A stand-in for cnnkit.ops built on the plain loops (every method gives the same)."""

    def conv2d(self, x, w, bias=None, *, stride=1, padding=0, method="auto"):
        stride = stride if isinstance(stride, tuple) else (stride, stride)
        padding = padding if isinstance(padding, tuple) else (padding, padding)
        return loop_conv2d(x, w, stride, padding).astype(np.float32)

    def conv1d(self, x, w, bias=None, *, stride=1, padding=0, method="auto"):
        y = self.conv2d(
            x[:, :, None, :], w[:, :, None, :], stride=(1, stride), padding=(0, padding)
        )
        return y[:, :, 0, :]

    def conv2d_backward(self, gy, x, w, *, stride=1, padding=0, method="auto"):
        return tuple(a.astype(np.float32) for a in loop_conv2d_backward(gy, x, w, stride, padding))

    def max_pool2d(self, x, kernel_size, stride=None, padding=0):
        return loop_pool2d(x, kernel_size[0], stride[0], padding[0], "max").astype(np.float32)

    def avg_pool2d(self, x, kernel_size, stride=None, padding=0):
        return loop_pool2d(x, kernel_size[0], stride[0], padding[0], "avg").astype(np.float32)


class WrongIm2col(LoopOps):
    """method="im2col" uses a kernel flipped in both axes: true convolution, a classic slip."""

    def conv2d(self, x, w, bias=None, *, stride=1, padding=0, method="auto"):
        if method == "im2col":
            w = np.ascontiguousarray(w[:, :, ::-1, ::-1])
        return super().conv2d(x, w, stride=stride, padding=padding, method=method)


class BrokenLoop(LoopOps):
    def conv2d(self, x, w, bias=None, *, stride=1, padding=0, method="auto"):
        if method == "loop":
            raise RuntimeError("kernel crashed")
        return super().conv2d(x, w, stride=stride, padding=padding, method=method)


TINY = [
    bench._conv("filter_9_k3", "filter", (1, 1, 9, 9), 1, 3, 1),
    bench._conv("tiny_conv", "conv2d", (2, 3, 6, 5), 4, 3, 1, stride=2),
    bench._conv("tiny_1d", "conv1d", (2, 2, 11), 3, 3, 1),
    bench._conv("tiny_bwd", "backward", (2, 2, 5, 6), 3, 3, 1),
    bench._pool("tiny_max", "max_pool2d", (2, 2, 7, 7), 3, 2, 1),
    bench._pool("tiny_avg", "avg_pool2d", (2, 2, 6, 6), 2, 2),
]


def numpy_only() -> Peers:
    return Peers(wanted=("numpy",))


# ------------------------------------------------------------------------------ the oracle
@pytest.mark.parametrize("case", TINY, ids=lambda c: c.name)
def test_reference_matches_plain_loops(case):
    arrays = bench.make_inputs(case, seed=3)
    got = bench.reference(case, arrays)
    x = bench._as4(arrays["x"]).astype(np.float64)
    if case.op in ("conv2d", "conv1d"):
        want = (loop_conv2d(x, bench._as4(arrays["w"]), case.stride, case.padding),)
        if case.op == "conv1d":
            want = (want[0][:, :, 0, :],)
    elif case.op == "conv2d_backward":
        gy, w = arrays["gy"].astype(np.float64), arrays["w"].astype(np.float64)
        want = loop_conv2d_backward(gy, x, w, case.stride, case.padding)
    else:
        mode = "max" if case.op == "max_pool2d" else "avg"
        want = (loop_pool2d(x, case.kernel[0], case.stride[0], case.padding[0], mode),)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", TINY, ids=lambda c: c.name)
def test_numpy_peer_passes_the_gate(case):
    arrays = bench.make_inputs(case)
    ref = bench.reference(case, arrays)
    absref = bench.reference(case, {k: np.abs(v) for k, v in arrays.items()})
    out = bench.numpy_impl(case, arrays)()
    assert all(o.dtype == np.float32 for o in out)
    ok, worst, why = bench.check_outputs(case, out, ref, absref)
    assert ok, why
    assert worst <= 1


def test_reference_against_scipy_filter():
    ndimage = pytest.importorskip("scipy.ndimage")
    case = bench._conv("filter_20_k5", "filter", (1, 1, 20, 20), 1, 5, 2)
    arrays = bench.make_inputs(case)
    want = ndimage.correlate(arrays["x"][0, 0].astype(np.float64), arrays["w"][0, 0].astype(float))
    (got,) = bench.reference(case, arrays)
    # scipy's default border is "reflect"; compare the interior the padding does not reach.
    np.testing.assert_allclose(got[0, 0, 2:-2, 2:-2], want[2:-2, 2:-2], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ the gate
def test_gate_reports_injected_wrong_method_and_does_not_time_it():
    rows, _ = bench.run_case(TINY[1], WrongIm2col(), numpy_only(), repeat=1, peak_gflops=10.0)
    by = {r["method"]: r for r in rows}
    assert by["im2col"]["status"] == "WRONG"
    assert by["im2col"]["seconds"] is None and by["im2col"]["gflops"] is None
    assert "bound" in by["im2col"]["detail"]
    for m in ("loop", "auto", "numpy"):
        assert by[m]["status"] == "ok"
        assert by[m]["seconds"] > 0
    summary = bench.summarize(rows)
    assert summary["not_ok"] == ["tiny_conv/im2col"]


def test_gate_reports_a_crashing_method_as_error():
    rows, _ = bench.run_case(TINY[0], BrokenLoop(), numpy_only(), repeat=1, peak_gflops=None)
    by = {r["method"]: r for r in rows}
    assert by["loop"]["status"] == "error"
    assert "kernel crashed" in by["loop"]["detail"]
    assert by["im2col"]["status"] == "ok"
    # No loop time: no speed-up over the loop either.
    assert by["im2col"]["speedup_vs_loop"] is None


def test_tolerance_accepts_float32_rounding_and_rejects_small_errors(rng):
    case = bench._conv("c", "conv2d", (2, 16, 8, 8), 8, 3, 1)
    arrays = bench.make_inputs(case)
    ref = bench.reference(case, arrays)
    absref = bench.reference(case, {k: np.abs(v) for k, v in arrays.items()})
    # A float32 computation in another summation order (im2col + sgemm) is accepted ...
    assert bench.check_outputs(case, bench.numpy_impl(case, arrays)(), ref, absref)[0]
    # ... an error far above float32 rounding is not, nor a wrong shape, nor a NaN.
    bad = ref[0].astype(np.float32).copy()
    bad[1, 2, 3, 4] += 1e-3 * float(np.abs(ref[0]).max())
    ok, _, why = bench.check_outputs(case, (bad,), ref, absref)
    assert not ok and "bound" in why
    assert not bench.check_outputs(case, (bad[:, :, :-1],), ref, absref)[0]
    bad[0, 0, 0, 0] = np.nan
    assert not bench.check_outputs(case, (bad,), ref, absref)[0]


def test_tolerance_scales_with_reduction_length():
    small = bench._conv("s", "conv2d", (1, 1, 8, 8), 1, 3, 1)
    large = bench._conv("l", "conv2d", (1, 64, 8, 8), 1, 3, 1)
    assert small.reduction == 9 and large.reduction == 64 * 9
    bwd = bench._conv("b", "backward", (2, 4, 8, 8), 5, 3, 1)
    assert bench.reductions(bwd) == (5 * 9, 2 * 64, 2 * 64)


# ------------------------------------------------------------------------------ formulas
def test_flop_formulas():
    suite = {c.name: c for c in bench.build_suite()}
    assert bench.flops(suite["filter_1024_k3"]) == 2 * 1024 * 1024 * 3 * 3
    assert bench.flops(suite["filter_2048_k11"]) == 2 * 2048 * 2048 * 11 * 11
    assert bench.flops(suite["lenet_c1"]) == 2 * 64 * 16 * 28 * 28 * 1 * 5 * 5
    assert bench.flops(suite["lenet_c2"]) == 2 * 64 * 32 * 14 * 14 * 16 * 3 * 3
    assert bench.flops(suite["cifar"]) == 2 * 32 * 64 * 32 * 32 * 64 * 3 * 3
    assert bench.flops(suite["cifar_bwd"]) == 2 * bench.flops(suite["cifar"])
    assert bench.flops(suite["signal_1m_k9"]) == 2 * 2**20 * 9
    # max pool 3x3 stride 2 pad 1 on 32x32 -> 16x16: one op per window element
    assert bench.flops(suite["maxpool_cifar_k3s2"]) == 32 * 64 * 16 * 16 * 9


def test_im2col_buffer_sizes():
    suite = {c.name: c for c in bench.build_suite()}
    c1 = suite["lenet_c1"]
    assert bench.im2col_bytes(c1) == 64 * (1 * 25) * (28 * 28) * 4
    assert bench.im2col_bytes(suite["lenet_c1_bwd"]) == 2 * bench.im2col_bytes(c1)
    per_sample = 25 * 28 * 28 * 4
    assert bench.im2col_bytes(c1, budget=10 * per_sample + 1) == 10 * per_sample
    assert bench.im2col_bytes(c1, budget=1) == per_sample  # at least one sample
    assert bench.im2col_bytes(suite["maxpool_lenet"]) == 0


def test_suite_contents_and_sizes():
    names = [c.name for c in bench.build_suite()]
    for must in (
        "filter_512_k3",
        "filter_2048_k11",
        "lenet_c1",
        "lenet_c2",
        "cifar",
        "cifar_bwd",
        "signal_1m_k9",
        "maxpool_lenet",
    ):
        assert must in names
    assert len(names) == len(set(names))
    quick = bench.build_suite(quick=True)
    assert len(quick) < len(names)
    custom = [c.name for c in bench.build_suite(sizes=[64], kernels=[5], channels=[4], batch=[2])]
    assert "filter_64_k5" in custom and "conv_b2_c4" in custom and "filter_512_k3" not in custom


def test_select_cases_by_name_glob_and_group():
    suite = bench.build_suite()
    assert [c.name for c in bench.select_cases(suite, ["lenet_c1"])] == ["lenet_c1"]
    assert {c.name for c in bench.select_cases(suite, ["filter_1024_*"])} == {
        f"filter_1024_k{k}" for k in (3, 5, 7, 11)
    }
    assert all(c.group == "pool" for c in bench.select_cases(suite, ["pool"]))
    with pytest.raises(ValueError, match="unknown case 'nope'.*lenet_c1"):
        bench.select_cases(suite, ["nope"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kernels": [4]}, "odd"),
        ({"sizes": [0]}, ">= 1"),
        ({"sizes": [8], "kernels": [11]}, "larger"),
    ],
)
def test_bad_suite_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bench.build_suite(**kwargs)


def test_memory_refusal_names_the_numbers():
    big = bench._conv("filter_60000_k11", "filter", (1, 1, 60000, 60000), 1, 11, 5)
    need = bench.memory_needed(big)
    assert need["im2col"] == 60000 * 60000 * 121 * 4
    with pytest.raises(ValueError, match=r"filter_60000_k11.*needs about .*GiB.*im2col buffer"):
        bench.check_memory([big], available=8 * 2**30)
    small = TINY[1]
    bench.check_memory([small], available=8 * 2**30)  # fits: no error


def test_time_call_rejects_zero_repeats():
    with pytest.raises(ValueError, match="repeat"):
        bench.time_call(lambda: None, 0)
    t = bench.time_call(lambda: sum(range(100)), 2)
    assert t["min"] <= t["median"] <= t["max"] and t["number"] >= 1


# ------------------------------------------------------------------------------ reports
@pytest.fixture
def report():
    return bench.run_suite(TINY, ops=LoopOps(), repeat=1, threads=1, peers=numpy_only(), peak_n=64)


def test_report_schema_and_ratios(report):
    assert report["schema"] == bench.SCHEMA
    for key in ("machine", "settings", "peak", "compile", "peers", "notes", "results", "summary"):
        assert key in report
    assert report["peak"]["gflops"] > 0
    assert {r["op"] for r in report["compile"]} == {c.op for c in TINY}
    assert all(r["status"] == "ok" for r in report["results"]), report["summary"]["not_ok"]
    for r in report["results"]:
        assert math.isclose(r["gflops"], r["flops"] / r["seconds"] / 1e9)
        assert r["cpu_seconds"] >= 0
        assert r["rss_peak_bytes"] > 0
    rows = [r for r in report["results"] if r["case"] == "tiny_conv"]
    by = {r["method"]: r for r in rows}
    assert by["loop"]["speedup_vs_loop"] == 1.0
    assert math.isclose(
        by["im2col"]["ratios"]["numpy"], by["numpy"]["seconds"] / by["im2col"]["seconds"]
    )
    assert by["im2col"]["extra_bytes"] == bench.im2col_bytes(TINY[1])
    assert by["loop"]["extra_bytes"] == 0
    assert by["numpy"]["ratios"] == {}  # ratios are cnnkit / peer only
    assert {a["case"] for a in report["summary"]["auto_vs_best"]} == {
        c.name for c in TINY if c.is_conv
    }


def test_json_and_csv_files(report, tmp_path):
    bench.write_json(report, tmp_path / "b.json")
    loaded = json.loads((tmp_path / "b.json").read_text())
    assert loaded["schema"] == bench.SCHEMA
    assert len(loaded["results"]) == len(report["results"])
    bench.write_csv(report, tmp_path / "b.csv")
    with open(tmp_path / "b.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == bench.CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == len(report["results"])
    loop = next(r for r in rows if r["case"] == "tiny_conv" and r["method"] == "im2col")
    assert float(loop["vs_numpy"]) > 0 and loop["vs_torch"] == ""
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_peer_is_a_note_not_an_error(monkeypatch):
    monkeypatch.setitem(bench.PEER_MODULES, "opencv", "cnnkit_no_such_module_cv2")
    peers = Peers(wanted=("numpy", "opencv"))
    assert "opencv" in peers.missing and peers.available() == ["numpy"]
    report = bench.run_suite(TINY[:1], ops=LoopOps(), repeat=1, threads=1, peers=peers, peak_n=32)
    assert any("peer opencv missing" in n for n in report["notes"])
    assert {r["method"] for r in report["results"]} == {"loop", "im2col", "auto", "numpy"}
    assert report["peers"]["missing"].keys() == {"opencv"}


def test_plot_series_lines():
    results = []
    for s in (64, 128):
        for k in (3, 5):
            for m, t in (("loop", 2.0), ("opencv", 1.0)):
                results.append(
                    {
                        "case": f"filter_{s}_k{k}",
                        "group": "filter",
                        "method": m,
                        "seconds": t * s * k,
                        "gflops": 1.0 / (t * s * k),
                    }
                )
    series = bench.plot_series({"results": results})
    assert series["size"]["loop"] == [(64, 1 / (2.0 * 64 * 3)), (128, 1 / (2.0 * 128 * 3))]
    assert [k for k, _ in series["kernel"]["opencv"]] == [3, 5]


# ------------------------------------------------------------------------------ real peers
@pytest.mark.parametrize("peer", ["scipy", "opencv", "torch"])
def test_real_peers_agree_with_the_oracle(peer):
    peers = Peers(wanted=(peer,))
    module = peers.get(peer)
    if module is None:
        pytest.skip(f"{peer} not installed")
    cases = [TINY[0]] + ([c for c in TINY[1:] if c.peer_op in bench.PEER_OPS[peer]])
    for case in cases:
        arrays = bench.make_inputs(case)
        ref = bench.reference(case, arrays)
        absref = bench.reference(case, {k: np.abs(v) for k, v in arrays.items()})
        out = bench._to_numpy(bench.peer_impl(peer, module, case, arrays)())
        ok, _, why = bench.check_outputs(case, out, ref, absref)
        assert ok, f"{peer} {case.name}: {why}"


# ------------------------------------------------------------------------------ --explain
def test_explain_numbers_equal_the_loop_and_an_independent_product():
    pytest.importorskip("numba")
    data = bench.explain_data()
    assert data["w_matrix"].shape == (4, 27) and data["patches"].shape == (27, 9)
    want = loop_conv2d(data["image"][None].astype(float), data["kernels"].astype(float))[0]
    np.testing.assert_array_equal(data["maps"], want)
    np.testing.assert_array_equal(data["loop"], want)
    # Column j of the patch matrix is the 3x3x3 block under output position j.
    block = data["image"][:, 1:4, 2:5].reshape(27)
    np.testing.assert_array_equal(data["patches"][:, 1 * 3 + 2], block)


# ------------------------------------------------------------------------------ --train
def test_train_adapter_when_cnnkit_side_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "cnnkit.train", types.ModuleType("cnnkit.train"))
    value, why = bench.cnnkit_train_throughput("digits", 3)
    assert value is None and "not available" in why


def test_train_adapter_passes_the_net_settings(monkeypatch):
    seen = {}

    def train_throughput(arch, batch_size, steps=50, *, optimizer="adam", lr=3e-3, warmup=5):
        seen.update(arch=arch, batch=batch_size, steps=steps, optimizer=optimizer, lr=lr)
        return {"images_per_s": 1234.0, "ms_per_step": 1.0}

    fake = types.ModuleType("cnnkit.train")
    fake.train_throughput = train_throughput
    monkeypatch.setitem(sys.modules, "cnnkit.train", fake)
    assert bench.cnnkit_train_throughput("lenet5", 7) == (1234.0, "")
    assert seen == {"arch": "lenet5", "batch": 64, "steps": 7, "optimizer": "sgd", "lr": 1e-2}

    peers = Peers(wanted=("torch",))
    peers.missing["torch"] = "pretend"
    rows = bench.train_bench(peers, quick=True)
    assert [r["net"] for r in rows] == ["digits", "lenet5"]
    assert all(r["torch_images_per_s"] is None and r["ratio"] is None for r in rows)


@pytest.mark.slow
def test_torch_training_step_runs():
    torch = pytest.importorskip("torch")
    for name in bench.TRAIN_NETS:
        assert bench.torch_train_throughput(torch, name, steps=2, warmup=1) > 0


# ------------------------------------------------------------------------------ CLI
def _app():
    from cnnkit.cli.app import app

    return app


@pytest.mark.parametrize(
    "args, message",
    [
        (["--case", "nope"], "unknown case 'nope'; valid cases:"),
        (["--repeat", "0"], "--repeat must be >= 1"),
        (["--kernels", "4"], "kernels must be odd"),
        (["--sizes", "abc"], "--sizes takes comma-separated integers"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--sizes", "60000", "--kernels", "11", "--case", "filter_60000_k11"], "needs about"),
        (["--json", "/nonexistent/dir/b.json"], "does not exist"),
        (["--plot", "b.txt"], "must end with .png"),
        (["--plot", "b.png", "--case", "lenet_c1"], "--plot draws the filter cases"),
        (["--train", "--csv", "b.csv"], "use --json with --train"),
        (["--threads", "4096", "--case", "lenet_c1"], "--threads must be between 1 and"),
        (["--clock", "cpu", "--threads", "2"], "--clock cpu needs --threads 1"),
        (["--clock", "sundial"], "--clock must be wall or cpu"),
    ],
)
def test_cli_errors_are_one_line_exit_2(args, message):
    result = CliRunner().invoke(_app(), ["bench", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.strip().startswith("error:")


def test_cli_list_and_explain():
    result = CliRunner().invoke(_app(), ["bench", "--quick", "--list"])
    assert (
        result.exit_code == 0 and "lenet_c1" in result.output and "cifar_bwd" not in result.output
    )
    result = CliRunner().invoke(_app(), ["bench", "--explain"])
    assert result.exit_code == 0, result.output
    assert "4x27 kernel matrix" in result.output and "yes, exactly" in result.output


@pytest.mark.slow
def test_cli_end_to_end_tiny(tmp_path):
    out = tmp_path / "b"
    args = [
        "bench",
        "--sizes",
        "32,48",
        "--kernels",
        "3,5",
        "--case",
        "filter_*",
        "--repeat",
        "1",
        "--threads",
        "1",
        "--json",
        f"{out}.json",
        "--csv",
        f"{out}.csv",
        "--plot",
        f"{out}.png",
    ]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "b.json").read_text())
    assert {r["case"] for r in report["results"]} == {
        f"filter_{s}_k{k}" for s in (32, 48) for k in (3, 5)
    }
    assert all(r["status"] == "ok" for r in report["results"]), report["summary"]["not_ok"]
    assert (tmp_path / "b.png").stat().st_size > 1000
    assert "Numba first call" in result.output and "filter" in result.output


def test_time_call_budget_stops_after_three_samples():
    calls = []
    t = bench.time_call(lambda: calls.append(1), 10, warmup=0, first=0.02, budget=0.0)
    assert t["samples"] == 3 and t["number"] == 1 and len(calls) == 3


def test_busy_machine_note():
    assert bench.busy_note({"load_average": [0.1, 0, 0], "usable_cores": 2}) is None
    note = bench.busy_note({"load_average": [5.0, 0, 0], "usable_cores": 2})
    assert note and "load average 5.0 on 2 cores" in note


def test_auto_choice_is_reported_with_its_buffer():
    class Picky(LoopOps):
        @staticmethod
        def choose_method(c_in_per_group, taps, n_out):
            return "im2col" if c_in_per_group * taps > 9 else "loop"

    rows, _ = bench.run_case(TINY[1], Picky(), Peers(wanted=()), repeat=1, peak_gflops=None)
    auto = next(r for r in rows if r["method"] == "auto")
    assert auto["detail"] == "auto -> im2col"  # 3 channels x 9 taps = 27 > 9
    assert auto["extra_bytes"] == bench.im2col_bytes(TINY[1])
    summary = bench.summarize(rows)
    assert summary["auto_vs_best"][0]["picked"] == "im2col"


def test_cpu_clock_drives_the_rates():
    report = bench.run_suite(
        TINY[:2], ops=LoopOps(), repeat=1, threads=1, peers=numpy_only(), peak_n=32, clock="cpu"
    )
    assert report["settings"]["clock"] == "cpu"
    for r in report["results"]:
        assert r["seconds"] == r["cpu_seconds"] and r["wall_seconds"] > 0
    with pytest.raises(ValueError, match="--threads 1"):
        bench.run_suite(TINY[:1], ops=LoopOps(), repeat=1, threads=2, clock="cpu")
