"""Least-frequently-used eviction, optionally with exponentially decaying counts."""

from __future__ import annotations

import itertools
import math

from pydantic import Field

from lorasim._model import MAX_TIME_S, InputModel
from lorasim.policies.base import EVICTIONS, EvictionPolicy


def add_use(log2_score: float, now_s: float, half_life_s: float) -> float:
    """One more use at ``now_s`` of a decayed count kept as ``log2(sum over uses of 2 ** (t_use / half_life))``.

    The decayed count at any time ``t`` is ``2 ** (log2_score - t / half_life)``: the same shift for every adapter, so
    the stored values rank adapters without knowing the time of the comparison (and never overflow).

    Args:
        log2_score: the value so far (``-inf``: no use yet).
        now_s: time of the use.
        half_life_s: a use's weight halves every ``half_life_s`` seconds.
    """
    x = now_s / half_life_s
    if log2_score == -math.inf:
        return x
    hi, lo = (x, log2_score) if x >= log2_score else (log2_score, x)
    return hi + math.log2(1.0 + 2.0 ** (lo - hi))


@EVICTIONS.register("lfu")
class LfuEviction(EvictionPolicy):
    """Evict the candidate used the fewest times since it was inserted into this tier; with ``decay_half_life_s``
    each use weighs ``2 ** -(age / half_life)``. Tie-break: least recently used (an adapter never used since insertion
    ranks by its insertion), as LRU would. Source: classic LFU replacement; the decay is LFU with ageing (as Redis'
    ``lfu-decay-time``). A re-inserted adapter starts again from zero.
    """

    rule = "evict the adapter used least often since it was loaded (uses optionally decayed); ties: least recently used"

    class Params(InputModel):
        decay_half_life_s: float | None = Field(default=None, gt=0, le=MAX_TIME_S)
        """Half-life of one use's weight, seconds; unset: plain use counts since insertion."""

    def __init__(self, params=None):
        super().__init__(params)
        self._half_life_s = self.params.decay_half_life_s
        self._score: dict[str, float] = {}  # adapter -> use count, or log2 of the decayed count (see add_use)
        self._last: dict[str, int] = {}  # adapter -> recency tick of its last use (or insertion)
        self._tick = itertools.count()

    def on_insert(self, adapter: str, now_s: float) -> None:
        self._score[adapter] = 0 if self._half_life_s is None else -math.inf
        self._last[adapter] = next(self._tick)

    def on_use(self, adapter: str, now_s: float) -> None:
        h = self._half_life_s
        self._score[adapter] = self._score[adapter] + 1 if h is None else add_use(self._score[adapter], now_s, h)
        self._last[adapter] = next(self._tick)

    def on_remove(self, adapter: str) -> None:
        self._score.pop(adapter, None)
        self._last.pop(adapter, None)

    def victim(self, candidates: set[str]) -> str:
        score, last = self._score, self._last
        tracked = [a for a in candidates if a in score]
        if not tracked:
            raise ValueError("no eviction candidate is tracked by the policy")
        return min(tracked, key=lambda a: (score[a], last[a]))
