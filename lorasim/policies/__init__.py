"""Policies behind registries: ``SCHEDULERS`` and ``EVICTIONS``."""

from lorasim.policies import eviction, scheduling  # noqa: F401  (registers the built-ins)
from lorasim.policies.base import EVICTIONS, SCHEDULERS, EvictionPolicy, Scheduler

__all__ = ["EVICTIONS", "SCHEDULERS", "EvictionPolicy", "Scheduler"]
