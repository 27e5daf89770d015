"""Least KV-cache use (the Gateway API Inference Extension's KV-cache-utilisation scorer)."""

from __future__ import annotations

from lorasim.policies.base import ROUTERS, Router


@ROUTERS.register("least-kv")
class LeastKvRouter(Router):
    """Rule: the replica with the lowest KV-cache use (fraction of blocks). Tie-break: fewer outstanding requests,
    then lower index."""

    rule = "lowest KV-cache use (ties: outstanding requests, index)"

    def route(self, seq, replicas, now_s):
        return min(replicas, key=lambda r: (r.kv_fraction, r.outstanding, r.index)).index
