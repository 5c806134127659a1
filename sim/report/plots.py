"""The report's plots and the notebook figures (matplotlib, no pyplot).

Every figure is built on a bare `matplotlib.figure.Figure` (a `NotebookFigure`, which shows
itself in Jupyter) inside `matplotlib.rc_context(RC)`, so nothing global changes and no figure is
left open. `*_figure` functions return the Figure; the report's names without the suffix
(`cost_per_year`, `usd_per_m_tokens`, `demand_vs_served`, `utilisation`, `slo_attainment`)
return PNG bytes. PNGs are saved without the `Software` metadata key, which makes the bytes
depend only on the data (and the matplotlib version). Option names are drawn as plain text
(`text.parse_math` off: a `$` in a name is not TeX) and shortened to `LABEL_CHARS` characters;
the tables carry the full names.

Notebook figures beyond the report: `capacity_vs_demand_figure` (a `Result`), `latency_cdf`
and `serve_timeline` (a `sim.serving` `ServeResult`), `capacity_curve` (a
`sim.serving.capacity.capacity_curve` frame), `tornado` (an experiments tornado frame), and
`ResultPlots`, the `Result.plot` accessor.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping

import matplotlib
import matplotlib.dates as mdates
import matplotlib.patches
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sim.fleet.timeline import HOURS_PER_YEAR

RC = {
    "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
    "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "axes.axisbelow": True,
    "text.parse_math": False, "text.usetex": False, "svg.hashsalt": "fleetsim",
    "figure.dpi": 100, "savefig.dpi": 110,
}
WIDTH_IN = 10.0  # at 110 dpi: 1100 px, shown at up to ~1000 px by the report's CSS
LABEL_CHARS = 32
MAX_TIMELINE_OPTIONS = 4  # per-option time series beyond this would make the page unreadable

# Okabe-Ito palette (colour-blind safe)
COST_CATEGORIES = (  # (per_year column, legend label, colour)
    ("capex_usd", "capex (cards, servers, network)", "#0072B2"),
    ("energy_usd", "energy", "#E69F00"),
    ("colo_usd", "colocation", "#56B4E9"),
    ("maintenance_usd", "maintenance", "#009E73"),
    ("software_usd", "software / porting", "#CC79A7"),
    ("rental_usd", "rented capacity", "#D55E00"),
    ("unserved_penalty_usd", "unserved demand penalty", "#F0E442"),
    ("residual_usd", "residual value (credit)", "#999999"),
)
CARD_STATES = (  # (per_hour suffix or "awaiting", legend label, colour)
    ("training", "training", "#0072B2"),
    ("serving", "serving", "#009E73"),
    ("reserved_serving", "serving (reserved cloud)", "#56B4E9"),
    ("idle", "idle", "#F0E442"),
    ("reserved_idle", "idle (reserved cloud)", "#E69F00"),
    ("unavailable", "failed or hot spare", "#D55E00"),
    ("unpowered", "unpowered (site power cap)", "#CC79A7"),
    ("awaiting", "awaiting delivery", "#BBBBBB"),
)
PERIOD = {1: "daily", 7: "weekly"}
FLOW_COLOURS = {"served": "#009E73", "rented": "#E69F00", "unserved": "#D55E00"}


def short(name: str, n: int = LABEL_CHARS) -> str:
    """A label for a plot: `name` cut to `n` characters with an ellipsis."""
    return name if len(name) <= n else name[: n - 1] + "…"


def to_png(fig: Figure) -> bytes:
    """PNG bytes of `fig`, without the Software key so the bytes are reproducible (saved under
    `RC`, which sets the resolution and the style of tick labels drawn at save time)."""
    buf = io.BytesIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


class NotebookFigure(Figure):
    """A matplotlib `Figure` that shows itself in Jupyter as the report's PNG (`_repr_png_`), so
    a figure returned by `Result.plot.*` displays without pyplot or `%matplotlib inline`."""

    def _repr_png_(self) -> bytes:
        return to_png(self)


def usd_scale(max_abs_usd: float) -> tuple[str, float]:
    """Axis unit for an amount: ("$M", 1e6) for millions, and so on."""
    for unit, f in (("$B", 1e9), ("$M", 1e6), ("$k", 1e3)):
        if max_abs_usd >= f:
            return unit, f
    return "$", 1.0


def _grid(n: int, row_height_in: float, sharey: bool = True):
    ncols = 1 if n == 1 else 2
    nrows = math.ceil(n / ncols)
    fig = NotebookFigure(figsize=(WIDTH_IN, row_height_in * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharey=sharey, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def start_date(start: str) -> np.datetime64:
    """The scenario's start (YYYY, YYYY-MM or YYYY-MM-DD) as a day."""
    parts = [int(x) for x in start.split("-")] + [1, 1]
    return np.datetime64(f"{parts[0]:04d}-{parts[1]:02d}-{parts[2]:02d}", "D")


def bucket_days(per_hour: pd.DataFrame) -> int:
    """Days averaged per point of a time series: 1 up to a year, else 7 (a week: daily means
    swing with weekends, and a thousand swings draw as a solid band)."""
    return 1 if per_hour["hour"].max() < 1.1 * HOURS_PER_YEAR else 7


def period_mean(frame: pd.DataFrame, cols: list[str], days: int) -> pd.DataFrame:
    """Means of `cols` per period of `days` days, indexed by the period's first day; a short
    last period is dropped (a week without its weekend would show a false jump)."""
    day = (frame["hour"].to_numpy() // (24 * days)).astype(int) * days
    g = frame[cols].groupby(day)
    out, n = g.mean(), g.size()
    if len(out) > 1 and n.iloc[-1] < 24 * days:
        out = out.iloc[:-1]
    return out


def _date_axis(ax, days: np.ndarray, start: np.datetime64):
    x = start + days.astype("timedelta64[D]")
    loc = mdates.AutoDateLocator(minticks=3, maxticks=7)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
    return x


def _figure_legend(fig: Figure, handles, labels, ncol: int):
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)


def cost_per_year_figure(per_year: pd.DataFrame, options: list[str]) -> Figure:
    """Stacked bars of each year's cost by category, one panel per option (same y axis)."""
    with matplotlib.rc_context(RC):
        cats = [c for c in COST_CATEGORIES if c[0] in per_year and per_year[c[0]].abs().sum() > 0]
        pos = per_year[[c[0] for c in cats if c[0] != "residual_usd"]].clip(lower=0).sum(axis=1)
        neg = per_year[[c[0] for c in cats]].clip(upper=0).sum(axis=1)
        unit, f = usd_scale(float(max(pos.max(), -neg.min(), 1.0)))
        fig, axes = _grid(len(options), 3.0)
        handles = {}
        for ax, opt in zip(axes, options):
            d = per_year[per_year.option == opt].sort_values("year")
            x = np.arange(len(d))
            up, down = np.zeros(len(d)), np.zeros(len(d))
            for col, label, colour in cats:
                v = d[col].to_numpy(dtype=float) / f
                base = np.where(v >= 0, up, down)
                handles[label] = ax.bar(x, v, 0.7, bottom=base, color=colour, label=label)
                up += np.where(v >= 0, v, 0)
                down += np.where(v < 0, v, 0)
            handles["net cost"] = ax.plot(x, d["total_usd"].to_numpy(dtype=float) / f, "D",
                                          color="black", markersize=5, label="net cost")[0]
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_xticks(x, [f"year {int(y) + 1}" for y in d["year"]])
            ax.set_title(short(opt))
            ax.set_ylabel(f"cost ({unit} per year)")
        _figure_legend(fig, list(handles.values()), list(handles), ncol=3)
        return fig


def usd_per_m_tokens_figure(summaries: dict, options: list[str]) -> Figure | None:
    """Horizontal bars: $ per million tokens (all, input, output) per option (`summaries`: its
    `OptionSummary` records by name); None if no tokens."""
    keys = (("usd_per_m_tokens", "all tokens", "#0072B2"),
            ("usd_per_m_input_tokens", "input tokens", "#56B4E9"),
            ("usd_per_m_output_tokens", "output tokens", "#E69F00"))
    vals = {o: [getattr(summaries[o], k) for k, _, _ in keys] for o in options}
    if all(v is None for vs in vals.values() for v in vs):
        return None
    with matplotlib.rc_context(RC):
        n = len(options)
        fig = NotebookFigure(figsize=(WIDTH_IN, 1.0 + 0.75 * n + 0.6), layout="constrained")
        ax = fig.subplots()
        h = 0.26
        top = max(v for vs in vals.values() for v in vs if v is not None)
        for i, (_, label, colour) in enumerate(keys):
            y = np.arange(n) + (i - 1) * h
            v = [vals[o][i] for o in options]
            bars = ax.barh(y, [0.0 if x is None else x for x in v], h, color=colour, label=label)
            for b, x in zip(bars, v):
                ax.text(b.get_width() + top * 0.01, b.get_y() + h / 2,
                        "n/a" if x is None else f"${x:,.3f}", va="center", fontsize=9)
        ax.set_yticks(np.arange(n), [short(o) for o in options])
        ax.invert_yaxis()
        ax.set_xlim(0, top * 1.15)
        ax.set_xlabel("$ per million tokens (levelised over the horizon)")
        ax.grid(axis="y", visible=False)
        _figure_legend(fig, *ax.get_legend_handles_labels(), ncol=3)
        return fig


def cost_per_year(per_year: pd.DataFrame, options: list[str]) -> bytes:
    """`cost_per_year_figure` as PNG bytes (the report's image)."""
    return to_png(cost_per_year_figure(per_year, options))


def usd_per_m_tokens(summaries: dict, options: list[str]) -> bytes | None:
    """`usd_per_m_tokens_figure` as PNG bytes; None if no option served tokens."""
    fig = usd_per_m_tokens_figure(summaries, options)
    return None if fig is None else to_png(fig)


def _workloads(per_hour: pd.DataFrame) -> list[str]:
    return sorted(c[: -len(".demand_rps")] for c in per_hour.columns if c.endswith(".demand_rps"))


def demand_vs_served_figure(per_hour: pd.DataFrame, options: list[str],
                            start: str) -> Figure | None:
    """Per option: demand (line) and how it was met (stacked: owned cards, rented, unserved),
    requests/s summed over workloads, period means. None without inference workloads."""
    wls = _workloads(per_hour)
    if not wls:
        return None
    t0, days = start_date(start), bucket_days(per_hour)
    with matplotlib.rc_context(RC):
        fig, axes = _grid(len(options), 2.9)
        handles = {}
        for ax, opt in zip(axes, options):
            ph = per_hour[per_hour.option == opt]
            flows = {k: sum(ph[f"{w}.{k}_rps"].fillna(0.0) for w in wls)
                     for k in ("demand", "served", "rented", "unserved")}
            d = period_mean(pd.DataFrame({"hour": ph["hour"], **flows}), list(flows), days)
            x = _date_axis(ax, d.index.to_numpy(), t0)
            parts = [(k, lab) for k, lab in (("served", "served by own cards"),
                                              ("rented", "served by rented cards"),
                                              ("unserved", "unserved"))]
            polys = ax.stackplot(x, *[d[k].to_numpy() for k, _ in parts],
                                 colors=[FLOW_COLOURS[k] for k, _ in parts], alpha=0.85)
            for p, (_, lab) in zip(polys, parts):
                handles[lab] = p
            handles["demand"] = ax.plot(x, d["demand"].to_numpy(), color="black",
                                        linewidth=1.1)[0]
            ax.set_ylim(bottom=0)
            ax.set_title(short(opt))
            ax.set_ylabel(f"requests/s ({PERIOD[days]} mean)")
        _figure_legend(fig, list(handles.values()), list(handles), ncol=4)
        return fig


def demand_vs_served(per_hour: pd.DataFrame, options: list[str], start: str) -> bytes | None:
    """`demand_vs_served_figure` as PNG bytes; None without inference workloads."""
    fig = demand_vs_served_figure(per_hour, options, start)
    return None if fig is None else to_png(fig)


def awaiting_delivery(scenario, option: str, hours: np.ndarray, arrived: dict[str, np.ndarray]
                      ) -> np.ndarray:
    """Cards ordered (bought or leased, at their `at` date) and not yet delivered, per hour.

    Ordered by hour h minus delivered by hour h, summed over card types; `arrived` holds each
    card type's hourly deliveries (the timeline's `<card>.arrived`)."""
    t0 = start_date(scenario.start)
    spec = scenario.options[option]
    out = np.zeros(len(hours))
    for card, got in arrived.items():
        ordered = np.zeros(len(hours))
        for item in (*spec.buy, *spec.lease):
            if item.card == card:
                at_h = max(int((start_date(item.at) - t0) / np.timedelta64(1, "D")), 0) * 24
                ordered += np.where(hours >= at_h, item.count, 0)
        out += np.maximum(ordered - np.cumsum(got), 0.0)
    return out


def card_states(per_hour: pd.DataFrame, scenario, option: str, days: int) -> pd.DataFrame:
    """Mean number of cards in each state of `CARD_STATES` per period of `days` days, summed
    over card types."""
    ph = per_hour[per_hour.option == option]
    cards = sorted({c.split(".")[0] for c in ph.columns if c.endswith(".owned")
                    and ph[c].notna().any()})
    hours = ph["hour"].to_numpy()
    cols = {"hour": hours}
    for key, _, _ in CARD_STATES:
        if key == "awaiting":
            arrived = {c: ph[f"{c}.arrived"].fillna(0.0).to_numpy() for c in cards
                       if f"{c}.arrived" in ph}
            cols[key] = awaiting_delivery(scenario, option, hours, arrived)
        else:
            cols[key] = sum((ph[f"{c}.{key}"].fillna(0.0).to_numpy() for c in cards
                             if f"{c}.{key}" in ph), np.zeros(len(ph)))
    return period_mean(pd.DataFrame(cols), [k for k, _, _ in CARD_STATES], days)


def utilisation_figure(per_hour: pd.DataFrame, scenario, options: list[str],
                       start: str) -> Figure:
    """Per option: cards by state over time (stacked, period means); only states present."""
    t0, days = start_date(start), bucket_days(per_hour)
    states = {o: card_states(per_hour, scenario, o, days) for o in options}
    present = [s for s in CARD_STATES if any(states[o][s[0]].abs().sum() > 0 for o in options)]
    with matplotlib.rc_context(RC):
        fig, axes = _grid(len(options), 2.9, sharey=False)
        handles = {}
        for ax, opt in zip(axes, options):
            d = states[opt]
            x = _date_axis(ax, d.index.to_numpy(), t0)
            if present:
                polys = ax.stackplot(x, *[d[k].to_numpy() for k, _, _ in present],
                                     colors=[c for _, _, c in present], alpha=0.9)
                for p, (_, lab, _) in zip(polys, present):
                    handles[lab] = p
            ax.set_ylim(bottom=0)
            ax.set_title(short(opt))
            ax.set_ylabel(f"cards ({PERIOD[days]} mean)")
        _figure_legend(fig, list(handles.values()), list(handles), ncol=4)
        return fig


def utilisation(per_hour: pd.DataFrame, scenario, options: list[str], start: str) -> bytes:
    """`utilisation_figure` as PNG bytes."""
    return to_png(utilisation_figure(per_hour, scenario, options, start))


def slo_attainment_figure(per_hour: pd.DataFrame, options: list[str], start: str,
                          tolerance: float) -> Figure | None:
    """Share of demand served within the SLOs (own or rented cards), per month, per option."""
    wls = _workloads(per_hour)
    if not wls:
        return None
    t0 = start_date(start)
    month_h = HOURS_PER_YEAR / 12
    with matplotlib.rc_context(RC):
        fig = NotebookFigure(figsize=(WIDTH_IN, 3.6), layout="constrained")
        ax = fig.subplots()
        lowest = 1.0
        for i, opt in enumerate(options):
            ph = per_hour[per_hour.option == opt]
            dem = sum(ph[f"{w}.demand_rps"].fillna(0.0) for w in wls)
            got = sum(ph[f"{w}.served_rps"].fillna(0.0) + ph[f"{w}.rented_rps"].fillna(0.0)
                      for w in wls)
            m = (ph["hour"].to_numpy() // month_h).astype(int)
            g = pd.DataFrame({"d": dem.to_numpy(), "s": got.to_numpy()}).groupby(m).sum()
            share = np.where(g["d"] > 0, g["s"] / g["d"].where(g["d"] > 0, 1.0), 1.0)
            lowest = min(lowest, float(share.min()))
            x = t0 + (g.index.to_numpy() * month_h / 24 + 15).astype("timedelta64[D]")
            ax.plot(x, share * 100, marker="o", markersize=3.5, linewidth=1.4,
                    linestyle=("-", "--", "-.", ":")[i % 4], label=short(opt))
        ax.axhline(tolerance * 100, color="black", linewidth=0.9, linestyle=":",
                   label=f"SLO target ({tolerance:.0%} of demand)")
        loc = mdates.AutoDateLocator(minticks=3, maxticks=8)
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
        ax.set_ylim(min(lowest * 100, tolerance * 100) - 2, 100.8)
        ax.set_ylabel("demand served within SLOs (%)")
        _figure_legend(fig, *ax.get_legend_handles_labels(), ncol=min(len(options) + 1, 4))
        return fig


def slo_attainment(per_hour: pd.DataFrame, options: list[str], start: str,
                   tolerance: float) -> bytes | None:
    """`slo_attainment_figure` as PNG bytes; None without inference workloads."""
    fig = slo_attainment_figure(per_hour, options, start, tolerance)
    return None if fig is None else to_png(fig)


# ---- notebook figures ------------------------------------------------------------------------

LINE_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
                "#000000")
LINE_STYLES = ("-", "--", "-.", ":")


def capacity_vs_demand_figure(per_hour: pd.DataFrame, capacity: pd.DataFrame,
                              serving_cards: dict[str, tuple[str, ...]], options: list[str],
                              start: str) -> Figure | None:
    """Per option: demand (requests/s, summed over workloads) against the capacity of the
    option's serving cards at the SLOs (`serving_cards`: per option, as its `OptionSummary`
    says), period means. Capacity counts the cards serving or idle
    (not training, failed, spare or unpowered) times each card's max rate at the SLOs in force
    that hour (per_hour `<workload>.<card>.capacity_rps_per_card`: engine upgrades and their
    projection; else `Result.capacity`), at the period's demand mix: cards / sum_w(share_w / rate_w,card).
    Rented cards are not counted in the capacity; the demand they served shows as a band.
    None without inference workloads."""
    wls = _workloads(per_hour)
    if not wls:
        return None
    t0, days = start_date(start), bucket_days(per_hour)
    with matplotlib.rc_context(RC):
        fig, axes = _grid(len(options), 2.9, sharey=False)
        handles = {}
        for ax, opt in zip(axes, options):
            ph = per_hour[per_hour.option == opt]
            cols: dict[str, object] = {"hour": ph["hour"]}
            for w in wls:
                for k in ("demand", "served", "rented"):
                    cols[f"{w}.{k}"] = ph[f"{w}.{k}_rps"].fillna(0.0)
            cards = [c for c in serving_cards[opt] if f"{c}.owned" in ph]
            for c in cards:
                cols[c] = sum(ph[f"{c}.{k}"].fillna(0.0) for k in
                              ("serving", "idle", "reserved_serving", "reserved_idle")
                              if f"{c}.{k}" in ph)
                for w in wls:  # the capacity in force each hour (engine upgrades), when given
                    if f"{w}.{c}.capacity_rps_per_card" in ph:
                        cols[f"{w}.{c}.rate"] = ph[f"{w}.{c}.capacity_rps_per_card"]
            d = period_mean(pd.DataFrame(cols), [k for k in cols if k != "hour"], days)
            demand = sum(d[f"{w}.demand"] for w in wls)
            rented = sum(d[f"{w}.rented"] for w in wls)
            share = {w: d[f"{w}.demand"] / demand.where(demand > 0, 1.0) for w in wls}
            cap = np.zeros(len(d))
            for c in cards:
                per_req = np.zeros(len(d))  # card-seconds per request at the period's mix
                for w in wls:
                    if f"{w}.{c}.rate" in d:
                        rate = d[f"{w}.{c}.rate"].to_numpy()
                    else:
                        row = capacity[(capacity.workload == w) & (capacity.card == c)]
                        rate = float(row.rps_per_card.iloc[0]) if len(row) else 0.0
                    per_req += np.where(share[w] > 0, share[w] / np.maximum(rate, 1e-12), 0.0)
                cap += np.where(per_req > 0, d[c].to_numpy() / np.maximum(per_req, 1e-300), 0.0)
            x = _date_axis(ax, d.index.to_numpy(), t0)
            handles["capacity of own serving cards at the SLOs"] = ax.plot(
                x, cap, color=FLOW_COLOURS["served"], linewidth=1.6)[0]
            handles["demand"] = ax.plot(x, demand.to_numpy(), color="black", linewidth=1.1)[0]
            if float(rented.sum()) > 0:
                handles["served by rented cards"] = ax.fill_between(
                    x, 0, rented.to_numpy(), color=FLOW_COLOURS["rented"], alpha=0.5,
                    linewidth=0)
            ax.set_ylim(bottom=0)
            ax.set_title(short(opt))
            ax.set_ylabel(f"requests/s ({PERIOD[days]} mean)")
        _figure_legend(fig, list(handles.values()), list(handles), ncol=3)
        return fig


def _log_axis(ax, which: str = "x", lo: float | None = None, hi: float | None = None) -> None:
    """A log scale labelled with plain numbers (mathtext is off in `RC`, so the default
    10^k labels would print as TeX source); ticks at 1-2-5 when the data (`lo`..`hi`) span
    less than a factor of 30, else at powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    narrow = lo is not None and hi is not None and lo > 0 and hi / lo < 30
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.10g}"))
    axis.set_minor_formatter(NullFormatter())


def _runs(results) -> dict[str, object]:
    if isinstance(results, Mapping):
        if not results:
            raise ValueError("no serving results to plot")
        return {str(k): v for k, v in results.items()}
    return {"": results}


def _slo_ms(slo, name: str) -> float | None:
    if slo is None:
        return None
    if isinstance(slo, Mapping):
        return slo.get(name)
    return getattr(slo, name, None)


def latency_cdf(results, slo=None) -> Figure:
    """Empirical CDFs of TTFT, TPOT and end-to-end latency (ms, log axis) of a serving run: a
    `ServeResult` or a mapping {label: ServeResult} to compare runs. p99 is marked on each curve
    and the SLOs (`slo`: a `sim.serving.metrics.Slo`, or a dict with ttft_ms/tpot_ms) are drawn.
    Latencies follow vLLM's benchmark definitions (`sim.serving.metrics.per_request`)."""
    from sim.serving.metrics import per_request

    runs = _runs(results)
    panels = (("ttft_s", "time to first token", "ttft_ms"),
              ("tpot_s", "time per output token", "tpot_ms"),
              ("e2e_s", "end-to-end latency", None))
    with matplotlib.rc_context(RC):
        fig = NotebookFigure(figsize=(WIDTH_IN, 3.6), layout="constrained")
        axes = fig.subplots(1, 3, sharey=True)
        for i, (label, res) in enumerate(runs.items()):
            df = per_request(res)
            colour, style = LINE_COLOURS[i % len(LINE_COLOURS)], LINE_STYLES[i % 4]
            for ax, (col, _, _) in zip(axes, panels):
                x = np.sort(df[col].dropna().to_numpy() * 1e3)
                if not len(x):
                    continue
                y = np.arange(1, len(x) + 1) / len(x)
                ax.step(x, y, where="post", color=colour, linestyle=style, linewidth=1.4,
                        label=short(label) if label else None)
                ax.plot([np.percentile(x, 99)], [0.99], "o", color=colour, markersize=4)
        for ax, (col, title, slo_key) in zip(axes, panels):
            ax.set_title(title)
            ax.set_xlabel("ms (log scale)")
            if ax.lines:
                lo = min(float(np.min(line.get_xdata())) for line in ax.lines)
                hi = max(float(np.max(line.get_xdata())) for line in ax.lines)
                if lo > 0:
                    _log_axis(ax, "x", lo, hi)
            ax.axhline(0.99, color="grey", linewidth=0.8, linestyle=":")
            limit = _slo_ms(slo, slo_key) if slo_key else None
            if limit is not None:
                ax.axvline(limit, color="#D55E00", linewidth=1.1, linestyle="--",
                           label=f"SLO {limit:g} ms")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="lower right", fontsize=8)
        axes[0].set_ylabel("share of finished requests (dot: p99)")
        return fig


def serve_timeline(result, replica: int | None = 0,
                   window_s: tuple[float, float] | None = None) -> Figure:
    """A serving run's engine state over time (its `timeline`): running requests (the batch),
    KV-cache blocks in use as a share of the replica's blocks, and prompt tokens prefilled per
    step, for one replica (`replica=None`: every replica, overlaid). `window_s` zooms in."""
    from sim.serving.metrics import per_replica_timeline

    tl = per_replica_timeline(result)
    if not len(tl):
        raise ValueError("this ServeResult has no timeline (no steps were simulated)")
    reps = sorted(tl["replica"].unique()) if replica is None else [replica]
    if replica is not None and replica not in set(tl["replica"]):
        raise ValueError(f"no replica {replica} (replicas: 0-{int(tl['replica'].max())})")
    with matplotlib.rc_context(RC):
        fig = NotebookFigure(figsize=(WIDTH_IN, 6.6), layout="constrained")
        axes = fig.subplots(3, 1, sharex=True)
        for i, r in enumerate(reps):
            d = tl[tl["replica"] == r]
            if window_s is not None:
                d = d[(d["end_s"] >= window_s[0]) & (d["start_s"] <= window_s[1])]
            colour = LINE_COLOURS[i % len(LINE_COLOURS)]
            alpha = 1.0 if len(reps) == 1 else 0.6
            lab = f"replica {r}"
            axes[0].step(d["start_s"], d["batch"], where="post", color=colour, alpha=alpha,
                         linewidth=1.0, label=lab)
            axes[1].step(d["start_s"], d["kv_occupancy"] * 100, where="post", color=colour,
                         alpha=alpha, linewidth=1.0)
            pre = d[d["prefill_tokens"] > 0]
            axes[2].plot(pre["start_s"], pre["prefill_tokens"], ".", color=colour,
                         alpha=alpha, markersize=2.5)
        axes[0].set_ylabel("running requests")
        axes[1].set_ylabel("KV blocks in use (%)")
        axes[1].set_ylim(0, 102)
        axes[2].set_ylabel("prefill tokens / step")
        axes[2].set_xlabel("simulated time (s)")
        if len(reps) > 1 and len(reps) <= 8:
            axes[0].legend(loc="upper right", fontsize=8, ncol=min(len(reps), 4))
        return fig


def capacity_curve(frame: pd.DataFrame, slo=None, max_rate_rps: float | None = None,
                   title: str | None = None) -> Figure:
    """Latency against offered load for one replica (a `sim.serving.capacity.capacity_curve`
    frame: rate_rps, ttft_p50_ms, ttft_p99_ms, tpot_p50_ms, tpot_p99_ms, meets_slo): p50 and
    p99 TTFT and TPOT per rate, the SLOs, and the max rate meeting them if given."""
    with matplotlib.rc_context(RC):
        fig = NotebookFigure(figsize=(WIDTH_IN, 3.6), layout="constrained")
        axes = fig.subplots(1, 2)
        f = frame.sort_values("rate_rps")
        for ax, key, name in ((axes[0], "ttft", "TTFT"), (axes[1], "tpot", "TPOT")):
            ax.plot(f["rate_rps"], f[f"{key}_p50_ms"], "o-", color="#56B4E9", markersize=4,
                    label="p50")
            ax.plot(f["rate_rps"], f[f"{key}_p99_ms"], "s-", color="#0072B2", markersize=4,
                    label="p99")
            if "meets_slo" in f:
                bad = f[~f["meets_slo"].astype(bool)]
                ax.plot(bad["rate_rps"], bad[f"{key}_p99_ms"], "x", color="#D55E00",
                        markersize=8, label="misses the SLOs")
            limit = _slo_ms(slo, f"{key}_ms")
            if limit is not None:
                ax.axhline(limit, color="#D55E00", linestyle="--", linewidth=1.0,
                           label=f"SLO {limit:g} ms")
            if max_rate_rps is not None:
                ax.axvline(max_rate_rps, color="black", linestyle=":", linewidth=1.0,
                           label=f"max rate {max_rate_rps:.3g} req/s")
            vals = f[[f"{key}_p50_ms", f"{key}_p99_ms"]].to_numpy(dtype=float).ravel()
            vals = vals[np.isfinite(vals)]
            if len(vals) and (vals > 0).all():
                _log_axis(ax, "y", float(vals.min()), float(max(vals.max(), limit or 0)))
            ax.set_xlabel("offered rate per replica (requests/s)")
            ax.set_ylabel(f"{name} (ms)")
            ax.set_title(name)
            ax.legend(fontsize=8)
        if title:
            fig.suptitle(title)
        return fig


TORNADO_COLUMNS = ("input", "option", "low_value", "high_value", "npv_low_usd", "npv_high_usd",
                   "base_npv_usd")


def _value(v) -> str:
    """An input value for a label: 11,550 not 1.155e+04; 0.5178; 2.781."""
    if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
        v = float(v)
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def tornado(frame: pd.DataFrame, options: list[str] | str | None = None,
            top: int = 12) -> Figure:
    """A tornado chart per option: each uncertain input set to its low and its high value, the
    option's NPV against its base NPV, inputs ordered by swing (largest on top, `top` shown).
    `frame` has the columns of `TORNADO_COLUMNS` (what `sim.experiments.tornado` returns)."""
    missing = [c for c in TORNADO_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"tornado frame lacks columns {', '.join(missing)}")
    if not len(frame):
        raise ValueError("tornado frame is empty")
    names = list(dict.fromkeys(frame["option"]))
    if options is not None:
        options = [options] if isinstance(options, str) else list(options)
        unknown = [o for o in options if o not in names]
        if unknown:
            raise ValueError(f"no option {unknown[0]!r} in the frame (has: {', '.join(names)})")
        names = options
    usd_cols = ["npv_low_usd", "npv_high_usd", "base_npv_usd"]
    unit, f = usd_scale(float(frame[usd_cols].abs().to_numpy().max()))
    with matplotlib.rc_context(RC):
        rows = [min(top, int((frame.option == o).sum())) for o in names]
        fig = NotebookFigure(figsize=(WIDTH_IN, sum(0.38 * r + 0.9 for r in rows) + 0.6),
                             layout="constrained")
        axes = fig.subplots(len(names), 1, squeeze=False,
                            gridspec_kw={"height_ratios": [max(r, 1) + 2 for r in rows]}).ravel()
        for ax, opt in zip(axes, names):
            d = frame[frame.option == opt].copy()
            base = float(d["base_npv_usd"].iloc[0])
            d["swing"] = (d["npv_high_usd"] - d["npv_low_usd"]).abs()
            d = d.sort_values("swing", ascending=False, kind="stable").head(top).iloc[::-1]
            y = np.arange(len(d))
            lo = d["npv_low_usd"].to_numpy(dtype=float)
            hi = d["npv_high_usd"].to_numpy(dtype=float)
            ax.barh(y, (lo - base) / f, left=base / f, color="#56B4E9", height=0.6,
                    label="input at its low value")
            ax.barh(y, (hi - base) / f, left=base / f, color="#E69F00", height=0.6,
                    label="input at its high value")
            ax.axvline(base / f, color="black", linewidth=0.9)
            ax.set_yticks(y, [f"{short(str(r.input), 44)}  [{_value(r.low_value)} … "
                              f"{_value(r.high_value)}]" for r in d.itertuples()])
            ax.set_title(f"{short(opt)}: NPV (base {base / f:,.3g} {unit})")
            ax.set_xlabel(f"NPV ({unit})")
            ax.grid(axis="y", visible=False)
        _figure_legend(fig, *axes[0].get_legend_handles_labels(), ncol=2)
        return fig


STACK_COLOURS = {"cuda": "#009E73", "rocm": "#D55E00", "synapseai": "#0072B2",
                 "none": "#999999"}
CARD_MARKERS = ("o", "s", "^", "D", "v", "P")


def software_trajectory_figure(trajectory: pd.DataFrame, history: pd.DataFrame,
                               start: str) -> Figure | None:
    """Throughput per card over the horizon by stack, one panel per workload: the capacity in
    force (solid; steps at engine upgrades, then the projection past the stack's last release),
    its 5-95% band from the stack's improvement rate, the roofline ceiling (dotted), and the
    stack's dated releases as this card's capacity (markers; levels fitted to the vendors'
    tables). None without inference workloads."""
    if trajectory is None or not len(trajectory):
        return None
    t0 = start_date(start)
    wls = list(dict.fromkeys(trajectory["workload"]))
    with matplotlib.rc_context(RC):
        fig, axes = _grid(len(wls), 3.2, sharey=False)
        handles: dict[str, object] = {}
        for ax, w in zip(axes, wls):
            tw = trajectory[trajectory.workload == w]
            cards = list(dict.fromkeys(tw["card"]))
            for i, c in enumerate(cards):
                tc = tw[tw.card == c]
                colour = STACK_COLOURS.get(str(tc["stack"].iloc[0]), "#999999")
                mk = CARD_MARKERS[i % len(CARD_MARKERS)]
                x = t0 + (tc["hour"].to_numpy() // 24).astype("timedelta64[D]")
                ax.fill_between(x, tc["low_rps"], tc["high_rps"], color=colour, alpha=0.15,
                                linewidth=0)
                handles[f"{c} ({tc['stack'].iloc[0]})"] = ax.plot(
                    x, tc["capacity_rps"], color=colour, linewidth=1.6, marker=mk,
                    markevery=[0], label=c)[0]
                roof = tc["roofline_rps"].to_numpy()
                if np.isfinite(roof).all():
                    handles["roofline ceiling"] = ax.plot(x, roof, color=colour, linewidth=1.0,
                                                          linestyle=":")[0]
                if history is not None and len(history):
                    hc = history[(history.workload == w) & (history.card == c)]
                    if len(hc):
                        hx = np.array([np.datetime64(d if len(d) > 7 else d + "-01", "D")
                                       for d in hc["release_date"]])
                        handles["past releases (vendor tables)"] = ax.plot(
                            hx, hc["capacity_rps"], linestyle="none", marker=mk,
                            markerfacecolor="white", color=colour)[0]
            handles["5-95% band of the improvement rate"] = matplotlib.patches.Patch(
                color="#999999", alpha=0.3)
            ax.axvline(t0, color="black", linewidth=0.8, linestyle="--")
            ax.xaxis.set_major_locator(mdates.YearLocator())
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
            ax.set_ylim(bottom=0)
            ax.set_ylabel("req/s per card at the SLOs")
            ax.set_title(short(w))
        _figure_legend(fig, list(handles.values()), list(handles), ncol=3)
        return fig


def software_trajectory(trajectory: pd.DataFrame, history: pd.DataFrame,
                        start: str) -> bytes | None:
    fig = software_trajectory_figure(trajectory, history, start)
    return None if fig is None else to_png(fig)


class ResultPlots:
    """`result.plot`: a `Result`'s figures as matplotlib Figures, shown inline in Jupyter.

    Each method takes `options` (one name, a list, or None for every option) and returns a
    Figure: `cost_per_year`, `usd_per_m_tokens`, `demand_vs_served`, `capacity_vs_demand`,
    `card_states`, `slo_attainment`. Save one with `fig.savefig("x.png")`."""

    def __init__(self, result):
        self._result = result

    def __repr__(self) -> str:
        return ("<plots of a fleetsim Result: cost_per_year, usd_per_m_tokens, demand_vs_served, "
                "capacity_vs_demand, card_states, slo_attainment, software_trajectory>")

    def _options(self, options) -> list[str]:
        names = list(self._result.options)
        if options is None:
            return names
        options = [options] if isinstance(options, str) else list(options)
        for o in options:
            if o not in names:
                raise ValueError(f"no option {o!r} (options: {', '.join(names)})")
        return options

    @staticmethod
    def _need(fig, what: str):
        if fig is None:
            raise ValueError(f"nothing to plot: {what}")
        return fig

    def cost_per_year(self, options=None) -> Figure:
        """Each year's cost by category (stacked bars), one panel per option."""
        return cost_per_year_figure(self._result.per_year, self._options(options))

    def usd_per_m_tokens(self, options=None) -> Figure:
        """Levelised $ per million tokens (all, input, output) per option."""
        return self._need(usd_per_m_tokens_figure(self._result.options,
                                                  self._options(options)),
                          "no option served tokens")

    def demand_vs_served(self, options=None) -> Figure:
        """Demand and how it was met (own cards, rented, unserved) over time, per option."""
        r = self._result
        return self._need(demand_vs_served_figure(r.per_hour, self._options(options),
                                                  r.scenario.start),
                          "the scenario has no inference workloads")

    def capacity_vs_demand(self, options=None) -> Figure:
        """Demand against the SLO capacity of each option's own serving cards, over time."""
        r = self._result
        return self._need(capacity_vs_demand_figure(
            r.per_hour, r.capacity, {o: v.serving_cards for o, v in r.options.items()},
            self._options(options), r.scenario.start),
                          "the scenario has no inference workloads")

    def card_states(self, options=None) -> Figure:
        """Cards by state over time (training, serving, idle, failed, awaiting delivery...)."""
        r = self._result
        return utilisation_figure(r.per_hour, r.scenario, self._options(options),
                                  r.scenario.start)

    utilisation = card_states

    def software_trajectory(self) -> Figure:
        """Capacity per card over the horizon by stack: upgrades, projection, band, roofline."""
        r = self._result
        return self._need(software_trajectory_figure(r.trajectory, r.software_history,
                                                     r.scenario.start),
                          "the scenario has no inference workloads")

    def slo_attainment(self, options=None) -> Figure:
        """Share of demand served within the SLOs per month, per option, and the target."""
        r = self._result
        tolerance = r.decision.slo_tolerance
        return self._need(slo_attainment_figure(r.per_hour, self._options(options),
                                                r.scenario.start, tolerance),
                          "the scenario has no inference workloads")
