"""Serving at scale: per-request results streamed to Parquet in bounded memory, and latency
percentiles from mergeable quantile sketches within their stated error bound."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.serving.sketch import QuantileSketch


def _bounds(x: np.ndarray, q: float) -> tuple[float, float]:
    """The data values at the two ranks around q·(n − 1)."""
    s = np.sort(x)
    r = q * (len(s) - 1)
    return float(s[math.floor(r)]), float(s[math.ceil(r)])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), sigma=st.floats(0.01, 4), scale=st.floats(1e-6, 1e4),
       alpha=st.sampled_from([0.001, 0.005, 0.02]), seed=st.integers(0, 2**16),
       q=st.floats(0, 1), zeros=st.integers(0, 20))
def test_sketch_quantiles_are_within_the_relative_error_bound(n, sigma, scale, alpha, seed, q,
                                                              zeros):
    rng = np.random.default_rng(seed)
    x = np.concatenate([scale * rng.lognormal(0, sigma, n), np.zeros(zeros)])
    sk = QuantileSketch(alpha)
    sk.add_many(np.concatenate([x, [np.nan, np.inf]]))  # non-finite values are skipped
    assert sk.count == x.size and sk.sum == pytest.approx(x.sum(), rel=1e-9)
    lo, hi = _bounds(x, q)
    v = sk.quantile(q)
    # DDSketch's guarantee, with a hair for the representative value's own rounding
    assert lo * (1 - alpha) * (1 - 1e-12) <= v <= hi * (1 + alpha) * (1 + 1e-12), (lo, v, hi)


@settings(max_examples=30, deadline=None)
@given(parts=st.lists(st.integers(0, 3000), min_size=1, max_size=6), seed=st.integers(0, 999))
def test_sketches_merge_exactly(parts, seed):
    """Summarised apart and merged equals summarised at once: batches, replicas or processes
    can each keep a sketch."""
    rng = np.random.default_rng(seed)
    chunks = [rng.lognormal(-3, 1.5, k) for k in parts]
    whole = QuantileSketch()
    whole.add_many(np.concatenate(chunks))
    merged = QuantileSketch()
    for c in chunks:
        part = QuantileSketch()
        part.add_many(c)
        merged.merge(part)
    assert merged.count == whole.count
    for q in (0.0, 0.1, 0.5, 0.9, 0.99, 1.0):
        assert merged.quantile(q) == whole.quantile(q)


def test_vectorised_add_matches_the_library_one_by_one():
    rng = np.random.default_rng(7)
    x = rng.lognormal(0, 3, 20000)
    fast, slow = QuantileSketch(), QuantileSketch()
    assert fast._vectorised
    fast.add_many(x)
    slow._vectorised = False
    slow.add_many(x)
    for q in np.linspace(0, 1, 41):
        assert fast.quantile(q) == pytest.approx(slow.quantile(q), rel=1e-12)


# ---------------------------------------------------------------- streamed simulation


@pytest.fixture(scope="module")
def setup(lib, hw_cache):
    from sim.perf.memory import Layout
    from sim.perf.precision import Precision
    from sim.serving.simulate import ServeSetup

    return ServeSetup(lib.model("llama-3.1-8b"), hw_cache("h100-sxm"), Precision.preset("fp8"),
                      Layout(tp=1), replicas=2)


def _traffic(n=3000, rate=40.0):
    from sim.serving.traffic import LognormalLengths, PoissonTraffic

    return PoissonTraffic(rate, n, LognormalLengths(600, 500, 120, 100), 11)


def test_streamed_run_equals_the_in_memory_run(setup, tmp_path, monkeypatch):
    import sim.serving.simulate as simulate_mod
    from sim.serving.metrics import Slo, per_request, summarize
    from sim.serving.simulate import simulate

    monkeypatch.setattr(simulate_mod, "STREAM_BATCH_ROWS", 500)  # several row groups
    mem = simulate(setup, _traffic())
    out = tmp_path / "runs" / "req.parquet"
    st_ = simulate(setup, _traffic(), per_request_out=out)
    assert st_.per_request_path == str(out) and len(st_.rid) == 0
    assert not st_.timeline["replica"].size
    assert [p.name for p in out.parent.iterdir()] == ["req.parquet"]  # no partial file left
    f = pq.ParquetFile(out)
    assert f.metadata.num_rows == len(mem.rid) and f.metadata.num_row_groups == math.ceil(
        len(mem.rid) / 500)
    got = f.read().to_pandas().sort_values("request_id").reset_index(drop=True)
    want = per_request(mem)
    for c in want.columns:
        np.testing.assert_array_equal(got[c].to_numpy(), want[c].to_numpy(), err_msg=c)
    slo = Slo(ttft_ms=60, tpot_ms=12)
    a, b = summarize(mem, slo, card_tdp_w=700), summarize(st_, slo, card_tdp_w=700)
    alpha = b.pop("sketch_relative_accuracy")
    assert b.pop("per_request_path") == str(out)
    assert a.keys() == b.keys()
    for k in a:
        if k.endswith("_ms"):
            assert a[k]["mean"] == pytest.approx(b[k]["mean"], rel=1e-12)
            for p in ("p50", "p90", "p99"):  # numpy interpolates between the two ranks
                assert abs(b[k][p] - a[k][p]) <= alpha * a[k][p] + abs(
                    np.diff(_bounds(want[k.replace('_ms', '_s')].dropna().to_numpy(),
                                    int(p[1:]) / 100))[0]) * 1e3 + 1e-9, (k, p)
        elif k == "sim_wall_s":
            continue
        elif isinstance(a[k], (str, bool)) or a[k] is None:
            assert a[k] == b[k], k
        else:
            assert a[k] == pytest.approx(b[k], rel=1e-12), k


def test_streamed_run_keeps_memory_bounded(setup, tmp_path, monkeypatch):
    """The recorder holds one batch: its buffers never grow past `STREAM_BATCH_ROWS`."""
    import sim.serving.simulate as simulate_mod
    from sim.serving.simulate import simulate

    sizes = []
    real_flush = simulate_mod._ParquetRecorder.flush

    def flush(self):
        sizes.append(len(self.cols["rid"]))
        real_flush(self)

    monkeypatch.setattr(simulate_mod, "STREAM_BATCH_ROWS", 256)
    monkeypatch.setattr(simulate_mod._ParquetRecorder, "flush", flush)
    simulate(setup, _traffic(4000, 60.0), per_request_out=tmp_path / "r.parquet")
    assert len(sizes) >= 4000 // 256 and set(sizes) == {256}


def test_a_failed_streamed_run_leaves_no_file(setup, tmp_path):
    from sim.serving.simulate import simulate

    def broken():
        src = _traffic(2000)
        for i, chunk in enumerate(src.iter_chunks(300)):
            if i == 3:
                raise RuntimeError("trace read failed")
            yield chunk

    out = tmp_path / "r.parquet"
    with pytest.raises(RuntimeError):
        simulate(setup, broken(), per_request_out=out)
    assert list(tmp_path.iterdir()) == []


def test_default_path_is_unchanged(setup):
    """Without `per_request_out` the result keeps its arrays and timeline as before."""
    from sim.serving.simulate import simulate

    res = simulate(setup, _traffic(300))
    assert res.per_request_path is None and len(res.rid) == 300
    assert res.timeline["replica"].size == res.events
