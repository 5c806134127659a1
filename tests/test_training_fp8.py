"""FP8 training: Transformer Engine's quantisation of GEMM operands (issue 15, fidelity log 35).

Hand calculations on Llama 3.1 8B (h 4096, 32 query and 8 KV heads of 128, SwiGLU FFN 14336),
and checks against published FP8 / BF16 pairs of the calibration tables (not MLPerf)."""

from __future__ import annotations

import pytest

import sim.perf.train.step as step_module
from sim.perf.train.fp8 import fp8_quantize_bytes_per_token, fp8_weight_quantize_bytes
from sim.perf.train.hardware import training_hardware
from sim.perf.train.step import train_step
from sim.perf.train.types import TrainJob, TrainLayout

H, Q, KV, F = 4096, 4096, 1024, 14336
FWD_UNFUSED = Q + F  # the output projection's and fc2's inputs; QKV and fc1 are norm-fused
BWD = (Q + 2 * KV) + H + 2 * F + H  # each GEMM's output gradient


def _hw(lib, card):
    return training_hardware(card, lib)


def test_quantisation_bytes_by_hand(lib):
    """Per token and layer: 2 B read + 1 B per FP8 copy; a transposed copy on TN-only cards
    (Hopper, every ROCm card), none on the B200 (native column-wise FP8 GEMMs) or for a LoRA
    job's frozen weights (no weight gradient)."""
    m = lib.model("llama-3.1-8b")
    pre = TrainJob(m, 8192, 128, "fp8")
    lora = TrainJob(m, 8192, 128, "fp8", "lora")
    for card in ("h100-sxm", "mi300x", "mi355x"):
        assert fp8_quantize_bytes_per_token(pre, _hw(lib, card).hw) == (
            pytest.approx(4.0 * FWD_UNFUSED), pytest.approx(4.0 * BWD))
        assert fp8_quantize_bytes_per_token(lora, _hw(lib, card).hw) == (
            pytest.approx(3.0 * FWD_UNFUSED), pytest.approx(3.0 * BWD))
    assert fp8_quantize_bytes_per_token(pre, _hw(lib, "b200").hw) == (
        pytest.approx(3.0 * FWD_UNFUSED), pytest.approx(3.0 * BWD))
    assert fp8_quantize_bytes_per_token(TrainJob(m, 8192, 128, "bf16"),
                                        _hw(lib, "h100-sxm").hw) == (0.0, 0.0)


def test_weight_quantisation_by_hand(lib):
    """FP8-stored weights (Transformer Engine stacks) only get a transposed copy on TN-only
    cards: 2 B per GEMM weight of the stage's layers, over TP."""
    m = lib.model("llama-3.1-8b")
    job = TrainJob(m, 8192, 128, "fp8")
    per_layer = H * (Q + 2 * KV) + Q * H + H * 2 * F + F * H
    lay = TrainLayout(tp=2, pp=4, dp=1)
    assert fp8_weight_quantize_bytes(job, lay, _hw(lib, "h100-sxm").hw) == pytest.approx(
        2.0 * per_layer * 8 / 2)
    assert fp8_weight_quantize_bytes(job, lay, _hw(lib, "b200").hw) == 0.0


def test_bf16_step_has_no_quantisation(lib):
    th = _hw(lib, "h100-sxm")
    st = train_step(TrainJob(lib.model("llama-3.1-8b"), 8192, 128, "bf16"),
                    TrainLayout(tp=1, dp=4, cp=2), th.hw, th.tp_overlap)
    assert st.parts["fp8_quantize"] == 0.0


def _speedup(lib, card, model, lay, seq=8192, gbs=128, off=False, monkeypatch=None):
    th = _hw(lib, card)
    if off:
        # train_step looks the two up in its own module
        monkeypatch.setattr(step_module, "fp8_quantize_bytes_per_token",
                            lambda job, hw: (0.0, 0.0))
        monkeypatch.setattr(step_module, "fp8_weight_quantize_bytes", lambda job, lay, hw: 0.0)
    rate = {p: train_step(TrainJob(lib.model(model), seq, gbs, p), lay, th.hw,
                          th.tp_overlap).tokens_per_s_per_card for p in ("bf16", "fp8")}
    return rate["fp8"] / rate["bf16"]


def test_fp8_speedup_shrinks_with_narrower_models(lib):
    """The quantisation traffic per token grows with the width, the GEMM work with its square:
    at the same layout (TP1, one card's share of work) FP8 gains less over BF16 on Llama 3.1
    8B (h 4096) than on 70B (h 8192), on a Hopper and on a ROCm card."""
    for card in ("h100-sxm", "mi300x"):
        lay = TrainLayout(tp=1, dp=8)
        assert _speedup(lib, card, "llama-3.1-8b", lay) < _speedup(lib, card, "llama-3.1-70b",
                                                                   lay)
        st = train_step(TrainJob(lib.model("llama-3.1-8b"), 8192, 128, "fp8"), lay,
                        _hw(lib, card).hw)
        st70 = train_step(TrainJob(lib.model("llama-3.1-70b"), 8192, 128, "fp8"), lay,
                          _hw(lib, card).hw)
        assert st.parts["fp8_quantize"] / st.step_s > st70.parts["fp8_quantize"] / st70.step_s


# Published pairs, same container, layout, batch and GPU count (tokens/s per GPU):
# hardware_specs/training_tables/nemo-25.02-dgxc.yaml, Llama 3.1 8B on 8 H100, TP1 CP2 DP4 mb1,
# GBS 128: BF16 10,682.4, FP8 14,048.5; rocm-pytorch-training-25.2.yaml, Llama 3.1 8B FSDP on 8
# MI300X at 8,192 tokens, mb 3, GBS 192: BF16 9,375.1, FP8 12,732.9.
PAIRS = [("h100-sxm", TrainLayout(tp=1, dp=4, cp=2), 8192, 128, 14048.5 / 10682.4),
         ("mi300x", TrainLayout(tp=1, dp=8, micro_batch=3, zero=3), 8192, 192, 12732.9 / 9375.1)]


@pytest.mark.parametrize("card,lay,seq,gbs,published", PAIRS)
def test_quantisation_moves_fp8_speedup_towards_published(lib, monkeypatch, card, lay, seq, gbs,
                                                          published):
    """With the quantisation traffic the model's FP8 / BF16 speed-up is closer to the published
    pair than without it, and stays above it (the rest of the gap is not explained: fidelity
    log 35); within 20% of it (tolerance stated, the remaining gap)."""
    with_q = _speedup(lib, card, "llama-3.1-8b", lay, seq, gbs)
    without = _speedup(lib, card, "llama-3.1-8b", lay, seq, gbs, off=True,
                       monkeypatch=monkeypatch)
    assert abs(with_q / published - 1) < abs(without / published - 1)
    assert published < with_q < published * 1.20
