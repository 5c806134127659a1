"""Training layouts of large pre-training recipes: uneven pipeline splits, interleaved stages,
FP8 weights (issue 15). Hand calculations against the model's memory per card."""

from __future__ import annotations

import pytest

from sim.perf.params import total_params
from sim.perf.train.hardware import training_hardware
from sim.perf.train.layout import (check_train_layout, in_flight_layer_microbatches,
                                   last_stage_layers, stage_layers)
from sim.perf.train.memory import lora_saved_bytes_per_token_layer, memory_per_card
from sim.perf.train.search import candidate_layouts, min_block_recompute
from sim.perf.train.step import train_step
from sim.perf.train.types import TrainingLayoutError, TrainJob, TrainLayout

# NVIDIA's v5.0 Llama 3.1 405B config on 128 nodes x 8 H200 (the 1,024-GPU Nebius log names it
# DGXH200_128x8x72xtp4pp8cp2): TP4 PP8 CP2, so DP = 1024 / 64 = 16, 72 sequences per data-
# parallel rank (16 x 72 = 1152, the benchmark's default global batch); micro-batch 1,
# INTERLEAVED_PIPELINE=8, FP8 with FP8_PARAMS, distributed optimizer, no recomputation set
# (training_results_v5.0 NVIDIA/benchmarks/llama31_405b/implementations/eos-dfw_n64_ngc25.01_nemo
# config_DGXH100_64x8x288xtp8pp8cp2.sh and eos-dfw_n304_ngc25.01_nemo/config_common.sh).
X1024 = TrainLayout(tp=4, pp=8, dp=16, cp=2, micro_batch=1, vp=8, recompute="none", zero=1)


@pytest.fixture(scope="module")
def job405(lib):
    b = lib.training_benchmark("mlperf-llama3.1-405b")
    return TrainJob(lib.model(b.model), b.seq_tokens, 1152, b.precision, b.task)


def test_126_layers_split_over_8_stages_as_megatron_does():
    # 126 layers on PP8: seven stages of ceil(126 / 8) = 16, the last 126 - 7 x 16 = 14 (+ head)
    assert stage_layers(126, 8) == 16 and last_stage_layers(126, 8) == 14
    assert stage_layers(80, 4) == 20 and last_stage_layers(80, 4) == 20


def test_interleaving_holds_more_activations_per_megatrons_warm_up():
    # PP8 VP8 on 126 layers: rank 0 warms up 2 x 7 + 7 x 8 = 70 chunks and holds one more,
    # each of 16 / 8 = 2 layers: 142 layer-micro-batches; plain 1F1B: 8 micro-batches x 16
    assert in_flight_layer_microbatches(126, X1024, m=72) == pytest.approx(71 * 2)
    plain = TrainLayout(tp=4, pp=8, dp=16, cp=2)
    assert in_flight_layer_microbatches(126, plain, m=72) == 8 * 16
    assert 142 / 128 == pytest.approx(1 + 7 / 64, rel=0.02)  # Korthikanti: 1 + (p-1)/(p v)


def test_the_published_1024_gpu_405b_layout_fits_in_h200_memory(lib, job405):
    """By hand, per H200 (143,771 MiB as nvidia-smi reports it, the card's `memory.visible`;
    90% usable = 135.68 GB), TP4 PP8 DP16 CP2 VP8, FP8:
    parameters per card p = 405.85e9 / (4 x 8) = 12.68e9
      weights     1 B x p (FP8 parameters)                        = 12.68 GB
      gradients   2 B x p (bf16)                                   = 25.37 GB
      optimizer   12 B x p / (DP 16 x CP 2)                        =  4.76 GB
      activations per token and layer (15 h + 2 h + 6 f + h - (3 h + f)) / TP
                  = (15 x 16384 + 5 x 53248) / 4 = 128,000 B; 8192 / CP 2 = 4096 tokens
                  -> 0.524 GB per layer-micro-batch x 142 in flight  = 74.45 GB
      total 117.26 GB <= 135.68 GB: fits without recomputation."""
    check_train_layout(job405, X1024, 1024)
    hw = training_hardware("h200-sxm", lib).hw
    mem = memory_per_card(job405, X1024, hw)
    p = total_params(job405.model.architecture) / 32
    assert p == pytest.approx(12.68e9, rel=1e-3)
    assert mem.params_gb == pytest.approx(1 * p / 1e9)
    assert mem.grads_gb == pytest.approx(2 * p / 1e9)
    assert mem.optimizer_gb == pytest.approx(12 * p / 32 / 1e9)
    assert mem.activations_gb == pytest.approx(128_000 * 4096 * 142 / 1e9)
    assert mem.logits_gb == 0.0  # the last stage's 14 layers + logits hold less than the first
    assert mem.total_gb == pytest.approx(117.26, abs=0.05)
    assert mem.usable_gb == pytest.approx(0.9 * 143_771 * 2**20 / 1e9) and mem.fits


def test_the_search_considers_the_published_layout(lib, job405):
    hw = training_hardware("h200-sxm", lib).hw
    assert X1024 in candidate_layouts(job405, hw, 1024)


def test_lora_saved_activations_by_hand(lib):
    """Llama 2 70B LoRA (adapters on QKV and the output projection), FP8, TP1, one 8,192-token
    micro-batch, no recomputation, per token and layer (h 8,192, q 64 x 128, kv 8 x 128, f
    28,672, 64 heads), tensor by tensor:
    two norm inputs 2 x (2 h + 4) = 32,776; QKV's normalised input for the adapter 2 h and TE's
    FP8 copy h = 24,576; no frozen GEMM input.
    NVIDIA's recipe (CUDA: FP8 attention, FP8 SwiGLU input): Q, K, V, O in FP8 2 q + 2 kv =
    18,432 + stats 2 x 4 x 64 = 512; the output projection's adapter keeps O in 16 bits 2 q =
    16,384; SwiGLU input 2 f x 1 = 57,344: 150,024 B.
    AMD's recipe (ROCm: neither): Q, K, V, O 2 x (2 q + 2 kv) = 36,864 + 4 x 64 = 256 (O shared
    with the adapter); SwiGLU input 2 f x 2 = 114,688: 209,160 B.
    A full fine-tune keeps more (its GEMMs need their inputs for weight gradients)."""
    m = lib.model("llama-2-70b")
    a = m.architecture
    assert (a.hidden_size, a.ffn_size, a.num_layers, a.num_attention_heads, a.num_kv_heads,
            a.head_dim) == (8192, 28672, 80, 64, 8, 128)
    job = TrainJob(m, 8192, 8, "fp8", "lora")
    for card, per_token in (("b200", 150_024), ("h100-sxm", 150_024), ("mi300x", 209_160),
                            ("mi355x", 209_160)):
        hw = training_hardware(card, lib).hw
        assert lora_saved_bytes_per_token_layer(job, hw) == pytest.approx(per_token), card
        lora = memory_per_card(job, TrainLayout(dp=8), hw)
        assert lora.activations_gb == pytest.approx(per_token * 8192 * 80 / 1e9), card
    hw = training_hardware("mi355x", lib).hw
    full = memory_per_card(TrainJob(m, 8192, 8, "fp8", "finetune"), TrainLayout(dp=8), hw)
    assert full.activations_gb > 1.2 * memory_per_card(job, TrainLayout(dp=8), hw).activations_gb
    # BF16 on Gaudi 2 (no FP8 storage): 32,776 + 2 h + 2 (2 q + 2 kv) + 256 + 4 f = 200,968
    bf = TrainJob(m, 8192, 8, "bf16", "lora")
    assert lora_saved_bytes_per_token_layer(bf, training_hardware("b200", lib).hw) == \
        pytest.approx(200_968)


def test_b200_lora_memory_against_nvidias_log(lib):
    """Validation-side check, nothing fitted: NVIDIA's v5.0 8 x B200 LoRA run (TP1, DP8, no
    recomputation, FP8 weights) prints `max_memory_usage` 168.827 (unit not stated in the log;
    prishajain1/training_results_v5.0 @0fdc28f NVIDIA/results/nyx_n1_ngc25.04_nemo/
    llama2_70b_lora/result_0.txt). The model's per-card total for that layout (weights, saved
    activations, fp32 logits) is within 5% of it and fits the card."""
    m = lib.model("llama-2-70b")
    mem = memory_per_card(TrainJob(m, 8192, 8, "fp8", "lora"), TrainLayout(dp=8),
                          training_hardware("b200", lib).hw)
    assert mem.total_gb == pytest.approx(168.827, rel=0.05)
    assert mem.fits


def test_block_recomputation_trades_memory_for_time(lib):
    """Recomputing N of a stage's layers whole keeps only their 16-bit input (2 h B per token)
    and runs their forward again: memory falls and the step lengthens linearly in N, between
    no and full recomputation."""
    m = lib.model("llama-2-70b")
    job = TrainJob(m, 8192, 8, "fp8", "lora")
    th = training_hardware("mi300x", lib)
    h, tokens = 8192, 8192
    mems, steps = [], []
    for n in (0, 10, 20, 40, 80):
        lay = (TrainLayout(dp=8) if n == 0 else
               TrainLayout(dp=8, recompute="block", recompute_layers=n))
        mems.append(memory_per_card(job, lay, th.hw).activations_gb)
        steps.append(train_step(job, lay, th.hw, th.tp_overlap))
    per_layer_saving = (209_160 - 2 * h) * tokens / 1e9
    assert mems[0] - mems[1] == pytest.approx(10 * per_layer_saving)
    assert mems[-1] == pytest.approx(memory_per_card(
        job, TrainLayout(dp=8, recompute="full"), th.hw).activations_gb)
    rec = [s.parts["recompute"] for s in steps]
    assert rec[0] == 0 and rec[2] == pytest.approx(2 * rec[1])
    assert all(a.step_s < b.step_s for a, b in zip(steps, steps[1:]))
    full = train_step(job, TrainLayout(dp=8, recompute="full"), th.hw, th.tp_overlap)
    assert steps[-1].step_s <= full.step_s


def test_block_recomputation_takes_the_fewest_layers_that_fit(lib):
    m = lib.model("llama-2-70b")
    job = TrainJob(m, 8192, 8, "fp8", "lora")
    hw = training_hardware("mi300x", lib).hw
    lay = min_block_recompute(job, TrainLayout(dp=8), hw)
    assert lay is not None and lay.recompute == "block"
    assert memory_per_card(job, lay, hw).fits
    fewer = TrainLayout(dp=8, recompute="block", recompute_layers=lay.recompute_layers - 1)
    assert not memory_per_card(job, fewer, hw).fits
    assert lay in candidate_layouts(job, hw, 8)
    # a layout that already fits gets none
    assert min_block_recompute(job, TrainLayout(dp=8), training_hardware("mi355x", lib).hw) \
        is None
    with pytest.raises(TrainingLayoutError, match="block recomputation of 81 layers"):
        check_train_layout(job, TrainLayout(dp=8, recompute="block", recompute_layers=81))


def test_lora_search_keeps_weights_whole_on_nemo_stacks(lib):
    """NeMo's LoRA (NVIDIA, AMD) runs DDP with the distributed optimizer, no weight sharding:
    no ZeRO-3 candidate for LoRA on CUDA / ROCm; Gaudi's DeepSpeed ZeRO-3 recipe keeps it."""
    m = lib.model("llama-2-70b")
    job = TrainJob(m, 8192, 8, "fp8", "lora")
    for card, z3 in (("b200", False), ("mi300x", False), ("gaudi2", True)):
        zs = {lay.zero for lay in candidate_layouts(job, training_hardware(card, lib).hw, 8)}
        assert (3 in zs) == z3, card
    pre = TrainJob(m, 8192, 8, "fp8", "finetune")
    assert 3 in {lay.zero for lay in candidate_layouts(pre, training_hardware("b200", lib).hw, 8)}


def test_fp8_weights_only_where_transformer_engine_stores_them(lib):
    """An FP8 run keeps 1-byte weights on the CUDA / ROCm stacks (Transformer Engine FP8
    parameters) and 2-byte weights on Intel Gaudi (DeepSpeed ZeRO-3, bf16 model, FP8 GEMMs)."""
    m = lib.model("llama-2-70b")
    job = TrainJob(m, 8192, 8, "fp8", "lora")
    lay = TrainLayout(tp=8, recompute="full")
    p = total_params(m.architecture) / 8
    for card, w_bytes in (("h100-sxm", 1), ("mi300x", 1), ("gaudi2", 2)):
        mem = memory_per_card(job, lay, training_hardware(card, lib).hw)
        assert mem.params_gb == pytest.approx(w_bytes * p / 1e9), card


def test_same_round_ratios_pair_cards_only_within_a_round():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fidelity_training.py"
    spec = importlib.util.spec_from_file_location("fidelity_training", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def row(rnd, card, pub, pred):
        return {"round": rnd, "benchmark": "b", "cards": 8, "card": card,
                "published_min": pub, "predicted_min": pred}

    rows = [row("v4.0", "x", 10.0, 10.0), row("v4.0", "y", 20.0, 10.0),
            row("v5.1", "y", 18.0, 10.0), row("v5.1", "z", 5.0, 5.0),
            row("v5.1", "z", 4.0, 5.0)]  # two z results in v5.1: the faster one counts
    pairs = {(p["round"], p["a"], p["b"]): p for p in mod.ratios_same_round(rows)}
    assert set(pairs) == {("v4.0", "x", "y"), ("v5.1", "y", "z")}
    assert pairs[("v4.0", "x", "y")]["measured"] == pytest.approx(0.5)
    assert pairs[("v4.0", "x", "y")]["error"] == pytest.approx(1.0)
    assert pairs[("v5.1", "y", "z")]["measured"] == pytest.approx(18.0 / 4.0)


def test_the_published_512_h100_405b_layout_fits_in_80_gb(lib, job405):
    """NVIDIA's v5.0 config_DGXH100_64x8x288xtp8pp8cp2.sh: 64 nodes x 8 H100, TP8 PP8 CP2
    (DP 4 x 288 = 1152), VP8, micro-batch 1, FP8 parameters, no recomputation."""
    lay = TrainLayout(tp=8, pp=8, dp=4, cp=2, micro_batch=1, vp=8, recompute="none", zero=1)
    check_train_layout(job405, lay, 512)
    assert memory_per_card(job405, lay, training_hardware("h100-sxm", lib).hw).fits


def test_interleaved_block_recomputation_counts_whole_virtual_stages(lib, job405):
    """Megatron applies `recompute_num_layers` to each virtual stage, so an interleaved
    stage recomputes a multiple of vp layers."""
    hw = training_hardware("h200-sxm", lib).hw
    lay = TrainLayout(tp=4, pp=2, dp=128, vp=8, zero=3)
    assert not memory_per_card(job405, lay, hw).fits
    block = min_block_recompute(job405, lay, hw)
    assert block is not None and block.recompute_layers % 8 == 0
    assert memory_per_card(job405, block, hw).fits
    with pytest.raises(TrainingLayoutError, match="each of the 8 virtual stages"):
        check_train_layout(job405, TrainLayout(tp=4, pp=2, dp=128, vp=8, zero=3,
                                               recompute="block", recompute_layers=6))


def test_lora_tensor_accounting_only_on_transformer_engine_stacks(lib):
    """The tensor-by-tensor LoRA count is read from Transformer Engine / Megatron code (CUDA,
    ROCm); Intel Gaudi's recipe (optimum-habana, DeepSpeed) runs neither, so a Gaudi layer
    without recomputation keeps Korthikanti's count less the frozen MLP GEMM inputs, by hand
    for Llama 2 70B BF16 (h 8,192, f 28,672, SwiGLU): 15 h + (2 h + 6 f + h) - (2 h + 2 f) =
    122,880 + 196,608 - 73,728 = 245,760 B per token and layer."""
    m = lib.model("llama-2-70b")
    for prec in ("bf16", "fp8"):  # Gaudi stores no FP8 activations either way
        job = TrainJob(m, 8192, 8, prec, "lora")
        mem = memory_per_card(job, TrainLayout(dp=8), training_hardware("gaudi2", lib).hw)
        assert mem.activations_gb == pytest.approx(245_760 * 8192 * 80 / 1e9), prec
    job = TrainJob(m, 8192, 8, "bf16", "lora")
    b200 = memory_per_card(job, TrainLayout(dp=8), training_hardware("b200", lib).hw)
    assert b200.activations_gb == pytest.approx(200_968 * 8192 * 80 / 1e9)


def test_gaudi_lora_search_is_intels_deepspeed_recipe(lib):
    """Intel's v4.0 LoRA code: DeepSpeed ZeRO-3 over every card as data parallel, every decoder
    layer checkpointed (`gradient_checkpointing_enable`); the search offers only that."""
    m = lib.model("llama-2-70b")
    hw = training_hardware("gaudi2", lib).hw
    lays = candidate_layouts(TrainJob(m, 8192, 8, "fp8", "lora"), hw, 8)
    assert lays == [TrainLayout(dp=8, recompute="full", zero=3)]
    lays = candidate_layouts(TrainJob(m, 8192, 32, "fp8", "lora"), hw, 8)
    assert [lay.micro_batch for lay in lays] == [1, 2, 4]
    assert all(lay.cards == 8 and lay.tp == lay.pp == lay.cp == 1 for lay in lays)
    # a Gaudi pre-training job keeps the Megatron-style space
    pre = candidate_layouts(TrainJob(m, 8192, 8, "bf16", "pretrain"), hw, 8)
    assert {lay.tp for lay in pre} > {1}


def test_context_parallel_bytes_by_hand(lib):
    """Transformer Engine's CP exchanges, per local token and layer, Llama 2 70B (q = o =
    64 x 128 = 8,192, k = v = 8 x 128 = 1,024).
    LoRA on CUDA (NeMo's a2a, FP8 attention, 1 B): forward Q, K, V, O x (cp - 1) / cp at CP2
    = (8,192 + 2,048 + 8,192) / 2 = 9,216; backward O, dO, dQ, dK, dV = (3 x 8,192 + 2,048) / 2
    = 13,312. ROCm (a2a, 16-bit attention): twice that. At CP4 the share is 3 / 4.
    Pre-training (Megatron's p2p ring, 16-bit), TP4: K, V = 2 x 256 x 2 B = 1,024 per ring step,
    cp - 1 steps; backward K, V and dK, dV: twice."""
    from sim.perf.train.context_parallel import cp_bytes_per_token_layer, cp_comm_type

    m = lib.model("llama-2-70b")
    lora = TrainJob(m, 8192, 8, "fp8", "lora")
    b200, mi300x = training_hardware("b200", lib).hw, training_hardware("mi300x", lib).hw
    assert cp_comm_type(lora, b200) == cp_comm_type(lora, mi300x) == "a2a"
    assert cp_bytes_per_token_layer(lora, TrainLayout(dp=4, cp=2), b200) == (9_216, 13_312)
    assert cp_bytes_per_token_layer(lora, TrainLayout(dp=4, cp=2), mi300x) == (18_432, 26_624)
    assert cp_bytes_per_token_layer(lora, TrainLayout(dp=2, cp=4), b200) == \
        pytest.approx((18_432 * 3 / 4, 26_624 * 3 / 4))
    assert cp_bytes_per_token_layer(lora, TrainLayout(dp=8), b200) == (0.0, 0.0)
    pre = TrainJob(m, 8192, 64, "fp8", "pretrain")
    assert cp_comm_type(pre, b200) == "p2p"
    assert cp_bytes_per_token_layer(pre, TrainLayout(tp=4, dp=1, cp=2), b200) == (1_024, 2_048)
    assert cp_bytes_per_token_layer(pre, TrainLayout(tp=2, dp=1, cp=4), b200) == (6_144, 12_288)


def test_context_parallelism_is_not_free(lib):
    """AMD's LoRA recipe at CP2 on 8 MI300X: every layer of each micro-batch all-to-alls its
    forward (18,432 B per token) and backward (26,624 B) over the pair's link; nothing hides
    it. By hand: m = 8 / 4 = 2 micro-batches of 4,096 local tokens through 80 layers, at the
    card's all-reduce bus bandwidth for a group of two (link bandwidth x bus-bandwidth
    factor), and the step is that much longer than its other parts."""
    m = lib.model("llama-2-70b")
    job = TrainJob(m, 8192, 8, "fp8", "lora")
    th = training_hardware("mi300x", lib)
    bw = th.hw.link_bandwidth_bps(2) * th.hw.factors["allreduce_busbw"].value
    st = train_step(job, TrainLayout(dp=4, cp=2), th.hw, th.tp_overlap)
    assert st.parts["cp_comm"] == pytest.approx(2 * 80 * 4096 * (18_432 + 26_624) / bw)
    assert st.parts["cp_comm"] > 0.1 * st.step_s
    assert st.step_s == pytest.approx(sum(st.parts.values()))
    # full recomputation redoes each layer's forward exchange
    full = train_step(job, TrainLayout(dp=4, cp=2, recompute="full"), th.hw, th.tp_overlap)
    assert full.parts["cp_comm"] == pytest.approx(
        2 * 80 * 4096 * (2 * 18_432 + 26_624) / bw)
    # CP1 pays none
    assert train_step(job, TrainLayout(dp=8), th.hw, th.tp_overlap).parts["cp_comm"] == 0.0


def test_ring_exchange_hides_under_attention_up_to_its_length(lib):
    """The p2p ring overlaps each step's K, V send with that step's attention: exposed time is
    (cp - 1) x max(0, send - attention / cp), forward, and with dK, dV and 2.5 x attention,
    backward. Over the NIC (CP across servers) a long sequence's ring is still hidden on
    H100; the exposed part is never negative and grows when the bandwidth shrinks."""
    from sim.perf.train.context_parallel import cp_comm_s

    m = lib.model("llama-3.1-70b")
    job = TrainJob(m, 65536, 8, "bf16", "pretrain")
    hw = training_hardware("h100-sxm", lib).hw
    lay = TrainLayout(tp=8, dp=1, cp=4)
    tokens = 65536 / 4
    kv_step = tokens * 2 * (8 * 128 / 8) * 2.0
    # no attention time at all: the whole ring is exposed
    f0, b0 = cp_comm_s(job, lay, hw, 0.0)
    from sim.perf.train.network import _group_bps
    bw = _group_bps(hw, 4, 8)
    assert f0 == pytest.approx(3 * kv_step / bw) and b0 == pytest.approx(3 * 2 * kv_step / bw)
    # enough attention hides it
    assert cp_comm_s(job, lay, hw, 4 * kv_step / bw * 1.01) == (0.0, 0.0)
