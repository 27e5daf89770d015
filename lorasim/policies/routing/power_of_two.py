"""Power of two choices (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing", IEEE TPDS 2001)."""

from __future__ import annotations

from lorasim.policies.base import ROUTERS, Router


@ROUTERS.register("power-of-two")
class PowerOfTwoRouter(Router):
    """Rule: draw two distinct replicas uniformly (``router`` stream) and send the request to the one with fewer
    outstanding requests. Tie-break: the first drawn."""

    rule = "two random replicas, the one with fewer outstanding requests (ties: first drawn)"

    def route(self, seq, replicas, now_s):
        n = len(replicas)
        if n == 1:
            return 0
        a, b = (int(x) for x in self.rng.choice(n, size=2, replace=False))
        return b if replicas[b].outstanding < replicas[a].outstanding else a
