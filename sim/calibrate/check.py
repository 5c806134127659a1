"""Compare the performance model's layer times with measured transformer-layer timings.

For every point of the `layer` (eager PyTorch) and `layer_compiled` (torch.compile, fused as a
production engine does) sections of a raw measurement, predict one decoder layer's prefill or
decode time with `sim.perf.step` (GEMMs + attention + elementwise, no all-reduce, no per-step
overhead: the measured layer has neither) and report the relative error per point.
Measured layers run for milliseconds, so burst clocks apply: the sustained-clock factor is
set to 1 for the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.config.library import Library
from sim.perf.hardware import Factor, Hardware
from sim.perf.memory import Layout
from sim.perf.precision import Precision
from sim.perf.step import StepBatch, step_time

RAW_MODEL_IDS = {"llama-70b": "llama-2-70b", "llama-3.1-8b": "llama-3.1-8b"}


@dataclass(frozen=True)
class CheckPoint:
    section: str
    model: str
    tp: int
    phase: str
    batch: int
    length: int
    measured_s: float
    predicted_s: float

    @property
    def error(self) -> float:
        return self.predicted_s / self.measured_s - 1


def check(raw: dict, card_id: str, library: Library | None = None,
          overrides: dict[str, Factor] | None = None) -> list[CheckPoint]:
    lib = library or Library.default()
    hw = Hardware.load(card_id, lib)
    burst = Hardware(hw.card_id, hw.card, {**hw.factors, "gemm_sustained": Factor(
        1.0, "measured", "short microbenchmark: burst clocks"), **(overrides or {})})
    prec = Precision.preset("bf16")
    out: list[CheckPoint] = []
    for section in ("layer", "layer_compiled"):
        for p in raw.get("sections", {}).get(section, {}).get("points", []):
            mid = RAW_MODEL_IDS.get(p.get("model", ""))
            if mid is None or not p.get("median_s"):
                continue
            model = lib.model(mid)
            tp = int(p.get("tp", 1))
            if p.get("phase") == "prefill":
                batch = StepBatch.prefill(p["batch"], p["seq"])
                length = p["seq"]
            else:
                batch = StepBatch.decode(p["batch"], p["context"] + 1)
                length = p["context"]
            st = step_time(model, burst, Layout(tp=tp), prec, batch)
            layers = model.architecture.num_layers
            per_layer = (st.parts["gemm"] + st.parts["attention"] + st.parts["elementwise"]
                         + st.parts["moe"] + st.parts["layer_fixed"]) / layers
            out.append(CheckPoint(section, mid, tp, p["phase"], p["batch"], length,
                                  p["median_s"], per_layer))
    return out
