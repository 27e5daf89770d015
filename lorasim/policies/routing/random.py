"""Uniform random routing (the baseline of the power-of-two-choices literature: Mitzenmacher, 2001)."""

from __future__ import annotations

from lorasim.policies.base import ROUTERS, Router


@ROUTERS.register("random")
class RandomRouter(Router):
    """Rule: each request goes to a replica drawn uniformly (the ``router`` random stream). Tie-break: none."""

    rule = "a uniformly random replica (router RNG stream)"

    def route(self, seq, replicas, now_s):
        return int(self.rng.integers(len(replicas)))
