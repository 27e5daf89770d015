"""Waiting until an absolute simulated time."""

from __future__ import annotations

import heapq

import simpy


def timeout_at(env: simpy.Environment, t: float) -> simpy.events.Event:
    """An event that fires at absolute time ``t`` (>= now), so that a run of steps (or of adapter transfers) ends at
    exactly the float the one-by-one sum of their times gives (``env.timeout(t - now)`` could round differently).
    Uses SimPy's event queue directly (``Environment.schedule`` adds a delay to ``now``; stable since SimPy 3)."""
    ev = simpy.events.Event(env)
    ev._ok = True
    ev._value = None
    heapq.heappush(env._queue, (t, simpy.events.NORMAL, next(env._eid), ev))
    return ev
