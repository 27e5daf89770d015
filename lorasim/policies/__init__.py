"""Policies behind registries: ``SCHEDULERS``, ``EVICTIONS`` and ``ADAPTER_MEMORIES``."""

from lorasim.policies import eviction, memory, scheduling  # noqa: F401  (registers the built-ins)
from lorasim.policies.base import ADAPTER_MEMORIES, EVICTIONS, SCHEDULERS, AdapterMemory, EvictionPolicy, Scheduler

__all__ = ["ADAPTER_MEMORIES", "EVICTIONS", "SCHEDULERS", "AdapterMemory", "EvictionPolicy", "Scheduler"]
