"""Microbenchmark runner that measures an accelerator for simulator calibration.

Usage (from the repository root)::

    python -m sim.calibrate.run --out FILE.yaml [--device cuda|cpu] [--quick] [--budget-s N]
    python -m sim.calibrate.run --out-dir DIR ...   # writes DIR/<card-slug>-measured.yaml

Only torch, pyyaml and the standard library are needed (numpy is not used;
pynvml is used for power sampling when importable).  No other ``sim`` module
is imported, so this runs on a bare GPU box.

Robustness rules:
  * every section runs inside try/except; a failure becomes ``status: error``
    and the run goes on;
  * within a section every measured point has its own try/except;
  * the YAML is re-written after every section and every ~10 s inside one,
    so a run killed by an outer timeout still leaves data;
  * a wall-clock budget (``--budget-s``) is enforced per point; sections that
    do not get to run are recorded as ``status: skipped``.

Timing: on CUDA each iteration is bracketed by CUDA events.  Before the timed
loop a ``torch.cuda._sleep`` spin kernel is queued so that the host can enqueue
all timed iterations ahead of the device; the event deltas are then device
time, not host launch time (the ``launch_bound`` variants omit that and show
what eager back-to-back execution gives).  On CPU ``time.perf_counter`` is used.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback

torch = None  # imported lazily in main(), so that importing this module never needs torch
F = None

KIND = "calibration-measurement"
SCHEMA_VERSION = 1

# Order of keys in the output file.
REPORT_ORDER = [
    "gemm",
    "memory_bandwidth",
    "attention_prefill",
    "attention_decode",
    "layer",
    "layer_compiled",
    "allreduce",
    "overhead",
]
# Order in which sections run (priority: most valuable first).
RUN_ORDER = [
    "memory_bandwidth",
    "gemm",
    "layer",
    "layer_compiled",
    "attention_decode",
    "attention_prefill",
    "overhead",
    "allreduce",
]


class Section:
    """A registered measurement section: its function, its nominal cap in seconds at
    --budget-s 400 on an H100 (scaled with the budget; expected use is far below, the cap only
    bounds pathological slowness) and whether power/clock telemetry runs beside it."""

    def __init__(self, run, cap_s: float, telemetry: bool) -> None:
        self.run, self.cap_s, self.telemetry = run, cap_s, telemetry


SECTIONS: dict[str, Section] = {}
"""The sections by name, registered with `@section(name, cap_s=...)` (a new section is one
decorated function and its place in RUN_ORDER and REPORT_ORDER)."""


def section(name: str, cap_s: float, telemetry: bool = False):
    """Decorator: register a `section_<name>(ctx)` function."""
    def add(fn):
        SECTIONS[name] = Section(fn, cap_s, telemetry)
        return fn
    return add


GIB = 1 << 30
MIB = 1 << 20

MODELS = {
    # name: hidden, q heads, kv heads, head_dim, ffn (intermediate)
    "llama-3.1-8b": dict(hidden=4096, heads=32, kv_heads=8, head_dim=128, ffn=14336),
    "llama-70b": dict(hidden=8192, heads=64, kv_heads=8, head_dim=128, ffn=28672),
}
def library_models() -> dict:
    """GEMM-relevant shapes of every model in the library (workloads/models/*.yaml, read with
    pyyaml alone, so this runner needs no pydantic): hidden, heads, kv heads, head_dim and the
    FFN width (the expert FFN for MoE models); MLA models are marked (their attention
    projections are not the GQA shapes, so only their FFN GEMMs are swept)."""
    import yaml as _yaml
    from pathlib import Path

    here = Path(__file__).resolve()
    for d in (here.parents[2] / "workloads" / "models",
              here.parents[1] / "_library" / "workloads" / "models"):
        if d.is_dir():
            break
    else:
        return {}
    out = {}
    for p in sorted(d.glob("*.yaml")):
        try:
            a = _yaml.safe_load(p.read_text())["architecture"]
            moe = a.get("moe") or {}
            out[p.stem] = dict(hidden=int(a["hidden_size"]), heads=int(a["num_attention_heads"]),
                               kv_heads=int(a["num_kv_heads"]), head_dim=int(a["head_dim"]),
                               ffn=int(moe.get("expert_ffn_size") or a["ffn_size"]),
                               mla=a.get("attention") == "mla")
        except (KeyError, TypeError, ValueError):
            continue  # a malformed library file is the config loader's business, not ours
    return out


TINY_MODELS = {
    "tiny": dict(hidden=512, heads=4, kv_heads=2, head_dim=128, ffn=1024),
}


# --------------------------------------------------------------------------- plans
class Plan:
    """All shape lists, full (GPU) or quick (CPU / smoke test)."""

    def __init__(self, quick: bool):
        self.quick = quick
        if quick:
            self.models = TINY_MODELS
            self.gemm_models = TINY_MODELS
            self.tps = [1, 2]
            self.gemm_square = [64, 128, 256]
            self.gemm_big_square = []
            self.gemm_m = [1, 16, 64]
            self.membw_sizes = [1 * MIB, 4 * MIB]
            self.membw_sweep = [256 << 10, 1 * MIB, 4 * MIB]
            self.attn_cfgs = [("tiny-tp1", 4, 2, 128)]
            self.prefill_batch = [1, 2]
            self.prefill_seq = [64, 128]
            self.decode_batch = [1, 4]
            self.decode_ctx = [64, 256]
            self.decode_kv_cap = 64 * MIB
            self.layer_models = [("tiny", 1)]
            self.layer_prefill = [(1, 32), (2, 64)]
            self.layer_decode_batch = [1, 4]
            self.layer_decode_ctx = [64]
            self.layer_graph_batch = 4
            # layer_compiled: every shape is a fresh torch.compile, so keep these lists short
            self.compiled_prefill = [(1, 32)]
            self.compiled_decode = [(4, 64)]  # (batch, context)
            self.overhead_n = 200
            self.allreduce_sizes = [1 * MIB]
            self.sustained_s = 0.2
            self.sustained_gemm = 256
            self.idle_s = 0.2
        else:
            self.models = MODELS
            self.gemm_models = {**MODELS, **library_models()}
            self.tps = [1, 2, 4, 8]
            self.gemm_square = [256, 512, 1024, 2048, 4096, 8192]
            self.gemm_big_square = [16384]  # skipped when the budget is short
            self.gemm_m = [1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
            self.membw_sizes = [1 * GIB, 2 * GIB, 4 * GIB]
            self.membw_sweep = [MIB << i for i in range(12)]  # 1 MiB .. 2 GiB
            self.attn_cfgs = [
                # label, q heads, kv heads, head_dim (per GPU)
                ("llama-70b-tp8", 8, 1, 128),
                ("llama-3.1-8b-tp1", 32, 8, 128),
            ]
            self.prefill_batch = [1, 2, 4, 8]
            self.prefill_seq = [512, 1024, 2048, 4096, 8192]
            self.decode_batch = [1, 2, 4, 8, 16, 32, 64, 128, 256]
            self.decode_ctx = [512, 1024, 2048, 4096, 8192, 16384, 32768]
            self.decode_kv_cap = 16 * GIB
            self.layer_models = [("llama-70b", 8), ("llama-3.1-8b", 1)]
            self.layer_prefill = [(1, 512), (1, 2048), (4, 1024), (8, 2048)]
            self.layer_decode_batch = [1, 8, 32, 64, 128, 256]
            self.layer_decode_ctx = [1024, 4096]
            self.layer_graph_batch = 64
            self.compiled_prefill = [(1, 2048), (8, 2048)]
            self.compiled_decode = [(8, 1024), (64, 1024), (256, 1024), (256, 4096)]
            self.overhead_n = 2000
            self.allreduce_sizes = [MIB << i for i in range(0, 11, 2)]  # 1 MiB .. 1 GiB
            self.sustained_s = 10.0  # per sustained run (gemm bf16, gemm fp8; copy gets half)
            self.sustained_gemm = 8192
            self.idle_s = 3.0

    def llm_gemms(self):
        """(model, tp, op, N, K) of the per-GPU GEMMs of one decoder layer, for every library
        model at TP 1/2/4/8; a shape another model already contributed is not repeated."""
        out = []
        seen: dict = {}

        def add(model, tp, op, n, k):
            if seen.setdefault((n, k), model) == model:  # shapes of other models: once only
                out.append((model, tp, op, n, k))

        for model, c in self.gemm_models.items():
            d = c["head_dim"]
            for tp in self.tps:
                if c["heads"] % tp or c["ffn"] % tp:
                    continue
                kv = max(c["kv_heads"] // tp, 1)  # kv heads are replicated once tp > kv heads
                q = c["heads"] // tp
                if not c.get("mla"):
                    add(model, tp, "qkv", (q + 2 * kv) * d, c["hidden"])
                    add(model, tp, "o_proj", c["hidden"], q * d)
                add(model, tp, "gate_up", 2 * c["ffn"] // tp, c["hidden"])
                add(model, tp, "down", c["hidden"], c["ffn"] // tp)
        return out


# --------------------------------------------------------------------------- helpers
def _percentile(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    if len(sorted_vals) == 1:
        return float(sorted_vals[0])
    pos = (len(sorted_vals) - 1) * q
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_vals) - 1)
    frac = pos - lo
    return float(sorted_vals[lo] * (1 - frac) + sorted_vals[hi] * frac)


def stats(times):
    s = sorted(float(t) for t in times)
    return {
        "median_s": _percentile(s, 0.5),
        "min_s": float(s[0]),
        "max_s": float(s[-1]),
        "p10_s": _percentile(s, 0.1),
        "p90_s": _percentile(s, 0.9),
        "mean_s": float(sum(s) / len(s)),
        "n": len(s),
    }


def _short_exc(e: BaseException) -> str:
    msg = f"{type(e).__name__}: {e}"
    return msg if len(msg) < 600 else msg[:600] + "..."


def _raise(e):
    raise e


def _clean(obj):
    """Convert to plain YAML-safe python types."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    try:
        return float(obj)
    except Exception:
        return str(obj)


def slugify(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if s.startswith("nvidia-"):
        s = s[len("nvidia-") :]
    return s or "device"


def log(msg: str) -> None:
    print(f"[calib {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- nvidia-smi / telemetry
SMI_FIELDS = [
    "name",
    "driver_version",
    "clocks.sm",
    "clocks.mem",
    "clocks.max.sm",
    "clocks.max.mem",
    "power.draw",
    "power.limit",
    "temperature.gpu",
    "pstate",
]
SMI_FIELDS_MIN = ["clocks.sm", "clocks.mem", "clocks.max.sm", "power.draw", "temperature.gpu"]


def nvidia_smi_query(fields=None, index=0, timeout=10.0):
    """Returns {field: value-string} from nvidia-smi, or {'error': ...}."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {"error": "nvidia-smi not found"}
    for flds in [fields] if fields else [SMI_FIELDS, SMI_FIELDS_MIN]:
        try:
            p = subprocess.run(
                [exe, f"--query-gpu={','.join(flds)}", "--format=csv", "-i", str(index)],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except Exception as e:  # noqa: BLE001
            return {"error": _short_exc(e)}
        lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
        if p.returncode == 0 and len(lines) >= 2:
            header = [h.strip() for h in lines[0].split(",")]
            vals = [v.strip() for v in lines[1].split(",")]
            return dict(zip(header, vals, strict=False))
        last_err = (p.stderr or p.stdout).strip()[:300]
    return {"error": f"nvidia-smi failed: {last_err}"}


def _num(s):
    try:
        return float(str(s).split()[0])
    except Exception:
        return None


class Telemetry:
    """Background sampler of power / SM clock / temperature.

    Uses pynvml if importable, else nvidia-smi.
    """

    def __init__(self, index=0, period_s=0.25):
        self.index = index
        self.period_s = period_s
        self.samples = []  # (t, label, power_w, sm_mhz, temp_c)
        self.label = ""
        self._stop = threading.Event()
        self._thread = None
        self.source = None
        self._nvml = None
        self._handle = None
        try:
            import pynvml  # type: ignore

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._nvml = pynvml
            self.source = "pynvml"
        except Exception:
            self._nvml = None
            self.source = "nvidia-smi" if shutil.which("nvidia-smi") else None

    def available(self):
        return self.source is not None

    def _sample(self):
        if self._nvml is not None:
            n = self._nvml
            p = n.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
            c = float(n.nvmlDeviceGetClockInfo(self._handle, n.NVML_CLOCK_SM))
            t = float(n.nvmlDeviceGetTemperature(self._handle, n.NVML_TEMPERATURE_GPU))
            return p, c, t
        q = nvidia_smi_query(
            ["power.draw", "clocks.sm", "temperature.gpu"], self.index, timeout=5.0
        )
        return (
            _num(q.get("power.draw [W]")),
            _num(q.get("clocks.current.sm [MHz]", q.get("clocks.sm [MHz]"))),
            _num(q.get("temperature.gpu")),
        )

    def _loop(self):
        t0 = time.monotonic()
        while not self._stop.is_set():
            try:
                p, c, t = self._sample()
                self.samples.append((time.monotonic() - t0, self.label, p, c, t))
            except Exception:
                pass
            self._stop.wait(self.period_s)

    def start(self, label=""):
        self.samples = []
        self.label = label
        if not self.available():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self):
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None

    @staticmethod
    def _group(rows):
        ps = sorted(r[0] for r in rows if r[0] is not None)
        cs = sorted(r[1] for r in rows if r[1] is not None)
        ts = sorted(r[2] for r in rows if r[2] is not None)
        g = {"n": len(rows)}
        if ps:
            g.update(power_w_median=_percentile(ps, 0.5), power_w_max=ps[-1])
        if cs:
            g.update(
                sm_clock_mhz_median=_percentile(cs, 0.5),
                sm_clock_mhz_min=cs[0],
                sm_clock_mhz_max=cs[-1],
            )
        if ts:
            g.update(temp_c_max=ts[-1])
        return g

    def summary_for(self, label):
        rows = [(p, c, t) for _, lab, p, c, t in list(self.samples) if lab == label]
        return self._group(rows) if rows else None

    def summary(self):
        out = {"source": self.source, "n_samples": len(self.samples)}
        by = {}
        for _, lab, p, c, t in list(self.samples):
            by.setdefault(lab or "all", []).append((p, c, t))
        out["by_phase"] = {lab: self._group(rows) for lab, rows in by.items()}
        return out


class NullTelemetry:
    label = ""
    source = None

    def summary_for(self, label):  # noqa: ARG002
        return None


# --------------------------------------------------------------------------- timing
class Timer:
    def __init__(self, device, warmup, repeats, max_repeats, target_s=0.03):
        self.device = device
        self.cuda = device.startswith("cuda")
        self.warmup = warmup
        self.repeats = repeats
        self.max_repeats = max(max_repeats, repeats)
        self.target_s = target_s
        self.can_sleep = self.cuda and hasattr(torch.cuda, "_sleep")

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn, prefill_queue=True, repeats=None, warmup=None):
        """Times fn(); returns stats dict (seconds per call)."""
        warmup = self.warmup if warmup is None else warmup
        self.sync()
        t0 = time.perf_counter()
        for _ in range(max(warmup, 1)):
            fn()
        self.sync()
        est = (time.perf_counter() - t0) / max(warmup, 1)
        n = repeats
        if n is None:
            n = self.repeats
            if est > 0 and est * n < self.target_s:
                n = int(min(self.max_repeats, max(n, self.target_s / est)))
        if not self.cuda:
            times = []
            for _ in range(n):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return stats(times)
        # host enqueue time of one call (queue is empty after sync; kernels launch async)
        t = time.perf_counter()
        fn()
        enq = time.perf_counter() - t
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        if prefill_queue and self.can_sleep:
            # spin long enough for the host to enqueue every timed iteration (~2 GHz clock assumed)
            spin_s = min(0.25, 1.5 * n * (enq + 10e-6) + 50e-6)
            torch.cuda._sleep(int(spin_s * 2.0e9))
        for i in range(n):
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize()
        r = stats([s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends, strict=True)])
        r["host_enqueue_s"] = float(enq)
        return r


# --------------------------------------------------------------------------- section context
class SectionCtx:
    def __init__(self, runner, name, result, deadline):
        self.runner = runner
        self.name = name
        self.result = result
        self.deadline = deadline
        self.plan = runner.plan
        self.timer = runner.timer
        self.dev = runner.dev
        self.cuda = runner.cuda
        self.margin_s = min(3.0 if not runner.plan.quick else 0.5, 0.05 * runner.budget_s)
        result.setdefault("points", [])
        self.skipped_points = 0
        self.n_errors = 0

    def time_left(self):
        return self.deadline - time.monotonic()

    def expired(self, need_s=0.0):
        return self.time_left() < self.margin_s + need_s

    def gen(self, offset=0):
        g = torch.Generator(device=self.dev)
        g.manual_seed(self.runner.seed * 1000003 + offset)
        return g

    def note(self, text):
        self.result.setdefault("notes", []).append(text)

    def measure(self, labels, thunk, need_s=0.0):
        """Runs thunk() -> dict of measurements; records a point. Returns False once out of time."""
        if self.expired(need_s):
            self.skipped_points += 1
            self.result["truncated"] = True
            self.result["skipped_points"] = self.skipped_points
            return False
        try:
            m = thunk()
            pt = dict(labels)
            pt.update(m)
        except Exception as e:  # noqa: BLE001
            self.n_errors += 1
            pt = dict(labels)
            pt["error"] = _short_exc(e)
            if "out of memory" in str(e).lower() and self.cuda:
                torch.cuda.empty_cache()
            if self.n_errors <= 3:
                log(f"  {self.name}: point {labels} failed: {pt['error']}")
        self.result["points"].append(_clean(pt))
        self.result["n_point_errors"] = self.n_errors
        self.runner.checkpoint()
        return True

    def skip_point(self):
        self.skipped_points += 1
        self.result["truncated"] = True
        self.result["skipped_points"] = self.skipped_points


def _sdpa_setup(ctx_or_runner):
    """On CUDA, disable the math SDPA backend (it materialises the score matrix: slow, huge)."""
    info = {}
    if not ctx_or_runner.cuda:
        info["sdpa_backends"] = "default (cpu)"
        return info
    b = torch.backends.cuda
    try:
        b.enable_math_sdp(False)
        if hasattr(b, "enable_cudnn_sdp"):
            b.enable_cudnn_sdp(False)
        b.enable_flash_sdp(True)
        b.enable_mem_efficient_sdp(True)
        info["sdpa_backends"] = "flash+mem_efficient (math and cudnn disabled)"
    except Exception as e:  # noqa: BLE001
        info["sdpa_backends"] = f"default ({_short_exc(e)})"
    return info


_GQA_MODE = None


def gqa_mode(dev):
    """'enable_gqa' if SDPA's enable_gqa works with the allowed backends, else 'expand'."""
    global _GQA_MODE
    if _GQA_MODE is None:
        try:
            q = torch.zeros(1, 4, 16, 128, device=dev, dtype=torch.bfloat16)
            k = torch.zeros(1, 2, 16, 128, device=dev, dtype=torch.bfloat16)
            F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
            _GQA_MODE = "enable_gqa"
        except Exception:
            _GQA_MODE = "expand"
    return _GQA_MODE


def gqa_sdpa(q, k, v, causal, mode):
    if q.shape[1] == k.shape[1]:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if mode == "enable_gqa":
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    g = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(
        q, k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1), is_causal=causal
    )


def decode_sdpa(q, kc, vc):
    """GQA decode attention with the group folded into the query-length axis (exact for Lq=1).

    q: (B, Hq, d) ; kc, vc: (B, Hkv, L, d) -> (B, Hq, d)
    """
    b, hq, d = q.shape
    hkv = kc.shape[1]
    qf = q.reshape(b, hkv, hq // hkv, d)
    o = F.scaled_dot_product_attention(qf, kc, vc)
    return o.reshape(b, hq, d)


# --------------------------------------------------------------------------- sections
def section_provenance(runner):
    """Returns the provenance dict (not a timed section)."""
    p = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "command_line": " ".join([sys.executable, "-m", "sim.calibrate.run"] + list(runner.argv)),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "torch_version": str(torch.__version__),
        "cuda_version": str(torch.version.cuda) if torch.version.cuda else None,
        "device": runner.dev,
        "quick": runner.plan.quick,
        "budget_s": runner.budget_s,
        "warmup": runner.timer.warmup,
        "repeats": runner.timer.repeats,
        "max_repeats": runner.timer.max_repeats,
        "seed": runner.seed,
        "timing_method": (
            "cuda events per iteration, queue pre-filled with torch.cuda._sleep"
            if runner.cuda
            else "time.perf_counter per iteration"
        ),
    }
    try:
        p["cudnn_version"] = torch.backends.cudnn.version()
    except Exception:  # noqa: BLE001
        p["cudnn_version"] = None
    if runner.cuda:
        idx = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        p["device_name"] = props.name
        p["device_index"] = idx
        p["device_count"] = torch.cuda.device_count()
        p["total_memory_bytes"] = int(props.total_memory)
        p["sm_count"] = int(props.multi_processor_count)
        p["compute_capability"] = f"{props.major}.{props.minor}"
        for attr in ("L2_cache_size", "clock_rate", "memory_clock_rate", "memory_bus_width"):
            if hasattr(props, attr):
                p[attr] = int(getattr(props, attr))
        p["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        smi = nvidia_smi_query(index=idx)
        p["driver_version"] = smi.get("driver_version")
        p["nvidia_smi_start"] = smi
        try:
            p["allow_tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
            p["allow_bf16_reduced_precision_reduction"] = bool(
                torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
            )
        except Exception:  # noqa: BLE001
            pass
    else:
        p["device_name"] = platform.processor() or platform.machine() or "cpu"
        p["cpu_count"] = os.cpu_count()
        p["torch_num_threads"] = torch.get_num_threads()
    return p


# ---- sustained load (clock / power under continuous load)
def sustained(ctx, fn, seconds, work_per_call, work_key, label):
    """Runs fn back-to-back for ~seconds in ~0.5 s chunks; per-chunk rate shows throttling."""
    tel = ctx.runner.telemetry
    prev = tel.label
    tel.label = label
    try:
        st = ctx.timer(fn, repeats=5)
        per_call = max(st["median_s"], 1e-7)
        k = max(1, int(0.5 / per_call)) if ctx.cuda else max(1, int(0.05 / per_call))
        chunks = []
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end and not ctx.expired():
            if ctx.cuda:
                e0 = torch.cuda.Event(enable_timing=True)
                e1 = torch.cuda.Event(enable_timing=True)
                e0.record()
                for _ in range(k):
                    fn()
                e1.record()
                e1.synchronize()
                chunks.append(e0.elapsed_time(e1) / 1e3 / k)
            else:
                t0 = time.perf_counter()
                for _ in range(k):
                    fn()
                chunks.append((time.perf_counter() - t0) / k)
    finally:
        tel.label = prev
    if not chunks:
        raise RuntimeError("no time left for sustained run")
    rates = [work_per_call / c for c in chunks]
    srt = sorted(rates)
    out = {
        "duration_s": float(sum(chunks) * k),
        "calls_per_chunk": k,
        "n_chunks": len(chunks),
        f"{work_key}_first_chunk": rates[0],
        f"{work_key}_last_chunk": rates[-1],
        f"{work_key}_median": _percentile(srt, 0.5),
        f"{work_key}_min": srt[0],
        f"{work_key}_max": srt[-1],
        f"{work_key}_per_chunk": rates[:60],
    }
    t = tel.summary_for(label)
    if t:
        out["telemetry"] = t
    return out


# ---- memory bandwidth
@section("memory_bandwidth", cap_s=30.0, telemetry=True)
def section_memory_bandwidth(ctx):
    plan = ctx.plan
    res = ctx.result
    max_size = max(plan.membw_sizes + plan.membw_sweep)
    n_max = max_size // 4
    g = ctx.gen(11)
    a = torch.empty(n_max, device=ctx.dev, dtype=torch.float32)
    b = torch.randn(n_max, generator=g, device=ctx.dev, dtype=torch.float32)
    c = torch.randn(n_max, generator=g, device=ctx.dev, dtype=torch.float32)
    res["dtype"] = "float32"
    res["notes"] = [
        "bytes counted: copy = 2x size (read+write), triad = 3x (a = b + s*c via "
        "torch.add(alpha=)), read = 1x (x.sum()), fill = 1x (write only)",
        "sweep uses the same buffer prefix every iteration, so sizes well below L2 are L2-resident",
    ]

    def mk(op, n):
        av, bv, cv = a[:n], b[:n], c[:n]
        if op == "copy":
            return (lambda: av.copy_(bv)), 2
        if op == "triad":
            return (lambda: torch.add(bv, cv, alpha=1.5, out=av)), 3
        if op == "read":
            return (lambda: bv.sum()), 1
        if op == "fill":
            return (lambda: av.fill_(0.5)), 1
        raise ValueError(op)

    def point(op, size, kind):
        def thunk():
            fn, mult = mk(op, size // 4)
            st = ctx.timer(fn)
            moved = mult * size
            return dict(
                bytes_moved=moved,
                bytes_per_s=moved / st["median_s"],
                bytes_per_s_best=moved / st["min_s"],
                **st,
            )

        return ctx.measure(dict(kind=kind, op=op, size_bytes=size), thunk)

    for size in plan.membw_sizes:
        for op in ("copy", "triad", "read", "fill"):
            point(op, size, "large")
    for op in ("copy", "read"):
        for size in plan.membw_sweep:
            point(op, size, "sweep")
    # sustained copy: power and clocks under memory-bound load
    size = plan.membw_sizes[0]
    secs = plan.sustained_s / 2
    if ctx.time_left() > secs + 20 or plan.quick:
        fn, mult = mk("copy", size // 4)
        ctx.measure(
            dict(kind="sustained", op="copy", size_bytes=size, seconds=secs),
            lambda: sustained(ctx, fn, secs, mult * size, "bytes_per_s", "sustained-copy"),
        )
    else:
        ctx.note("sustained copy skipped for budget")
    ok = [p for p in res["points"] if p.get("kind") == "large" and "bytes_per_s" in p]
    if ok:
        res["summary"] = {
            op: max(p["bytes_per_s"] for p in ok if p["op"] == op) for op in {p["op"] for p in ok}
        }


# ---- GEMM
def _fp8_dtype():
    return getattr(torch, "float8_e4m3fn", None)


def _scaled_mm(a, bt, sa, sb, fast):
    r = torch._scaled_mm(
        a, bt, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16, use_fast_accum=fast
    )
    return r[0] if isinstance(r, tuple) else r


def probe_fp8(dev):
    f8 = _fp8_dtype()
    if f8 is None or not hasattr(torch, "_scaled_mm"):
        return False, "torch has no float8_e4m3fn / _scaled_mm"
    try:
        a = torch.ones(32, 64, device=dev, dtype=torch.bfloat16).to(f8)
        w = torch.ones(48, 64, device=dev, dtype=torch.bfloat16).to(f8)
        one = torch.ones((), device=dev, dtype=torch.float32)
        out = _scaled_mm(a, w.t(), one, one, True)
        v = float(out[0, 0].float())
        if abs(v - 64.0) > 1.0:
            return False, f"wrong result {v}"
        return True, "ok"
    except Exception as e:  # noqa: BLE001
        return False, _short_exc(e)


@section("gemm", cap_s=150.0, telemetry=True)
def section_gemm(ctx):
    plan = ctx.plan
    res = ctx.result
    dev = ctx.dev
    f8 = _fp8_dtype()
    fp8_ok, why = probe_fp8(dev)
    res["fp8_support"] = "supported" if fp8_ok else f"unsupported: {why}"
    l2 = ctx.runner.l2_bytes
    res["l2_bytes"] = l2
    res["notes"] = [
        "C = A @ W^T with A (M,K) row-major, W (N,K) row-major (nn.Linear layout); bf16 out",
        "fp8: torch._scaled_mm, e4m3 A and W, per-tensor float32 scales, bf16 out",
        "weights rotated among copies totalling > 2x L2 so small-M points are not L2-resident",
        "bytes = A + W + C bytes; flops = 2*M*N*K",
    ]
    variants = [("bf16", None)]
    if fp8_ok:
        variants += [("fp8_e4m3", True), ("fp8_e4m3", False)]
    tel = ctx.runner.telemetry

    def weights(n, k, dtype, gen):
        elem = 1 if dtype != "bf16" else 2
        wbytes = n * k * elem
        copies = 1 if not ctx.cuda else max(1, min(4096, math.ceil(2.2 * l2 / wbytes)))
        stack = torch.randn((copies, n, k), generator=gen, device=dev, dtype=torch.bfloat16)
        if dtype != "bf16":
            stack = stack.to(f8)
        return [stack[i] for i in range(copies)]

    def make_fn(m, n, k, dtype, fast, ws, gen):
        a = torch.randn((m, k), generator=gen, device=dev, dtype=torch.bfloat16)
        state = [0]
        nw = len(ws)
        wts = [w.t() for w in ws]
        if dtype == "bf16":
            c = torch.empty((m, n), device=dev, dtype=torch.bfloat16)

            def fn():
                i = state[0]
                state[0] = (i + 1) % nw
                torch.mm(a, wts[i], out=c)
        else:
            a8 = a.to(f8)
            sa = torch.ones((), device=dev, dtype=torch.float32)
            sb = torch.ones((), device=dev, dtype=torch.float32)

            def fn():
                i = state[0]
                state[0] = (i + 1) % nw
                _scaled_mm(a8, wts[i], sa, sb, fast)

        return fn

    def run_point(labels, m, n, k, dtype, fast, ws, gen):
        def thunk():
            fn = make_fn(m, n, k, dtype, fast, ws, gen)
            st = ctx.timer(fn)
            elem = 2 if dtype == "bf16" else 1
            flops = 2.0 * m * n * k
            nbytes = m * k * elem + n * k * elem + m * n * 2
            out = dict(
                flops=flops,
                bytes=nbytes,
                tflops=flops / st["median_s"] / 1e12,
                tflops_best=flops / st["min_s"] / 1e12,
                bytes_per_s=nbytes / st["median_s"],
                weight_copies=len(ws),
            )
            out.update(st)
            return out

        lab = dict(dtype=dtype)
        if fast is not None:
            lab["fast_accum"] = fast
        lab.update(labels)
        lab.update(M=m, N=n, K=k)
        return ctx.measure(lab, thunk)

    gen = ctx.gen(23)
    # (a) square sweep
    for dtype, fast in variants:
        tel.label = f"square-{dtype}" + ("" if fast is None else f"-fast{int(fast)}")
        sizes = list(plan.gemm_square)
        for s in plan.gemm_big_square:
            if ctx.time_left() > 90:
                sizes.append(s)
            else:
                ctx.note(f"skipped square {s} ({dtype}) for budget")
        for s in sizes:
            if ctx.expired():
                ctx.skip_point()
                continue
            try:
                ws = weights(s, s, dtype, gen)
            except Exception as e:  # noqa: BLE001
                ctx.measure(dict(dtype=dtype, shape="square", M=s, N=s, K=s), lambda e=e: _raise(e))
                continue
            run_point(dict(shape="square"), s, s, s, dtype, fast, ws, gen)
            del ws
    # (b) LLM layer GEMMs (bf16 first, then fp8)
    for dtype, fast in variants:
        tel.label = f"llm-{dtype}" + ("" if fast is None else f"-fast{int(fast)}")
        for model, tp, op, n, k in plan.llm_gemms():
            if ctx.expired():
                for _ in plan.gemm_m:
                    ctx.skip_point()
                continue
            try:
                ws = weights(n, k, dtype, gen)
            except Exception as e:  # noqa: BLE001
                ctx.measure(
                    dict(dtype=dtype, shape="llm", model=model, tp=tp, op=op, N=n, K=k),
                    lambda e=e: _raise(e),
                )
                continue
            for m in plan.gemm_m:
                run_point(
                    dict(shape="llm", model=model, tp=tp, op=op), m, n, k, dtype, fast, ws, gen
                )
            del ws
        if ctx.cuda:
            torch.cuda.empty_cache()
    tel.label = ""
    # (c) sustained load: 8192^3 (bf16, then fp8) back-to-back for plan.sustained_s
    s = plan.sustained_gemm
    for dtype, fast in variants[:2]:
        if not (ctx.time_left() > plan.sustained_s + 20 or plan.quick):
            ctx.note(f"sustained {dtype} skipped for budget")
            continue
        try:
            ws = weights(s, s, dtype, gen)[:1]
            fn = make_fn(s, s, s, dtype, fast, ws, gen)
        except Exception as e:  # noqa: BLE001
            ctx.measure(dict(dtype=dtype, shape="sustained", M=s, N=s, K=s), lambda e=e: _raise(e))
            continue
        lab = dict(dtype=dtype)
        if fast is not None:
            lab["fast_accum"] = fast
        lab.update(shape="sustained", M=s, N=s, K=s, seconds=plan.sustained_s)
        ctx.measure(
            lab,
            lambda fn=fn, dtype=dtype: sustained(
                ctx, fn, plan.sustained_s, 2.0 * s**3 / 1e12, "tflops", f"sustained-{dtype}"
            ),
        )
        del ws, fn
    best = {}
    for p in res["points"]:
        if "tflops" in p and p.get("shape") != "sustained":
            key = p["dtype"] + ("" if "fast_accum" not in p else f"_fast{int(p['fast_accum'])}")
            best[key] = max(best.get(key, 0.0), p["tflops"])
    res["summary"] = {"max_tflops": best}


# ---- attention
@section("attention_prefill", cap_s=40.0, telemetry=True)
def section_attention_prefill(ctx):
    plan = ctx.plan
    res = ctx.result
    dev = ctx.dev
    mode = gqa_mode(dev)
    res["gqa_method"] = mode
    res["layout"] = "q,k,v (B, H, S, d) contiguous bf16; causal"
    res["notes"] = [
        "flops = 4*B*Hq*S*S*d / 2 (causal)",
        "gqa 'expand' means K/V repeated to Hq heads outside the timed region",
    ]
    gen = ctx.gen(31)
    for label, hq, hkv, d in plan.attn_cfgs:
        for b in plan.prefill_batch:
            for s in plan.prefill_seq:

                def thunk(b=b, s=s, hq=hq, hkv=hkv, d=d):
                    q = torch.randn((b, hq, s, d), generator=gen, device=dev, dtype=torch.bfloat16)
                    k = torch.randn((b, hkv, s, d), generator=gen, device=dev, dtype=torch.bfloat16)
                    v = torch.randn((b, hkv, s, d), generator=gen, device=dev, dtype=torch.bfloat16)
                    pmode = mode
                    if pmode == "enable_gqa" and hq != hkv:
                        try:
                            gqa_sdpa(q, k, v, True, pmode)
                        except RuntimeError:
                            pmode = "expand (enable_gqa failed for this shape)"
                    if pmode.startswith("expand") and hq != hkv:
                        k = k.repeat_interleave(hq // hkv, dim=1)
                        v = v.repeat_interleave(hq // hkv, dim=1)
                    st = ctx.timer(lambda: gqa_sdpa(q, k, v, True, pmode))
                    flops = 4.0 * b * hq * s * s * d / 2
                    out = dict(flops=flops, tflops=flops / st["median_s"] / 1e12)
                    if pmode != mode:
                        out["gqa_method"] = pmode
                    out.update(st)
                    return out

                ctx.measure(
                    dict(config=label, q_heads=hq, kv_heads=hkv, head_dim=d, batch=b, seq=s), thunk
                )
        if ctx.cuda:
            torch.cuda.empty_cache()


@section("attention_decode", cap_s=45.0, telemetry=True)
def section_attention_decode(ctx):
    plan = ctx.plan
    res = ctx.result
    dev = ctx.dev
    res["gqa_method"] = (
        "fold: q (B,Hq,d) viewed as (B,Hkv,Hq/Hkv,d), non-causal SDPA over the cache"
    )
    res["layout"] = "kv cache (B, Hkv, L, d) contiguous bf16; query length 1"
    cap = plan.decode_kv_cap
    if ctx.cuda:
        free, _total = torch.cuda.mem_get_info()
        cap = min(cap, int(0.4 * free))
    res["kv_bytes_cap"] = cap
    res["notes"] = [
        "flops = 4*B*Hq*L*d; kv_bytes = 2*B*Hkv*L*d*2 (K and V, bf16)",
        "points whose KV cache exceeds kv_bytes_cap are not run",
    ]
    gen = ctx.gen(37)
    for label, hq, hkv, d in plan.attn_cfgs:
        for L in plan.decode_ctx:
            for b in plan.decode_batch:
                kv_bytes = 2 * b * hkv * L * d * 2
                if kv_bytes > cap:
                    continue

                def thunk(b=b, L=L, hq=hq, hkv=hkv, d=d, kv_bytes=kv_bytes):
                    q = torch.randn((b, hq, d), generator=gen, device=dev, dtype=torch.bfloat16)
                    kc = torch.randn(
                        (b, hkv, L, d), generator=gen, device=dev, dtype=torch.bfloat16
                    )
                    vc = torch.randn(
                        (b, hkv, L, d), generator=gen, device=dev, dtype=torch.bfloat16
                    )
                    st = ctx.timer(lambda: decode_sdpa(q, kc, vc))
                    flops = 4.0 * b * hq * L * d
                    out = dict(
                        flops=flops,
                        kv_bytes=kv_bytes,
                        tflops=flops / st["median_s"] / 1e12,
                        kv_bytes_per_s=kv_bytes / st["median_s"],
                    )
                    out.update(st)
                    return out

                ctx.measure(
                    dict(config=label, q_heads=hq, kv_heads=hkv, head_dim=d, batch=b, context=L),
                    thunk,
                )
        if ctx.cuda:
            torch.cuda.empty_cache()


# ---- transformer layer
class DecoderLayer:
    """One Llama-style decoder layer (per-GPU shard) from plain torch ops, bf16."""

    def __init__(self, dev, gen, hidden, heads, kv_heads, head_dim, ffn, max_pos, mode):
        bf = torch.bfloat16
        self.h, self.nq, self.nkv, self.d, self.ffn = hidden, heads, kv_heads, head_dim, ffn
        self.mode = mode

        def w(n, k):
            return torch.randn((n, k), generator=gen, device=dev, dtype=bf).mul_(1.0 / math.sqrt(k))

        self.wqkv = w((heads + 2 * kv_heads) * head_dim, hidden)
        self.wo = w(hidden, heads * head_dim)
        self.wgu = w(2 * ffn, hidden)
        self.wd = w(hidden, ffn)
        self.ln1 = torch.ones(hidden, device=dev, dtype=bf)
        self.ln2 = torch.ones(hidden, device=dev, dtype=bf)
        inv = 1.0 / (
            10000.0 ** (torch.arange(0, head_dim, 2, device=dev, dtype=torch.float32) / head_dim)
        )
        t = torch.arange(max_pos, device=dev, dtype=torch.float32)
        fr = torch.outer(t, inv)
        emb = torch.cat([fr, fr], dim=-1)
        self.cos = emb.cos().to(bf)
        self.sin = emb.sin().to(bf)

    def params(self):
        return sum(x.numel() for x in (self.wqkv, self.wo, self.wgu, self.wd))

    @staticmethod
    def rms(x, w):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)
        return xf.to(x.dtype) * w

    @staticmethod
    def rope(x, cos, sin):
        half = x.shape[-1] // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rot * sin

    def _mlp(self, x):
        h = self.rms(x, self.ln2)
        g, u = F.linear(h, self.wgu).chunk(2, dim=-1)
        return x + F.linear(F.silu(g) * u, self.wd)

    def prefill(self, x):
        b, s, _ = x.shape
        nq, nkv, d = self.nq, self.nkv, self.d
        h = self.rms(x, self.ln1)
        q, k, v = F.linear(h, self.wqkv).split([nq * d, nkv * d, nkv * d], dim=-1)
        q = q.view(b, s, nq, d).transpose(1, 2)
        k = k.view(b, s, nkv, d).transpose(1, 2)
        v = v.view(b, s, nkv, d).transpose(1, 2)
        cos, sin = self.cos[:s], self.sin[:s]
        q = self.rope(q, cos, sin)
        k = self.rope(k, cos, sin)
        a = gqa_sdpa(q, k, v, True, self.mode)
        a = a.transpose(1, 2).reshape(b, s, nq * d)
        x = x + F.linear(a, self.wo)
        return self._mlp(x)

    def decode(self, x, kc, vc, pos):
        """x: (B, 1, hidden); kc/vc: (B, Hkv, pos+1, d) preallocated cache; writes slot pos."""
        b = x.shape[0]
        nq, nkv, d = self.nq, self.nkv, self.d
        h = self.rms(x, self.ln1)
        q, k, v = F.linear(h, self.wqkv).split([nq * d, nkv * d, nkv * d], dim=-1)
        cos, sin = self.cos[pos : pos + 1], self.sin[pos : pos + 1]
        q = self.rope(q.view(b, nq, d), cos, sin)
        k = self.rope(k.view(b, nkv, d), cos, sin)
        kc[:, :, pos].copy_(k)
        vc[:, :, pos].copy_(v.view(b, nkv, d))
        a = decode_sdpa(q, kc, vc).reshape(b, 1, nq * d)
        x = x + F.linear(a, self.wo)
        return self._mlp(x)


def _graph_time(ctx, fn):
    """Captures fn in a CUDA graph and times replay. Returns stats dict."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    torch.cuda.synchronize()
    st = ctx.timer(g.replay)
    del g
    return st


@section("layer", cap_s=60.0, telemetry=True)
def section_layer(ctx):
    plan = ctx.plan
    res = ctx.result
    mode = gqa_mode(ctx.dev)
    res["gqa_method_prefill"] = mode
    res["notes"] = [
        "plain-torch Llama decoder layer: RMSNorm, fused QKV linear, RoPE, SDPA (GQA), O-proj, "
        "RMSNorm, fused gate+up linear, SiLU*up, down linear; bf16; "
        "no tensor-parallel all-reduce is performed",
        "median_s: device time (events, queue pre-filled); launch_bound_median_s: events without "
        "pre-fill (eager back-to-back incl. host launch gaps); graph_median_s: CUDA-graph replay",
        "decode: KV cache preallocated with context+1 slots, new token written at slot=context",
    ]
    gen = ctx.gen(41)
    for model, tp in plan.layer_models:
        if ctx.expired():
            ctx.skip_point()
            continue
        _layer_model(ctx, model, tp, gen, mode)
        if ctx.cuda:
            torch.cuda.empty_cache()


def _layer_build(ctx, model, tp, gen, mode, max_pos):
    """The per-GPU DecoderLayer shard of (model, tp) and its point labels."""
    c = ctx.plan.models[model]
    hq, hkv = c["heads"] // tp, max(c["kv_heads"] // tp, 1)
    ffn = c["ffn"] // tp
    d, hid = c["head_dim"], c["hidden"]
    layer = DecoderLayer(ctx.dev, gen, hid, hq, hkv, d, ffn, max_pos, mode)
    base = {
        "model": model,
        "tp": tp,
        "q_heads": hq,
        "kv_heads": hkv,
        "head_dim": d,
        "hidden": hid,
        "ffn_per_gpu": ffn,
        "weight_bytes": 2 * layer.params(),
    }
    return layer, base


def _layer_model(ctx, model, tp, gen, mode):
    plan = ctx.plan
    dev = ctx.dev
    bf = torch.bfloat16
    max_pos = max([s for _, s in plan.layer_prefill] + [L + 1 for L in plan.layer_decode_ctx])
    layer, base = _layer_build(ctx, model, tp, gen, mode, max_pos)
    hq, hkv, d, hid = layer.nq, layer.nkv, layer.d, layer.h
    nparams = layer.params()

    def prefill_point(b, s):
        x = torch.randn((b, s, hid), generator=gen, device=dev, dtype=bf)
        layer.mode = mode
        with torch.inference_mode():
            if mode == "enable_gqa" and hq != hkv:
                try:
                    layer.prefill(x)
                except RuntimeError:
                    layer.mode = "expand"
            st = ctx.timer(lambda: layer.prefill(x))
        tokens = b * s
        flops = 2.0 * tokens * nparams + 4.0 * b * hq * s * s * d / 2
        out = {"tokens": tokens, "flops": flops, "tflops": flops / st["median_s"] / 1e12}
        if layer.mode != mode:
            out["gqa_method"] = "expand (enable_gqa failed for this shape)"
        out.update(st)
        return out

    def decode_point(b, ctx_len):
        x = torch.randn((b, 1, hid), generator=gen, device=dev, dtype=bf)
        kc = torch.randn((b, hkv, ctx_len + 1, d), generator=gen, device=dev, dtype=bf)
        vc = torch.randn((b, hkv, ctx_len + 1, d), generator=gen, device=dev, dtype=bf)

        def fn():
            return layer.decode(x, kc, vc, ctx_len)

        with torch.inference_mode():
            st = ctx.timer(fn)
            out = dict(st)
            kv_bytes = 2 * b * hkv * (ctx_len + 1) * d * 2
            out.update(
                flops=2.0 * b * nparams + 4.0 * b * hq * (ctx_len + 1) * d,
                kv_bytes=kv_bytes,
                bytes=2 * nparams + kv_bytes,
                bytes_per_s=(2 * nparams + kv_bytes) / st["median_s"],
            )
            if ctx.cuda:
                lb = ctx.timer(fn, prefill_queue=False)
                out["launch_bound_median_s"] = lb["median_s"]
                if b == plan.layer_graph_batch:
                    try:
                        gs = _graph_time(ctx, fn)
                        out["graph_median_s"] = gs["median_s"]
                        out["graph_min_s"] = gs["min_s"]
                        out["graph_p90_s"] = gs["p90_s"]
                        out["launch_overhead_est_s"] = lb["median_s"] - gs["median_s"]
                    except Exception as e:  # noqa: BLE001
                        out["graph_error"] = _short_exc(e)
        return out

    for b, s in plan.layer_prefill:
        ctx.measure(
            dict(base, phase="prefill", batch=b, seq=s), lambda b=b, s=s: prefill_point(b, s)
        )
    for ctx_len in plan.layer_decode_ctx:
        for b in plan.layer_decode_batch:
            ctx.measure(
                dict(base, phase="decode", batch=b, context=ctx_len),
                lambda b=b, L=ctx_len: decode_point(b, L),
            )


# ---- transformer layer, torch.compile'd (Inductor-fused elementwise ops, as vLLM V1 runs it)
def _layer_work(layer, phase, b, n):
    """Work counts of one layer point, as the `layer` section records them.

    n is seq (prefill) or context (decode; the cache holds context+1 slots).
    """
    nparams = layer.params()
    hq, hkv, d = layer.nq, layer.nkv, layer.d
    if phase == "prefill":
        tokens = b * n
        return {"tokens": tokens, "flops": 2.0 * tokens * nparams + 4.0 * b * hq * n * n * d / 2}
    kv_bytes = 2 * b * hkv * (n + 1) * d * 2
    return {
        "tokens": b,
        "flops": 2.0 * b * nparams + 4.0 * b * hq * (n + 1) * d,
        "kv_bytes": kv_bytes,
        "bytes": 2 * nparams + kv_bytes,
    }


def _dynamo_counts():
    """(graphs compiled so far, graph breaks so far) from dynamo's counters, or None."""
    try:
        from torch._dynamo.utils import counters  # noqa: PLC0415

        return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))
    except Exception:  # noqa: BLE001
        return None


def _have_cxx():
    cands = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    return any(c and shutil.which(c) for c in cands)


_DYNAMO_LIMITS = (
    "cache_size_limit",
    "recompile_limit",
    "accumulated_cache_size_limit",
    "accumulated_recompile_limit",
)


# its cap is mostly torch.compile time (~10-20 s per shape on an H100 host)
@section("layer_compiled", cap_s=60.0)
def section_layer_compiled(ctx):
    plan = ctx.plan
    res = ctx.result
    if getattr(torch, "compile", None) is None:
        res["status"] = "error"
        res["error"] = "torch.compile unavailable in this torch"
        return
    if not ctx.cuda and not _have_cxx():
        res["status"] = "skipped"
        res["reason"] = "compile not exercised on cpu: no C++ compiler for inductor"
        return
    mode = gqa_mode(ctx.dev)
    res["gqa_method_prefill"] = mode
    res["compile_options"] = {
        "backend": "inductor",
        "mode": "default",
        "fullgraph": False,
        "dynamic": False,
    }
    res["notes"] = [
        "same DecoderLayer as the layer section, run through torch.compile (Inductor, default "
        "mode, static shapes: one compile per point); weights are bf16 as there",
        "compile_s: wall time of the first compiled call (dynamo trace + inductor + kernel "
        "compile; on-disk inductor caches of earlier runs shorten it)",
        "median_s etc: device time of the compiled layer (events, queue pre-filled); "
        "eager_median_s: the uncompiled layer at the same point, same method; "
        "launch_bound_median_s: compiled, no queue pre-fill",
        "graph_median_s (decode): CUDA-graph replay of the compiled layer (vLLM V1 style)",
        "compiled_graphs / graph_breaks: dynamo counter deltas during the first call",
        "decode: KV cache preallocated with context+1 slots, new token written at slot=context",
    ]
    import torch._dynamo as dynamo  # noqa: PLC0415  (binds only `dynamo`, not `torch`)

    dcfg = dynamo.config
    saved = {}
    for key in _DYNAMO_LIMITS:
        try:
            if hasattr(dcfg, key):
                saved[key] = getattr(dcfg, key)
                setattr(dcfg, key, max(int(saved[key]), 64 if "accumulated" not in key else 512))
        except Exception:  # noqa: BLE001
            saved.pop(key, None)
    n_model_points = len(plan.compiled_prefill) + len(plan.compiled_decode)
    state = {"first": True, "compile_est_s": 0.0}
    gen = ctx.gen(41)
    try:
        for model, tp in plan.layer_models:
            if ctx.expired():
                for _ in range(n_model_points):
                    ctx.skip_point()
                continue
            stop = _compiled_layer_model(ctx, model, tp, gen, mode, state)
            dynamo.reset()
            if ctx.cuda:
                torch.cuda.empty_cache()
            if stop:
                return
    finally:
        for key, val in saved.items():
            try:
                setattr(dcfg, key, val)
            except Exception:  # noqa: BLE001
                pass
        try:
            dynamo.reset()
        except Exception:  # noqa: BLE001
            pass


def _compiled_layer_model(ctx, model, tp, gen, mode, state):
    """Measures one (model, tp); returns True when the section must stop (first point failed)."""
    plan = ctx.plan
    res = ctx.result
    dev = ctx.dev
    bf = torch.bfloat16
    max_pos = max([s for _, s in plan.compiled_prefill] + [L + 1 for _, L in plan.compiled_decode])
    layer, base = _layer_build(ctx, model, tp, gen, mode, max_pos)
    hq, hkv, d, hid = layer.nq, layer.nkv, layer.d, layer.h
    try:
        cprefill = torch.compile(layer.prefill, fullgraph=False, dynamic=False)
        cdecode = torch.compile(layer.decode, fullgraph=False, dynamic=False)
    except Exception as e:  # noqa: BLE001
        res["status"] = "error"
        res["error"] = f"torch.compile failed: {_short_exc(e)}"
        return True

    def thunk(phase, b, n):
        with torch.inference_mode():
            if phase == "prefill":
                x = torch.randn((b, n, hid), generator=gen, device=dev, dtype=bf)
                layer.mode = mode
                if mode == "enable_gqa" and hq != hkv:
                    try:
                        layer.prefill(x)
                    except RuntimeError:
                        layer.mode = "expand"

                def eager():
                    return layer.prefill(x)

                def compiled():
                    return cprefill(x)

            else:
                x = torch.randn((b, 1, hid), generator=gen, device=dev, dtype=bf)
                kc = torch.randn((b, hkv, n + 1, d), generator=gen, device=dev, dtype=bf)
                vc = torch.randn((b, hkv, n + 1, d), generator=gen, device=dev, dtype=bf)

                def eager():
                    return layer.decode(x, kc, vc, n)

                def compiled():
                    return cdecode(x, kc, vc, n)

            c0 = _dynamo_counts()
            ctx.timer.sync()
            t0 = time.perf_counter()
            try:
                compiled()
                ctx.timer.sync()
            except Exception as e:  # noqa: BLE001
                raise RuntimeError(f"torch.compile failed: {_short_exc(e)}") from e
            compile_s = time.perf_counter() - t0
            c1 = _dynamo_counts()
            st = ctx.timer(compiled)
            out = {"compile_s": compile_s}
            if c0 is not None and c1 is not None:
                out["compiled_graphs"] = c1[0] - c0[0]
                out["graph_breaks"] = c1[1] - c0[1]
            if layer.mode != mode:
                out["gqa_method"] = "expand (enable_gqa failed for this shape)"
            out.update(_layer_work(layer, phase, b, n))
            if phase == "prefill":
                out["tflops"] = out["flops"] / st["median_s"] / 1e12
            else:
                out["bytes_per_s"] = out["bytes"] / st["median_s"]
            out.update(st)
            ev = ctx.timer(eager)
            out["eager_median_s"] = ev["median_s"]
            out["eager_min_s"] = ev["min_s"]
            out["eager_p90_s"] = ev["p90_s"]
            out["speedup_vs_eager"] = ev["median_s"] / st["median_s"]
            if ctx.cuda:
                lb = ctx.timer(compiled, prefill_queue=False)
                out["launch_bound_median_s"] = lb["median_s"]
                if phase == "decode":
                    try:
                        gs = _graph_time(ctx, compiled)
                        out["graph_median_s"] = gs["median_s"]
                        out["graph_min_s"] = gs["min_s"]
                        out["graph_p90_s"] = gs["p90_s"]
                    except Exception as e:  # noqa: BLE001
                        out["graph_error"] = _short_exc(e)
        return out

    points = [("prefill", b, s) for b, s in plan.compiled_prefill]
    points += [("decode", b, L) for b, L in plan.compiled_decode]
    for phase, b, n in points:
        labels = dict(base, phase=phase, batch=b)
        labels["seq" if phase == "prefill" else "context"] = n
        need = state["compile_est_s"] + (1.0 if ctx.cuda else 0.0)
        if not ctx.measure(labels, lambda p=phase, b=b, n=n: thunk(p, b, n), need_s=need):
            continue
        pt = res["points"][-1]
        if state["first"]:
            state["first"] = False
            if "error" in pt:
                res["status"] = "error"
                res["error"] = f"first point failed: {pt['error']}"
                return True
        if "compile_s" in pt:
            state["compile_est_s"] = float(pt["compile_s"])
        log(
            f"  layer_compiled {model} tp{tp} {phase} b={b} n={n}: "
            + (
                f"compile {pt['compile_s']:.1f}s, {pt['median_s'] * 1e3:.3f} ms "
                f"(eager {pt['eager_median_s'] * 1e3:.3f} ms)"
                if "compile_s" in pt
                else f"error {pt.get('error')}"
            )
        )
    return False


# ---- all-reduce
@section("allreduce", cap_s=20.0)
def section_allreduce(ctx):
    res = ctx.result
    if not ctx.cuda:
        res["status"] = "skipped"
        res["reason"] = "cpu device"
        return
    n = torch.cuda.device_count()
    if n < 2:
        res["status"] = "skipped"
        res["reason"] = "skipped: 1 device"
        return
    import torch.cuda.nccl as nccl  # noqa: PLC0415

    res["method"] = f"torch.cuda.nccl.all_reduce, single process, {n} devices, bf16, sum"
    res["notes"] = ["bus_bytes_per_s = size * 2*(n-1)/n / time (ring convention)"]
    for size in ctx.plan.allreduce_sizes:

        def thunk(size=size):
            ts = [torch.ones(size // 2, device=f"cuda:{i}", dtype=torch.bfloat16) for i in range(n)]

            def sync_all():
                for i in range(n):
                    torch.cuda.synchronize(i)

            for _ in range(3):
                nccl.all_reduce(ts)
            sync_all()
            times = []
            for _ in range(ctx.timer.repeats):
                t0 = time.perf_counter()
                nccl.all_reduce(ts)
                sync_all()
                times.append(time.perf_counter() - t0)
            st = stats(times)
            st["bus_bytes_per_s"] = size * 2 * (n - 1) / n / st["median_s"]
            return st

        ctx.measure(dict(size_bytes=size, devices=n), thunk)


# ---- launch overhead
@section("overhead", cap_s=15.0)
def section_overhead(ctx):
    res = ctx.result
    dev = ctx.dev
    n = ctx.plan.overhead_n
    x = torch.zeros(1, device=dev, dtype=torch.float32)
    y = torch.zeros(1, device=dev, dtype=torch.float32)
    res["notes"] = [
        "tiny_add: torch.add on a 1-element tensor",
        "seq80: 80 in-place small elementwise ops on a (64, 1024) bf16 tensor; "
        "per_kernel_overhead_est_s = (eager - graph) / 80",
    ]

    def tiny():
        torch.add(x, 1.0, out=y)

    def thunk_tiny():
        out = {}
        ctx.timer.sync()
        for _ in range(20):
            tiny()
        ctx.timer.sync()
        t0 = time.perf_counter()
        for _ in range(n):
            tiny()
        t1 = time.perf_counter()
        ctx.timer.sync()
        t2 = time.perf_counter()
        out["host_enqueue_per_launch_s"] = (t1 - t0) / n
        out["wall_per_launch_s"] = (t2 - t0) / n
        # single launch + synchronize round trip
        rt = []
        for _ in range(min(n, 200)):
            t = time.perf_counter()
            tiny()
            ctx.timer.sync()
            rt.append(time.perf_counter() - t)
        out["roundtrip"] = stats(rt)
        if ctx.cuda:
            # device time per tiny kernel when the queue is full
            st = ctx.timer(lambda: [tiny() for _ in range(100)], repeats=10)
            out["device_per_kernel_s"] = st["median_s"] / 100
        return out

    ctx.measure(dict(op="tiny_add", launches=n), thunk_tiny)

    t = torch.randn((64, 1024), generator=ctx.gen(53), device=dev, dtype=torch.bfloat16)

    def seq80():
        for _ in range(40):
            t.mul_(1.0001)
            t.add_(0.0001)

    def thunk_seq():
        out = {}
        eager = ctx.timer(seq80, prefill_queue=False)
        out["eager_median_s"] = eager["median_s"]
        out["eager_p90_s"] = eager["p90_s"]
        if ctx.cuda:
            dev_t = ctx.timer(seq80)
            out["device_median_s"] = dev_t["median_s"]
            try:
                gs = _graph_time(ctx, seq80)
                out["graph_median_s"] = gs["median_s"]
                out["per_kernel_overhead_est_s"] = (eager["median_s"] - gs["median_s"]) / 80
            except Exception as e:  # noqa: BLE001
                out["graph_error"] = _short_exc(e)
        out["eager_per_kernel_s"] = eager["median_s"] / 80
        return out

    ctx.measure(dict(op="seq80"), thunk_seq)


# --------------------------------------------------------------------------- runner
class Runner:
    def __init__(self, args, argv):
        self.args = args
        self.argv = argv
        self.seed = args.seed
        self.budget_s = float(args.budget_s)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.budget_s
        self.dev = args.device
        self.cuda = self.dev.startswith("cuda")
        quick = args.quick or not self.cuda
        self.plan = Plan(quick)
        warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
        repeats = args.repeats if args.repeats is not None else (3 if quick else 10)
        self.timer = Timer(
            self.dev, warmup, repeats, max_repeats=5 * repeats if not quick else repeats
        )
        self.out_path = None
        self._last_write = 0.0
        self.doc = {
            "kind": KIND,
            "schema_version": SCHEMA_VERSION,
            "provenance": {},
            "sections": {name: {"status": "pending"} for name in REPORT_ORDER},
        }
        self.l2_bytes = 50 * MIB
        self.telemetry = NullTelemetry()

    def write(self):
        if not self.out_path:
            return
        import yaml  # noqa: PLC0415

        self.doc["provenance"]["elapsed_s"] = round(time.monotonic() - self.t0, 3)
        tmp = f"{self.out_path}.tmp"
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        with open(tmp, "w") as f:
            yaml.dump(
                _clean(self.doc),
                f,
                Dumper=dumper,
                sort_keys=False,
                default_flow_style=False,
                width=120,
            )
        os.replace(tmp, self.out_path)
        self._last_write = time.monotonic()

    def checkpoint(self):
        if time.monotonic() - self._last_write > 10.0:
            self.write()

    def section_deadline(self, name, remaining_order):
        scale = self.budget_s / 400.0
        now = time.monotonic()
        left = self.deadline - now
        later = sum(SECTIONS[n].cap_s * scale for n in remaining_order)
        allow = max(SECTIONS[name].cap_s * scale, left - later)
        return min(self.deadline, now + allow)

    def run_section(self, name, remaining_order):
        res = {"status": "running", "points": []}
        self.doc["sections"][name] = res
        t_start = time.monotonic()
        if self.deadline - t_start < (5.0 if not self.plan.quick else 0.5):
            self.doc["sections"][name] = {
                "status": "skipped",
                "reason": "wall-clock budget exhausted",
                "points": [],
            }
            log(f"section {name}: skipped (budget)")
            return
        ctx = SectionCtx(self, name, res, self.section_deadline(name, remaining_order))
        fn = SECTIONS[name].run
        log(
            f"section {name}: start (section budget {ctx.time_left():.0f}s, total left "
            f"{self.deadline - t_start:.0f}s)"
        )
        tel = (
            self.telemetry
            if (SECTIONS[name].telemetry and isinstance(self.telemetry, Telemetry))
            else None
        )
        if tel is not None:
            tel.start(name)
        try:
            if self.cuda:
                torch.cuda.reset_peak_memory_stats()
            fn(ctx)
            if res.get("status") == "running":
                res["status"] = "ok"
        except Exception as e:  # noqa: BLE001
            res["status"] = "error"
            res["error"] = _short_exc(e)
            res["traceback"] = traceback.format_exc(limit=8)[-3000:]
            log(f"section {name}: ERROR {res['error']}")
            if self.cuda:
                try:
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                except Exception:  # noqa: BLE001
                    pass
        finally:
            if tel is not None:
                tel.stop()
                res["telemetry"] = tel.summary()
            res["elapsed_s"] = round(time.monotonic() - t_start, 3)
            if self.cuda:
                try:
                    res["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated())
                except Exception:  # noqa: BLE001
                    pass
            # keep status/error first for readability
            order = [
                "status",
                "error",
                "reason",
                "elapsed_s",
                "truncated",
                "skipped_points",
                "n_point_errors",
            ]
            reordered = {k: res[k] for k in order if k in res}
            reordered.update({k: v for k, v in res.items() if k not in reordered})
            self.doc["sections"][name] = reordered
            self.write()
        log(
            f"section {name}: {reordered['status']} in {reordered['elapsed_s']:.1f}s, "
            f"{len(reordered.get('points', []))} points"
            + (
                f", {reordered.get('skipped_points')} skipped (budget)"
                if reordered.get("truncated")
                else ""
            )
        )


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m sim.calibrate.run", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", help="output YAML file")
    p.add_argument("--out-dir", help="output directory; file is <card-slug>-measured.yaml")
    p.add_argument(
        "--device", default=None, help="cuda | cuda:N | cpu (default: cuda if available)"
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny shapes (smoke test); implied by --device cpu"
    )
    p.add_argument("--budget-s", type=float, default=400.0, help="wall-clock budget in seconds")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sections", default=None, help=f"comma list to run (default all): {','.join(RUN_ORDER)}"
    )
    a = p.parse_args(argv)
    if not a.out and not a.out_dir:
        p.error("one of --out or --out-dir is required")
    return a


def main(argv=None):
    global torch, F
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    import torch as _torch  # noqa: PLC0415
    import torch.nn.functional as _F  # noqa: PLC0415

    torch, F = _torch, _F
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
            return 2
        idx = torch.device(args.device).index
        if idx is not None:
            torch.cuda.set_device(idx)
        args.device = f"cuda:{torch.cuda.current_device()}"

    runner = Runner(args, argv)
    if runner.cuda:
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        runner.l2_bytes = int(getattr(props, "L2_cache_size", 0) or 50 * MIB)
        dev_name = props.name
    else:
        dev_name = "cpu"
    if args.out:
        runner.out_path = args.out
    else:
        os.makedirs(args.out_dir, exist_ok=True)
        runner.out_path = os.path.join(args.out_dir, f"{slugify(dev_name)}-measured.yaml")
    d = os.path.dirname(os.path.abspath(runner.out_path))
    os.makedirs(d, exist_ok=True)
    log(
        f"device {args.device} ({dev_name}), quick={runner.plan.quick}, "
        f"budget {runner.budget_s:.0f}s, out {runner.out_path}"
    )

    # SIGTERM (e.g. from `timeout`): write what we have, then exit.
    old_handler = None
    if threading.current_thread() is threading.main_thread():

        def _on_term(signum, frame):  # noqa: ARG001
            log("SIGTERM: writing partial results")
            for sec in runner.doc["sections"].values():
                if sec.get("status") == "running":
                    sec["status"] = "error"
                    sec["error"] = "interrupted (SIGTERM)"
                elif sec.get("status") == "pending":
                    sec["status"] = "skipped"
                    sec["reason"] = "interrupted (SIGTERM) before this section ran"
            try:
                runner.write()
            finally:
                os._exit(143)

        try:
            old_handler = signal.signal(signal.SIGTERM, _on_term)
        except Exception:  # noqa: BLE001
            old_handler = None

    try:
        try:
            runner.doc["provenance"] = section_provenance(runner)
        except Exception as e:  # noqa: BLE001
            runner.doc["provenance"] = {
                "error": _short_exc(e),
                "traceback": traceback.format_exc(limit=8),
            }
        runner.doc["provenance"].update(_sdpa_setup(runner))
        if runner.cuda:
            runner.telemetry = Telemetry(index=torch.cuda.current_device())
            runner.doc["provenance"]["telemetry_source"] = runner.telemetry.source
            if runner.telemetry.available():
                try:
                    torch.cuda.synchronize()
                    runner.telemetry.start("idle")
                    time.sleep(runner.plan.idle_s)
                    runner.telemetry.stop()
                    runner.doc["provenance"]["idle_telemetry"] = runner.telemetry.summary_for(
                        "idle"
                    )
                except Exception as e:  # noqa: BLE001
                    runner.doc["provenance"]["idle_telemetry"] = {"error": _short_exc(e)}
        runner.write()

        wanted = (
            RUN_ORDER
            if not args.sections
            else [s.strip() for s in args.sections.split(",") if s.strip()]
        )
        unknown = [s for s in wanted if s not in RUN_ORDER]
        if unknown:
            log(f"unknown sections ignored: {unknown}")
        order = [s for s in RUN_ORDER if s in wanted]
        for i, name in enumerate(order):
            runner.run_section(name, order[i + 1 :])
        for name, sec in runner.doc["sections"].items():
            if sec.get("status") == "pending":
                sec["status"] = "skipped"
                sec["reason"] = "not selected (--sections)" if name not in order else "not run"
                sec.setdefault("points", [])
        if runner.cuda:
            runner.doc["provenance"]["nvidia_smi_end"] = nvidia_smi_query(
                index=torch.cuda.current_device()
            )
        runner.doc["provenance"]["finished"] = True
        runner.write()
        log(f"done in {time.monotonic() - runner.t0:.1f}s -> {runner.out_path}")
    finally:
        if old_handler is not None:
            try:
                signal.signal(signal.SIGTERM, old_handler)
            except Exception:  # noqa: BLE001
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
