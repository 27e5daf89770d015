"""Round-robin routing (the default of most load balancers, e.g. vLLM's production-stack router)."""

from __future__ import annotations

from lorasim.policies.base import ROUTERS, Router


@ROUTERS.register("round-robin")
class RoundRobinRouter(Router):
    """Rule: request ``k`` (in arrival order) goes to replica ``k mod N``, whatever the load. Tie-break: none."""

    rule = "request k goes to replica k mod N"

    def __init__(self, params=None):
        super().__init__(params)
        self._next = 0

    def route(self, seq, replicas, now_s):
        i = self._next
        self._next = (i + 1) % len(replicas)
        return i
