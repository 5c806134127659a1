"""Shared fixtures: one library per session, hypothesis profiles (HYPOTHESIS_PROFILE=ci in CI)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow], database=None)
settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def lib():
    from sim.config.library import Library

    return Library.default()


@pytest.fixture(scope="session")
def hw_cache(lib):
    from sim.perf.hardware import Hardware

    cache: dict[str, Hardware] = {}

    def get(card_id: str) -> Hardware:
        if card_id not in cache:
            cache[card_id] = Hardware.load(card_id, lib)
        return cache[card_id]

    return get


@pytest.fixture(scope="session")
def run_cache():
    """One in-process `RunCache` for the tests that rerun the same small scenarios (keys name
    every input, so sharing it changes no result; the disk cache lies beneath it)."""
    from sim.stages import RunCache

    return RunCache()
