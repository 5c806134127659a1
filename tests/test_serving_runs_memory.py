"""The serving-runs replay sizes the KV cache with the engine that ran: vLLM's rule (weights,
activations and KV within gpu_memory_utilization of the memory the driver exposes), not the
card's library engine (TensorRT-LLM on CUDA cards)."""

from __future__ import annotations

import dataclasses

from sim.calibrate import serving_runs as sr
from sim.perf import memory as mem
from sim.serving.simulate import _kv_blocks


def _run(run_id: str) -> sr.Run:
    return next(r for r in sr.load_runs() if r.id == run_id)


def test_cuda_run_uses_vllm_rule_not_the_card_engine(lib):
    run = _run("gpustack-gpt-oss-120b-h100/sharegpt")
    setup = sr.setup_for(run, lib)
    assert setup.hardware.engine.rules.memory_rule == "free"  # the library's TensorRT-LLM
    assert run.gpu_memory_utilization is None
    assert setup.gpu_memory_utilization == sr.VLLM_GPU_MEMORY_UTILIZATION == 0.9
    blocks, _ = _kv_blocks(setup)
    # by hand: 0.9 of the driver's memory, less vLLM's non-torch memory on one card (not the
    # library's runtime reserve), weights and activations
    hw, m, lay, prec = setup.hardware, setup.model, setup.layout, setup.precision
    assert lay.cards == 1
    budget = (hw.memory_bytes * 0.9 - mem.VLLM_NON_TORCH_BYTES_TP1
              - mem.weights_bytes_per_card(m, lay, prec)
              - mem.activation_bytes(m, lay, setup.engine.max_num_batched_tokens))
    assert blocks == int(budget // mem.kv_bytes_per_token(m, lay, prec)) // 16
    trt_blocks, _ = _kv_blocks(dataclasses.replace(setup, gpu_memory_utilization=None))
    assert blocks < trt_blocks


def test_run_stated_utilization_is_used(lib):
    run = _run("gpustack-qwen3-14b-h100/sharegpt")
    low = dataclasses.replace(run, gpu_memory_utilization=0.5)
    assert sr.setup_for(low, lib).gpu_memory_utilization == 0.5
    assert _kv_blocks(sr.setup_for(low, lib))[0] < _kv_blocks(sr.setup_for(run, lib))[0]
    stated = [r for r in sr.load_runs() if r.gpu_memory_utilization is not None]
    assert stated and all(sr.setup_for(r, lib).gpu_memory_utilization
                          == r.gpu_memory_utilization for r in stated)


def test_vllm_rule_keeps_the_runtime_reserve_with_tensor_parallelism(lib):
    """NCCL and all-reduce buffers: no measured figure, the library's reserve stays at TP>1;
    on one card vLLM's measured non-torch memory is far below it."""
    assert mem.VLLM_NON_TORCH_BYTES_TP1 < mem.RUNTIME_RESERVE_BYTES / 4
    setup = sr.setup_for(_run("gpustack-gpt-oss-120b-h100/tp2-sharegpt"), lib)
    m, hw, lay, prec = setup.model, setup.hardware, setup.layout, setup.precision
    plan = mem.plan_memory(m, hw, lay, prec, memory_utilization=0.9)
    assert lay.tp == 2
    assert plan.usable_bytes == hw.memory_bytes * 0.9 - mem.RUNTIME_RESERVE_BYTES
    one = mem.plan_memory(m, hw, mem.Layout(tp=1), prec, memory_utilization=0.9)
    assert one.usable_bytes == hw.memory_bytes * 0.9 - mem.VLLM_NON_TORCH_BYTES_TP1
