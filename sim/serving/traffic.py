"""Request arrival streams for the serving simulator: synthetic processes and trace replay.

Every source yields `RequestChunk`s (numpy arrays: arrival time, input and output tokens) from
`iter_chunks(chunk_size)`; nothing builds one Python object per request, so a million-request
trace streams in constant memory. Each call to `iter_chunks` restarts the stream from the
beginning, and the arrays do not depend on `chunk_size`.

Common random numbers (modeling-notes.md, serving): a synthetic source is defined by its seed.
`SeedSequence(seed).spawn(2)` gives two streams: stream 0 draws one uniform per request for the
inter-arrival times, stream 1 draws the token lengths. Arrival times are computed at unit rate
(mean inter-arrival 1) and divided by the rate, so the same seed at two rates gives the same
requests, each arriving earlier at the higher rate: p99 latency is then monotone in rate and a
bisection on rate does not chase noise. Length samplers turn uniforms into lengths by inverse
CDF, so drawing in chunks gives the same numbers as drawing all at once.
"""

from __future__ import annotations

import abc
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
from scipy import special

from sim.config.loader import ConfigError
from sim.config.workload import LengthMix

DEFAULT_CHUNK_SIZE = 65536
"""Requests per chunk: 65,536 × 24 bytes ≈ 1.5 MB of arrays, large enough to vectorise well."""

DEFAULT_MAX_TRACE_BYTES = 2 * 1024**3
"""Refuse larger trace files unless asked: 2 GB of CSV is ~50 M requests, a deliberate choice."""
DEFAULT_MAX_TRACE_ROWS = 10_000_000
"""Most requests a trace may hold where its rows are kept in memory (`EmpiricalLengths`: 160 MB
of token counts); replay (`TraceTraffic`) streams and has no row limit."""

SECONDS_PER_DAY = 86_400.0
SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY
INTENSITY_GRID_S = 10.0
"""Grid step of the tabulated cumulative intensity. Linear interpolation of its inverse errs by
about step² · max|m'| / (8 · m) ≈ 1 ms at diurnal amplitude 0.5 (m' ≤ a_d · 2π / 86,400 s⁻¹)."""


# ---------------------------------------------------------------- data type


@dataclass(frozen=True, eq=False)
class RequestChunk:
    """A block of consecutive requests, in arrival order.

    arrival_s: float64 seconds from the start of the stream, non-decreasing.
    input_tokens, output_tokens: int64 prompt and generated tokens, each >= 1.
    """

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    def __post_init__(self) -> None:
        arr = np.asarray(self.arrival_s, dtype=np.float64)
        inp = np.asarray(self.input_tokens, dtype=np.int64)
        out = np.asarray(self.output_tokens, dtype=np.int64)
        if arr.ndim != 1 or inp.shape != arr.shape or out.shape != arr.shape:
            raise ValueError(f"RequestChunk arrays must be 1-D and of one length (got shapes "
                             f"{arr.shape}, {inp.shape}, {out.shape})")
        if arr.size:
            if not np.all(np.isfinite(arr)):
                raise ValueError("RequestChunk.arrival_s must be finite")
            if np.any(np.diff(arr) < 0):
                raise ValueError("RequestChunk.arrival_s must be non-decreasing")
            if inp.min() < 1 or out.min() < 1:
                raise ValueError("RequestChunk token counts must be >= 1")
        object.__setattr__(self, "arrival_s", arr)
        object.__setattr__(self, "input_tokens", inp)
        object.__setattr__(self, "output_tokens", out)

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @classmethod
    def empty(cls) -> "RequestChunk":
        return cls(np.empty(0, np.float64), np.empty(0, np.int64), np.empty(0, np.int64))

    def head(self, n: int) -> "RequestChunk":
        """The first n requests."""
        return RequestChunk(self.arrival_s[:n], self.input_tokens[:n], self.output_tokens[:n])


@runtime_checkable
class TrafficSource(Protocol):
    """Anything that streams requests as `RequestChunk`s (at most chunk_size each, never empty)."""

    def iter_chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[RequestChunk]: ...


def collect(source: TrafficSource, chunk_size: int = DEFAULT_CHUNK_SIZE) -> RequestChunk:
    """All of a source's requests in one chunk (for small inputs and tests)."""
    chunks = list(source.iter_chunks(chunk_size))
    if not chunks:
        return RequestChunk.empty()
    return RequestChunk(np.concatenate([c.arrival_s for c in chunks]),
                        np.concatenate([c.input_tokens for c in chunks]),
                        np.concatenate([c.output_tokens for c in chunks]))


def _check_chunk_size(chunk_size: int) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
            or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1 (got {chunk_size!r})")


# ---------------------------------------------------------------- length samplers


class LengthSampler(Protocol):
    """Draws (input_tokens, output_tokens) int64 arrays of length n, both >= 1, from `rng`.

    Contract: two calls of sizes a and b return what one call of size a + b would, so sources
    give the same requests whatever their chunk size.
    """

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class LognormalLengths:
    """Independent lognormal input and output lengths with the given mean and std (tokens).

    Each side: L = exp(mu + sigma·Z) with sigma² = ln(1 + std²/mean²), mu = ln(mean) − sigma²/2,
    so E[L] = mean and SD[L] = std before rounding; then rounded to the nearest integer and
    clipped to [max(min, 1), max]. std 0 gives the constant round(mean). Clipping and rounding
    move the realised mean slightly (by less than 0.5 token when nothing is clipped). Z comes from
    one uniform per side by inverse CDF (two uniforms per request, input then output).
    """

    input_mean: float
    input_std: float
    output_mean: float
    output_std: float
    input_min: int = 1
    input_max: int | None = None
    output_min: int = 1
    output_max: int | None = None

    def __post_init__(self) -> None:
        for side in ("input", "output"):
            mean, std = getattr(self, f"{side}_mean"), getattr(self, f"{side}_std")
            lo, hi = getattr(self, f"{side}_min"), getattr(self, f"{side}_max")
            if not (math.isfinite(mean) and mean > 0):
                raise ValueError(f"{side}_mean must be finite and > 0 (got {mean})")
            if not (math.isfinite(std) and std >= 0):
                raise ValueError(f"{side}_std must be finite and >= 0 (got {std})")
            if hi is not None and hi < max(lo, 1):
                raise ValueError(f"{side}_max {hi} is below {side}_min {lo}")

    @classmethod
    def from_mix(cls, mix: LengthMix) -> "LognormalLengths":
        """Lognormal lengths with a named mix's mean, std, min and max per side."""
        i, o = mix.lengths.input_tokens, mix.lengths.output_tokens
        return cls(input_mean=i.mean, input_std=i.std, output_mean=o.mean, output_std=o.std,
                   input_min=i.min, input_max=i.max, output_min=o.min, output_max=o.max)

    @staticmethod
    def _side(u: np.ndarray, mean: float, std: float, lo: int, hi: int | None) -> np.ndarray:
        if std == 0:
            x = np.full(u.shape, float(mean))
        else:
            sigma = math.sqrt(math.log1p((std / mean) ** 2))
            mu = math.log(mean) - 0.5 * sigma**2
            x = np.exp(mu + sigma * special.ndtri(u))  # u = 0 gives exp(-inf) = 0: clipped below
        x = np.rint(x)
        return np.clip(x, max(lo, 1), hi if hi is not None else np.inf).astype(np.int64)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        u = rng.random((n, 2))
        inp = self._side(u[:, 0], self.input_mean, self.input_std, self.input_min, self.input_max)
        out = self._side(u[:, 1], self.output_mean, self.output_std, self.output_min,
                         self.output_max)
        return inp, out


@dataclass(frozen=True, eq=False)
class EmpiricalLengths:
    """Resamples (input, output) pairs with replacement from observed arrays; a pair stays
    together, so the input/output correlation of the trace is kept. One uniform per request:
    index = floor(u · n)."""

    input_tokens: np.ndarray
    output_tokens: np.ndarray

    def __post_init__(self) -> None:
        inp = np.asarray(self.input_tokens, dtype=np.int64).copy()
        out = np.asarray(self.output_tokens, dtype=np.int64).copy()
        if inp.ndim != 1 or inp.shape != out.shape or inp.size == 0:
            raise ValueError(f"EmpiricalLengths needs two non-empty 1-D arrays of one length "
                             f"(got shapes {inp.shape} and {out.shape})")
        if inp.min() < 1 or out.min() < 1:
            raise ValueError("EmpiricalLengths token counts must be >= 1")
        inp.setflags(write=False)
        out.setflags(write=False)
        object.__setattr__(self, "input_tokens", inp)
        object.__setattr__(self, "output_tokens", out)

    def __repr__(self) -> str:
        return f"EmpiricalLengths(n={self.input_tokens.size})"

    @classmethod
    def from_trace(cls, path: str | os.PathLike, max_requests: int | None = None,
                   max_rows: int | None = None) -> "EmpiricalLengths":
        """The (input, output) pairs of a trace file (see `TraceTraffic` for the formats): the
        first `max_requests` if given. The pairs are held in memory, so a trace with more than
        `max_rows` requests (default `DEFAULT_MAX_TRACE_ROWS`) is refused, not truncated."""
        limit = DEFAULT_MAX_TRACE_ROWS if max_rows is None else max_rows
        take = limit + 1 if max_requests is None else min(max_requests, limit + 1)
        c = collect(TraceTraffic(path, max_requests=take))
        if len(c) > limit:
            raise ConfigError(f"{os.fspath(path)}: more than {limit:,} requests (max_rows); "
                              "resample a part of it, or pass a larger max_rows")
        if len(c) == 0:
            raise ConfigError(f"{path}: no requests to resample lengths from")
        return cls(c.input_tokens, c.output_tokens)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        size = self.input_tokens.size
        idx = np.minimum((rng.random(n) * size).astype(np.int64), size - 1)
        return self.input_tokens[idx], self.output_tokens[idx]


# ---------------------------------------------------------------- synthetic arrivals


def _seed_streams(
        seed: int | np.random.SeedSequence) -> tuple[np.random.Generator, np.random.Generator]:
    """(arrival rng, length rng) from SeedSequence(seed).spawn(2). A SeedSequence passed in is
    copied first, because spawn() advances the parent and a rerun must give the same streams."""
    if isinstance(seed, np.random.SeedSequence):
        ss = np.random.SeedSequence(seed.entropy, spawn_key=seed.spawn_key,
                                    pool_size=seed.pool_size)
    else:
        ss = np.random.SeedSequence(seed)
    arrivals, lengths = ss.spawn(2)
    return np.random.default_rng(arrivals), np.random.default_rng(lengths)


def _check_common(rate_rps: float, num_requests: int, duration_s: float | None) -> None:
    if not (math.isfinite(rate_rps) and rate_rps > 0):
        raise ValueError(f"rate_rps must be finite and > 0 (got {rate_rps})")
    if isinstance(num_requests, bool) or not isinstance(num_requests, (int, np.integer)) \
            or num_requests < 0:
        raise ValueError(f"num_requests must be an integer >= 0 (got {num_requests!r})")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be finite and > 0 (got {duration_s})")


def _cut(chunk: RequestChunk, duration_s: float | None) -> tuple[RequestChunk, bool]:
    """Keep arrivals in [0, duration_s); say whether the cutoff was reached."""
    if duration_s is None or len(chunk) == 0 or chunk.arrival_s[-1] < duration_s:
        return chunk, False
    return chunk.head(int(np.searchsorted(chunk.arrival_s, duration_s, side="left"))), True


class _RenewalTraffic(abc.ABC):
    """Shared machinery: unit-rate renewal times from stream-0 uniforms, lengths from stream 1.

    Subclasses define `_unit_gaps(u)`: inter-arrival times with mean 1 from uniforms u in [0, 1).
    """

    rate_rps: float
    num_requests: int
    lengths: LengthSampler
    seed: int | np.random.SeedSequence
    duration_s: float | None

    @abc.abstractmethod
    def _unit_gaps(self, u: np.ndarray) -> np.ndarray:
        """Inter-arrival times with mean 1 from uniforms u in [0, 1)."""

    def iter_unit_chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[RequestChunk]:
        """The same requests at unit rate (arrival_s in units of mean inter-arrival time), with no
        duration cutoff: the common-random-numbers stream that every rate and modulation maps."""
        _check_chunk_size(chunk_size)
        arr_rng, len_rng = _seed_streams(self.seed)
        t_unit = 0.0
        left = int(self.num_requests)
        while left > 0:
            n = min(chunk_size, left)
            gaps = self._unit_gaps(arr_rng.random(n))
            # Sequential cumsum seeded with the running total, so the times do not depend on
            # where chunks break (offset + cumsum(gaps) would round differently).
            times = np.cumsum(np.concatenate(([t_unit], gaps)))[1:]
            t_unit = float(times[-1])
            inp, out = self.lengths.sample(len_rng, n)
            yield RequestChunk(times, inp, out)
            left -= n

    def iter_chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[RequestChunk]:
        """Requests at rate_rps: arrival_s = unit-rate time / rate_rps, cut at duration_s."""
        for unit in self.iter_unit_chunks(chunk_size):
            chunk, done = _cut(RequestChunk(unit.arrival_s / self.rate_rps, unit.input_tokens,
                                            unit.output_tokens), self.duration_s)
            if len(chunk):
                yield chunk
            if done:
                return


@dataclass(frozen=True)
class PoissonTraffic(_RenewalTraffic):
    """Poisson arrivals at rate_rps (1/s): exponential inter-arrivals −ln(1 − U) / rate_rps.

    At most num_requests requests, and only those arriving before duration_s (s) if given.
    """

    rate_rps: float
    num_requests: int
    lengths: LengthSampler
    seed: int | np.random.SeedSequence = 0
    duration_s: float | None = None

    def __post_init__(self) -> None:
        _check_common(self.rate_rps, self.num_requests, self.duration_s)

    def _unit_gaps(self, u: np.ndarray) -> np.ndarray:
        return -np.log1p(-u)


@dataclass(frozen=True)
class GammaTraffic(_RenewalTraffic):
    """Gamma renewal arrivals at rate_rps with inter-arrival coefficient of variation cv.

    Inter-arrival = F⁻¹(U; shape k = 1/cv², scale 1/k) / rate_rps, mean 1/rate_rps, CV cv, from the
    same uniforms as Poisson (inverse CDF: scipy.special.gammaincinv, which is what
    scipy.stats.gamma.ppf evaluates). cv > 1 is burstier than Poisson; cv = 1 is exactly
    PoissonTraffic (computed by the same formula); cv = 0 is deterministic spacing 1/rate_rps.
    """

    rate_rps: float
    cv: float
    num_requests: int
    lengths: LengthSampler
    seed: int | np.random.SeedSequence = 0
    duration_s: float | None = None

    def __post_init__(self) -> None:
        _check_common(self.rate_rps, self.num_requests, self.duration_s)
        if not (math.isfinite(self.cv) and self.cv >= 0):
            raise ValueError(f"cv must be finite and >= 0 (got {self.cv})")

    def _unit_gaps(self, u: np.ndarray) -> np.ndarray:
        if self.cv == 0:
            return np.ones_like(u)
        if self.cv == 1:
            return -np.log1p(-u)
        shape = 1.0 / self.cv**2
        return special.gammaincinv(shape, u) / shape


@dataclass(frozen=True)
class ModulatedTraffic:
    """A renewal source with a daily and weekly rate cycle, by time rescaling (same requests).

    rate(t) = r̄ · (1 + a_d · cos(2π (h(t) − peak_hour) / 24)) · (1 + a_w · w(t)),
    h(t) = start_hour + t / 3600 (clock hour, t in s from the start), r̄ = base.rate_rps.
    Weekly profile: weekend days (Saturday, Sunday) run at (1 − a_w) times the weekday level; in
    the form above w = 2 / (7 − 2 a_w) on weekdays and −5 / (7 − 2 a_w) on weekends, which makes
    the weekly mean of the factor 1, so r̄ is the long-run mean rate. start_weekday: 0 = Monday.

    With M(t) = ∫₀ᵗ rate(s)/r̄ ds, the k-th arrival is at M⁻¹(s_k), where s_k is the base's k-th
    arrival at its mean rate (for a Poisson base this is the standard time-rescaling
    construction of a non-homogeneous Poisson process). M is tabulated exactly over one week
    on a 10 s grid (plus day boundaries) and extended by M(t + week) = M(t) + week; np.interp
    inverts it. The base's num_requests bounds the stream; duration_s (this one if set, else the
    base's) cuts it in modulated time.
    """

    base: PoissonTraffic | GammaTraffic
    diurnal_amplitude: float = 0.0
    weekly_amplitude: float = 0.0
    peak_hour: float = 14.0
    start_hour: float = 0.0
    start_weekday: int = 0
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.diurnal_amplitude <= 1:
            raise ValueError(f"diurnal_amplitude must be in [0, 1] (got {self.diurnal_amplitude})")
        if not 0 <= self.weekly_amplitude < 1:
            raise ValueError(f"weekly_amplitude must be in [0, 1) (got {self.weekly_amplitude}); "
                             "at 1 weekends have no traffic and the rescaling has no inverse")
        for name in ("peak_hour", "start_hour"):
            if not (math.isfinite(getattr(self, name)) and 0 <= getattr(self, name) < 24):
                raise ValueError(f"{name} must be in [0, 24) (got {getattr(self, name)})")
        if self.start_weekday not in range(7):
            raise ValueError(f"start_weekday must be 0 (Monday) .. 6 (got {self.start_weekday})")
        if self.duration_s is not None and not (math.isfinite(self.duration_s)
                                                and self.duration_s > 0):
            raise ValueError(f"duration_s must be finite and > 0 (got {self.duration_s})")

    @property
    def rate_rps(self) -> float:
        """Long-run mean rate (1/s)."""
        return self.base.rate_rps

    def _weekly_factor(self, t_s: np.ndarray) -> np.ndarray:
        a_w = self.weekly_amplitude
        c = 7.0 / (7.0 - 2.0 * a_w)
        day = np.floor((self.start_hour * 3600.0 + t_s) / SECONDS_PER_DAY)
        weekend = (self.start_weekday + day) % 7 >= 5
        return np.where(weekend, c * (1.0 - a_w), c)

    def intensity_rps(self, t_s: np.ndarray | float) -> np.ndarray:
        """rate(t) in requests/s at times t_s (s from the start)."""
        t = np.asarray(t_s, dtype=np.float64)
        omega, phase = self._omega_phase()
        diurnal = 1.0 + self.diurnal_amplitude * np.cos(omega * t + phase)
        return self.base.rate_rps * diurnal * self._weekly_factor(t)

    def _omega_phase(self) -> tuple[float, float]:
        return 2 * math.pi / SECONDS_PER_DAY, 2 * math.pi * (self.start_hour - self.peak_hour) / 24

    def _week_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(t nodes, M(t nodes)) over one week: exact integrals per interval, none of which spans
        a day boundary (the boundaries are nodes), so the piecewise-constant weekly factor and the
        closed-form integral of the cosine are exact."""
        grid = np.arange(0.0, SECONDS_PER_WEEK + INTENSITY_GRID_S / 2, INTENSITY_GRID_S)
        first = SECONDS_PER_DAY - self.start_hour * 3600.0
        bounds = first + SECONDS_PER_DAY * np.arange(7)
        t = np.union1d(grid, bounds[(bounds > 0) & (bounds < SECONDS_PER_WEEK)])
        a, b = t[:-1], t[1:]
        omega, phase = self._omega_phase()
        cos_integral = (np.sin(omega * b + phase) - np.sin(omega * a + phase)) / omega
        diurnal = (b - a) + self.diurnal_amplitude * cos_integral
        piece = self._weekly_factor(0.5 * (a + b)) * diurnal
        return t, np.concatenate(([0.0], np.cumsum(piece)))

    def iter_chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[RequestChunk]:
        t_nodes, m_nodes = self._week_table()
        m_week = float(m_nodes[-1])  # = one week of seconds up to rounding; used for continuity
        duration_s = self.duration_s if self.duration_s is not None else self.base.duration_s
        for unit in self.base.iter_unit_chunks(chunk_size):
            s = unit.arrival_s / self.base.rate_rps
            weeks = np.floor(s / m_week)
            t = weeks * SECONDS_PER_WEEK + np.interp(s - weeks * m_week, m_nodes, t_nodes)
            t = np.maximum.accumulate(t)  # guard non-decreasing against rounding at week joins
            chunk, done = _cut(RequestChunk(t, unit.input_tokens, unit.output_tokens), duration_s)
            if len(chunk):
                yield chunk
            if done:
                return


# ---------------------------------------------------------------- trace replay

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
"""Azure LLM inference trace (AzurePublicDataset, 2023/2024): invocation time, prompt tokens,
generated tokens."""
PLAIN_COLUMNS = ("arrival_s", "input_tokens", "output_tokens")
"""fleetsim's own trace: arrival seconds (as given, >= 0), prompt tokens, generated tokens."""
_FORMATS = {"azure": AZURE_COLUMNS, "plain": PLAIN_COLUMNS}


def _accepted_headers() -> str:
    return " or ".join(f"'{','.join(cols)}'" for cols in _FORMATS.values())


def _read_header(path: Path, shown: str, max_bytes: int) -> tuple[str, tuple[str, ...]]:
    """(format name, column names in file order) from the first line; size and access checks."""
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as f:
            first = f.readline(4096).decode("utf-8-sig")
    except OSError as e:
        raise ConfigError(f"{shown}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: line 1: not UTF-8 text") from None
    if size > max_bytes:
        raise ConfigError(f"{shown}: {size / 1e9:.2f} GB is larger than max_bytes "
                          f"({max_bytes / 1e9:.2f} GB); pass a larger max_bytes to read it")
    names = tuple(c.strip() for c in first.strip("\r\n").split(","))
    for fmt, cols in _FORMATS.items():
        if len(names) == len(cols) and set(names) == set(cols):
            return fmt, names
    head = first.strip() if len(first.strip()) <= 80 else first.strip()[:77] + "..."
    raise ConfigError(f"{shown}: line 1: unknown header '{head}' "
                      f"(accepted: {_accepted_headers()})")


def _parser_message(text: str) -> str:
    """pandas' 'Error tokenizing data. C error: Expected 3 fields in line 12, saw 4' as
    'line 12: expected 3 fields, saw 4' (pandas counts file lines from 1, header included)."""
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if m:
        return f"line {m[2]}: expected {m[1]} fields, saw {m[3]}"
    return text.strip().split("C error: ")[-1]


def _cell(v: object) -> str:
    """A cell of the trace as shown in an error: repr, cut to 60 characters."""
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _bad_row(shown: str, line: int, message: str) -> ConfigError:
    return ConfigError(f"{shown}: line {line}: {message}")


def _tokens(col: pd.Series, name: str, shown: str, lines: np.ndarray) -> np.ndarray:
    """Token counts as int64; the first value that is not an integer >= 1 is an error."""
    v = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    ok = np.isfinite(v) & (v >= 1) & (v == np.floor(v)) & (v < 2.0**62)
    if not ok.all():
        i = int(np.argmin(ok))
        raise _bad_row(shown, int(lines[i]),
                       f"{name} must be an integer >= 1 (got {_cell(col.iloc[i])})")
    return v.astype(np.int64)


@dataclass(frozen=True)
class TraceTraffic:
    """Replays a CSV trace: the Azure LLM inference format or fleetsim's plain format.

    Azure (header TIMESTAMP,ContextTokens,GeneratedTokens; TIMESTAMP like 2023-11-16
    18:15:46.6805900, ISO 8601 with any number of fractional digits): arrival_s = seconds since the
    first row. Plain (header arrival_s,input_tokens,output_tokens): arrival_s as written (>= 0).
    The header picks the format; columns may come in any order. Rows must be in time order
    (non-decreasing); blank lines are skipped. arrival_s is divided by time_scale (time_scale = 2
    replays at twice the rate). Reads with pandas in chunks; errors are one-line ConfigErrors
    naming the file and its 1-based line number. The path is used as given.
    """

    path: str | os.PathLike
    time_scale: float = 1.0
    max_requests: int | None = None
    max_bytes: int = DEFAULT_MAX_TRACE_BYTES

    def __post_init__(self) -> None:
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ValueError(f"time_scale must be finite and > 0 (got {self.time_scale})")
        if self.max_requests is not None and self.max_requests < 0:
            raise ValueError(f"max_requests must be >= 0 (got {self.max_requests})")

    def iter_chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[RequestChunk]:
        _check_chunk_size(chunk_size)
        shown = os.fspath(self.path)
        fmt, names = _read_header(Path(self.path), shown, self.max_bytes)
        time_col, in_col, out_col = _FORMATS[fmt]
        left = self.max_requests if self.max_requests is not None else math.inf
        t0_ns: int | None = None
        prev_s = -math.inf  # last arrival (unscaled seconds) of the previous chunk
        prev_raw = ""
        line0 = 2  # file line of the current chunk's first row (header is line 1)
        if left == 0:
            return
        try:
            with pd.read_csv(self.path, chunksize=chunk_size, dtype=str, keep_default_na=False,
                             skip_blank_lines=False, encoding="utf-8-sig", header=0, names=names,
                             engine="c") as reader:
                while left > 0:
                    try:
                        df = next(reader)
                    except StopIteration:
                        return
                    except pd.errors.ParserError as e:
                        raise ConfigError(f"{shown}: {_parser_message(str(e))}") from None
                    except UnicodeDecodeError:
                        raise ConfigError(
                            f"{shown}: not UTF-8 text (after line {line0 - 1})") from None
                    lines = line0 + np.arange(len(df))
                    line0 += len(df)
                    df = df.fillna("")
                    blank = (df == "").all(axis=1).to_numpy()
                    if blank.any():
                        df, lines = df[~blank], lines[~blank]
                    if len(df) > left:
                        df, lines = df.iloc[: int(left)], lines[: int(left)]
                    if len(df) == 0:
                        continue
                    missing = (df == "").to_numpy()
                    if missing.any():
                        r, c = np.argwhere(missing)[0]
                        raise _bad_row(shown, int(lines[r]), f"{df.columns[c]} is missing")
                    inp = _tokens(df[in_col], in_col, shown, lines)
                    out = _tokens(df[out_col], out_col, shown, lines)
                    raw = df[time_col]
                    if fmt == "azure":
                        # utc=True: rows with and without a zone mix (naive ones read as UTC)
                        ts = pd.to_datetime(raw, format="ISO8601", errors="coerce",
                                            utc=True).dt.tz_localize(None)
                        # outside 1678..2261 nanoseconds since 1970 overflow int64: refused
                        bad = (ts.isna() | (ts < pd.Timestamp.min)
                               | (ts > pd.Timestamp.max)).to_numpy()
                        if bad.any():
                            i = int(np.argmax(bad))
                            raise _bad_row(shown, int(lines[i]),
                                           f"{time_col} is not a date-time like 2023-11-16 "
                                           f"18:15:46.6805900 (got {_cell(raw.iloc[i])})")
                        ns = ts.to_numpy(dtype="datetime64[ns]").astype(np.int64)
                        if t0_ns is None:
                            t0_ns = int(ns[0])
                        secs = (ns - t0_ns) / 1e9
                    else:
                        secs = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64,
                                                                            na_value=np.nan)
                        ok = np.isfinite(secs) & (secs >= 0)
                        if not ok.all():
                            i = int(np.argmin(ok))
                            raise _bad_row(shown, int(lines[i]), f"{time_col} must be a number of "
                                           f"seconds >= 0 (got {_cell(raw.iloc[i])})")
                    back = np.flatnonzero(np.diff(np.concatenate(([prev_s], secs))) < 0)
                    if back.size:
                        i = int(back[0])
                        before = prev_raw if i == 0 else raw.iloc[i - 1]
                        raise _bad_row(shown, int(lines[i]),
                                       f"{time_col} goes back in time ({_cell(raw.iloc[i])} "
                                       f"after {_cell(before)}); rows must be sorted by time")
                    prev_s, prev_raw = float(secs[-1]), raw.iloc[-1]
                    left -= len(df)
                    yield RequestChunk(secs / self.time_scale, inp, out)
        except UnicodeDecodeError:
            raise ConfigError(f"{shown}: not UTF-8 text") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:  # raised while opening
            raise ConfigError(f"{shown}: {_parser_message(str(e))}") from None
        except OSError as e:
            raise ConfigError(f"{shown}: cannot read ({e.strerror or e})") from None


# ---------------------------------------------------------------- length statistics


def _merge_counts(vals: np.ndarray, counts: np.ndarray,
                  new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Add the values in `new` to a histogram (sorted distinct values, their counts)."""
    u, c = np.unique(new, return_counts=True)
    v = np.concatenate((vals, u))
    c = np.concatenate((counts, c))
    order = np.argsort(v, kind="stable")
    v, c = v[order], c[order]
    uv, first = np.unique(v, return_index=True)
    return uv, np.add.reduceat(c, first)


def _stats(vals: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    """mean, population std (ddof 0), min, max and linear-interpolated p50/p90/p99 (numpy's
    default quantile method) of a histogram of integer values."""
    n = int(counts.sum())
    mean = float(np.dot(vals, counts) / n)
    std = float(math.sqrt(np.dot((vals - mean) ** 2, counts) / n))
    cum = np.cumsum(counts)

    def at(rank: int) -> float:  # value of the rank-th (0-based) element in sorted order
        return float(vals[np.searchsorted(cum, rank, side="right")])

    out = {"mean": mean, "std": std, "min": int(vals[0]), "max": int(vals[-1])}
    for q in (50, 90, 99):
        pos = q / 100 * (n - 1)
        lo = math.floor(pos)
        v_lo, v_hi = at(lo), at(min(lo + 1, n - 1))
        out[f"p{q}"] = v_lo + (pos - lo) * (v_hi - v_lo)
    return out


def fit_lengths(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_TRACE_BYTES) -> dict:
    """Length statistics of a trace, streamed (memory grows with distinct lengths, not rows).

    Returns {"num_requests", "span_s" (last − first arrival, s), "input_tokens": {...},
    "output_tokens": {...}}, each side with mean, std (population), min, max, p50, p90, p99 in
    tokens; mean/std/min/max map onto sim.config.workload.LengthStats.
    """
    empty = (np.empty(0, np.int64), np.empty(0, np.int64))
    hist = {"input_tokens": empty, "output_tokens": empty}
    n, first_s, last_s = 0, None, None
    for c in TraceTraffic(path, max_bytes=max_bytes).iter_chunks():
        hist["input_tokens"] = _merge_counts(*hist["input_tokens"], c.input_tokens)
        hist["output_tokens"] = _merge_counts(*hist["output_tokens"], c.output_tokens)
        first_s = float(c.arrival_s[0]) if first_s is None else first_s
        last_s = float(c.arrival_s[-1])
        n += len(c)
    if n == 0:
        raise ConfigError(f"{os.fspath(path)}: no requests")
    return {"num_requests": n, "span_s": last_s - first_s,
            **{side: _stats(*h) for side, h in hist.items()}}


# ---- traffic kinds ---------------------------------------------------------------------------

TRAFFIC_KINDS: dict[str, object] = {}
"""Arrival processes by name (`fleetsim serve/capacity --traffic`), each a factory
`make(rate, requests, lengths, seed, *, cv, trace)` -> traffic, registered with
`@register_traffic(name, synthetic=...)`; a synthetic kind needs no trace."""
SYNTHETIC_KINDS: list[str] = []


def register_traffic(name: str, synthetic: bool = True):
    """Decorator: register a traffic factory under `name`."""
    def add(make):
        TRAFFIC_KINDS[name] = make
        if synthetic:
            SYNTHETIC_KINDS.append(name)
        return make
    return add


def kinds_text(names: list[str]) -> str:
    """'a, b or c' (the names a message lists)."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


@register_traffic("poisson")
def _poisson(rate: float, requests: int, lengths, seed: int, *, cv: float = 1.0,
             trace: RequestChunk | None = None):
    return PoissonTraffic(rate, requests, lengths, seed)


@register_traffic("gamma")
def _gamma(rate: float, requests: int, lengths, seed: int, *, cv: float = 2.0,
           trace: RequestChunk | None = None):
    return GammaTraffic(rate, cv, requests, lengths, seed)


@register_traffic("trace", synthetic=False)
def _trace(rate: float, requests: int, lengths, seed: int, *, cv: float = 1.0,
           trace: RequestChunk | None = None):
    """The trace's own burstiness, its arrivals rescaled to `rate`."""
    if trace is None:
        raise ValueError("trace traffic needs a trace")
    span = float(trace.arrival_s[-1] - trace.arrival_s[0]) or 1.0
    base_rate = len(trace) / span
    return [RequestChunk((trace.arrival_s - trace.arrival_s[0]) * base_rate / rate,
                         trace.input_tokens, trace.output_tokens)]
