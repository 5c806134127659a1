"""A run's output folder, written atomically from its `Result` records: results/*.parquet,
summary.json, scenario.resolved.yaml, report.md (rendered here) and report.html."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from sim.config.loader import ConfigError
from sim.config.scenario import Scenario
from sim.report import json_safe, md_text

DEFAULT_SOURCES = {
    "finance.discount_rate": "assumed 8% nominal (sim/cost/finance.py)",
    "reliability.failures_per_card_year": "reference-data D1: 0.17 per GPU-year (Llama 3, H100)",
    "reliability.infant_mortality": "reference-data D2: 5% within 30 days (3-10%)",
    "reliability.repair_hours": "assumed 72 h (no public MTTR, reference-data D2)",
    "finance.maintenance_fraction_per_year": "assumed 3% of capex per year (sim/cost/finance.py)",
    "finance.server_multiplier": "reference-data E4: whole server / GPU price x1.64-1.66 (Epoch)",
    "finance.network_share": "reference-data E4/F: 15% of cluster capex (10-20%)",
    "finance.depreciation_years": "reference-data E5/F: 5 years (4-6)",
    "finance.tax_rate": "assumed 21% US federal statutory rate (after-tax NPV only)",
    "finance.price_decline_per_year": "reference-data A3: HGX H100 price roughly flat 2023-25",
    "finance.residual": "reference-data E6 lender view (H100): 62.5/42.5/30% after 1/2/3 "
                        "years, extrapolated to a 10% floor at 6 years",
    "options.*.spare_fraction": "reference-data D2/F: 5% hot spares (NCSA, BLOOM)",
    "options.*.software.usd_per_engineer_year": "assumed $300k (reference-data E8: no public figure)",
    "capacity_requests": "fleetsim default: requests per capacity-search point",
}


def resolved_yaml(scn: Scenario) -> str:
    """The scenario with every default filled in, the site preset expanded, and the source of
    each default that is not in the file."""
    import yaml

    doc = json_safe(scn.model_dump(mode="json"))
    site = scn.site.resolved()
    doc["site"].update({k: v for k, v in site.items() if k != "source"})
    sources = {"site": site.get("source", "given in the file")}
    given = scn.model_fields_set
    for path, src in DEFAULT_SOURCES.items():
        top = path.split(".")[0]
        if top not in given or path.startswith("options."):
            sources[path] = src
    for cid, ov in scn.cards.items():
        sources[f"cards.{cid}"] = f"override: {ov.source}"
    for mid, ov in scn.models.items():
        sources[f"models.{mid}"] = f"override: {ov.source}"
    doc["sources"] = sources
    return ("# Written by fleetsim run: the scenario as run, every default filled in.\n"
            + yaml.safe_dump(doc, sort_keys=True, allow_unicode=True, width=100))


def render_markdown(res) -> str:
    """report.md: the winner and its rule, the options' money and service, the capacities."""
    d = res.decision
    winner = md_text(d.winner) if d.winner else "none: no option meets the SLOs"
    lines = [f"# {md_text(res.scenario.name)}", "",
             f"Winner: **{winner}** ({d.rule}).",
             "", "| option | NPV $M | total $M | $/M tokens | SLO attainment | utilisation |",
             "|---|---|---|---|---|---|"]
    for k, v in res.options.items():
        usd = v.usd_per_m_tokens
        lines.append(f"| {md_text(k)} | {v.npv_usd / 1e6:,.3f} | "
                     f"{v.total_cost_usd / 1e6:,.3f} | "
                     f"{'-' if usd is None else f'{usd:,.3f}'} | {v.slo_attainment:.2%} | "
                     f"{v.utilization:.1%} |")
    lines += ["", "Capacity per card at the SLOs (from the serving simulator):", "",
              "| workload | card | TP | precision | req/s per card |", "|---|---|---|---|---|"]
    for r in res.capacity.itertuples():
        lines.append(f"| {md_text(r.workload)} | {r.card} | {r.tp} | {r.precision} | "
                     f"{r.rps_per_card:.3f} |")
    if res.analyses:
        from sim.report.analysis import markdown
        lines += ["", markdown(res.analyses).rstrip()]
    return "\n".join(lines) + "\n"


def _write(res, tmp: Path) -> None:
    from sim.report.analysis import verdict, write_results
    from sim.report.html import render_html

    (tmp / "results").mkdir()
    res.per_year.to_parquet(tmp / "results" / "per_year.parquet", index=False)
    res.per_hour.to_parquet(tmp / "results" / "per_hour.parquet", index=False)
    res.capacity.to_parquet(tmp / "results" / "capacity.parquet", index=False)
    if len(res.software):
        res.software.to_parquet(tmp / "results" / "software.parquet", index=False)
    summary = {**res.summary, **verdict(res)}
    (tmp / "summary.json").write_text(json.dumps(json_safe(summary), indent=2,
                                                 sort_keys=True) + "\n")
    (tmp / "scenario.resolved.yaml").write_text(resolved_yaml(res.scenario))
    if res.analyses:
        write_results(res.analyses, tmp / "results", "analysis")
    (tmp / "report.md").write_text(render_markdown(res))
    (tmp / "report.html").write_text(render_html(res), encoding="utf-8")


def write_result(res, out: Path, force: bool = False) -> Path:
    """Write a `Result` atomically: a temporary folder renamed at the end."""
    out = Path(out)
    if out.exists() and not force:
        raise ConfigError(f"{out}: already exists (use --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write(res, tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; results are for sharing
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
