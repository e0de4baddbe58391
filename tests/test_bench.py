"""The benchmark harness: its oracle, its correctness gate, FLOP and memory formulas, the
worker processes, alternating rounds and ratios, the self-check, reports, --train and the
CLI. Tiny shapes and few rounds; nothing here asserts on a time."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnkit import bench
from cnnkit.bench import oracle, peers, report, timing, training
from cnnkit.bench.cases import conv_case, pool_case
from cnnkit.bench.worker import LocalSide, Worker, WorkerError


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
    conv_case("filter_9_k3", "filter", (1, 1, 9, 9), 1, 3, 1),
    conv_case("tiny_conv", "conv2d", (2, 3, 6, 5), 4, 3, 1, stride=2),
    conv_case("tiny_1d", "conv1d", (2, 2, 11), 3, 3, 1),
    conv_case("tiny_bwd", "backward", (2, 2, 5, 6), 3, 3, 1),
    pool_case("tiny_max", "max_pool2d", (2, 2, 7, 7), 3, 2, 1),
    pool_case("tiny_avg", "avg_pool2d", (2, 2, 6, 6), 2, 2),
]


def local_sides(ops=None, threads=1, libraries=("numpy",)):
    """In-process sides: cnnkit on the stand-in ``ops`` plus real peers."""
    sides = {"cnnkit": LocalSide("cnnkit", threads, ops or LoopOps())}
    for library in libraries:
        sides[library] = LocalSide(library, threads)
    return sides


# ------------------------------------------------------------------------------ the oracle
@pytest.mark.parametrize("case", TINY, ids=lambda c: c.name)
def test_reference_matches_plain_loops(case):
    arrays = bench.make_inputs(case, seed=3)
    got = bench.reference(case, arrays)
    x = oracle.as4(arrays["x"]).astype(np.float64)
    if case.op in ("conv2d", "conv1d"):
        want = (loop_conv2d(x, oracle.as4(arrays["w"]), case.stride, case.padding),)
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
    out = peers.numpy_impl(case, arrays)()
    assert all(o.dtype == np.float32 for o in out)
    ok, worst, why = bench.check_outputs(case, out, ref, absref)
    assert ok, why
    assert worst <= 1


def test_reference_against_scipy_filter():
    ndimage = pytest.importorskip("scipy.ndimage")
    case = conv_case("filter_20_k5", "filter", (1, 1, 20, 20), 1, 5, 2)
    arrays = bench.make_inputs(case)
    want = ndimage.correlate(arrays["x"][0, 0].astype(np.float64), arrays["w"][0, 0].astype(float))
    (got,) = bench.reference(case, arrays)
    # scipy's default border is "reflect"; compare the interior the padding does not reach.
    np.testing.assert_allclose(got[0, 0, 2:-2, 2:-2], want[2:-2, 2:-2], rtol=1e-12, atol=1e-12)


def test_inputs_are_the_same_in_every_process():
    case = TINY[3]
    a, b = bench.make_inputs(case), bench.make_inputs(bench.Case.from_dict(case.to_dict()))
    assert a.keys() == b.keys() == {"x", "w", "gy"}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# ------------------------------------------------------------------------------ the gate
def test_gate_reports_injected_wrong_method_and_does_not_time_it(tmp_path):
    sides = local_sides(WrongIm2col())
    rows, _, _ = bench.run_case(TINY[1], sides, 1, 1, 10.0, str(tmp_path))
    by = {r["method"]: r for r in rows}
    assert by["im2col"]["status"] == "WRONG"
    assert by["im2col"]["seconds"] is None and by["im2col"]["gflops"] is None
    assert by["im2col"]["rounds"] == []
    assert "bound" in by["im2col"]["detail"]
    for m in ("loop", "auto", "numpy"):
        assert by[m]["status"] == "ok"
        assert by[m]["seconds"] > 0
    summary = bench.summarize(rows)
    assert summary["not_ok"] == ["tiny_conv/im2col"]


def test_gate_reports_a_crashing_method_as_error(tmp_path):
    rows, _, _ = bench.run_case(TINY[0], local_sides(BrokenLoop()), 1, 1, None, str(tmp_path))
    by = {r["method"]: r for r in rows}
    assert by["loop"]["status"] == "error"
    assert "kernel crashed" in by["loop"]["detail"]
    assert by["im2col"]["status"] == "ok"
    # No loop time: no speed-up over the loop either.
    assert by["im2col"]["speedup_vs_loop"] is None


def test_tolerance_accepts_float32_rounding_and_rejects_small_errors():
    case = conv_case("c", "conv2d", (2, 16, 8, 8), 8, 3, 1)
    arrays = bench.make_inputs(case)
    ref = bench.reference(case, arrays)
    absref = bench.reference(case, {k: np.abs(v) for k, v in arrays.items()})
    # A float32 computation in another summation order (im2col + sgemm) is accepted ...
    assert bench.check_outputs(case, peers.numpy_impl(case, arrays)(), ref, absref)[0]
    # ... an error far above float32 rounding is not, nor a wrong shape, nor a NaN.
    bad = ref[0].astype(np.float32).copy()
    bad[1, 2, 3, 4] += 1e-3 * float(np.abs(ref[0]).max())
    ok, _, why = bench.check_outputs(case, (bad,), ref, absref)
    assert not ok and "bound" in why
    assert not bench.check_outputs(case, (bad[:, :, :-1],), ref, absref)[0]
    bad[0, 0, 0, 0] = np.nan
    assert not bench.check_outputs(case, (bad,), ref, absref)[0]


def test_tolerance_scales_with_reduction_length():
    small = conv_case("s", "conv2d", (1, 1, 8, 8), 1, 3, 1)
    large = conv_case("l", "conv2d", (1, 64, 8, 8), 1, 3, 1)
    assert small.reduction == 9 and large.reduction == 64 * 9
    bwd = conv_case("b", "backward", (2, 4, 8, 8), 5, 3, 1)
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


def test_suite_holds_every_speed_target_case():
    names = [c.name for c in bench.build_suite()]
    assert len(names) == len(set(names))
    for target in bench.SPEED_TARGETS:
        assert set(target.cases) <= set(names), target.work
    quick = bench.build_suite(quick=True)
    assert len(quick) < len(names)
    custom = [c.name for c in bench.build_suite(sizes=[64], kernels=[5], channels=[4], batch=[2])]
    assert "filter_64_k5" in custom and "conv_b2_c4" in custom and "conv_b2_c4_bwd" in custom
    assert "filter_512_k3" not in custom


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
        ({"sizes": [0]}, "sizes must be >= 1"),
        ({"sizes": [8], "kernels": [11]}, "larger"),
    ],
)
def test_bad_suite_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bench.build_suite(**kwargs)


def test_memory_refusal_names_the_numbers():
    big = conv_case("filter_60000_k11", "filter", (1, 1, 60000, 60000), 1, 11, 5)
    need = bench.memory_needed(big)
    assert need["im2col"] == 60000 * 60000 * 121 * 4
    with pytest.raises(ValueError, match=r"filter_60000_k11.*needs about .*GiB.*im2col buffer"):
        bench.check_memory([big], available=8 * 2**30)
    bench.check_memory([TINY[1]], available=8 * 2**30)  # fits: no error


# ------------------------------------------------------------------------------ timing
def test_time_call_rejects_zero_repeats_and_orders_its_figures():
    with pytest.raises(ValueError, match="repeat"):
        timing.time_call(lambda: None, 0)
    t = timing.time_call(lambda: sum(range(100)), 2)
    assert t["min"] <= t["median"] <= t["max"] and t["number"] >= 1


def test_time_call_budget_stops_after_three_samples():
    calls = []
    t = timing.time_call(lambda: calls.append(1), 10, warmup=0, first=0.02, budget=0.0)
    assert t["samples"] == 3 and t["number"] == 1 and len(calls) == 3


def test_calls_per_sample_and_warm_up():
    assert timing.calls_per_sample(1.0) == 1
    assert timing.calls_per_sample(timing.SAMPLE_SECONDS / 10) == 10
    assert timing.calls_per_sample(0.0) == 1000
    calls = []
    timing.warm_up(lambda: calls.append(1), seconds=0.0)
    assert calls == [1]  # at least one call


def test_ratio_stats():
    assert timing.ratio_stats([]) is None
    assert timing.ratio_stats([2.0, 1.0, 4.0]) == {"median": 2.0, "min": 1.0, "max": 4.0}


def test_cpu_ns_counts_this_process_and_wait_quiet_returns():
    if timing.cpu_ns([os.getpid()]) is None:
        pytest.skip("no /proc schedstat")
    before = timing.cpu_ns([os.getpid()])
    sum(i * i for i in range(200_000))
    assert timing.cpu_ns([os.getpid()]) > before
    waited = timing.wait_quiet([os.getpid()], timeout=0.5)
    assert 0 < waited < 1.0


# ------------------------------------------------------------------------------ rounds, ratios
@pytest.fixture
def run():
    return bench.run_suite(TINY, threads=1, repeat=3, sides=local_sides(), peak_n=64)


def test_report_schema_rounds_and_ratios(run):
    assert run["schema"] == bench.SCHEMA
    for key in ("machine", "settings", "peak", "compile", "peers", "notes", "results", "summary"):
        assert key in run
    assert run["peak"]["gflops"] > 0
    assert {r["op"] for r in run["compile"]} == {c.op for c in TINY}
    assert all(r["status"] == "ok" for r in run["results"]), run["summary"]["not_ok"]
    for r in run["results"]:
        assert len(r["rounds"]) == 3 and r["number"] >= 1
        assert r["seconds"] == statistics.median(r["rounds"])
        assert r["min_seconds"] <= r["seconds"] <= r["max_seconds"]
        assert math.isclose(r["gflops"], r["flops"] / r["seconds"] / 1e9)
        assert r["rss_peak_bytes"] > 0
    by = {r["method"]: r for r in run["results"] if r["case"] == "tiny_conv"}
    assert by["loop"]["speedup_vs_loop"] == 1.0
    # vs numpy: the median of the per-round ratios, with their spread
    per_round = [p / m for p, m in zip(by["numpy"]["rounds"], by["im2col"]["rounds"])]
    assert by["im2col"]["ratios"]["numpy"] == statistics.median(per_round)
    assert by["im2col"]["ratio_spread"]["numpy"] == [min(per_round), max(per_round)]
    assert by["im2col"]["extra_bytes"] == bench.im2col_bytes(TINY[1])
    assert by["loop"]["extra_bytes"] == 0
    assert by["numpy"]["ratios"] == {}  # ratios are on cnnkit's rows only
    assert {a["case"] for a in run["summary"]["auto_vs_best"]} == {
        c.name for c in TINY if c.is_conv
    }


def test_rounds_alternate_between_sides(tmp_path):
    order = []

    class Recording(LocalSide):
        def call(self, cmd, **kwargs):
            if cmd == "sample":
                order.append(self.library)
            return super().call(cmd, **kwargs)

    sides = {"cnnkit": Recording("cnnkit", 1, LoopOps()), "numpy": Recording("numpy", 1)}
    bench.run_case(TINY[4], sides, 1, 3, None, str(tmp_path))
    assert order == ["cnnkit", "numpy"] * 3  # A B A B A B, never A A A B B B


def test_torch_is_timed_at_one_and_n_threads_and_the_better_one_counts():
    rows = []
    for library, method, threads, rounds in (
        ("cnnkit", "auto", 2, [1.0, 1.0, 1.0]),
        ("torch", "torch", 1, [3.0, 2.0, 4.0]),
        ("torch", "torch", 2, [1.5, 1.5, 1.8]),
    ):
        row = {
            "case": "c",
            "library": library,
            "method": method,
            "impl": "cnnkit" if library == "cnnkit" else "peer",
            "threads": threads,
            "rounds": rounds,
            "seconds": statistics.median(rounds),
            "ratios": {},
            "ratio_spread": {},
            "ratio_threads": {},
        }
        rows.append(row)
    from cnnkit.bench.suite import add_ratios

    add_ratios(rows)
    assert rows[0]["ratio_threads"]["torch"] == 2
    assert rows[0]["ratios"]["torch"] == 1.5 and rows[0]["ratio_spread"]["torch"] == [1.5, 1.8]
    assert peers.thread_choices("torch", 2) == (1, 2)
    assert peers.thread_choices("torch", 1) == (1,)
    assert peers.thread_choices("opencv", 2) == (2,)


def test_cpu_clock_drives_the_rates():
    run = bench.run_suite(TINY[:2], threads=1, repeat=1, sides=local_sides(), clock="cpu")
    assert run["settings"]["clock"] == "cpu"
    for r in run["results"]:
        assert r["seconds"] == r["cpu_seconds"] and r["wall_seconds"] > 0
    with pytest.raises(ValueError, match="threads=1"):
        bench.run_suite(TINY[:1], threads=2, repeat=1, sides=local_sides(), clock="cpu")


def test_auto_choice_is_reported_with_its_buffer(tmp_path):
    class Picky(LoopOps):
        @staticmethod
        def choose_method(c_in_per_group, taps, n_out, *, n_batch=None, n_positions=None):
            return "im2col" if c_in_per_group * taps > 9 else "loop"

    sides = {"cnnkit": LocalSide("cnnkit", 1, Picky())}
    rows, _, _ = bench.run_case(TINY[1], sides, 1, 1, None, str(tmp_path))
    auto = next(r for r in rows if r["method"] == "auto")
    assert auto["detail"] == "auto -> im2col"  # 3 channels x 9 taps = 27 > 9
    assert auto["extra_bytes"] == bench.im2col_bytes(TINY[1])
    assert bench.summarize(rows)["auto_vs_best"][0]["picked"] == "im2col"


def test_speed_targets_use_auto_and_the_geometric_mean():
    def row(case, ratio):
        return {
            "case": case,
            "impl": "cnnkit",
            "method": "auto",
            "status": "ok",
            "seconds": 1.0,
            "detail": "",
            "ratios": {"opencv": ratio},
            "ratio_spread": {"opencv": [ratio * 0.9, ratio * 1.1]},
            "ratio_threads": {"opencv": 2},
        }

    summary = bench.summarize([row("filter_512_k3", 2.0), row("filter_512_k5", 0.81)])
    (group,) = summary["target_groups"]
    assert group["cases"] == 2 and group["of"] == 12
    assert math.isclose(group["geomean"], math.sqrt(2.0 * 0.81))
    assert group["ok"]  # every case >= 0.8 and the geometric mean >= 1.0
    summary = bench.summarize([row("filter_512_k3", 2.0), row("filter_512_k5", 0.79)])
    assert not summary["target_groups"][0]["ok"]
    assert [t["ok"] for t in summary["targets"]] == [True, False]


# ------------------------------------------------------------------------------ files
def test_json_and_csv_files(run, tmp_path):
    bench.write_json(run, tmp_path / "b.json")
    loaded = json.loads((tmp_path / "b.json").read_text())
    assert loaded["schema"] == bench.SCHEMA
    assert len(loaded["results"]) == len(run["results"])
    assert json.loads(bench.to_json(run)) == loaded
    bench.write_csv(run, tmp_path / "b.csv")
    with open(tmp_path / "b.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == bench.CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == len(run["results"])
    im2col = next(r for r in rows if r["case"] == "tiny_conv" and r["method"] == "im2col")
    assert float(im2col["vs_numpy_min"]) <= float(im2col["vs_numpy"])
    assert float(im2col["vs_numpy"]) <= float(im2col["vs_numpy_max"])
    assert im2col["vs_torch"] == "" and im2col["rounds"] == "3"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_peer_is_named_with_its_install_command(monkeypatch):
    monkeypatch.setitem(peers.PEER_MODULES, "opencv", "cnnkit_no_such_module_cv2")
    missing = peers.missing_peers(["numpy", "opencv"])
    assert missing.keys() == {"opencv"}
    assert "not installed" in missing["opencv"] and "pip install" in missing["opencv"]


def _filter_rows(sizes, kernels):
    rows = []
    for s in sizes:
        for k in kernels:
            for library, method, t in (("cnnkit", "loop", 2.0), ("opencv", "opencv", 1.0)):
                rows.append(
                    {
                        "case": f"filter_{s}_k{k}",
                        "group": "filter",
                        "library": library,
                        "method": method,
                        "impl": "cnnkit" if library == "cnnkit" else "peer",
                        "seconds": t * s * k,
                        "gflops": 1.0 / (t * s * k),
                    }
                )
    return {"results": rows}


def test_plot_panels_never_have_a_single_x_value():
    panels = report.plot_panels(_filter_rows((64, 128), (3, 5)))
    assert [p["xlabel"] for p in panels] == ["image side (pixels)", "kernel side"]
    size = panels[0]["lines"]
    assert size["loop"] == [(64, 1 / (2.0 * 64 * 3)), (128, 1 / (2.0 * 128 * 3))]
    for p in panels:
        assert p["title"] and p["ylabel"]
        assert all(len({x for x, _ in pts}) > 1 for pts in p["lines"].values())
    only_kernels = report.plot_panels(_filter_rows((64,), (3, 5)))
    assert [p["xlabel"] for p in only_kernels] == ["kernel side"]
    only_sizes = report.plot_panels(_filter_rows((64, 128), (3,)))
    assert [p["xlabel"] for p in only_sizes] == ["image side (pixels)"]
    assert report.plot_panels(_filter_rows((64,), (3,))) == []


# ------------------------------------------------------------------------------ real peers
@pytest.mark.parametrize("peer", ["scipy", "opencv", "torch"])
def test_real_peers_agree_with_the_oracle(peer):
    if peers.missing_peers([peer]):
        pytest.skip(f"{peer} not installed")
    module = peers.import_library(peer)
    cases = [TINY[0]] + [c for c in TINY[1:] if c.peer_op in bench.PEER_OPS[peer]]
    for case in cases:
        arrays = bench.make_inputs(case)
        ref = bench.reference(case, arrays)
        absref = bench.reference(case, {k: np.abs(v) for k, v in arrays.items()})
        out = peers.to_numpy(peers.peer_impl(peer, module, case, arrays)())
        ok, _, why = bench.check_outputs(case, out, ref, absref)
        assert ok, f"{peer} {case.name}: {why}"


# ------------------------------------------------------------------------------ processes
def test_worker_process_loads_checks_and_samples(tmp_path):
    worker = Worker("numpy", 1)
    try:
        info = worker.ready()
        assert info["pid"] == worker.pids[0] != os.getpid()
        assert "threadpoolctl" in info["thread_control"]["blas"] or info["thread_control"]
        loaded = worker.call("load", case=TINY[1].to_dict(), outdir=str(tmp_path))
        got = loaded["impls"]["numpy"]
        assert got["error"] == ""
        case = TINY[1]
        arrays = bench.make_inputs(case)
        with np.load(got["file"], allow_pickle=False) as data:
            ok, _, why = bench.check_outputs(
                case,
                [data["arr_0"]],
                bench.reference(case, arrays),
                bench.reference(case, {k: np.abs(v) for k, v in arrays.items()}),
            )
        assert ok, why
        assert worker.call("warm", impl="numpy", threads=1) > 0
        sample = worker.call("sample", impl="numpy", threads=1, number=2)
        assert sample["wall"] > 0 and sample["cpu"] >= 0 and sample["rss"] > 0
        with pytest.raises(WorkerError, match="KeyError"):
            worker.call("sample", impl="nope", threads=1, number=1)
    finally:
        worker.close()
    assert worker.proc.returncode == 0


def test_cli_turns_a_dead_worker_into_a_one_line_failure(monkeypatch):
    def broken(*args, **kwargs):
        raise WorkerError("the torch worker stopped: Segmentation fault")

    monkeypatch.setattr(bench.suite, "start_sides", broken)
    result = CliRunner().invoke(_app(), ["bench", "--case", "lenet_c1", "--repeat", "1"])
    assert result.exit_code == 1, result.output
    assert "error: the torch worker stopped" in result.output
    assert "Traceback" not in result.output


def test_a_peer_whose_worker_dies_at_start_becomes_a_note(monkeypatch):
    class Dead(LocalSide):
        def ready(self):
            raise WorkerError("scipy worker: ImportError: broken install")

    started = {"cnnkit": LocalSide("cnnkit", 1, LoopOps()), "scipy": Dead("numpy", 1)}
    monkeypatch.setattr(bench.suite, "start_sides", lambda *a, **k: started)
    monkeypatch.setattr(bench.suite, "missing_peers", lambda wanted: {})
    run = bench.run_suite(TINY[:1], threads=1, repeat=1, peers=("scipy",), peak_n=32)
    assert run["peers"]["missing"] == {"scipy": "scipy worker: ImportError: broken install"}
    assert any("peer scipy missing" in n for n in run["notes"])
    assert {r["library"] for r in run["results"]} == {"cnnkit"}


def test_worker_that_cannot_start_says_why():
    worker = Worker("cnnkit_no_such_library", 1)
    with pytest.raises(WorkerError, match="cnnkit_no_such_library"):
        worker.ready()
    worker.close()


def test_self_check_times_each_library_alone_and_compares_fastest_samples(run):
    started = []

    def start(library, threads):
        started.append((library, threads))
        return LocalSide(library, threads, LoopOps() if library == "cnnkit" else None)

    rows = bench.self_check(run, TINY[:2], start=start)
    assert started == [("cnnkit", 1), ("numpy", 1)]  # one fresh side per library
    timed = [r for r in run["results"] if r["case"] in ("filter_9_k3", "tiny_conv")]
    assert len(rows) == len(timed)
    for r in rows:
        assert r["in_bench"] > 0 and r["alone"] > 0
        assert math.isclose(r["difference"], r["in_bench"] / r["alone"] - 1)
        assert r["ok"] == (abs(r["difference"]) <= 0.15)


# ------------------------------------------------------------------------------ --explain
def test_explain_numbers_equal_the_loop_and_an_independent_product():
    pytest.importorskip("numba")
    from cnnkit.bench.explain import explain_data

    data = explain_data()
    assert data["w_matrix"].shape == (4, 27) and data["patches"].shape == (27, 9)
    want = loop_conv2d(data["image"][None].astype(float), data["kernels"].astype(float))[0]
    np.testing.assert_array_equal(data["maps"], want)
    np.testing.assert_array_equal(data["loop"], want)
    # Column j of the patch matrix is the 3x3x3 block under output position j.
    block = data["image"][:, 1:4, 2:5].reshape(27)
    np.testing.assert_array_equal(data["patches"][:, 1 * 3 + 2], block)


# ------------------------------------------------------------------------------ --train
def test_torch_network_is_the_same_network_as_cnnkits_model(rng):
    torch = pytest.importorskip("torch")
    from cnnkit import arch as spec
    from cnnkit.nn.model import build_model

    text = "input 1 9 9; conv 3 k=3 p=same; relu; pool avg k=2; conv 4 k=2; tanh; fc 5"
    model = build_model(text, seed=2, dtype=np.float64)
    net = training.torch_network(spec.parse(text)).double()
    mine = [m for m in model.layers if m.params]
    theirs = [m for m in net if list(m.parameters())]
    assert len(mine) == len(theirs) == 3
    with torch.no_grad():
        for a, b in zip(mine, theirs):
            b.weight.copy_(torch.tensor(a.w))
            b.bias.copy_(torch.tensor(a.b))
    x = rng.standard_normal((3, 1, 9, 9))
    np.testing.assert_allclose(
        model.forward(x), net(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("name", sorted(training.TRAIN_NETS))
def test_both_training_sides_build_the_shipped_nets(name):
    torch = pytest.importorskip("torch")
    from cnnkit import arch as spec
    from cnnkit.nn.model import build_model

    net = training.TRAIN_NETS[name]
    ours = build_model(net.spec).parameter_count()
    theirs = sum(p.numel() for p in training.torch_network(spec.parse(net.spec)).parameters())
    assert ours == theirs
    torch.set_num_threads(1)
    out = training.torch_train_throughput(net.spec, 4, 2, optimizer=net.optimizer, lr=net.lr)
    assert out["images_per_s"] > 0


class FakeTrainSide:
    """A training side that reports fixed images/s per (library, threads), round by round."""

    def __init__(self, library, figures):
        self.library, self.figures, self.pids, self.info = library, figures, [], {}
        self.calls = []

    def call(self, cmd, net, threads, steps):
        assert cmd == "train"
        self.calls.append((net, threads, steps))
        value = self.figures[threads].pop(0)
        return {"images_per_s": value, "cpu_images_per_s": value / 2}

    def close(self):
        pass


def test_train_report_ratios_use_torchs_better_thread_count():
    figures = {"digits": None}
    cnnkit = FakeTrainSide("cnnkit", {2: [100.0, 120.0, 110.0] * 2})
    torch = FakeTrainSide("torch", {1: [50.0, 60.0, 55.0] * 2, 2: [80.0, 100.0, 100.0] * 2})
    got = training.train_report(2, quick=True, repeat=3, sides={"cnnkit": cnnkit, "torch": torch})
    assert figures and [r["net"] for r in got["train"]] == ["digits", "lenet5"]
    row = got["train"][0]
    assert row["torch_best_threads"] == 2
    assert row["ratio"] == statistics.median([100 / 80, 120 / 100, 110 / 100])
    assert row["ratio_spread"] == [1.1, 1.25]
    assert row["target"] == 1.3 and row["ok"] is False
    assert cnnkit.calls[0] == ("digits", 2, training.TRAIN_NETS["digits"].quick_steps)
    # rounds alternate: cnnkit, torch 1 thread, torch 2 threads, then again
    assert [c[1] for c in torch.calls[:4]] == [1, 2, 1, 2]
    with pytest.raises(ValueError, match="threads=1"):
        training.train_report(2, clock="cpu", sides={"cnnkit": cnnkit})
    cnnkit = FakeTrainSide("cnnkit", {1: [100.0] * 6})
    torch = FakeTrainSide("torch", {1: [50.0] * 6})
    got = training.train_report(1, clock="cpu", sides={"cnnkit": cnnkit, "torch": torch})
    assert got["train"][0]["cnnkit_images_per_s"] == 50.0  # the CPU-time figure
    assert got["settings"]["clock"] == "cpu"


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
        (["--json-file", "/nonexistent/dir/b.json"], "does not exist"),
        (["--plot", "b.txt"], "must end with .png"),
        (["--plot", "b.png", "--case", "lenet_c1"], "--plot draws the filter cases"),
        (["--train", "--csv", "b.csv"], "use --json or --json-file"),
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
    assert result.exit_code == 0
    assert "lenet_c1" in result.output and "cifar_bwd" not in result.output
    result = CliRunner().invoke(_app(), ["bench", "--explain"])
    assert result.exit_code == 0, result.output
    assert "4x27 kernel matrix" in result.output and "yes, exactly" in result.output


def test_busy_machine_note():
    from cnnkit.bench.machine import busy_note

    assert busy_note({"load_average": [0.1, 0, 0], "usable_cores": 2}) is None
    note = busy_note({"load_average": [5.0, 0, 0], "usable_cores": 2})
    assert note and "load average 5.0 on 2 cores" in note


def test_report_tables_fit_100_columns(run):
    from rich.console import Console

    from cnnkit.cli import bench as cli

    out = Console(width=100, record=True, file=open(os.devnull, "w"))
    cli.print_report(run, out)
    text = out.export_text()
    assert "issue" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "tiny_conv" in text and "numpy" in text


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
        "--json-file",
        f"{out}.json",
        "--csv",
        f"{out}.csv",
        "--plot",
        f"{out}.png",
    ]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "b.json").read_text())
    assert {r["case"] for r in got["results"]} == {
        f"filter_{s}_k{k}" for s in (32, 48) for k in (3, 5)
    }
    assert all(r["status"] == "ok" for r in got["results"]), got["summary"]["not_ok"]
    assert got["settings"]["isolation"] == "one fresh worker process per library"
    assert (tmp_path / "b.png").stat().st_size > 1000
    assert "Numba first call" in result.output and "filter" in result.output
    result = CliRunner().invoke(_app(), [*args[:11], "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["schema"] == bench.SCHEMA


# ------------------------------------------------------------------------------ separable
@pytest.mark.parametrize("weights", sorted(bench.cases.SEPARABLE))
def test_separable_cases_oracle_peer_and_auto(weights):
    import dataclasses

    from cnnkit import ops

    case = bench.cases.separable_case(f"sep_{weights}", 31, weights)
    arrays = bench.make_inputs(case)
    col, row = bench.cases.SEPARABLE[weights]
    np.testing.assert_allclose(arrays["w"][0, 0], np.outer(col, row), rtol=1e-6, atol=1e-7)
    ref = bench.reference(case, arrays)
    absref = bench.reference(case, {k: np.abs(v) for k, v in arrays.items()})
    # the two 1-D passes agree with the 2-D definition on the same float32 kernel
    direct = dataclasses.replace(case, weights="")
    np.testing.assert_allclose(ref[0], bench.reference(direct, arrays)[0], atol=1e-6)
    np.testing.assert_allclose(
        absref[0], bench.reference(direct, {k: np.abs(v) for k, v in arrays.items()})[0]
    )
    k = case.kernel[0]
    assert peers.auto_choice(case, ops) == ("separable" if k >= 5 else "loop")
    for method, fn in peers.cnnkit_impls(case, ops, arrays).items():
        ok, _, why = bench.check_outputs(case, peers.to_numpy(fn()), ref, absref)
        assert ok, f"{method}: {why}"
    if not peers.missing_peers(["opencv"]):
        cv2 = peers.import_library("opencv")
        out = peers.to_numpy(peers.peer_impl("opencv", cv2, case, arrays)())
        ok, _, why = bench.check_outputs(case, out, ref, absref)
        assert ok, why


def test_run_settings_are_checked_once_in_parameter_names():
    from cnnkit.bench.timing import check_settings
    from cnnkit.errors import ParameterError

    check_settings(1, None, "cpu")
    check_settings(4, 2, "wall", thread_limit=4)
    for args, message, params in [
        ((1, None, "sundial"), "clock must be wall or cpu", ("clock",)),
        ((1, 0, "wall"), "repeat must be >= 1", ("repeat",)),
        ((0, None, "wall"), "threads must be >= 1", ("threads",)),
        ((2, None, "cpu"), "clock=cpu needs threads=1", ("clock", "threads")),
    ]:
        with pytest.raises(ParameterError, match=message) as exc:
            check_settings(*args)
        assert exc.value.params == params
    with pytest.raises(ParameterError, match="between 1 and 2"):
        check_settings(3, None, "wall", thread_limit=2)
    with pytest.raises(ParameterError, match="clock=cpu needs threads=1"):
        bench.run_suite([], threads=2, clock="cpu", sides={})


def test_choose_cases_finds_named_cases_outside_the_quick_suite():
    quick = bench.choose_cases(quick=True)
    assert [c.name for c in quick] == [c.name for c in bench.build_suite(quick=True)]
    full_only = next(c.name for c in bench.build_suite() if c.name not in {q.name for q in quick})
    assert [c.name for c in bench.choose_cases([full_only], quick=True)] == [full_only]
    with pytest.raises(ValueError, match="unknown case 'nope'"):
        bench.choose_cases(["nope"])


def test_run_settings_honour_an_explicit_repeat():
    assert bench.run_settings(True) == {"repeat": 3, "budget_s": 1.5, "peak_n": 1024}
    assert bench.run_settings(False) == {"repeat": 5, "budget_s": 1.5, "peak_n": 2048}
    assert bench.run_settings(False, 7) == {"repeat": 7, "budget_s": None, "peak_n": 2048}


def test_auto_label_is_the_method_auto_runs():
    """The report's "auto (method)" is what ops plans for the case's own arrays."""
    from cnnkit import ops

    checked = set()
    for case in bench.build_suite():
        if not case.is_conv or case.weights:
            continue
        arrays = bench.make_inputs(case)
        nd = 1 if case.op == "conv1d" else 2
        w = arrays["w"].reshape(arrays["w"].shape[:2] + case.kernel[2 - nd :])
        backward = case.op == "conv2d_backward"
        geometry = (case.stride[2 - nd :], case.padding[2 - nd :], 1, 1, "zeros", False)
        plan = ops._plan_conv(nd, arrays["x"], w, None, *geometry, "auto", backward)
        assert peers.auto_choice(case, ops) == plan.method, case.name
        checked.add(plan.method)
    assert checked == {"loop", "im2col", "winograd"}
