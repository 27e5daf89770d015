"""Policies behind registries: ``SCHEDULERS``, ``EVICTIONS``, ``ADAPTER_MEMORIES`` and ``ROUTERS``."""

from lorasim.policies import eviction, memory, routing, scheduling  # noqa: F401  (registers the built-ins)
from lorasim.policies.base import (ADAPTER_MEMORIES, EVICTIONS, ROUTERS, SCHEDULERS, AdapterMemory, EvictionPolicy,
                                   Router, Scheduler)

__all__ = ["ADAPTER_MEMORIES", "EVICTIONS", "ROUTERS", "SCHEDULERS", "AdapterMemory", "EvictionPolicy", "Router",
           "Scheduler"]
