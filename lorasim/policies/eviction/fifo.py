"""First-in-first-out eviction: the adapter resident longest leaves first, however often it is used."""

from __future__ import annotations

from lorasim.policies.base import EVICTIONS
from lorasim.policies.eviction.lru import LruEviction


@EVICTIONS.register("fifo")
class FifoEviction(LruEviction):
    """Evict the candidate inserted into this tier earliest; uses are ignored. Tie-break: none needed (insertions are
    totally ordered; a re-inserted adapter goes to the back). Source: classic FIFO replacement, the baseline that
    LRU improves on. It is LRU's insertion order without the reordering on use.
    """

    rule = "evict the adapter loaded earliest (uses ignored)"

    def on_use(self, adapter: str, now_s: float) -> None:
        pass

    def on_use_many(self, adapters: list[str], now_s: float) -> None:
        pass
