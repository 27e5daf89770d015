"""First-in-first-out eviction: the adapter resident longest leaves first, however often it is used."""

from __future__ import annotations

from lorasim.policies.base import EVICTIONS, EvictionPolicy


@EVICTIONS.register("fifo")
class FifoEviction(EvictionPolicy):
    """Evict the candidate inserted into this tier earliest; uses are ignored. Tie-break: none needed (insertions are
    totally ordered; a re-inserted adapter goes to the back). Source: classic FIFO replacement, the baseline that
    LRU improves on.
    """

    rule = "evict the adapter loaded earliest (uses ignored)"

    def __init__(self, params=None):
        super().__init__(params)
        self._order: dict[str, None] = {}  # insertion order, oldest first

    def on_insert(self, adapter: str, now_s: float) -> None:
        self._order.pop(adapter, None)
        self._order[adapter] = None

    def on_use(self, adapter: str, now_s: float) -> None:
        pass

    def on_use_many(self, adapters: list[str], now_s: float) -> None:
        pass

    def on_remove(self, adapter: str) -> None:
        self._order.pop(adapter, None)

    def victim(self, candidates: set[str]) -> str:
        for a in self._order:
            if a in candidates:
                return a
        raise ValueError("no eviction candidate is tracked by the policy")
