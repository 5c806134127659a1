"""Sustained mixed (chunked-prefill) step of one decoder layer: burst versus power-limited time.

An offline run is a long sequence of mixed steps: B decode tokens plus the prefill chunks of
the requests that replace finished ones, all in one batched GEMM per weight. This script builds
one torch.compile'd BF16 Llama decoder layer shard (the DecoderLayer of sim.calibrate.run),
runs such a mixed step, and times it twice: a short burst (CUDA events, clocks high) and a
10-second sustained loop at the card's power limit, with power and SM clock from NVML.
Needs only torch, numpy and pyyaml; writes one YAML of raw points.

    python benchmarks/device/mixed_step.py --out mixed.yaml [--device cpu --quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import sim.calibrate.run as _runner  # noqa: E402
from sim.calibrate.run import DecoderLayer, decode_sdpa, gqa_mode, gqa_sdpa  # noqa: E402

_runner.torch, _runner.F = torch, F  # the runner imports torch lazily in its own main()

# (name, hidden, heads, kv_heads, head_dim, ffn, tp, decode batch, decode context,
#  prefill chunks, chunk tokens): the MLPerf Llama 2 70B offline operating point at TP2
# (mean input 222, output 294 tokens) and a Llama 3.1 8B point at TP1.
CASES = [
    ("llama-70b-tp2", 8192, 64, 8, 128, 28672, 2, 1024, 369, 4, 222),
    ("llama-3.1-8b-tp1", 4096, 32, 8, 128, 14336, 1, 256, 1024, 2, 512),
]
QUICK = [("tiny", 256, 8, 2, 32, 512, 1, 8, 64, 2, 16)]


class Mixed:
    """One layer's mixed step: all tokens share the GEMMs, attention splits by phase. The four
    projections are functions, so the FP8 variant only swaps them."""

    def __init__(self, layer: DecoderLayer, mode: str):
        self.l = layer
        self.mode = mode
        self.qkv = lambda x: F.linear(x, layer.wqkv)
        self.o = lambda x: F.linear(x, layer.wo)
        self.gu = lambda x: F.linear(x, layer.wgu)
        self.d = lambda x: F.linear(x, layer.wd)

    def __call__(self, x_dec, x_pre, kc, vc, pos):
        lay = self.l
        nq, nkv, d = lay.nq, lay.nkv, lay.d
        b = x_dec.shape[0]
        c, s, hid = x_pre.shape
        x = torch.cat([x_dec.reshape(b, hid), x_pre.reshape(c * s, hid)], 0)
        h = lay.rms(x, lay.ln1)
        q, k, v = self.qkv(h).split([nq * d, nkv * d, nkv * d], dim=-1)
        # decode tokens: one query each against its cache
        qd = lay.rope(q[:b].view(b, nq, d), lay.cos[pos:pos + 1], lay.sin[pos:pos + 1])
        kd = lay.rope(k[:b].view(b, nkv, d), lay.cos[pos:pos + 1], lay.sin[pos:pos + 1])
        kc[:, :, pos].copy_(kd)
        vc[:, :, pos].copy_(v[:b].view(b, nkv, d))
        ad = decode_sdpa(qd, kc, vc).reshape(b, nq * d)
        # prefill chunks: causal attention within each prompt
        qp = q[b:].view(c, s, nq, d).transpose(1, 2)
        kp = k[b:].view(c, s, nkv, d).transpose(1, 2)
        vp = v[b:].view(c, s, nkv, d).transpose(1, 2)
        qp = lay.rope(qp, lay.cos[:s], lay.sin[:s])
        kp = lay.rope(kp, lay.cos[:s], lay.sin[:s])
        ap = gqa_sdpa(qp, kp, vp, True, self.mode).transpose(1, 2).reshape(c * s, nq * d)
        x = x + self.o(torch.cat([ad, ap], 0))
        h2 = lay.rms(x, lay.ln2)
        g, u = self.gu(h2).chunk(2, dim=-1)
        return x + self.d(F.silu(g) * u)


class Fp8Linear:
    """W8A8 FP8 linear as serving engines run it on Hopper: weights stored in float8_e4m3fn
    with a per-tensor scale, activations quantized with a static per-tensor scale (TensorRT-LLM
    and vLLM static FP8), torch._scaled_mm with fast accumulation, BF16 output."""

    def __init__(self, w_bf16):
        f8 = torch.float8_e4m3fn
        self.w_scale = (w_bf16.abs().max().float() / 448.0).clamp(min=1e-12)
        self.w = (w_bf16.float() / self.w_scale).to(f8)  # (N, K) row-major; .t() is col-major
        self.x_scale = torch.tensor(0.05, device=w_bf16.device)  # static activation scale
        self.inv_x = 1.0 / 0.05

    def __call__(self, x):
        shape = x.shape
        x2 = (x.reshape(-1, shape[-1]) * self.inv_x).to(torch.float8_e4m3fn)
        y = torch._scaled_mm(x2, self.w.t(), scale_a=self.x_scale, scale_b=self.w_scale,
                             out_dtype=torch.bfloat16, use_fast_accum=True)
        return y.reshape(*shape[:-1], y.shape[-1])


class MixedFp8(Mixed):
    """The same mixed step with every projection in FP8 (KV cache and attention stay BF16:
    SDPA has no FP8 path here, so attention is slightly pessimistic versus FP8 engines)."""

    def __init__(self, layer: DecoderLayer, mode: str):
        super().__init__(layer, mode)
        self.qkv = Fp8Linear(layer.wqkv)
        self.o = Fp8Linear(layer.wo)
        self.gu = Fp8Linear(layer.wgu)
        self.d = Fp8Linear(layer.wd)


def _nvml():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # noqa: BLE001
        return None, None


def run_case(case, dev, seconds, gen, fp8=False):
    name, hid, heads, kvh, d, ffn, tp, b, ctx, chunks, chunk = case
    hq, hkv, f = heads // tp, max(kvh // tp, 1), ffn // tp
    mode = gqa_mode(dev)
    layer = DecoderLayer(dev, gen, hid, hq, hkv, d, f, max(ctx + 1, chunk), mode)
    step = MixedFp8(layer, mode) if fp8 else Mixed(layer, mode)
    bf = torch.bfloat16
    x_dec = torch.randn((b, 1, hid), generator=gen, device=dev, dtype=bf)
    x_pre = torch.randn((chunks, chunk, hid), generator=gen, device=dev, dtype=bf)
    kc = torch.randn((b, hkv, ctx + 1, d), generator=gen, device=dev, dtype=bf)
    vc = torch.randn((b, hkv, ctx + 1, d), generator=gen, device=dev, dtype=bf)
    fn = torch.compile(step, dynamic=False)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.inference_mode():
        t0 = time.perf_counter()
        fn(x_dec, x_pre, kc, vc, ctx)
        sync()
        compile_s = time.perf_counter() - t0
        for _ in range(5):
            fn(x_dec, x_pre, kc, vc, ctx)
        sync()
        # burst: 20 timed iterations
        times = []
        for _ in range(20):
            if cuda:
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                fn(x_dec, x_pre, kc, vc, ctx)
                e1.record()
                e1.synchronize()
                times.append(e0.elapsed_time(e1) / 1e3)
            else:
                t = time.perf_counter()
                fn(x_dec, x_pre, kc, vc, ctx)
                times.append(time.perf_counter() - t)
        burst = sorted(times)[len(times) // 2]
        # sustained: back-to-back for `seconds`, throughput per 0.5 s chunk, with telemetry
        nv, h = _nvml()
        chunks_out, power, clock = [], [], []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            n, c0 = 0, time.perf_counter()
            while time.perf_counter() - c0 < 0.5:
                for _ in range(10):
                    fn(x_dec, x_pre, kc, vc, ctx)
                n += 10
                sync()
            chunks_out.append((time.perf_counter() - c0) / n)
            if nv is not None:
                power.append(nv.nvmlDeviceGetPowerUsage(h) / 1e3)
                clock.append(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))
    tail = chunks_out[len(chunks_out) // 2:] or chunks_out
    sustained = sorted(tail)[len(tail) // 2]
    return {
        "case": name + ("-fp8" if fp8 else ""), "precision": "fp8-w8a8" if fp8 else "bf16",
        "hidden": hid, "q_heads": hq, "kv_heads": hkv, "head_dim": d,
        "ffn_per_gpu": f, "tp": tp, "decode_batch": b, "decode_context": ctx,
        "prefill_chunks": chunks, "chunk_tokens": chunk, "tokens": b + chunks * chunk,
        "compile_s": compile_s, "burst_median_s": burst, "sustained_median_s": sustained,
        "sustained_over_burst_time": sustained / burst,
        "per_chunk_s": chunks_out, "power_w": power, "sm_clock_mhz": clock,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fp8", action="store_true", help="also run the FP8 (W8A8) variant")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    gen = torch.Generator(device=dev).manual_seed(0)
    doc = {"kind": "mixed-step-measurement", "date_utc": dt.datetime.now(dt.timezone.utc)
           .isoformat(timespec="seconds"), "torch_version": str(torch.__version__),
           "device_name": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
           "command_line": " ".join(sys.argv), "points": []}
    variants = [False, True] if args.fp8 else [False]
    cases = [(c, f) for c in (QUICK if args.quick else CASES) for f in variants]
    for case, fp8 in cases:
        try:
            doc["points"].append(run_case(case, dev, 1.0 if args.quick else args.seconds, gen,
                                          fp8))
        except Exception as e:  # noqa: BLE001
            doc["points"].append({"case": case[0] + ("-fp8" if fp8 else ""),
                                  "error": f"{type(e).__name__}: {e}"[:300]})
        print(doc["points"][-1] if "error" in doc["points"][-1] else {
            k: v for k, v in doc["points"][-1].items() if not isinstance(v, list)}, flush=True)
        Path(args.out).write_text(yaml.safe_dump(doc, sort_keys=False))
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
