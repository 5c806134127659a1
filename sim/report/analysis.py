"""Report sections for the experiments: win probabilities, NPV distributions, tornado, flip
points, sweeps. Used inside the main report (`analysis` block of report.html.j2) and as a
standalone page by `fleetsim mc / tornado / flip / sweep` (`write_section`).

Reads only the analysis objects (sim.experiments); every user string is escaped by jinja2.
"""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from sim.report import json_safe, md_text, plots

TEMPLATES = Path(__file__).parent / "templates"


def _uri(fig) -> str | None:
    if fig is None:
        return None
    return "data:image/png;base64," + base64.b64encode(plots.to_png(fig)).decode("ascii")


def win_probability_figure(win: dict[str, float]):
    names = [k for k in win if k != "none"] + (["none"] if win.get("none") else [])
    with matplotlib.rc_context(plots.RC):
        fig = plots.NotebookFigure(figsize=(plots.WIDTH_IN, 0.45 * len(names) + 1.2),
                                   layout="constrained")
        ax = fig.subplots()
        y = np.arange(len(names))[::-1]
        vals = [win[n] * 100 for n in names]
        ax.barh(y, vals, color=["#999999" if n == "none" else "#0072B2" for n in names],
                height=0.6)
        for yi, v in zip(y, vals):
            ax.text(v + 1, yi, f"{v:.1f}%", va="center", fontsize=9)
        ax.set_yticks(y, [plots.short(n) if n != "none" else "no option meets the SLOs"
                          for n in names])
        ax.set_xlim(0, 110)
        ax.set_xlabel("share of Monte Carlo draws won (%)")
        ax.grid(axis="y", visible=False)
        return fig


def npv_distribution_figure(draws: pd.DataFrame):
    names = list(dict.fromkeys(draws["option"]))
    data = [draws.loc[draws.option == o, "npv_usd"].dropna().to_numpy(float) for o in names]
    if not any(len(d) for d in data):
        return None
    unit, f = plots.usd_scale(max(float(np.abs(d).max()) for d in data if len(d)))
    with matplotlib.rc_context(plots.RC):
        fig = plots.NotebookFigure(figsize=(plots.WIDTH_IN, 0.55 * len(names) + 1.3),
                                   layout="constrained")
        ax = fig.subplots()
        # `vert` is deprecated from Matplotlib 3.11 (removed in 3.13); `orientation` is 3.10+
        horizontal = ({"orientation": "horizontal"} if tuple(
            int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 10) else {"vert": False})
        ax.boxplot([d / f for d in data][::-1], whis=(5, 95), showfliers=False, widths=0.5,
                   **horizontal)
        ax.set_yticks(np.arange(1, len(names) + 1), [plots.short(n) for n in names][::-1])
        ax.set_xlabel(f"NPV of cost ({unit}); box: 25th-75th percentile, whiskers: 5th-95th")
        ax.grid(axis="y", visible=False)
        return fig


def _usd(v: float | None) -> str:
    from sim.report.html import usd
    return usd(v)


def _usd_in(v: float | None, scale: tuple[str, float]) -> str:
    """$ amount in one column's unit (every row of a column in $M, say: never a $k among $M)."""
    if v is None or not math.isfinite(v):
        return "n/a"
    suffix, f = scale
    digits = 2 if f >= 1e6 else 1
    return f"{'-' if v < 0 else ''}${abs(v) / f:,.{digits}f}{suffix}"


def _scale(values) -> tuple[str, float]:
    top = max((abs(float(v)) for v in values if v is not None and math.isfinite(float(v))),
              default=0.0)
    for suffix, f in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if top >= f:
            return suffix, f
    return "", 1.0


def _num(v) -> str:
    if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
        v = float(v)
        return "n/a" if not math.isfinite(v) else f"{v:,.6g}"
    return str(v)


def context(analyses: dict) -> dict | None:
    """Template data for the analysis sections, or None when there are none."""
    if not analyses:
        return None
    out: dict = {"seconds": {k: f"{v:.1f} s" for k, v in analyses.get("seconds", {}).items()}}
    mc = analyses.get("monte_carlo")
    if _is_mc(mc):
        n = int(mc.draws["draw"].nunique())
        ranked = sorted(mc.win_probability.items(), key=lambda kv: -kv[1])
        top_name, top_p = max(((k, v) for k, v in ranked if k != "none"),
                              key=lambda kv: kv[1], default=("none", 0.0))
        se = math.sqrt(top_p * (1 - top_p) / n) if n else 0.0
        sens = mc.sensitivity
        sens_rows = []
        if len(sens):
            best = sens.sort_values("first_order_index", ascending=False)
            for r in best.head(12).itertuples():
                sens_rows.append({"input": r.input, "option": r.option,
                                  "index": f"{r.first_order_index:.2f}"})
        pc = mc.percentiles
        pscale = _scale([*pc.npv_p5, *pc.npv_p50, *pc.npv_p95])
        out["mc"] = {
            "draws": n, "inputs": list(mc.inputs), "top": top_name,
            "top_p": f"{top_p:.0%}", "top_se": f"{se:.1%}",
            "none_p": f"{mc.win_probability.get('none', 0.0):.0%}",
            "win": [{"name": k, "p": f"{v:.1%}"} for k, v in ranked],
            "pct": [{"option": r.option, "p5": _usd_in(r.npv_p5, pscale),
                     "p50": _usd_in(r.npv_p50, pscale), "p95": _usd_in(r.npv_p95, pscale),
                     "usd_m": (f"${r.usd_per_m_tokens_p50:,.3f}"
                               if math.isfinite(r.usd_per_m_tokens_p50) else "n/a"),
                     "meets": f"{r.meets_slo_probability:.0%}"}
                    for r in mc.percentiles.itertuples()],
            "sensitivity": sens_rows,
            "img_win": _uri(win_probability_figure(mc.win_probability)),
            "img_npv": _uri(npv_distribution_figure(mc.draws)),
        }
    t = analyses.get("tornado")
    if isinstance(t, pd.DataFrame) and len(t):
        shown = t[t.swing_usd > 0].head(24)
        npv_scale = _scale([*shown.npv_low_usd, *shown.npv_high_usd])
        swing_scale = _scale(shown.swing_usd)
        out["tornado"] = {"img": _uri(plots.tornado(t, top=8)),
                          "rows": [{"input": r.input, "option": r.option,
                                    "low": _num(r.low_value), "high": _num(r.high_value),
                                    "npv_low": _usd_in(r.npv_low_usd, npv_scale),
                                    "npv_high": _usd_in(r.npv_high_usd, npv_scale),
                                    "swing": _usd_in(r.swing_usd, swing_scale)}
                                   for r in shown.itertuples()]}
    flips = analyses.get("flip")
    if flips:
        out["flip"] = [{"param": f.param, "a": f.options[0], "b": f.options[1],
                        "bracket": f"{_num(f.bracket[0])} to {_num(f.bracket[1])}",
                        "value": "no flip in range" if f.value is None else _num(f.value),
                        "statement": f.statement()} for f in flips]
    opt = analyses.get("optimize")
    if opt is not None and hasattr(opt, "plan"):
        out["optimize"] = {
            "plan": [{"card": r.card, "cards": f"{r.cards:,}", "order": r.order_date,
                      "arrives": getattr(r, "arrives_by", r.needed_by),
                      "needed": r.needed_by + (" (arrives later: rent covers the wait)"
                                               if getattr(r, "late", False) else "")}
                     for r in opt.plan.itertuples()],
            "objective": _usd(opt.objective_usd), "simulated": _usd(opt.simulated["npv_usd"]),
            "attainment": f"{opt.simulated['slo_attainment']:.2%}", "meets": opt.meets_slo,
            "margin": f"{opt.margin:.0%}", "rounds": opt.rounds, "notes": list(opt.notes),
            "comparison": [{"option": r.option,
                            "npv": _usd_in(r.npv_usd, _scale(opt.comparison.npv_usd)),
                            "slo": f"{r.slo_attainment:.2%}",
                            "meets": "yes" if r.meets_slo else "no"}
                           for r in opt.comparison.itertuples()]}
    sw = analyses.get("sweep")
    if isinstance(sw, pd.DataFrame) and len(sw):
        fixed = {"point", "option", "npv_usd", "total_cost_usd", "usd_per_m_tokens",
                 "usd_per_m_input_tokens", "usd_per_m_output_tokens", "slo_attainment",
                 "utilization", "meets_slo", "winner"}
        params = [c for c in sw.columns if c not in fixed]
        rows = []
        for pid, d in sw.groupby("point", sort=True):
            w = d[d.winner]
            rows.append({"values": ", ".join(f"{p} = {_num(d[p].iloc[0])}" for p in params),
                         "winner": w.option.iloc[0] if len(w) else "none",
                         "npv": _usd(float(w.npv_usd.iloc[0])) if len(w) else "n/a"})
        out["sweep"] = {"params": params, "rows": rows}
    return out


def _row(*cells: object) -> str:
    return "| " + " | ".join(md_text(c) for c in cells) + " |"


def markdown(analyses: dict) -> str:
    """The analyses as Markdown; every value (option names and input paths come from the
    user) is inert text."""
    c = context(analyses)
    if not c:
        return ""
    lines: list[str] = []
    if "mc" in c:
        m = c["mc"]
        lines += ["## Monte Carlo", "",
                  md_text(f"{m['draws']} draws of {len(m['inputs'])} uncertain inputs. "
                          f"{m['top']} wins {m['top_p']} of draws (standard error "
                          f"{m['top_se']}); no option meets the SLOs in {m['none_p']}."), "",
                  "| option | win probability |", "|---|---|"]
        lines += [_row(r["name"], r["p"]) for r in m["win"]]
        lines += ["", "| option | NPV p5 | p50 | p95 | $/M tokens p50 | meets SLOs |",
                  "|---|---|---|---|---|---|"]
        lines += [_row(r["option"], r["p5"], r["p50"], r["p95"], r["usd_m"], r["meets"])
                  for r in m["pct"]]
        lines.append("")
    if "tornado" in c:
        lines += ["## Tornado (NPV at each input's 10th and 90th percentile)", "",
                  "| input | option | low | high | NPV at low | NPV at high | swing |",
                  "|---|---|---|---|---|---|---|"]
        lines += [_row(r["input"], r["option"], r["low"], r["high"], r["npv_low"],
                       r["npv_high"], r["swing"]) for r in c["tornado"]["rows"]]
        lines.append("")
    if "flip" in c:
        lines += ["## Flip points", "", "| input | options | searched | flips at |",
                  "|---|---|---|---|"]
        lines += [_row(r["param"], f"{r['a']} vs {r['b']}", r["bracket"], r["value"])
                  for r in c["flip"]]
        lines += [""] + [f"- {md_text(r['statement'])}" for r in c["flip"]] + [""]
    if "optimize" in c:
        o = c["optimize"]
        lines += ["## Optimised purchase plan", "",
                  md_text(f"Linearised cost {o['objective']}; simulated NPV {o['simulated']}, "
                          f"serving {o['attainment']} of demand within the SLOs (margin "
                          f"{o['margin']}, {o['rounds']} round(s))."), "",
                  "| card | cards | order | arrives by | needed by |", "|---|---|---|---|---|"]
        lines += [_row(r["card"], r["cards"], r["order"], r["arrives"], r["needed"])
                  for r in o["plan"]]
        lines += ["", "| option | NPV | SLO attainment | meets SLOs |", "|---|---|---|---|"]
        lines += [_row(r["option"], r["npv"], r["slo"], r["meets"]) for r in o["comparison"]]
        lines += [f"- {md_text(n)}" for n in o["notes"]] + [""]
    if "sweep" in c:
        lines += ["## Sweep", "", "| point | winner | NPV |", "|---|---|---|"]
        lines += [_row(r["values"], r["winner"], r["npv"]) for r in c["sweep"]["rows"]]
        lines.append("")
    return "\n".join(lines)


def _env() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                       keep_trailing_newline=True)


def write_section(analyses: dict, folder: Path, name: str, scn) -> list[Path]:
    """`folder/<name>.md` and a self-contained `folder/<name>.html` (atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    c = context(analyses)
    html = _env().get_template("analysis_page.html.j2").render(
        title=f"{scn.name} — {name}", name=scn.name, analysis=c)
    written = []
    for suffix, text in (("md", f"# {md_text(scn.name)}: {name}\n\n" + markdown(analyses)),
                         ("html", html)):
        p = folder / f"{name}.{suffix}"
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
        written.append(p)
    return written


def _is_mc(v) -> bool:
    """A Monte Carlo result (duck-typed: the report reads, never imports, the experiments)."""
    return hasattr(v, "win_probability") and hasattr(v, "draws")


# ---- machine-readable results ------------------------------------------------------------------

def to_json(analyses: dict) -> dict:
    out: dict = {}
    for k, v in analyses.items():
        if _is_mc(v) or k == "optimize":
            out[k] = v.to_json()
        elif k == "flip":
            out[k] = [f.to_json() for f in v]
        elif isinstance(v, pd.DataFrame):
            out[k] = {"rows": len(v)}
        else:
            out[k] = v
    return out


def frames(analyses: dict) -> dict[str, pd.DataFrame]:
    """Tidy frames to write: name -> frame."""
    out: dict[str, pd.DataFrame] = {}
    for k, v in analyses.items():
        if _is_mc(v):
            out["mc_draws"] = _plain(v.draws)
            out["mc_percentiles"] = v.percentiles
            out["mc_convergence"] = v.convergence
            out["mc_sensitivity"] = v.sensitivity
        elif isinstance(v, pd.DataFrame):
            out[k] = _plain(v)
        elif k == "optimize":
            out["optimize_plan"] = v.plan
            out["optimize_comparison"] = v.comparison
        elif k == "flip":
            grids = [f.grid.assign(param=f.param, option_a=f.options[0], option_b=f.options[1])
                     for f in v]
            if grids:
                out["flip_grid"] = pd.concat(grids, ignore_index=True)
    return out


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Mixed-type input columns (a discrete choice of strings) as strings, for Parquet."""
    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].map(lambda x: x if isinstance(x, str) or x is None else str(x))
    return df


def write_results(analyses: dict, folder: Path, name: str) -> list[Path]:
    """`folder/<name>.json` and `folder/<name>_<frame>.parquet`, each written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, df in frames(analyses).items():
        p = folder / f"{fname}.parquet"
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        df.to_parquet(tmp, index=False)
        os.replace(tmp, p)
        written.append(p)
    p = folder / f"{name}.json"
    tmp = p.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(json_safe(to_json(analyses)), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, p)
    written.append(p)
    return written



def verdict(result) -> dict:
    """What a planner reads first, from the run and its analyses: the best plan found (the
    winner, or the optimiser's plan when it meets the SLOs for less) and one sentence on how
    sure the answer is and what would change it. Empty parts are left out."""
    from sim.config.paths import get_value

    an = getattr(result, "analyses", None) or {}
    out: dict = {}
    winner = result.decision.winner
    win_npv = None if winner is None else result.options[winner].npv_usd
    opt = an.get("optimize")
    if opt is not None and hasattr(opt, "plan") and opt.meets_slo:
        npv = float(opt.simulated["npv_usd"])
        if winner is None or npv < win_npv:
            out["best_plan"] = {"name": "optimised plan", "npv_usd": npv,
                                "below_winner_usd": None if winner is None else win_npv - npv,
                                "cards": ", ".join(f"{r.cards:,} {r.card} ordered {r.order_date}"
                                                   for r in opt.plan.itertuples())}
    if "best_plan" not in out and winner is not None:
        out["best_plan"] = {"name": winner, "npv_usd": win_npv}
    mc = an.get("monte_carlo")
    parts = []
    if mc is not None and hasattr(mc, "win_probability"):
        n = int(mc.draws["draw"].nunique())
        p = mc.win_probability.get(winner or "none", 0.0)
        level = "high" if p >= 0.8 else "moderate" if p >= 0.5 else "low"
        who = winner or "no option meeting the SLOs"
        parts.append(f"confidence is {level}: among the scenario's options, {who} comes out "
                     f"best in {p:.0%} of {n} Monte Carlo draws of the uncertain inputs and the "
                     f"model's own error")
    near = None
    for f in an.get("flip") or []:
        if f.value is None:
            continue
        try:
            base = get_value(result.scenario, f.param)
        except Exception:  # noqa: BLE001 - a value the scenario does not hold (a default rate)
            continue
        if isinstance(base, (int, float)) and base:
            rel = abs(f.value / base - 1)
            if near is None or rel < near[0]:
                near = (rel, f, base)
    if near is not None:
        rel, f, base = near
        parts.append(f"the nearest flip is {f.param}: from {_num(base)} to {_num(f.value)} "
                     f"({rel:.0%} away) {f.above if f.value > base else f.below} becomes cheaper "
                     f"than {f.below if f.value > base else f.above}")
    if parts:
        out["confidence"] = "; ".join(parts) + "."
    return out
