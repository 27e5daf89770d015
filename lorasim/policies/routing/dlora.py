"""dLoRA's request dispatch (Wu et al., "dLoRA", OSDI'24: requests go where their adapter already is)."""

from __future__ import annotations

from lorasim.policies.base import ROUTERS, Router, least_loaded


@ROUTERS.register("dlora")
class DLoraRouter(Router):
    """Rule: the least-loaded replica that already holds the request's adapter in GPU memory; else the least-loaded
    one with room to load it without evicting; else the least-loaded replica. Base-model requests: least loaded.
    Tie-break: fewer outstanding requests, lower KV use, lower index. (dLoRA also migrates adapters and requests
    between replicas; that is not modelled.)"""

    rule = "least-loaded replica holding the adapter, else one with room to load it, else least loaded"

    def route(self, seq, replicas, now_s):
        a = seq.adapter
        if a is None:
            return least_loaded(replicas)
        holders = [r for r in replicas if a in r.gpu_adapters]
        if holders:
            return least_loaded(holders)
        room = [r for r in replicas if r.can_load(a)]
        return least_loaded(room or replicas)
