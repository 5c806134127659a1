"""Rich HTML for Jupyter: what a card, a model, a scenario or a result shows when displayed.

`card_html`, `model_html`, `scenario_html` and `result_html` build small self-contained HTML
fragments (tables, no scripts, no external resources). Every string that comes from a YAML file
or a scenario (names, ids, sources, notes) passes through `html.escape`; numbers are formatted
here. The classes' `_repr_html_` methods are thin: `CardSpec`, `ModelSpec` and `Scenario`
(sim.config) call `render(kind, obj)` through `sim.config.base.html_repr`, which loads this
module by name only when an object is displayed (config never imports the report layer);
`sim.stages.records.Result` imports `result_html` directly.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable

from sim.report.html import number, pct, usd, usd_per_m

STYLE = ("<style>.fleetsim-repr table{border-collapse:collapse;margin:0.2em 0 0.6em 0}"
         ".fleetsim-repr td,.fleetsim-repr th{padding:1px 8px;text-align:left;"
         "vertical-align:top}.fleetsim-repr th{font-weight:600}"
         ".fleetsim-repr .muted{color:#666}.fleetsim-repr h4{margin:0.5em 0 0.2em 0}</style>")


def esc(v) -> str:
    """Any value as escaped HTML text (None as an empty string)."""
    return "" if v is None else html.escape(str(v), quote=True)


def _table(rows: Iterable[Iterable], header: Iterable[str] | None = None) -> str:
    out = ["<table>"]
    if header is not None:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _wrap(title: str, subtitle: str, body: str) -> str:
    return (f'{STYLE}<div class="fleetsim-repr"><h4>{title}</h4>'
            f'<div class="muted">{subtitle}</div>{body}</div>')


def _num(v, digits: int = 4) -> str:
    if v is None:
        return '<span class="muted">-</span>'
    if isinstance(v, float) and math.isfinite(v) and not v.is_integer():
        return esc(f"{v:,.{digits}g}")
    return esc(number(v))


# ---- cards -----------------------------------------------------------------------------------

def card_html(card) -> str:
    """A `CardSpec`: peak rates, memory, fabrics, power, prices and rentals, each with its source
    id and provenance tag."""
    src = card.sources

    def tag(ref: str) -> str:
        s = src.get(ref)
        t = f" ({s.tag})" if s is not None else ""
        title = esc(s.citation) if s is not None else ""
        return f'<span class="muted" title="{title}">{esc(ref)}{esc(t)}</span>'

    c, m, su, so, hb, p = (card.compute, card.memory, card.scale_up, card.scale_out,
                           card.host_bus, card.power)
    peaks = ", ".join(f"{k} {_num(c.peak_tflops(k))}" for k in ("bf16", "fp8", "fp4", "int8")
                      if c.peak_tflops(k) is not None)
    rows = [
        ("peak dense TFLOPS", peaks, tag(c.source)),
        ("memory", f"{_num(m.capacity_gb)} GB {esc(m.kind)}, {_num(m.bandwidth_tbps)} TB/s",
         tag(m.source)),
        ("scale-up", f"{esc(su.fabric)} ({esc(su.topology)}), {_num(su.per_direction_gbytes_per_s)}"
                     f" GB/s per direction, domain {_num(su.domain_size)}", tag(su.source)),
        ("scale-out", f"{_num(so.nic_gbit_per_s)} Gb/s {esc(so.kind)}", tag(so.source)),
        ("host bus", f"{esc(hb.kind)}" + (f", {_num(hb.gbytes_per_s)} GB/s"
                                          if hb.gbytes_per_s else ""), tag(hb.source)),
        ("power", f"{_num(p.tdp_w)} W TDP", tag(p.source)),
    ]
    body = _table(rows, ("", "value", "source"))
    if card.prices:
        body += "<b>prices</b>" + _table(
            [(f"${_num(x.low_usd)} - ${_num(x.high_usd)}", esc(x.basis), esc(x.date),
              tag(x.source), esc(x.note)) for x in card.prices],
            ("USD", "basis", "date", "source", "note"))
    if card.rentals:
        body += "<b>rentals</b>" + _table(
            [(esc(x.provider), f"${x.usd_per_hour:,.2f}", esc(x.term), esc(x.date),
              tag(x.source)) for x in card.rentals],
            ("provider", "$/hour", "term", "date", "source"))
    if card.notes:
        body += "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in card.notes) + "</ul>"
    sub = (f"{esc(card.vendor)} · {esc(card.stack)} · {esc(card.form_factor)} · launched "
           f"{esc(card.launch)} · confidence {esc(card.confidence)}")
    return _wrap(esc(card.name), sub, body)


# ---- models ----------------------------------------------------------------------------------

def model_html(model) -> str:
    """A `ModelSpec`: architecture, attention and MoE layout, and parameter counts (derived by
    `sim.perf.params` next to the published ones)."""
    from sim.perf.params import active_params, total_params

    a = model.architecture
    rows = [(esc(k), _num(getattr(a, k))) for k in (
        "num_layers", "hidden_size", "num_attention_heads", "num_kv_heads", "head_dim",
        "ffn_size", "vocab_size", "attention", "ffn_kind", "max_context_tokens")]
    if a.moe is not None:
        rows.append(("moe", esc(f"{a.moe.num_experts} experts, {a.moe.experts_per_token} per "
                                f"token, expert FFN {a.moe.expert_ffn_size}, "
                                f"{a.moe.num_shared_experts} shared")))
    if a.mla is not None:
        rows.append(("mla", esc(f"kv_lora_rank {a.mla.kv_lora_rank}, rope dim "
                                f"{a.mla.qk_rope_head_dim}")))
    if a.sliding_window is not None:
        rows.append(("sliding window", esc(f"{a.sliding_window.window_tokens} tokens on "
                                           f"{a.sliding_window.num_layers} layers")))
    pub = model.published_params
    total, active = total_params(a) / 1e9, active_params(a) / 1e9
    params = f"{total:,.2f}B derived (published {_num(pub.total_b)}B)"
    if model.is_moe:
        params += f"; active {active:,.2f}B derived" + (
            f" (published {_num(pub.active_b)}B)" if pub.active_b else "")
    rows.append(("parameters", esc(params)))
    body = _table(rows)
    if model.notes:
        body += "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in model.notes) + "</ul>"
    return _wrap(esc(model.name), f"family {esc(model.family)}", body)


# ---- scenarios -------------------------------------------------------------------------------

def _buy_text(b) -> str:
    lt = b.lead_time_weeks
    lead = f"{lt[0]:g}-{lt[1]:g} weeks" if isinstance(lt, tuple) else f"{lt:g} weeks"
    price = f"${b.price_usd:,.0f}" if b.price_usd is not None else "library/override price"
    return f"buy {b.count:,} × {b.card} at {b.at} (lead {lead}, {price})"


def _option_text(o) -> str:
    parts = [_buy_text(b) for b in o.buy]
    parts += [f"lease {x.count:,} × {x.card} at {x.at} for {x.term_years:g} y "
              f"(${x.usd_per_card_month:,.0f}/card-month)" for x in o.lease]
    parts += [f"reserve {x.count:,} × {x.card} at {x.at} for {x.term_years} y "
              f"(${x.usd_per_card_hour:,.2f}/card-hour)" for x in o.reserve]
    return "<br>".join(esc(p) for p in parts)


def scenario_html(scn) -> str:
    """A `Scenario`: horizon and site, workloads, training campaigns, options, overrides and
    uncertain inputs."""
    site = scn.site.resolved()
    facts = (f"start {esc(scn.start)} · {_num(scn.horizon_years)} years · seed {scn.seed} · "
             f"site {esc(scn.site.preset or 'custom')} (${site['electricity_usd_per_kwh']:.4g}"
             f"/kWh, PUE {site['pue']:.3g}) · discount {pct(scn.finance.discount_rate)}")
    body = ""
    if scn.workloads:
        rows = []
        for name, w in scn.workloads.items():
            t = w.traffic
            slo = ", ".join(f"{k.split('_')[0].upper()} p99 ≤ {v:g} ms" for k, v in
                            (("ttft_p99_ms", w.slo.ttft_p99_ms), ("tpot_p99_ms", w.slo.tpot_p99_ms))
                            if v is not None) or "none"
            rent = (f"{w.rent.card} at ${w.rent.usd_per_hour:g}/h"
                    + (f", ≤ {w.rent.max_cards:,.0f} cards" if w.rent.max_cards is not None
                       else "")) if w.rent else "no"
            rows.append((esc(name), esc(f"{w.model} ({w.precision})"),
                         esc(f"{t.peak_rps:,.4g} req/s peak, " + (
                             f"{len(t.growth_by_quarter)}-quarter growth table"
                             if t.growth_by_quarter else f"+{t.growth_per_year:.0%}/year")
                             + (f", {len(t.events)} event(s)" if t.events else "")),
                         esc(t.lengths or t.trace), esc(slo), esc(rent)))
        body += "<b>workloads</b>" + _table(rows, ("name", "model", "traffic", "lengths",
                                                   "SLO", "rent"))
    if scn.training:
        rows = [(esc(n), esc(t.model), esc(f"{t.tokens:.3g}"), esc(t.card),
                 _num(t.cards), esc(t.start or scn.start),
                 esc(f"every {t.every_months:g} months" if t.every_months else "once"))
                for n, t in scn.training.items()]
        body += "<b>training</b>" + _table(rows, ("name", "model", "tokens", "card", "cards",
                                                  "start", "repeats"))
    rows = []
    for name, o in scn.options.items():
        sw = o.software
        extra = []
        if o.serve_on:
            extra.append(f"serves on {', '.join(o.serve_on)}")
        extra.append(o.policy)
        if sw.porting_engineer_years or sw.ongoing_engineers:
            extra.append(f"porting {sw.porting_engineer_years:g} engineer-years, "
                         f"{sw.ongoing_engineers:g} ongoing")
        rows.append((esc(name), _option_text(o), esc("; ".join(extra))))
    body += "<b>options</b>" + _table(rows, ("name", "fleet", "notes"))
    ovr = [(esc(f"{kind}.{ident}"), esc(", ".join(f"{k}={number(v)}" for k, v in
                                                  ov.values().items())), esc(ov.source))
           for kind, section in (("cards", scn.cards), ("models", scn.models))
           for ident, ov in section.items()]
    if ovr:
        body += "<b>library overrides</b>" + _table(ovr, ("what", "values", "source"))
    if scn.uncertain:
        rows = []
        for path, dist in scn.uncertain.items():
            kind, params = next((k, v) for k, v in dist.model_dump().items()
                                if v is not None and k != "weights")
            rows.append((esc(path), esc(f"{kind} {number(params)}")))
        body += "<b>uncertain inputs</b>" + _table(rows, ("path", "distribution"))
    return _wrap(esc(scn.name), facts, body)


# ---- results ---------------------------------------------------------------------------------

def result_html(res) -> str:
    """A `Result`: the winner and its rule, and per option NPV, total cost, $/M tokens, SLO
    attainment and utilisation; then capacity per card at the SLOs."""
    opts, winner = res.options, res.decision.winner
    lead = (f"winner: <b>{esc(winner)}</b>" if winner else
            "<b>no option meets the SLOs</b>") + \
        f' <span class="muted">({esc(res.decision.rule)})</span>'
    rows = [(("<b>" + esc(o) + "</b>") if o == winner else esc(o), esc(usd(v.npv_usd)),
             esc(usd(v.total_cost_usd)), esc(usd_per_m(v.usd_per_m_tokens)),
             esc(pct(v.slo_attainment)), esc(pct(v.utilization)))
            for o, v in opts.items()]
    body = _table(rows, ("option", "NPV", "total cost", "$/M tokens", "SLO attainment",
                         "utilisation"))
    if len(res.capacity):
        rows = [(esc(r.workload), esc(r.card), _num(int(r.tp)), esc(r.precision),
                 esc(f"{r.rps_per_card:,.3f}")) for r in res.capacity.itertuples()]
        body += "<b>capacity per card at the SLOs</b>" + _table(
            rows, ("workload", "card", "TP", "precision", "req/s per card"))
    if res.notes:
        body += "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in res.notes) + "</ul>"
    body += ('<div class="muted">frames: .per_year, .per_hour, .capacity; .summary; figures: '
             '.plot.cost_per_year() and the rest of .plot; .to_dir(path) writes the report'
             '</div>')
    return _wrap(esc(res.scenario.name), lead, body)


RENDERERS = {"card": card_html, "model": model_html, "scenario": scenario_html}


def render(kind: str, obj) -> str:
    """The HTML for a config object of `kind` (card, model, scenario)."""
    return RENDERERS[kind](obj)
