"""Cost-aware eviction: keep the adapters whose reloads would cost the most time per second."""

from __future__ import annotations

import itertools
import math

from pydantic import Field

from lorasim._model import MAX_TIME_S, InputModel
from lorasim.policies.base import EVICTIONS, EvictionPolicy
from lorasim.policies.eviction.lfu import add_use


@EVICTIONS.register("cost-aware")
class CostAwareEviction(EvictionPolicy):
    """Evict the candidate with the smallest expected reload cost, its recent use rate times its reload time on this
    tier (``on_cost``: the CPU->GPU copy for GPU slots, the disk read for the CPU cache). The rate is an exponentially
    decayed use count, ``(ln 2 / half_life) * sum over uses of 2 ** -(age / half_life)``, kept across evictions so
    that an adapter evicted and reloaded often is recognised as expensive. Tie-break: least recently used (then
    insertion order). Source: GreedyDual-Size-Frequency (Cherkasova 1998: frequency x cost) and the cost-aware
    adapter cache of Chameleon (arXiv 2411.17741).
    """

    rule = "evict the adapter with the smallest decayed use rate x reload time on this tier; ties: least recently used"

    class Params(InputModel):
        half_life_s: float = Field(default=60.0, gt=0, le=MAX_TIME_S)
        """Half-life of one use's weight in the rate estimate, seconds."""

    def __init__(self, params=None):
        super().__init__(params)
        self._half_life_s = self.params.half_life_s
        self._uses: dict[str, float] = {}  # adapter -> log2 of its decayed use count (see lfu.add_use); kept on removal
        self._log2_cost: dict[str, float] = {}  # adapter -> log2(reload seconds) on this tier
        self._last: dict[str, int] = {}  # adapter -> recency tick of its last use or insertion
        self._resident: set[str] = set()
        self._tick = itertools.count()

    def on_cost(self, adapter: str, reload_s: float) -> None:
        self._log2_cost[adapter] = math.log2(reload_s) if reload_s > 0 else -math.inf

    def on_insert(self, adapter: str, now_s: float) -> None:
        self._resident.add(adapter)
        self._uses.setdefault(adapter, -math.inf)
        self._last[adapter] = next(self._tick)

    def on_use(self, adapter: str, now_s: float) -> None:
        self._uses[adapter] = add_use(self._uses[adapter], now_s, self._half_life_s)
        self._last[adapter] = next(self._tick)

    def on_remove(self, adapter: str) -> None:
        self._resident.discard(adapter)

    def expected_cost(self, adapter: str) -> float:
        """log2 of the adapter's expected reload cost, up to a shift shared by all adapters (ranking only)."""
        return self._uses[adapter] + self._log2_cost.get(adapter, 0.0)  # cost unknown: rank by rate alone

    def victim(self, candidates: set[str]) -> str:
        tracked = [a for a in candidates if a in self._resident]
        if not tracked:
            raise ValueError("no eviction candidate is tracked by the policy")
        last = self._last
        return min(tracked, key=lambda a: (self.expected_cost(a), last[a]))
