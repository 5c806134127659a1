"""Training from physics (issue 15): memory, step time, layouts, interruptions, the CLI."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.perf.params import total_params
from sim.perf.train.hardware import training_hardware
from sim.perf.train.interruptions import interruptions, lost_fraction, young_daly_interval
from sim.perf.train.layout import check_train_layout
from sim.perf.train.memory import memory_per_card
from sim.perf.train.search import search_layout
from sim.perf.train.step import train_step
from sim.perf.train.types import TrainingLayoutError, TrainJob, TrainLayout


@pytest.fixture(scope="module")
def h100(lib):
    return training_hardware("h100-sxm", lib)


def test_memory_of_a_70b_model_by_hand(lib, h100):
    """Llama 3.1 70B, BF16, 8,192-token sequences, TP8 PP4 DP8, full recomputation."""
    m = lib.model("llama-3.1-70b")
    a = m.architecture
    job = TrainJob(m, 8192, 256)
    lay = TrainLayout(tp=8, pp=4, dp=8, recompute="full", zero=1)
    mem = memory_per_card(job, lay, h100.hw)
    p = total_params(a) / 32  # dense: every parameter split over TP x PP
    assert mem.params_gb == pytest.approx(2 * p / 1e9)
    assert mem.grads_gb == pytest.approx(2 * p / 1e9)
    assert mem.optimizer_gb == pytest.approx(12 * p / 8 / 1e9)  # ZeRO-1: over DP
    # full recomputation keeps each layer's 16-bit input, per TP rank, for the micro-batches in
    # flight on the first stage (min(m, pp) = 4; m = 256 / 8 = 32)
    assert mem.activations_gb == pytest.approx(8192 * 2 * a.hidden_size / 8 * 20 * 4 / 1e9)
    z3 = memory_per_card(job, TrainLayout(tp=8, pp=4, dp=8, recompute="full", zero=3), h100.hw)
    assert z3.params_gb == pytest.approx(2 * p / 8 / 1e9)
    assert z3.grads_gb == pytest.approx(2 * p / 8 / 1e9)
    assert z3.optimizer_gb == pytest.approx(mem.optimizer_gb)
    none = memory_per_card(job, TrainLayout(tp=8, pp=4, dp=8, recompute="none"), h100.hw)
    assert none.activations_gb > 5 * mem.activations_gb


def test_lora_keeps_no_gradients_or_optimizer_states(lib, h100):
    job = TrainJob(lib.model("llama-2-70b"), 8192, 8, "fp8", "lora")
    mem = memory_per_card(job, TrainLayout(tp=4, dp=2), h100.hw)
    assert mem.grads_gb == 0 and mem.optimizer_gb == 0


@settings(max_examples=15, deadline=None)
@given(n=st.sampled_from([64, 128, 256, 512]))
def test_more_cards_never_lengthen_the_ideal_step(lib, h100, n):
    """Twice the cards train the same job at least as fast in total (the search may keep the
    smaller layout's parallelism and add data-parallel replicas)."""
    job = TrainJob(lib.model("llama-3.1-8b"), 8192, 1024)
    a = search_layout(job, h100.hw, n, h100.tp_overlap)
    b = search_layout(job, h100.hw, 2 * n, h100.tp_overlap)
    assert b.tokens_per_s_per_card * 2 * n >= a.tokens_per_s_per_card * n * (1 - 1e-9)


def test_tp_beyond_the_scale_up_domain_pays_scale_out_bandwidth(lib, h100):
    job = TrainJob(lib.model("llama-3.1-70b"), 8192, 64)
    inside = train_step(job, TrainLayout(tp=8, dp=8, recompute="selective"), h100.hw)
    across = train_step(job, TrainLayout(tp=16, dp=4, recompute="selective"), h100.hw)
    # per card the TP16 layout computes half the GEMM work of TP8 but pays the NIC
    assert across.step_s > inside.step_s
    nic_bps = h100.hw.card.scale_out.nic_gbit_per_s * 1e9 / 8
    assert nic_bps < h100.hw.link_bandwidth_bps(8) / 4


def test_interruptions_grow_with_cards_and_days(lib):
    m = lib.model("llama-3.1-70b")
    small, big = interruptions(m, 512, 0.17), interruptions(m, 8192, 0.17)
    assert big.failures_per_day > small.failures_per_day * 15
    assert big.goodput < small.goodput < 1
    assert interruptions(m, 8192, 0.0).goodput == 1.0


@settings(max_examples=60, deadline=None)
@given(mtbf_h=st.floats(0.5, 500), write_s=st.floats(5, 3600), restart_s=st.floats(0, 3600),
       factor=st.floats(0.2, 5))
def test_young_daly_interval_minimises_lost_time(mtbf_h, write_s, restart_s, factor):
    mtbf = mtbf_h * 3600
    tau = young_daly_interval(mtbf, write_s)
    best = lost_fraction(tau, mtbf, write_s, restart_s)
    assert best <= lost_fraction(tau * factor, mtbf, write_s, restart_s) + 1e-12


def test_layouts_that_cannot_run_are_one_line_errors(lib):
    job = TrainJob(lib.model("llama-3.1-70b"), 8192, 64)
    with pytest.raises(TrainingLayoutError, match="does not divide the 64 attention heads"):
        check_train_layout(job, TrainLayout(tp=3, dp=1))
    with pytest.raises(TrainingLayoutError, match="uses 16 cards, not 64"):
        check_train_layout(job, TrainLayout(tp=8, dp=2), 64)
    with pytest.raises(TrainingLayoutError, match="global batch 64 is not a multiple"):
        check_train_layout(job, TrainLayout(tp=1, dp=3))


@pytest.mark.parametrize("args,needle", [
    (["--model", "llama-3.1-70b", "--card", "h100-sxm", "--cards", "64", "--tokens", "1e9",
      "--tp", "3"], "uses 63 cards, not 64"),
    (["--workload", "mlperf-nope", "--card", "h100-sxm", "--cards", "8"],
     "unknown training_benchmark 'mlperf-nope'"),
    (["--model", "llama-3.1-405b", "--card", "l4", "--cards", "8", "--tokens", "1e9"],
     "no layout fits"),
])
def test_cli_train_refuses_in_one_line(args, needle):
    r = subprocess.run([sys.executable, "-m", "sim.cli", "train", *args], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr


@pytest.mark.parametrize("args,needle", [
    (["--recompute", "block"], "--recompute block needs --recompute-layers >= 1"),
    (["--recompute", "full", "--recompute-layers", "4"], "only it takes one"),
    (["--recompute", "some"], "--recompute none|selective|full|block"),
    (["--recompute", "block", "--recompute-layers", "33"], "block recomputation of 33 layers"),
])
def test_cli_train_recompute_refusals(args, needle):
    r = subprocess.run([sys.executable, "-m", "sim.cli", "train", "--model", "llama-3.1-8b",
                        "--card", "h100-sxm", "--cards", "8", "--tokens", "1e9", "--tp", "1",
                        *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr


def test_cli_train_takes_block_recomputation(lib):
    """`--recompute block --recompute-layers N`: a fixed layout recomputing N of each stage's
    layers whole (Megatron's block method); its memory lies between none and full."""
    import json

    def run(*extra):
        r = subprocess.run([sys.executable, "-m", "sim.cli", "train", "--model", "llama-3.1-8b",
                            "--card", "h100-sxm", "--cards", "8", "--tokens", "1e9", "--tp", "1",
                            "--global-batch", "32", "--seq-len", "4096", *extra, "--json"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    d = run("--recompute", "block", "--recompute-layers", "16")
    assert d["layout"]["recompute"] == "block" and d["layout"]["recompute_layers"] == 16
    assert "recompute block 16" in d["layout"]["label"]
    none, full = run("--recompute", "none"), run("--recompute", "full")
    assert full["memory_gb_per_card"] < d["memory_gb_per_card"] < none["memory_gb_per_card"]
    assert none["step_time_s"] < d["step_time_s"] < full["step_time_s"]


def test_cli_train_json_names_the_benchmark_time(lib):
    import json

    r = subprocess.run([sys.executable, "-m", "sim.cli", "train", "--workload",
                        "mlperf-llama2-70b-lora", "--card", "h100-sxm", "--cards", "8", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    for k in ("layout", "step_time_s", "tokens_per_s_per_card", "mfu", "memory_gb_per_card",
              "time_to_train_days", "goodput", "time_to_train_minutes"):
        assert d[k] is not None, k
    assert 0 < d["mfu"] < 1 and 0 < d["goodput"] <= 1
    assert d["memory_gb_per_card"] <= d["memory_parts_gb"]["usable"]
    b = lib.training_benchmark("mlperf-llama2-70b-lora")
    # at least the samples to the target at the measured rate
    floor = b.samples_to_train(8) * 8192 / (d["tokens_per_s_per_card"] * 8) / 60
    assert d["time_to_train_minutes"] >= floor and not math.isnan(d["time_to_train_minutes"])


def test_fits_are_what_the_calibration_writes(lib):
    """The committed training fits equal a refit (no-LOO parts) of the published tables."""
    from sim.calibrate.training import fit_all

    fits, _, _ = fit_all(lib, loo=False)
    for f in fits:
        got = lib.training_fit(f.card)
        assert got.card == f.card
        assert got.factors == f.factors, f.card


def test_release_levels_group_one_container_month_and_keep_linked_releases():
    """Tables of one container month are one release; releases that share no configuration,
    directly or through others, with the largest linked set are left out (no common reference)."""
    from sim.calibrate.training import largest_linked_releases, release_of_table

    rel = release_of_table({"nemo-25.02": "2025-02", "nemo-25.02-dgxc": "2025-02",
                            "nemo-24.07": "2024-07"})
    assert rel["nemo-25.02"] == rel["nemo-25.02-dgxc"] == "2025-02 (nemo-25.02, nemo-25.02-dgxc)"
    assert rel["nemo-24.07"] == "2024-07 (nemo-24.07)"
    pts = [("a", "k1", 0.0), ("b", "k1", 0.1), ("b", "k2", 0.2), ("c", "k2", 0.3),
           ("d", "k3", 0.0), ("e", "k3", 0.1)]
    assert largest_linked_releases(pts) == {"a", "b", "c"}
    assert largest_linked_releases([]) == set()


def test_fp8_factor_scales_only_the_fp8_gemms(lib):
    """The training fit's FP8 factor multiplies the card's FP8 GEMM efficiency and nothing else."""
    base = training_hardware("h100-sxm", lib, fp8_compute=1.0).hw
    half = training_hardware("h100-sxm", lib, fp8_compute=0.5).hw
    assert half.factors["gemm_fp8"].value == pytest.approx(0.5 * base.factors["gemm_fp8"].value)
    for k in ("gemm_bf16", "engine_compute", "attention_prefill"):
        assert half.factors[k].value == base.factors[k].value, k


def test_fp8_factor_only_where_a_configuration_runs_in_both_precisions(lib):
    from sim.calibrate.training import both_precisions, cases

    cs, _ = cases(lib)
    by_card: dict[str, list] = {}
    for c in cs:
        by_card.setdefault(c.card, []).append(c)
    assert both_precisions(by_card["h100-sxm"])  # NeMo's DGX Cloud recipes run BF16 and FP8
    assert not both_precisions(by_card["gaudi2"])  # Intel's tables: FP8 only
    assert lib.training_fit("gaudi2").factors.fp8_compute == 1.0


def test_fitted_fp8_factor_reproduces_the_tables_fp8_over_bf16_speedup(lib):
    """Checked against the published tables: for each configuration NeMo runs in BF16 and FP8 on
    the H100, the predicted FP8 / BF16 speed-up with the fitted factor is nearer the published
    one than the GEMM microbenchmarks' ratio alone (factor 1): the median error falls by at
    least a fifth (8.5% -> 6.2% when written). One factor cannot take all of it: NeMo's 405B
    runs gain more from FP8 (1.58-1.60x) than its 8B and 70B runs (1.29-1.40x)."""
    import statistics

    from sim.calibrate.training import cases

    cs = [c for c in cases(lib)[0] if c.card == "h100-sxm"]
    fit = lib.training_fit("h100-sxm").factors

    def tok(c, f8):
        th = training_hardware("h100-sxm", lib, compute=fit.compute, tp_overlap=fit.tp_overlap,
                               fp8_compute=f8)
        return train_step(c.job, c.layout, th.hw, th.tp_overlap).tokens_per_s_per_card

    key = lambda c: (c.table, c.job.model.name, c.job.seq_tokens, c.layout)  # noqa: E731
    bf16 = {key(c): c for c in cs if c.job.precision == "bf16"}
    pairs = [(bf16[key(c)], c) for c in cs if c.job.precision == "fp8" and key(c) in bf16]
    assert len(pairs) >= 10
    err = {f8: [abs(math.log((tok(f, f8) / tok(b, f8)) / (f.published / b.published)))
                for b, f in pairs] for f8 in (1.0, fit.fp8_compute)}
    assert statistics.median(err[fit.fp8_compute]) < 0.8 * statistics.median(err[1.0])
