"""Tests for the calibration microbenchmark runner (CPU, --quick shapes)."""

import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

if os.environ.get("CI"):  # CI installs the `calibrate` extra: the runner must really be exercised
    import torch  # noqa: F401
else:
    torch = pytest.importorskip("torch")
yaml = pytest.importorskip("yaml")

from sim.calibrate import run as calib  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SECTIONS = [
    "gemm",
    "memory_bandwidth",
    "attention_prefill",
    "attention_decode",
    "layer",
    "layer_compiled",
    "allreduce",
    "overhead",
]


@pytest.fixture(scope="module")
def quick_doc(tmp_path_factory):
    out = tmp_path_factory.mktemp("calib") / "cal.yaml"
    rc = calib.main(["--device", "cpu", "--quick", "--out", str(out)])
    assert rc == 0
    return yaml.safe_load(out.read_text())


def test_top_level_and_provenance(quick_doc):
    d = quick_doc
    assert d["kind"] == "calibration-measurement"
    assert d["schema_version"] == 1
    assert list(d["sections"]) == SECTIONS
    p = d["provenance"]
    for key in (
        "date_utc",
        "command_line",
        "python_version",
        "torch_version",
        "device",
        "warmup",
        "repeats",
    ):
        assert key in p, key
    assert p["device"] == "cpu" and p["quick"] is True and p["finished"] is True


def test_sections_have_points(quick_doc):
    s = quick_doc["sections"]
    for name in (
        "gemm",
        "memory_bandwidth",
        "attention_prefill",
        "attention_decode",
        "layer",
        "overhead",
    ):
        assert s[name]["status"] == "ok", (name, s[name].get("error"))
        assert s[name]["points"], name
        assert not [p for p in s[name]["points"] if "error" in p], name
    assert s["allreduce"]["status"] == "skipped"


def test_point_contents(quick_doc):
    s = quick_doc["sections"]
    gemm = [p for p in s["gemm"]["points"] if p["shape"] != "sustained"]
    assert {p["shape"] for p in gemm} == {"square", "llm"}
    for p in gemm:
        assert p["tflops"] > 0 and p["median_s"] > 0 and p["bytes_per_s"] > 0
        assert p["min_s"] <= p["p10_s"] <= p["median_s"] <= p["p90_s"] <= p["max_s"]
        assert p["flops"] == pytest.approx(2.0 * p["M"] * p["N"] * p["K"])
    llm = [p for p in gemm if p["shape"] == "llm" and p["dtype"] == "bf16"]
    assert {p["op"] for p in llm} == {"qkv", "o_proj", "gate_up", "down"}
    assert {p["tp"] for p in llm} == {1, 2}
    # tiny model: hidden 512, 4 q heads, 2 kv heads, head_dim 128, ffn 1024
    qkv_tp2 = next(p for p in llm if p["op"] == "qkv" and p["tp"] == 2)
    assert (qkv_tp2["N"], qkv_tp2["K"]) == ((2 + 2 * 1) * 128, 512)
    sustained = [p for p in s["gemm"]["points"] if p["shape"] == "sustained"]
    assert sustained and sustained[0]["tflops_median"] > 0

    mem = {(p["kind"], p["op"]): p for p in s["memory_bandwidth"]["points"] if p["kind"] == "large"}
    size = mem[("large", "copy")]["size_bytes"]
    assert mem[("large", "copy")]["bytes_moved"] == 2 * size
    assert mem[("large", "triad")]["bytes_moved"] == 3 * size
    assert mem[("large", "read")]["bytes_moved"] == size
    assert all(p["bytes_per_s"] > 0 for p in mem.values())

    for p in s["attention_prefill"]["points"]:
        assert p["flops"] == pytest.approx(
            4.0 * p["batch"] * p["q_heads"] * p["seq"] ** 2 * p["head_dim"] / 2
        )
        assert p["tflops"] > 0
    for p in s["attention_decode"]["points"]:
        assert p["kv_bytes"] == 2 * p["batch"] * p["kv_heads"] * p["context"] * p["head_dim"] * 2
        assert p["kv_bytes_per_s"] > 0

    phases = {p["phase"] for p in s["layer"]["points"]}
    assert phases == {"prefill", "decode"}
    assert all(p["median_s"] > 0 for p in s["layer"]["points"])
    assert {p["op"] for p in s["overhead"]["points"]} == {"tiny_add", "seq80"}


def test_layer_compiled_section(quick_doc):
    """torch.compile'd layer: exercised on cpu when a C++ compiler exists, else skipped."""
    sec = quick_doc["sections"]["layer_compiled"]
    assert sec["status"] in ("ok", "skipped"), sec.get("error")
    if sec["status"] == "skipped":
        assert "compile not exercised on cpu" in sec["reason"]
        return
    pts = sec["points"]
    assert [p["phase"] for p in pts] == ["prefill", "decode"]  # one of each in --quick
    assert not [p for p in pts if "error" in p]
    layer = {
        (p["phase"], p["batch"], p.get("seq", p.get("context"))): p
        for p in quick_doc["sections"]["layer"]["points"]
    }
    for p in pts:
        assert p["compile_s"] > 0 and p["median_s"] > 0 and p["eager_median_s"] > 0
        assert p["min_s"] <= p["median_s"] <= p["max_s"]
        assert p["speedup_vs_eager"] == pytest.approx(p["eager_median_s"] / p["median_s"])
        # same work counts as the eager layer section at the same point (1:1 comparison)
        ref = layer[(p["phase"], p["batch"], p.get("seq", p.get("context")))]
        for key in ("flops", "weight_bytes", "kv_bytes", "bytes", "q_heads", "kv_heads"):
            assert p.get(key) == ref.get(key), key
    pre, dec = pts
    assert pre["tokens"] == pre["batch"] * pre["seq"] and pre["tflops"] > 0
    assert dec["tokens"] == dec["batch"] and dec["bytes_per_s"] > 0


def _fake_compile(fail_on):
    """Stands in for torch.compile: the wrapped fn raises when its name is in fail_on."""

    def compile_(fn, **kw):  # noqa: ARG001
        def wrapped(*a, **k):
            if fn.__name__ in fail_on:
                raise RuntimeError("synthetic: no triton")
            return fn(*a, **k)

        return wrapped

    return compile_


def test_layer_compiled_first_point_failure_stops_section(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "compile", _fake_compile({"prefill", "decode"}))
    out = tmp_path / "cal.yaml"
    args = ["--device", "cpu", "--quick", "--sections", "layer_compiled", "--out", str(out)]
    assert calib.main(args) == 0
    sec = yaml.safe_load(out.read_text())["sections"]["layer_compiled"]
    assert sec["status"] == "error"
    assert "first point failed" in sec["error"] and "no triton" in sec["error"]
    assert len(sec["points"]) == 1 and "error" in sec["points"][0]


def test_layer_compiled_later_point_failure_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "compile", _fake_compile({"decode"}))
    out = tmp_path / "cal.yaml"
    args = ["--device", "cpu", "--quick", "--sections", "layer_compiled", "--out", str(out)]
    assert calib.main(args) == 0
    sec = yaml.safe_load(out.read_text())["sections"]["layer_compiled"]
    assert sec["status"] == "ok" and sec["n_point_errors"] == 1
    pre, dec = sec["points"]
    assert pre["phase"] == "prefill" and pre["median_s"] > 0 and "compile_s" in pre
    assert dec["phase"] == "decode" and "torch.compile failed" in dec["error"]


def test_decode_attention_fold_matches_reference():
    g = torch.Generator().manual_seed(0)
    b, hq, hkv, L, d = 2, 8, 2, 33, 16
    q = torch.randn(b, hq, d, generator=g)
    k = torch.randn(b, hkv, L, d, generator=g)
    v = torch.randn(b, hkv, L, d, generator=g)
    calib.F = torch.nn.functional
    got = calib.decode_sdpa(q, k, v)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.unsqueeze(2), k.repeat_interleave(hq // hkv, 1), v.repeat_interleave(hq // hkv, 1)
    ).squeeze(2)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_failing_section_is_recorded(tmp_path, monkeypatch):
    def boom(ctx):
        ctx.result["points"].append({"partial": 1})
        raise RuntimeError("synthetic failure")

    monkeypatch.setattr(calib.SECTIONS["gemm"], "run", boom)
    out = tmp_path / "cal.yaml"
    rc = calib.main(
        ["--device", "cpu", "--quick", "--sections", "gemm,overhead", "--out", str(out)]
    )
    assert rc == 0
    d = yaml.safe_load(out.read_text())
    g = d["sections"]["gemm"]
    assert g["status"] == "error"
    assert "synthetic failure" in g["error"]
    assert g["points"] == [{"partial": 1}]  # partial data kept
    assert d["sections"]["overhead"]["status"] == "ok"
    assert d["sections"]["layer"]["status"] == "skipped"


def test_budget_exhausted_skips_sections(tmp_path):
    out = tmp_path / "cal.yaml"
    assert calib.main(["--device", "cpu", "--quick", "--budget-s", "0", "--out", str(out)]) == 0
    d = yaml.safe_load(out.read_text())
    assert d["provenance"]["torch_version"]
    assert all(sec["status"] == "skipped" for sec in d["sections"].values())


def test_out_dir_and_module_entry_point(tmp_path):
    """`python -m sim.calibrate.run --out-dir` from the repo root writes <slug>-measured.yaml."""
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "sim.calibrate.run",
            "--device",
            "cpu",
            "--quick",
            "--sections",
            "overhead",
            "--out-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    d = yaml.safe_load((tmp_path / "cpu-measured.yaml").read_text())
    assert d["sections"]["overhead"]["status"] == "ok"
    assert d["sections"]["gemm"]["status"] == "skipped"


def test_slugify():
    assert calib.slugify("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"
    assert calib.slugify("cpu") == "cpu"


def test_nvidia_smi_parsing_with_fake_binary(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "clocks.current.sm [MHz], power.draw [W], temperature.gpu"\n'
        'echo "1980 MHz, 312.5 W, 41"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    q = calib.nvidia_smi_query(["clocks.sm", "power.draw", "temperature.gpu"])
    assert q == {
        "clocks.current.sm [MHz]": "1980 MHz",
        "power.draw [W]": "312.5 W",
        "temperature.gpu": "41",
    }
    monkeypatch.setitem(sys.modules, "pynvml", None)  # force the nvidia-smi fallback
    tel = calib.Telemetry(period_s=0.01)
    assert tel.source == "nvidia-smi"
    tel.start("phase")
    time.sleep(0.3)
    tel.stop()
    s = tel.summary_for("phase")
    assert s["n"] >= 1 and s["power_w_median"] == 312.5 and s["sm_clock_mhz_max"] == 1980.0


def test_telemetry_with_stub_pynvml(monkeypatch):
    stub = types.SimpleNamespace(
        NVML_CLOCK_SM=1,
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: ("h", i),
        nvmlDeviceGetPowerUsage=lambda h: 650_000,  # mW
        nvmlDeviceGetClockInfo=lambda h, kind: 1755,
        nvmlDeviceGetTemperature=lambda h, kind: 60,
    )
    monkeypatch.setitem(sys.modules, "pynvml", stub)
    tel = calib.Telemetry(period_s=0.01)
    assert tel.source == "pynvml"
    tel.start("gemm")
    time.sleep(0.1)
    tel.label = "sustained"
    time.sleep(0.1)
    tel.stop()
    summ = tel.summary()
    assert set(summ["by_phase"]) == {"gemm", "sustained"}
    assert summ["by_phase"]["sustained"]["power_w_max"] == 650.0
    assert summ["by_phase"]["gemm"]["sm_clock_mhz_median"] == 1755.0
