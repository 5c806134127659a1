"""Routers: which replica of a pool an arriving request goes to. A router is a class with a
`pick` method, registered by name with `@register_router("name")`; `ServeSetup.router` (and
`fleetsim serve --router`) names one. Adding a router is one class and one registration line.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Router(Protocol):
    def pick(self, first: int, count: int, outstanding: list[int], state: dict,
             rng: np.random.Generator) -> int:
        """A replica in first..first+count-1. `outstanding`: tokens each replica still owes;
        `state`: the run's shared counters (a router may keep its own key there); `rng`: the
        run's routing stream."""


ROUTERS: dict[str, Router] = {}
"""The registered routers by name, in registration order."""


def register_router(name: str):
    """Class decorator: register an instance of the class as router `name`."""
    def add(cls):
        ROUTERS[name] = cls()
        return cls
    return add


def _least(first: int, count: int, outstanding: list[int]) -> int:
    return min(range(first, first + count), key=lambda j: (outstanding[j], j))


@register_router("round_robin")
class RoundRobin:
    """Each replica in turn."""

    def pick(self, first, count, outstanding, state, rng) -> int:
        i = first + state["rr"] % count
        state["rr"] += 1
        return i


@register_router("least_outstanding")
class LeastOutstanding:
    """The replica owing the fewest tokens (ties: lowest index)."""

    def pick(self, first, count, outstanding, state, rng) -> int:
        return _least(first, count, outstanding)


@register_router("power_of_two")
class PowerOfTwo:
    """Two replicas drawn at random, the one owing fewer tokens (ties: lowest index)."""

    def pick(self, first, count, outstanding, state, rng) -> int:
        if count < 2:
            return _least(first, count, outstanding)
        a, b = (first + int(x) for x in rng.choice(count, size=2, replace=False))
        return a if (outstanding[a], a) <= (outstanding[b], b) else b
