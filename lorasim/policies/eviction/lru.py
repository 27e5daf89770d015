"""Least-recently-used eviction, as in both of vLLM's adapter caches (``vllm/lora/models.py``, ``LRUCache``)."""

from __future__ import annotations

from collections import OrderedDict

from lorasim.policies.base import EVICTIONS, EvictionPolicy


@EVICTIONS.register("lru")
class LruEviction(EvictionPolicy):
    """Evict the candidate used least recently. Tie-break: insertion order (never-used adapters go first)."""

    rule = "evict the least recently used adapter among those not needed by the current step"

    def __init__(self, params=None):
        super().__init__(params)
        self._order: OrderedDict[str, None] = OrderedDict()  # least recent first
        self._last: list[str] | None = None  # the last on_use_many batch, while nothing else changed the order

    def on_insert(self, adapter: str, now_s: float) -> None:
        self._last = None
        self._order[adapter] = None
        self._order.move_to_end(adapter)

    def on_use(self, adapter: str, now_s: float) -> None:
        self._last = None
        self._order.move_to_end(adapter)

    def on_use_many(self, adapters: list[str], now_s: float) -> None:
        last = self._last
        if last is not None and adapters[:len(last)] == last:
            # the same uses again, maybe followed by others: the repeated ones are already the most recent, in
            # this order, so only the others move
            if len(adapters) == len(last):
                return
            extra = adapters[len(last):]
        else:
            extra = adapters
        any(map(self._order.move_to_end, extra))  # move each to the end, in order (a loop in C: None is falsy)
        self._last = list(adapters)

    def on_use_steps(self, adapters: list[str], starts_s: list[float]) -> None:
        self.on_use_many(adapters, starts_s[-1])  # recency order: repeating the same uses changes nothing

    def on_remove(self, adapter: str) -> None:
        self._last = None
        self._order.pop(adapter, None)

    def victim(self, candidates: set[str]) -> str:
        for a in self._order:
            if a in candidates:
                return a
        raise ValueError("no eviction candidate is tracked by the policy")
