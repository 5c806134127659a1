"""Arrival streams (sim/serving/traffic.py): theory checks, common random numbers, trace replay."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.config.loader import ConfigError
from sim.serving.traffic import (
    EmpiricalLengths,
    GammaTraffic,
    LognormalLengths,
    ModulatedTraffic,
    PoissonTraffic,
    RequestChunk,
    TraceTraffic,
    collect,
    fit_lengths,
)

TRACES = Path(__file__).resolve().parents[1] / "workloads" / "traces"
CONV = TRACES / "azure-conv-2023.csv"
CODE = TRACES / "azure-code-2023.csv"
LENGTHS = LognormalLengths(input_mean=1000, input_std=800, output_mean=200, output_std=150,
                           input_max=8000, output_max=2000)
N = 20_000


def gaps(chunk: RequestChunk) -> np.ndarray:
    return np.diff(np.concatenate(([0.0], chunk.arrival_s)))


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------- synthetic: theory

# Tolerances: with n = 20,000 i.i.d. gaps the sample mean has relative standard error
# CV/sqrt(n) (0.71% for Poisson) and the sample CV about sqrt((kurtosis - 1) / (4 n)) relative
# (delta method on the std; exponential kurtosis 9 -> 1.0%; gamma kurtosis 3 + 6 cv^2 -> 1.9% at
# cv = 2). We allow 5 standard errors (a false alarm under 1e-6 per check); seeds are fixed, so
# the tests are deterministic anyway and the tolerance guards against a wrong formula, which
# would miss by far more (e.g. rate vs 1/rate, or shape vs 1/shape).


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poisson_interarrival_mean_and_cv(seed):
    rate = 7.5
    g = gaps(collect(PoissonTraffic(rate, N, LENGTHS, seed=seed)))
    assert len(g) == N
    assert g.mean() == pytest.approx(1 / rate, rel=5 * 1 / math.sqrt(N))
    assert g.std() / g.mean() == pytest.approx(1.0, abs=5 * math.sqrt(8 / (4 * N)))


@pytest.mark.parametrize("cv", [0.5, 2.0])
def test_gamma_interarrival_cv(cv):
    rate = 3.0
    g = gaps(collect(GammaTraffic(rate, cv, N, LENGTHS, seed=4)))
    assert g.mean() == pytest.approx(1 / rate, rel=5 * cv / math.sqrt(N))
    kurtosis = 3 + 6 * cv**2
    assert g.std() / g.mean() == pytest.approx(cv, rel=5 * math.sqrt((kurtosis - 1) / (4 * N)))


def test_gamma_cv1_is_poisson_and_cv0_is_deterministic():
    p = collect(PoissonTraffic(2.0, 5000, LENGTHS, seed=9))
    g = collect(GammaTraffic(2.0, 1.0, 5000, LENGTHS, seed=9))
    assert np.array_equal(p.arrival_s, g.arrival_s)
    assert np.array_equal(p.input_tokens, g.input_tokens)
    # and the generic inverse-CDF path agrees with the exponential at shape 1
    near = collect(GammaTraffic(2.0, 1.0 + 1e-9, 5000, LENGTHS, seed=9))
    np.testing.assert_allclose(near.arrival_s, p.arrival_s, rtol=1e-6)
    d = collect(GammaTraffic(4.0, 0.0, 10, LENGTHS, seed=9))
    np.testing.assert_allclose(d.arrival_s, np.arange(1, 11) / 4.0, rtol=1e-15)


def test_lognormal_lengths_moments_and_constant():
    rng = np.random.default_rng(0)
    inp, out = LognormalLengths(500, 300, 100, 50).sample(rng, 200_000)
    assert inp.dtype == np.int64 and inp.min() >= 1 and out.min() >= 1
    # SE of the mean is std/sqrt(n) = 0.67 tokens; rounding shifts it by far less than 1 token
    assert inp.mean() == pytest.approx(500, abs=4)
    assert inp.std() == pytest.approx(300, rel=0.03)
    assert out.mean() == pytest.approx(100, abs=1)
    const_in, const_out = LognormalLengths(222.33, 0, 294.45, 0).sample(rng, 10)
    assert set(const_in) == {222} and set(const_out) == {294}
    clipped, _ = LognormalLengths(100, 500, 10, 1, input_min=20, input_max=300).sample(rng, 10_000)
    assert clipped.min() == 20 and clipped.max() == 300


def test_lognormal_from_library_mix(lib):
    mix = lib.lengths("mlperf-llama2-70b")
    s = LognormalLengths.from_mix(mix)
    assert (s.input_mean, s.input_max, s.output_min) == (mix.lengths.input_tokens.mean,
                                                         mix.lengths.input_tokens.max,
                                                         mix.lengths.output_tokens.min)
    inp, out = s.sample(np.random.default_rng(1), 100)
    assert inp.min() >= mix.lengths.input_tokens.min and inp.max() <= mix.lengths.input_tokens.max


def test_empirical_lengths_keep_pairs():
    inp = np.arange(1, 1001)
    emp = EmpiricalLengths(inp, 7 * inp + 3)
    a, b = emp.sample(np.random.default_rng(5), 50_000)
    assert np.array_equal(b, 7 * a + 3)
    assert len(np.unique(a)) > 990  # draws cover the table (expected 1000 · (1 − e^−50))
    with pytest.raises(ValueError, match="one length"):
        EmpiricalLengths([1, 2], [1])


# ---------------------------------------------------------------- common random numbers


@given(seed=st.integers(0, 2**32 - 1), rate=st.floats(0.01, 1e4), factor=st.floats(0.1, 100),
       cv=st.sampled_from([None, 0.3, 1.0, 3.0]))
def test_crn_rate_scaling_is_exact(seed, rate, factor, cv):
    def make(r):
        if cv is None:
            return PoissonTraffic(r, 300, LENGTHS, seed=seed)
        return GammaTraffic(r, cv, 300, LENGTHS, seed=seed)

    slow, fast = collect(make(rate)), collect(make(rate * factor))
    np.testing.assert_allclose(fast.arrival_s, slow.arrival_s / factor, rtol=1e-12, atol=0)
    assert np.array_equal(fast.input_tokens, slow.input_tokens)
    assert np.array_equal(fast.output_tokens, slow.output_tokens)


def test_crn_double_rate_halves_arrivals():
    one = collect(PoissonTraffic(3.0, N, LENGTHS, seed=11))
    two = collect(PoissonTraffic(6.0, N, LENGTHS, seed=11))
    assert np.array_equal(two.arrival_s, one.arrival_s / 2)  # x/(2r) and (x/r)/2 round alike
    assert np.array_equal(two.input_tokens, one.input_tokens)
    assert np.array_equal(two.output_tokens, one.output_tokens)


def test_same_seed_same_arrays_different_seed_differs():
    a = collect(GammaTraffic(5.0, 1.5, 2000, LENGTHS, seed=42))
    b = collect(GammaTraffic(5.0, 1.5, 2000, LENGTHS, seed=42))
    c = collect(GammaTraffic(5.0, 1.5, 2000, LENGTHS, seed=43))
    for name in ("arrival_s", "input_tokens", "output_tokens"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
        assert not np.array_equal(getattr(a, name), getattr(c, name))
    # a SeedSequence seed is copied, not advanced: iterating twice gives the same stream
    src = PoissonTraffic(1.0, 100, LENGTHS, seed=np.random.SeedSequence(7))
    assert np.array_equal(collect(src).arrival_s, collect(src).arrival_s)


@given(chunk_size=st.integers(1, 700))
def test_synthetic_streams_do_not_depend_on_chunk_size(chunk_size):
    for src in (PoissonTraffic(2.0, 1500, LENGTHS, seed=3),
                GammaTraffic(2.0, 2.5, 1500, EmpiricalLengths([5, 6, 7], [1, 2, 3]), seed=3),
                ModulatedTraffic(PoissonTraffic(0.01, 1500, LENGTHS, seed=3), 0.5, 0.3)):
        whole, parts = collect(src, chunk_size=10_000), collect(src, chunk_size=chunk_size)
        assert np.array_equal(whole.arrival_s, parts.arrival_s)
        assert np.array_equal(whole.input_tokens, parts.input_tokens)
        assert np.array_equal(whole.output_tokens, parts.output_tokens)
        assert all(len(c) <= chunk_size for c in src.iter_chunks(chunk_size))


def test_duration_cutoff_and_num_requests_bound():
    c = collect(PoissonTraffic(10.0, 100_000, LENGTHS, seed=1, duration_s=60.0))
    assert c.arrival_s.max() < 60.0
    assert len(c) == pytest.approx(600, abs=5 * math.sqrt(600))
    full = collect(PoissonTraffic(10.0, 100_000, LENGTHS, seed=1))
    assert np.array_equal(c.arrival_s, full.arrival_s[: len(c)])
    assert len(collect(PoissonTraffic(10.0, 123, LENGTHS, seed=1, duration_s=1e9))) == 123
    assert len(collect(PoissonTraffic(10.0, 0, LENGTHS))) == 0


# ---------------------------------------------------------------- modulated traffic


def test_modulated_peak_half_of_day_busier_than_trough():
    base = PoissonTraffic(0.05, 100_000, LENGTHS, seed=5)
    c = collect(ModulatedTraffic(base, diurnal_amplitude=0.5, peak_hour=14.0, duration_s=4 * 86400))
    hour = (c.arrival_s / 3600) % 24
    peak = np.sum(np.abs(hour - 14.0) < 6)
    trough = len(c) - peak
    # expected ratio (1 + a·2/π) / (1 − a·2/π) = 1.93 at a = 0.5; counts are ~11k and ~6k
    assert peak / trough == pytest.approx((1 + 1 / math.pi) / (1 - 1 / math.pi), rel=0.05)
    # same requests as the base, in the same order
    assert np.array_equal(c.input_tokens, collect(base).input_tokens[: len(c)])


def test_modulated_hourly_counts_match_intensity():
    """Time rescaling against its integral: counts per clock hour over two weeks vs ∫ rate."""
    m = ModulatedTraffic(PoissonTraffic(0.1, 10**6, LENGTHS, seed=8), diurnal_amplitude=0.6,
                         weekly_amplitude=0.4, peak_hour=15.5, start_hour=6.0, start_weekday=3,
                         duration_s=14 * 86400)
    c = collect(m)
    edges = np.arange(0, 14 * 86400 + 1, 3600.0)
    observed = np.histogram(c.arrival_s, edges)[0]
    fine = np.arange(0, 14 * 86400, 10.0) + 5.0
    expected = (m.intensity_rps(fine) * 10.0).reshape(-1, 360).sum(axis=1)
    z = (observed - expected) / np.sqrt(expected)  # Poisson counts: variance = mean
    assert np.max(np.abs(z)) < 5
    assert len(c) == pytest.approx(0.1 * 14 * 86400, rel=5 / math.sqrt(0.1 * 14 * 86400))
    # weekends (start Thursday 06:00: Saturday starts at 42 h) run at (1 − 0.4) of weekdays
    day_of = ((c.arrival_s / 3600 + 6.0) // 24).astype(int)
    per_day = np.bincount(day_of, minlength=15)[1:14]  # whole clock days only
    weekday = (3 + np.arange(1, 14)) % 7
    ratio = per_day[weekday >= 5].mean() / per_day[weekday < 5].mean()
    assert ratio == pytest.approx(0.6, rel=0.05)


def test_modulated_zero_amplitude_is_base():
    base = GammaTraffic(0.2, 2.0, 5000, LENGTHS, seed=1)
    np.testing.assert_allclose(collect(ModulatedTraffic(base)).arrival_s, collect(base).arrival_s,
                               rtol=1e-12)


def test_modulated_keeps_crn_monotone_in_rate():
    lo = collect(ModulatedTraffic(PoissonTraffic(0.05, 5000, LENGTHS, seed=2), 0.8, 0.5))
    hi = collect(ModulatedTraffic(PoissonTraffic(0.08, 5000, LENGTHS, seed=2), 0.8, 0.5))
    assert np.all(hi.arrival_s <= lo.arrival_s)
    assert np.array_equal(hi.output_tokens, lo.output_tokens)


# ---------------------------------------------------------------- trace replay


def test_shipped_conv_trace():
    c = collect(TraceTraffic(CONV))
    assert len(c) == 19_366
    assert c.arrival_s[0] == 0.0 and np.all(np.diff(c.arrival_s) >= 0)
    assert c.arrival_s[-1] / 60 == pytest.approx(58, abs=1)
    # first rows: 18:15:46.6805900 -> 0, 18:15:50.9951690 -> 4.314579 s
    assert c.arrival_s[1] == pytest.approx(4.314579, abs=1e-9)
    assert tuple(c.input_tokens[:2]) == (374, 396) and tuple(c.output_tokens[:2]) == (44, 109)
    assert len(collect(TraceTraffic(CODE))) == 8_819


def test_trace_streaming_does_not_depend_on_chunk_size():
    whole = collect(TraceTraffic(CONV))
    parts = collect(TraceTraffic(CONV), chunk_size=1000)
    assert np.array_equal(whole.arrival_s, parts.arrival_s)
    head = collect(TraceTraffic(CONV, max_requests=300), chunk_size=7)
    assert len(head) == 300
    assert np.array_equal(head.arrival_s, whole.arrival_s[:300])
    assert np.array_equal(head.input_tokens, whole.input_tokens[:300])
    assert np.array_equal(head.output_tokens, whole.output_tokens[:300])


def test_trace_time_scale_halves_arrivals():
    one = collect(TraceTraffic(CONV, max_requests=1000))
    two = collect(TraceTraffic(CONV, time_scale=2.0, max_requests=1000))
    assert np.array_equal(two.arrival_s, one.arrival_s / 2)
    assert np.array_equal(two.input_tokens, one.input_tokens)


def test_plain_csv_format(tmp_path):
    p = write(tmp_path, "output_tokens,arrival_s,input_tokens\n5,0.5,10\n6,0.5,11\n\n7,2.25,12\n")
    c = collect(TraceTraffic(p))
    assert list(c.arrival_s) == [0.5, 0.5, 2.25]  # as written, not rebased
    assert list(c.input_tokens) == [10, 11, 12] and list(c.output_tokens) == [5, 6, 7]


@pytest.mark.parametrize("rows, line, fragment", [
    (["2023-11-16 18:15:46.68,3,4", "2023-11-16 18:15:47,abc,4"], 3,
     "ContextTokens must be an integer >= 1 (got 'abc')"),
    (["2023-11-16 18:15:46.68,3,4", "2023-11-16 18:15:47,3,0"], 3,
     "GeneratedTokens must be an integer >= 1 (got '0')"),
    (["2023-11-16 18:15:46.68,3,4", "", "yesterday,3,4"], 4, "TIMESTAMP is not a date-time"),
    (["2023-11-16 18:15:46.68,3,4", "2023-11-16 18:15:47,3"], 3, "GeneratedTokens is missing"),
    (["2023-11-16 18:15:46.68,3,4", "2023-11-16 18:15:47,3,4,9"], 3, "expected 3 fields, saw 4"),
])
def test_malformed_row_names_file_and_line(tmp_path, rows, line, fragment):
    p = write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    with pytest.raises(ConfigError) as e:
        collect(TraceTraffic(p), chunk_size=1)
    msg = str(e.value)
    assert msg.startswith(f"{p}: line {line}: ") and fragment in msg and "\n" not in msg


def test_unsorted_rows_error(tmp_path):
    rows = [f"2023-11-16 18:15:{s:02d}.5000000,3,4" for s in (10, 11, 12, 13, 12)]
    p = write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows))
    for chunk_size in (2, 100):  # the step back across a chunk boundary and within one
        with pytest.raises(ConfigError, match=r"t\.csv: line 6: TIMESTAMP goes back in time"):
            collect(TraceTraffic(p), chunk_size=chunk_size)
    plain = write(tmp_path, "arrival_s,input_tokens,output_tokens\n1,1,1\n0.5,1,1\n", "p.csv")
    with pytest.raises(ConfigError, match="line 3: arrival_s goes back in time"):
        collect(TraceTraffic(plain))


def test_missing_file_unknown_header_and_size_guard(tmp_path):
    missing = r"^nope/x\.csv: cannot read \(No such file or directory\)$"
    with pytest.raises(ConfigError, match=missing):
        collect(TraceTraffic("nope/x.csv"))
    bad = write(tmp_path, "time,in,out\n1,2,3\n")
    with pytest.raises(ConfigError, match="line 1: unknown header 'time,in,out' .*accepted: "
                                          "'TIMESTAMP,ContextTokens,GeneratedTokens' or "
                                          "'arrival_s,input_tokens,output_tokens'"):
        collect(TraceTraffic(bad))
    with pytest.raises(ConfigError, match="larger than max_bytes"):
        collect(TraceTraffic(CONV, max_bytes=1000))


# ---------------------------------------------------------------- length statistics


def test_fit_lengths_on_conv_trace():
    f = fit_lengths(CONV)
    assert f["num_requests"] == 19_366
    # the dataset's README: prompt median / mean 1,020 / 1,155, output 129 / 211
    assert f["input_tokens"]["p50"] == 1020 and f["output_tokens"]["p50"] == 129
    assert f["input_tokens"]["mean"] == pytest.approx(1155, abs=0.5)
    assert f["output_tokens"]["mean"] == pytest.approx(211, abs=0.5)
    c = collect(TraceTraffic(CONV))
    for side in ("input_tokens", "output_tokens"):
        x = getattr(c, side)
        got = f[side]
        assert (got["min"], got["max"]) == (x.min(), x.max())
        assert got["std"] == pytest.approx(x.std(), rel=1e-12)
        np.testing.assert_allclose([got["p50"], got["p90"], got["p99"]],
                                   np.quantile(x, [0.5, 0.9, 0.99]), rtol=1e-12)


def test_empirical_lengths_from_trace():
    emp = EmpiricalLengths.from_trace(CONV, max_requests=100)
    a, b = emp.sample(np.random.default_rng(0), 1000)
    pairs = set(zip(emp.input_tokens.tolist(), emp.output_tokens.tolist()))
    assert set(zip(a.tolist(), b.tolist())) <= pairs


def test_request_chunk_validates():
    with pytest.raises(ValueError, match="non-decreasing"):
        RequestChunk(np.array([1.0, 0.5]), np.array([1, 1]), np.array([1, 1]))
    with pytest.raises(ValueError, match=">= 1"):
        RequestChunk(np.array([0.0]), np.array([0]), np.array([1]))
    assert len(RequestChunk.empty()) == 0 and len(collect(TraceTraffic(CONV, max_requests=0))) == 0
