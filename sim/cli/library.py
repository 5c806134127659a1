"""`fleetsim engines`, `cards`, `models`: the library as tables."""

from __future__ import annotations


from rich.table import Table

from sim.cli.shared import app, load_library, opt_text, print_table, LibraryOpt


@app.command()
def engines(library: LibraryOpt = None) -> None:
    """Table of the serving-engine releases in the library (what `--engine` takes)."""
    lib = load_library(library)
    t = Table(title="Engines")
    for col in ("id", "name", "version", "released", "stack", "KV admission", "fitted cards",
                "runs on"):
        t.add_column(col, no_wrap=col == "id")
    for eid in lib.ids("engine"):
        e = lib.engine(eid)
        fit = lib.engine_fit(eid)
        fitted = ", ".join(sorted(fit.cards)) if fit else (
            f"from {e.factors_from}" if e.factors_from else "-")
        t.add_row(eid, e.name, e.version, e.release_date, e.stack, e.rules.kv_admission,
                  fitted or "pooled only", ", ".join(e.runs_on))
    print_table(t)


@app.command()
def cards(library: LibraryOpt = None) -> None:
    """Table of the cards in the library."""
    lib = load_library(library)
    t = Table(title="Cards")
    for col in ("id", "name", "BF16 TF", "FP8 TF", "FP4 TF", "mem GB", "TB/s", "scale-up",
                "TDP W", "launch"):
        t.add_column(col)
    for cid in lib.ids("card"):
        c = lib.card(cid)
        su = c.scale_up
        t.add_row(cid, c.name, f"{c.compute.bf16_tflops:g}", opt_text(c.compute.fp8_tflops),
                  opt_text(c.compute.fp4_tflops), f"{c.memory.capacity_gb:g}",
                  f"{c.memory.bandwidth_tbps:g}",
                  f"{su.topology} {su.domain_size}x {su.per_direction_gbytes_per_s:g} GB/s",
                  f"{c.power.tdp_w:g}", c.launch)
    print_table(t)


@app.command()
def models(library: LibraryOpt = None) -> None:
    """Table of the models in the library, with derived parameter counts."""
    from sim.perf.params import active_params, total_params

    lib = load_library(library)
    t = Table(title="Models")
    for col in ("id", "name", "layers", "hidden", "heads/kv", "attention", "experts",
                "params B (derived)", "active B", "published B"):
        t.add_column(col)
    for mid in lib.ids("model"):
        m = lib.model(mid)
        a = m.architecture
        ex = f"{a.moe.experts_per_token}/{a.moe.num_experts}" if a.moe else "-"
        t.add_row(mid, m.name, str(a.num_layers), str(a.hidden_size),
                  f"{a.num_attention_heads}/{a.num_kv_heads}", a.attention, ex,
                  f"{total_params(a) / 1e9:.1f}", f"{active_params(a) / 1e9:.1f}",
                  f"{m.published_params.total_b:g}")
    print_table(t)
