"""The report's plots: PNG bytes from a `Result`'s frames (matplotlib Agg, no pyplot).

Every figure is built on a bare `matplotlib.figure.Figure` inside `matplotlib.rc_context(RC)`,
so nothing global changes and no figure is left open. PNGs are saved without the `Software`
metadata key, which makes the bytes depend only on the data (and the matplotlib version).
Option names are drawn as plain text (`text.parse_math` off: a `$` in a name is not TeX) and
shortened to `LABEL_CHARS` characters; the tables carry the full names.
"""

from __future__ import annotations

import io
import math

import matplotlib
import matplotlib.dates as mdates
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
    """PNG bytes of `fig`, without the Software key so the bytes are reproducible."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def usd_scale(max_abs_usd: float) -> tuple[str, float]:
    """Axis unit for an amount: ("$M", 1e6) for millions, and so on."""
    for unit, f in (("$B", 1e9), ("$M", 1e6), ("$k", 1e3)):
        if max_abs_usd >= f:
            return unit, f
    return "$", 1.0


def _grid(n: int, row_height_in: float, sharey: bool = True):
    ncols = 1 if n == 1 else 2
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(WIDTH_IN, row_height_in * nrows + 0.9), layout="constrained")
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


def cost_per_year(per_year: pd.DataFrame, options: list[str]) -> bytes:
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
        return to_png(fig)


def usd_per_m_tokens(summary: dict, options: list[str]) -> bytes | None:
    """Horizontal bars: $ per million tokens (all, input, output) per option; None if no tokens."""
    keys = (("usd_per_m_tokens", "all tokens", "#0072B2"),
            ("usd_per_m_input_tokens", "input tokens", "#56B4E9"),
            ("usd_per_m_output_tokens", "output tokens", "#E69F00"))
    vals = {o: [summary["options"][o].get(k) for k, _, _ in keys] for o in options}
    if all(v is None for vs in vals.values() for v in vs):
        return None
    with matplotlib.rc_context(RC):
        n = len(options)
        fig = Figure(figsize=(WIDTH_IN, 1.0 + 0.75 * n + 0.6), layout="constrained")
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
        return to_png(fig)


def _workloads(per_hour: pd.DataFrame) -> list[str]:
    return sorted(c[: -len(".demand_rps")] for c in per_hour.columns if c.endswith(".demand_rps"))


def demand_vs_served(per_hour: pd.DataFrame, options: list[str], start: str) -> bytes | None:
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
        return to_png(fig)


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


def utilisation(per_hour: pd.DataFrame, scenario, options: list[str], start: str) -> bytes:
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
        return to_png(fig)


def slo_attainment(per_hour: pd.DataFrame, options: list[str], start: str,
                   tolerance: float) -> bytes | None:
    """Share of demand served within the SLOs (own or rented cards), per month, per option."""
    wls = _workloads(per_hour)
    if not wls:
        return None
    t0 = start_date(start)
    month_h = HOURS_PER_YEAR / 12
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(WIDTH_IN, 3.6), layout="constrained")
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
        return to_png(fig)
