"""Least outstanding requests (join-the-shortest-queue; e.g. Envoy's LEAST_REQUEST, vLLM production-stack)."""

from __future__ import annotations

from lorasim.policies.base import ROUTERS, Router, least_loaded


@ROUTERS.register("least-outstanding")
class LeastOutstandingRouter(Router):
    """Rule: the replica with the fewest queued + running requests. Tie-break: lower KV use, then lower index."""

    rule = "fewest queued + running requests (ties: KV use, index)"

    def route(self, seq, replicas, now_s):
        return least_loaded(replicas)
