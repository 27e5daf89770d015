"""LoRA-affinity routing (Gateway API Inference Extension's LoRA affinity scorer; AIBrix's lora routing)."""

from __future__ import annotations

from lorasim.policies.base import ROUTERS, Router, least_loaded


@ROUTERS.register("adapter-affinity")
class AdapterAffinityRouter(Router):
    """Rule: prefer replicas where the request's adapter is active (a running or waiting request uses it) or
    resident in GPU memory; else replicas with room to load it without evicting; else all. Base-model requests go
    to all replicas. Tie-break within the preferred set: fewer outstanding requests, lower KV use, lower index.
    Source: ``gateway-api-inference-extension`` (``pkg/epp/scheduling`` LoRA affinity filter), AIBrix."""

    rule = "replicas where the adapter is active or resident, else with room to load it; then least loaded"

    def route(self, seq, replicas, now_s):
        a = seq.adapter
        if a is None:
            return least_loaded(replicas)
        warm = [r for r in replicas if a in r.active_adapters or a in r.gpu_adapters]
        if warm:
            return least_loaded(warm)
        room = [r for r in replicas if r.can_load(a)]
        return least_loaded(room or replicas)
