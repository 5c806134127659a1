"""Strategy registries: each new router, scheduling policy, distribution kind or calibration
section is one class or function and one registration, and the names users give come from the
registries."""

from __future__ import annotations


def test_every_calibration_section_is_registered_once_and_ordered():
    """A section is one decorated function: the run and report orders name exactly the
    registered sections, and each registered function is the module's `section_<name>`
    (importing the runner needs no torch)."""
    from sim.calibrate import run as calib

    assert sorted(calib.RUN_ORDER) == sorted(calib.REPORT_ORDER) == sorted(calib.SECTIONS)
    for name, sec in calib.SECTIONS.items():
        assert sec.run is getattr(calib, f"section_{name}") and sec.cap_s > 0
    assert {n for n, s in calib.SECTIONS.items() if s.telemetry} == {
        "memory_bandwidth", "gemm", "layer", "attention_decode", "attention_prefill"}


def test_routers_policies_and_distribution_kinds_come_from_their_registries():
    from sim.experiments.draws import PPF
    from sim.serving.engine import SCHEDULING_POLICIES, EngineConfig
    from sim.serving.routers import ROUTERS
    from sim.serving.traffic import SYNTHETIC_KINDS, TRAFFIC_KINDS, kinds_text

    assert list(ROUTERS) == ["round_robin", "least_outstanding", "power_of_two"]
    assert list(SCHEDULING_POLICIES) == ["decode_first", "prefill_first"]
    assert set(PPF) == {"uniform", "triangular", "normal", "lognormal", "choice"}
    assert kinds_text(list(TRAFFIC_KINDS)) == "poisson, gamma or trace"  # `capacity --traffic`
    assert kinds_text(SYNTHETIC_KINDS) == "poisson or gamma"  # `serve --traffic`
    try:
        EngineConfig(scheduling_policy="fifo")
    except ValueError as exc:
        assert "decode_first or prefill_first" in str(exc)
    else:
        raise AssertionError("an unknown policy was accepted")
