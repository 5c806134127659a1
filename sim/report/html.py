"""`render_html(result)`: the report as one self-contained HTML page (a string).

Reads only the `Result`. Plots are PNGs embedded as base64 data URIs; the page has no scripts
and no external resources, prints through its `@media print` rules, and is deterministic (no
timestamps, no random ids). Every string from the scenario reaches the page through jinja2 with
autoescaping on; nothing from the user is ever marked safe.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

import pandas as pd
from markupsafe import Markup, escape
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel

from sim.report import plots

TEMPLATES = Path(__file__).parent / "templates"

CAVEATS = (
    "Throughput comes from each card's microbenchmarks and its serving engine's factors, fitted "
    "to the engine vendor's own published tables (TensorRT-LLM, AMD's vLLM docker, Intel Gaudi; "
    "median error 7.5% on them). Against MLPerf Inference offline results (validation, 37 rows) "
    "the model is within 3% on NVIDIA cards by median but under-predicts AMD's tuned MLPerf runs "
    "by about 26% and misses B200 MoE FP4 by +63% (benchmarks/results/fidelity_mlperf.md): "
    "read an AMD option's capacity as what AMD's public software stack delivers, not its best "
    "tuned run.",
    "Capacities per card come from the serving simulator, which imitates the vLLM V1 scheduler "
    "(continuous batching, chunked prefill, paged KV cache); other engines and settings differ.",
    "Power is a phase model: a fixed share of server power per card state (training 75%, serving "
    "55%, idle, spare or in repair 15%), not a measurement of these workloads.",
    "The headline figures are one deterministic draw (the scenario's seed) of failures and "
    "delivery times at the scenario's own values; the Monte Carlo section, where the scenario "
    "asks for one, shows how often the answer holds across the uncertain inputs.",
)


# ---- formatting ------------------------------------------------------------------------------

def usd(v: float | None) -> str:
    """$ amount with a unit suffix: $542.9k, $1.23M, $2.10B."""
    if v is None or not math.isfinite(v):
        return "n/a"
    a, sign = abs(v), "-" if v < 0 else ""
    for suffix, f, digits in (("B", 1e9, 2), ("M", 1e6, 2), ("k", 1e3, 1)):
        if a >= f:
            return f"{sign}${a / f:,.{digits}f}{suffix}"
    return f"{sign}${a:,.2f}"


def usd_per_m(v: float | None) -> str:
    """$ per million tokens, to a tenth of a cent."""
    return "n/a" if v is None or not math.isfinite(v) else f"${v:,.3f}"


def pct(v: float | None, digits: int = 1) -> str:
    """A share as a percentage; a share just under 1 never shows as 100%."""
    if v is None or not math.isfinite(v):
        return "n/a"
    s = f"{v * 100:.{digits}f}%"
    if v < 1 and s == f"{100:.{digits}f}%":
        return f">{100 - 10 ** -digits:.{digits}f}%"
    return s


def number(v) -> str:
    """A scenario value as text: whole numbers with separators, other floats to 6 significant
    digits, sequences and mappings item by item, None as "not set"."""
    if v is None:
        return "not set"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isfinite(v) and abs(v) < 1e-9:  # float noise of a sum, not a value
            return "0"
        if math.isfinite(v) and v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:,.6g}" if math.isfinite(v) else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(number(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {number(x)}" for k, x in v.items()) + "}"
    return str(v)


def _png_uri(png: bytes | None) -> str | None:
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode()


# ---- assumptions -----------------------------------------------------------------------------

def assumption_rows(scn) -> list[dict]:
    """Every scenario input as a dotted path with its value and provenance.

    provenance: `scenario` (given in the file), `default` (fleetsim's default), `override`
    (a `cards:`/`models:` library override, with its source) or `preset <name>` (a site preset
    value, with the preset's source). `flag` names why an input is low-confidence: it has an
    `uncertain:` range, or its source says "low confidence"."""
    from sim.config.scenario import SITE_PRESETS

    rows: list[dict] = []

    def leaf(path: str, value, given: bool, provenance: str | None = None, source: str = ""):
        rows.append({"path": path, "value": number(value),
                     "provenance": provenance or ("scenario" if given else "default"),
                     "source": source, "flag": ""})

    def walk(obj, path: str, given: bool):
        if isinstance(obj, BaseModel):
            fields_set = obj.model_fields_set
            for name in type(obj).model_fields:
                walk(getattr(obj, name), f"{path}.{name}" if path else name,
                     given and name in fields_set)
        elif isinstance(obj, dict) and obj and all(isinstance(v, BaseModel) for v in obj.values()):
            for k, v in obj.items():
                walk(v, f"{path}.{k}", given)
        elif (isinstance(obj, (tuple, list)) and obj
              and all(isinstance(v, BaseModel) for v in obj)):
            for i, v in enumerate(obj):
                walk(v, f"{path}[{i}]", given)
        elif isinstance(obj, (dict, tuple, list)) and not obj:
            rows.append({"path": path, "value": "none", "provenance": "scenario" if given
                         else "default", "source": "", "flag": ""})
        else:
            leaf(path, obj, given)

    site = scn.site
    for name in type(scn).model_fields:
        value = getattr(scn, name)
        given = name in scn.model_fields_set
        if name == "uncertain":
            continue
        if name in ("cards", "models") and value:
            for ident, ov in value.items():
                for k, v in ov.values().items():
                    rows.append({"path": f"{name}.{ident}.{k}", "value": number(v),
                                 "provenance": "override", "source": ov.source, "flag": ""})
            continue
        if name == "site":
            preset = SITE_PRESETS.get(site.preset) if site.preset else None
            for f in type(site).model_fields:
                v = getattr(site, f)
                if v is None and preset is not None and f in preset:
                    rows.append({"path": f"site.{f}", "value": number(preset[f]),
                                 "provenance": f"preset {site.preset}",
                                 "source": str(preset["source"]), "flag": ""})
                else:
                    leaf(f"site.{f}", v, given and f in site.model_fields_set)
            continue
        walk(value, name, given)

    for oname, o in scn.options.items():
        for i, b in enumerate(o.buy):
            if b.price_usd is None:
                r = next(r for r in rows if r["path"] == f"options.{oname}.buy[{i}].price_usd")
                r["value"] = (f"not set: cards.{b.card}.price_usd" if b.card in scn.cards and
                              scn.cards[b.card].price_usd is not None else
                              "not set: the card library's price")
    by_path = {r["path"]: r for r in rows}
    for path, dist in scn.uncertain.items():
        kind, params = next((k, v) for k, v in dist.model_dump().items() if v is not None)
        text = f"uncertain: {kind} {number(params)}"
        if path in by_path:
            by_path[path]["flag"] = text
        else:
            rows.append({"path": path, "value": "(library value)", "provenance": "uncertain",
                         "source": "", "flag": text})
    for r in rows:
        if not r["flag"] and "low confidence" in r["source"].lower():
            r["flag"] = "low confidence (per its source)"
    return rows


def calibration_rows(capacity) -> list[dict]:
    """One assumptions row per card the results used: the calibration tier of each factor the
    performance model read (measured > published > assumed), flagged when any was assumed."""
    rows = []
    if "calibration_tiers" not in getattr(capacity, "columns", ()):
        return rows
    seen = set()
    for r in capacity.itertuples():
        if r.card in seen:
            continue
        seen.add(r.card)
        tiers = [t.split(": ")[1] for t in str(r.calibration_tiers).split(", ") if ": " in t]
        counts = ", ".join(f"{tiers.count(t)} {t}" for t in ("measured", "published", "assumed")
                           if tiers.count(t))
        engine = getattr(r, "engine", None)
        eng = (f"; engine {r.engine_version} ({engine}, released {r.engine_date})"
               if isinstance(engine, str) else "")
        esrc = (f"; hardware_specs/engines/{engine}.yaml, its fit hardware_specs/engine_fits/"
                f"{engine}.yaml" if isinstance(engine, str) else "")
        rows.append({"path": f"calibration.{r.card}", "value": f"factors: {counts}{eng}",
                     "provenance": "library",
                     "source": f"hardware_specs/calibration/{r.card}*.yaml{esrc}",
                     "flag": (f"assumed calibration: {r.assumed_factors}"
                              if r.assumed_factors else "")})
    return rows


# ---- the page --------------------------------------------------------------------------------

def _campaigns(camps) -> str:
    if not camps:
        return "none"
    done = sum(c.completed for c in camps)
    missed = sum(c.met_deadline is False for c in camps)
    return f"{done}/{len(camps)} done" + (f", {missed} late" if missed else "")


def _campaign_rows(result, names: list[str]) -> list[dict]:
    """One row per option: how many campaigns ran, completed, slipped (started more than a day
    after their earliest start, for want of free cards) and missed a deadline."""
    t0 = plots.start_date(result.scenario.start)
    rows = []
    for o in names:
        camps = result.options[o].campaigns
        if not camps:
            continue
        started = [c for c in camps if c.started]
        slipped = [(c.campaign, d) for c in started
                   if (d := (c.start_hour - c.planned_start_hour) / 24.0) > 1.0]
        late = [c.campaign for c in camps if c.met_deadline is False]
        unfinished = [f"{c.campaign} ({c.reason or 'not finished'})" for c in camps
                      if not c.completed]
        rows.append({
            "option": o, "runs": len(camps),
            "cards": ", ".join(sorted({f"{c.cards:,}" for c in started})),
            "first": str(t0 + int(started[0].start_hour // 24)) if started else "-",
            "completed": f"{len(camps) - len(unfinished)} of {len(camps)}",
            "slipped": "none" if not slipped else "; ".join(
                f"{n} by {d:,.0f} days" for n, d in slipped),
            "deadline": "none missed" if not late else ", ".join(late),
            "note": "; ".join(unfinished)})
    return rows


def _context(result) -> dict:
    scn, opts, winner = result.scenario, result.options, result.decision.winner
    tolerance = result.decision.slo_tolerance
    names = list(opts)
    meets = sorted((o for o in names if opts[o].meets_slo or o == winner),
                   key=lambda o: opts[o].npv_usd)
    fails = sorted((o for o in names if o not in meets), key=lambda o: opts[o].npv_usd)
    headline: dict = {"winner": winner, "rule": result.decision.rule,
                      "tolerance": pct(tolerance, 0), "n_options": len(names)}
    if winner:
        headline["winner_npv"] = usd(opts[winner].npv_usd)
        rest = [o for o in meets if o != winner]
        if rest:
            r = rest[0]
            gap = opts[r].npv_usd - opts[winner].npv_usd
            headline.update(runner=r, runner_npv=usd(opts[r].npv_usd), gap=usd(gap),
                            gap_pct=pct(gap / opts[r].npv_usd) if opts[r].npv_usd else
                            "n/a")
        cheaper = [o for o in fails if opts[o].npv_usd < opts[winner].npv_usd]
        headline["cheaper_failing"] = [
            {"name": o, "npv": usd(opts[o].npv_usd),
             "attainment": pct(opts[o].slo_attainment)} for o in cheaper]
    else:
        best = max(names, key=lambda o: (opts[o].slo_attainment, -opts[o].npv_usd))
        headline.update(best=best, best_attainment=pct(opts[best].slo_attainment))

    rows = []
    for o in names:
        v = opts[o]
        jpt = v.joules_per_token
        rows.append({
            "name": o, "meets": o in meets, "is_winner": o == winner,
            "npv": usd(v.npv_usd), "total": usd(v.total_cost_usd),
            "npv_after_tax": usd(v.after_tax_npv_usd),
            "usd_m": usd_per_m(v.usd_per_m_tokens),
            "usd_m_in": usd_per_m(v.usd_per_m_input_tokens),
            "usd_m_out": usd_per_m(v.usd_per_m_output_tokens),
            "jpt": "n/a" if jpt is None else f"{jpt:,.3f}",
            "slo": pct(v.slo_attainment), "util": pct(v.utilization),
            "card_hour": usd(v.usd_per_card_hour),
            "campaigns": _campaigns(v.campaigns),
        })

    per_year = [{"option": r.option, "year": int(r.year), "total": usd(r.total_usd),
                 "tokens": f"{r.output_tokens_served / 1e9:,.1f}",
                 "tokens_in": f"{r.input_tokens_served / 1e9:,.1f}", "slo": pct(r.slo_attainment),
                 "util": pct(r.utilization)}
                for r in result.per_year.sort_values(["option", "year"], kind="stable")
                .itertuples()]
    order = {o: i for i, o in enumerate(names)}
    per_year.sort(key=lambda r: (order.get(r["option"], len(order)), r["year"]))

    capacity = [{"workload": r.workload, "card": r.card, "tp": int(r.tp),
                 "precision": r.precision, "rps": f"{r.rps_per_card:,.3f}",
                 "prefill": pct(getattr(r, "prefill_time_fraction", None)),
                 "isl": f"{r.input_tokens:,.0f}", "osl": f"{r.output_tokens:,.0f}"}
                for r in result.capacity.itertuples()]

    camp_rows = _campaign_rows(result, names)

    shown = names[: plots.MAX_TIMELINE_OPTIONS]
    site = scn.site.resolved()
    images = {
        "cost": _png_uri(plots.cost_per_year(result.per_year, names)),
        "tokens": _png_uri(plots.usd_per_m_tokens(opts, names)),
        "demand": _png_uri(plots.demand_vs_served(result.per_hour, shown, scn.start)),
        "states": _png_uri(plots.utilisation(result.per_hour, scn, shown, scn.start)),
        "slo": _png_uri(plots.slo_attainment(result.per_hour, names, scn.start, tolerance)),
        "software": _png_uri(plots.software_trajectory(
            getattr(result, "trajectory", None), getattr(result, "software_history", None),
            scn.start)),
    }
    return {
        "title": f"{scn.name} — fleetsim report", "name": scn.name, "headline": headline,
        "rows": rows, "per_year": per_year, "capacity": capacity, "campaigns": camp_rows,
        "software": software_lines(result),
        "verdict": _verdict(result),
        "training": [{"name": k, "card": v.card, "cards": f"{v.cards:,}",
                      "layout": v.layout, "mfu": pct(v.mfu),
                      "tps": f"{v.tokens_per_s_per_card:,.0f}", "goodput": pct(v.goodput),
                      "days": f"{v.time_to_train_days:,.1f}",
                      "ideal": f"{v.ideal_days:,.1f}", "calibration": v.calibration}
                     for k, v in result.training.items()],
        "images": images, "shown": shown, "hidden": names[plots.MAX_TIMELINE_OPTIONS:],
        "period": plots.PERIOD[plots.bucket_days(result.per_hour)],
        "assumptions": assumption_rows(scn) + calibration_rows(result.capacity),
        "caveats": CAVEATS,
        "analysis": _analysis_context(result),
        "notes": list(result.notes),
        "facts": {"seed": scn.seed, "start": scn.start, "horizon": number(scn.horizon_years),
                  "discount": pct(scn.finance.discount_rate),
                  "tax_rate": pct(scn.finance.tax_rate),
                  "depreciation": f"{scn.finance.depreciation_years:g} years",
                  "site": scn.site.preset or "custom",
                  "electricity": f"${site['electricity_usd_per_kwh']:.4g}/kWh",
                  "pue": f"{site['pue']:.3g}", "n_uncertain": len(scn.uncertain)},
    }


def wbr_path(path: str) -> Markup:
    """A YAML path that may wrap only after its dots (never inside a word)."""
    return Markup(".<wbr>".join(str(escape(part)) for part in str(path).split(".")))


def _verdict(result) -> dict:
    from sim.report.analysis import verdict

    v = verdict(result)
    bp = v.get("best_plan")
    if bp is not None:
        bp = {**bp, "npv": usd(bp["npv_usd"]),
              "below": usd(bp["below_winner_usd"]) if bp.get("below_winner_usd") else None}
    return {"best_plan": bp, "confidence": v.get("confidence")}


def software_lines(result) -> list[str]:
    """One sentence per option: how much of its serving capacity came from software updates
    (engine upgrades under its plan, and the projection past each stack's last release)."""
    sw = getattr(result, "software", None)
    if sw is None or not len(sw):
        return []
    t0 = plots.start_date(result.scenario.start)
    out = []
    for o, v in result.options.items():
        rows = sw[(sw.option == o) & (sw.role == "own")]
        gain = v.software_gain
        if not len(rows) or gain is None:
            continue
        parts = []
        for r in rows.drop_duplicates("card").itertuples():
            ups = ", ".join(f"{e} from {t0 + int(h // 24)}" for h, e in
                            zip(r.upgrade_hours, r.upgrade_engines))
            proj = (f"then +{r.rate_per_year:.1%} a year projected past its last release "
                    f"(roofline at {r.roofline_ceiling:.2f}x)" if pd.notna(r.projected_from_hour)
                    and r.rate_per_year > 0 else "no projection")
            parts.append(f"{r.card} starts on {r.engine_at_start}"
                         f"{' (' + ups + ')' if ups else ''}, {proj}")
        out.append(f"{o}: software updates give its serving cards {gain:+.1%} capacity on "
                   f"average over the hours they serve, against the releases in force at the "
                   f"start; " + "; ".join(parts) + ".")
    return out


def _analysis_context(result) -> dict | None:
    from sim.report.analysis import context

    return context(getattr(result, "analyses", None) or {})


def render_html(result) -> str:
    """The report for `result`, as an HTML document (deterministic for the same Result)."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters["wbr_path"] = wbr_path
    return env.get_template("report.html.j2").render(**_context(result))
