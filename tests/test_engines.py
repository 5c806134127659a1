"""Engines as dated library records: resolution by date, rules, fitted factors, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from sim.config.engine import EngineTable
from sim.config.loader import ConfigError, load_file
from sim.perf.hardware import Hardware, engines_for, resolve_engine
from sim.perf.memory import Layout
from sim.perf.offline import LengthMoments, kv_tokens_per_sequence, offline_throughput
from sim.perf.precision import Precision

REPO = Path(__file__).resolve().parents[1]
FP8 = Precision.preset("fp8")


def test_every_card_runs_some_engine(lib):
    for cid in lib.ids("card"):
        assert engines_for(cid, lib), cid
        hw = Hardware.load(cid, lib)
        assert hw.engine is not None and cid in hw.engine.runs_on


def test_as_of_picks_the_newest_release_by_that_date(lib):
    assert resolve_engine("h100-sxm", lib, as_of="2025-03") == "trtllm-0.17"
    assert resolve_engine("h100-sxm", lib, as_of="2025-06-30") == "trtllm-0.20"
    assert resolve_engine("mi300x", lib, as_of="2025-07") == "vllm-rocm-0.9.1"
    assert resolve_engine("gaudi2", lib, as_of="2024-12") == "synapseai-1.19"
    dates = [e.release_date for _, e in engines_for("h100-sxm", lib)]
    assert resolve_engine("h100-sxm", lib) == engines_for("h100-sxm", lib)[-1][0]
    assert dates == sorted(dates)


def test_engine_errors_are_one_line(lib):
    with pytest.raises(ConfigError, match="unknown engine 'trtllm-9.9'"):
        resolve_engine("h100-sxm", lib, engine="trtllm-9.9")
    with pytest.raises(ConfigError, match="does not run on card 'mi300x'"):
        resolve_engine("mi300x", lib, engine="trtllm-0.20")
    with pytest.raises(ConfigError, match="no engine for card 'mi300x' was released by 2023-01"):
        resolve_engine("mi300x", lib, as_of="2023-01")


def test_a_table_without_a_token_definition_is_a_located_error(tmp_path):
    text = (REPO / "hardware_specs" / "engine_tables" / "gaudi-1.19.yaml").read_text()
    bad = tmp_path / "t.yaml"
    bad.write_text(text.replace("token_definition: output\n", ""))
    with pytest.raises(ConfigError, match=r"t\.yaml: token_definition: .*required"):
        load_file(EngineTable, bad, "t.yaml")
    bad.write_text(text.replace("token_definition: output", "token_definition: tokens"))
    with pytest.raises(ConfigError, match="token_definition"):
        load_file(EngineTable, bad, "t.yaml")


def test_engine_releases_give_different_numbers(lib):
    m = lib.model("llama-3.1-70b")
    out = {}
    for eid in ("trtllm-0.14", "trtllm-1.2"):
        hw = Hardware.load("h100-sxm", lib, engine=eid)
        out[eid] = offline_throughput(m, hw, Layout(tp=2), FP8,
                                      LengthMoments(1000.0, 1000.0)).offline_tokens_per_s_per_card
    assert out["trtllm-0.14"] != pytest.approx(out["trtllm-1.2"], rel=1e-3)


def test_fitted_factors_are_tagged_and_cards_without_tables_say_so(lib):
    hw = Hardware.load("h100-sxm", lib, engine="trtllm-0.17")
    f = hw.factors["engine_compute"]
    assert f.tier == "published" and "trtllm-0.17" in f.source and "least-squares" in f.source
    hw = Hardware.load("h100-pcie", lib, engine="trtllm-0.17")  # no table of its own
    f = hw.factors["engine_compute"]
    assert f.tier == "assumed" and "no published table for card 'h100-pcie'" in f.source
    assert "pooled fit" in f.source
    # a card with its own fit on an earlier release of the engine keeps it, flagged
    fit_021 = lib.engine_fit("trtllm-0.21").cards["h100-sxm"].factors
    if "h100-sxm" not in lib.engine_fit("trtllm-1.2").cards:
        f = Hardware.load("h100-sxm", lib, engine="trtllm-1.2").factors["engine_compute"]
        assert f.value == fit_021.compute and f.tier == "assumed"
        assert "the card's own fit on an earlier release 'trtllm-0.21'" in f.source


def test_reserve_admission_holds_prompt_plus_max_output(lib):
    trt = Hardware.load("h100-sxm", lib, engine="trtllm-0.20")
    vllm = Hardware.load("mi300x", lib, engine="vllm-rocm-0.9.1")
    mix = LengthMoments(200.0, 300.0, osl_sq=300.0**2 + 200.0**2, osl_max=1024.0)
    assert kv_tokens_per_sequence(trt, mix) == 200 + 1024
    # paged: length-biased context E[I] + E[O^2] / (2 E[O])
    assert kv_tokens_per_sequence(vllm, mix) == pytest.approx(200 + (300**2 + 200**2) / 600)
    # fixed lengths: I + O/2
    assert LengthMoments(200.0, 300.0).decode_context() == 350


def test_static_shapes_pad_prompts(lib):
    hw = Hardware.load("gaudi2", lib)
    rules = hw.engine.rules.static_shapes
    assert rules is not None and rules.seq_bucket_tokens == 128
    fixed = LengthMoments(130.0, 100.0).padded(128)
    assert fixed.isl == 256
    spread = LengthMoments(222.0, 294.0, isl_sq=222.0**2 + 171.5**2).padded(128)
    assert spread.isl == 222 + 64
    # padding costs throughput on a spread of prompt lengths
    m = lib.model("llama-2-70b")
    spread_mix = LengthMoments(222.0, 294.0, isl_sq=222.0**2 + 171.5**2)
    padded = offline_throughput(m, hw, Layout(tp=2), FP8, spread_mix, batch=256)
    nopad = offline_throughput(m, Hardware(hw.card_id, hw.card, hw.factors, None, None),
                               Layout(tp=2), FP8, spread_mix, batch=256)
    assert padded.offline_tokens_per_s_per_card < nopad.offline_tokens_per_s_per_card


def test_cli_engine_flags_and_json(tmp_path):
    def perf(*extra):
        r = subprocess.run([sys.executable, "-m", "sim.cli", "perf", "--card", "h100-sxm",
                            "--model", "llama-3.1-70b", "--precision", "fp8", "--isl", "1000",
                            "--osl", "1000", "--tp", "2", "--json", *extra],
                           capture_output=True, text=True, cwd=REPO)
        return r
    a, b = perf("--engine", "trtllm-0.14"), perf("--engine", "trtllm-1.2")
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert ja["engine"] == "trtllm-0.14" and jb["engine"] == "trtllm-1.2"
    assert ja["engine_version"] == "TensorRT-LLM 0.14.0" and ja["engine_date"] == "2024-11"
    assert ja["offline_tokens_per_s_per_card"] != jb["offline_tokens_per_s_per_card"]
    assert json.loads(perf("--as-of", "2025-03").stdout)["engine"] == "trtllm-0.17"
    bad = perf("--engine", "vllm-rocm-0.9.1")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "does not run on card 'h100-sxm'" in bad.stderr
    bad = perf("--engine", "trtlm-0.14")
    assert bad.returncode == 2 and "did you mean 'trtllm-0.14'" in bad.stderr


def test_engine_fit_recovers_known_factors_from_synthetic_points(lib):
    """Points generated by the model itself at known factors are fitted back: the fit is a
    real least-squares inversion, not a lookup. Without the priors it recovers the compute
    factor and reproduces every point; with them (which settle the nearly degenerate
    bandwidth / step-overhead direction) it still reproduces every point closely."""
    import numpy as np

    from sim.calibrate.engines import Case, _hardware, fit_cases, predict

    base = Hardware.load("h200-sxm", lib, engine="trtllm-0.20")
    hw = _hardware(base, np.array([math.log(0.8), math.log(0.95), 3.0, 20.0]))
    cases = []
    for i, (model, tp, isl, osl) in enumerate([
            ("llama-3.1-8b", 1, 128, 128), ("llama-3.1-8b", 1, 128, 2048),
            ("llama-3.1-8b", 1, 2048, 128), ("llama-3.1-70b", 2, 128, 128),
            ("llama-3.1-70b", 2, 2048, 2048), ("llama-3.1-70b", 4, 500, 2000),
            ("llama-3.1-70b", 1, 1000, 1000), ("llama-3.1-8b", 1, 5000, 500)]):
        c = Case("synthetic", i, "h200-sxm", model, "fp8", tp, isl, osl, None, 1.0, 1.0)
        cases.append(Case("synthetic", i, "h200-sxm", model, "fp8", tp, isl, osl, None,
                          predict(c, hw, lib), 1.0))
    free = fit_cases(cases, {"h200-sxm": base}, lib, prior_weight=0.0)
    assert math.exp(free[0]) == pytest.approx(0.8, rel=0.05)
    for c in cases:
        assert predict(c, _hardware(base, free), lib) == pytest.approx(c.published, rel=0.01)
    regular = fit_cases(cases, {"h200-sxm": base}, lib)
    for c in cases:
        assert predict(c, _hardware(base, regular), lib) == pytest.approx(c.published, rel=0.05)


def test_committed_fits_match_their_tables(lib):
    """Every engine with a table has a committed fit naming those tables, and the fitted factors
    lie inside the fit's bounds."""
    tables = {lib.engine_table(t).engine for t in lib.ids("engine_table")}
    fits = set(lib.ids("engine_fit"))
    assert tables <= fits, tables - fits
    for eid in fits:
        fit = lib.engine_fit(eid)
        for f in list(fit.cards.values()) + [fit.pooled]:
            assert 0.2 <= f.factors.compute <= 1.5 and 0.5 <= f.factors.bandwidth <= 1.15
            assert f.points >= 1 and f.tables


def test_engines_table_lists_every_release():
    import os

    r = subprocess.run([sys.executable, "-m", "sim.cli", "engines"], capture_output=True,
                       text=True, cwd=REPO, env={**os.environ, "COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    for eid in ("trtllm-0.14", "trtllm-1.2", "vllm-rocm-0.6.6", "synapseai-1.20"):
        assert eid in r.stdout


def test_a_card_no_engine_lists_runs_with_flagged_neutral_factors(lib, tmp_path):
    """A user's new card (no engine names it) runs, with its engine factors tagged assumed."""
    import shutil

    from sim.config.library import Library

    root = tmp_path / "lib"
    for sub in ("cards", "calibration"):
        (root / "hardware_specs" / sub).mkdir(parents=True)
    shutil.copy(REPO / "hardware_specs" / "cards" / "h100-sxm.yaml",
                root / "hardware_specs" / "cards" / "x9.yaml")
    cal = (REPO / "hardware_specs" / "calibration" / "h100-sxm.yaml").read_text()
    (root / "hardware_specs" / "calibration" / "x9.yaml").write_text(
        cal.replace("card: h100-sxm", "card: x9"))
    view = Library.default([root])
    hw = Hardware.load("x9", view)
    assert hw.engine is None and hw.engine_id is None
    f = hw.factors["engine_compute"]
    assert f.value == 1.0 and f.tier == "assumed"
    assert "no engine in the library runs on card 'x9'" in f.source


def test_a_committed_fit_is_reproduced_by_refitting(lib):
    """The fit files are outputs of `fleetsim calibrate engines` on the committed tables and
    model: refitting a small engine gives the committed factors (stale fits fail here)."""
    from sim.calibrate.engines import fit_engine

    for eid in ("vllm-rocm-0.9.0.1", "synapseai-1.19"):
        new = fit_engine(eid, lib, loo=False).fit
        old = lib.engine_fit(eid)
        for card, f in old.cards.items():
            for k, v in f.factors.model_dump().items():
                assert getattr(new.cards[card].factors, k) == pytest.approx(v, rel=2e-3, abs=2e-3), (
                    eid, card, k)


def test_a_run_names_each_cards_engine_in_its_results_and_report(tmp_path, monkeypatch):
    """The capacity frame carries each card's engine, and the report's assumptions table lists
    it with its version, release date and files."""
    from sim.config.scenario import load_scenario
    from sim.stages import run
    from sim.report.html import calibration_rows

    monkeypatch.setenv("FLEETSIM_CACHE", str(tmp_path))
    tiny = REPO / "tests" / "data" / "tiny_scenario.yaml"
    res = run(load_scenario(tiny), base=tiny.parent, detail=False)
    cap = res.capacity
    assert cap["engine"].notna().all()
    rows = {r["path"]: r for r in calibration_rows(cap)}
    for card, eid in zip(cap["card"], cap["engine"]):
        r = rows[f"calibration.{card}"]
        assert f"({eid}, released " in r["value"] and f"hardware_specs/engines/{eid}.yaml" in r["source"]


def test_one_amd_stack_measured_at_tp1_and_tp8_is_fitted_by_one_factor_set(lib):
    """The Azure ND MI300X v5 measurements (one vLLM image, one machine: Llama 3.1 8B at TP1,
    70B and 405B at TP8) are calibration data; one set of engine factors explains the TP1 and
    the TP8 rows alike (no TP-dependent residual), which is what lets an AMD TP1 row be
    predicted from a TP8-heavy stack."""
    import statistics

    from sim.calibrate.engines import fit_engine

    assert resolve_engine("mi300x", lib, as_of="2024-12") == "vllm-rocm-dev-20241121"
    rep = fit_engine("vllm-rocm-dev-20241121", lib, loo=False)
    (res,) = [r for r in rep.results if r.card == "mi300x"]  # the pooled fit is labelled "pooled"
    by_tp: dict[int, list[float]] = {}
    for c, e in zip(res.cases, res.residuals):
        by_tp.setdefault(c.tp, []).append(math.expm1(e))
    assert sorted(by_tp) == [1, 8] and len(by_tp[1]) == 6 and len(by_tp[8]) == 12
    for tp, errs in by_tp.items():
        assert abs(statistics.median(errs)) <= 0.05, (tp, errs)


def test_each_card_runs_releases_of_one_stack_only(lib):
    """Scenarios pick a card's releases from every engine whose runs_on lists it
    (`engines_for`, `in_force_at_start`, follow-releases) and read the card's stack from the
    newest one (`stack_of`). A second stack on a card (e.g. vLLM on CUDA beside TensorRT-LLM)
    would enter the shipped scenarios' series silently; it needs a stack filter there first."""
    for cid in lib.ids("card"):
        stacks = {e.stack for _, e in engines_for(cid, lib)}
        assert len(stacks) == 1, f"{cid}: engines of stacks {sorted(stacks)}"


def test_mi325x_keeps_amds_published_sustained_fp8_gemm_lead_over_mi300x(lib):
    """AMD's validation suite sets the sustained FP8 GEMM floor of the two CDNA3 cards on one
    shape and harness (ROCm/ROCmValidationSuite rvs/conf/<card>/gst_single.conf: MI325X 1,438,
    MI300X 1,215 TFLOPS): the 1,000 W card keeps 1.184x the 750 W card's rate. On one engine
    release (the same fitted engine factors for both) the model's sustained FP8 rate at a large
    GEMM must keep that ratio, so the MI325X's power budget shows in its calibration."""
    rates = {}
    for card in ("mi300x", "mi325x"):
        hw = Hardware.load(card, lib, engine="vllm-rocm-0.8.3")
        rates[card] = hw.gemm_efficiency("fp8", 8192.0) * hw.peak_flops("fp8")
    assert rates["mi325x"] / rates["mi300x"] == pytest.approx(1438 / 1215, rel=0.005)


def test_gaudi2_llama2_70b_cells_of_the_1_18_page_fit_at_two_cards(lib):
    """Intel runs Llama 2 70B FP8 on two Gaudi 2 cards in its 1.18 / 1.19 tables (the 1.18
    page's 128/2048 cell prints 4 HPUs; the 1.19 reproduction kit runs the same batch, 327, on
    two). With the release's fitted factors each cell is predicted within 11% of the printed
    throughput, and the 128/2048 cell within 5% at two cards."""
    from sim.calibrate.engines import cases_of, predict

    table = lib.engine_table("gaudi-1.18")
    hw = Hardware.load("gaudi2", lib, engine="synapseai-1.18")
    cases = [c for c in cases_of(table, lib)[0]
             if c.card == "gaudi2" and c.model == "llama-2-70b"]
    assert len(cases) == 4 and {c.tp for c in cases} == {2}
    for c in cases:
        err = predict(c, hw, lib) / c.published - 1
        assert abs(err) <= 0.11, (c.label, err)
        if (c.isl, c.osl) == (128, 2048):
            assert abs(err) <= 0.05, (c.label, err)
