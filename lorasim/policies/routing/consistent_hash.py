"""Consistent hashing by adapter (Karger et al., STOC'97; ring with virtual nodes, as in Envoy's ring hash)."""

from __future__ import annotations

import hashlib
from bisect import bisect_right

from pydantic import Field

from lorasim._model import InputModel
from lorasim.policies.base import ROUTERS, Router


class ConsistentHashParams(InputModel):
    """Knobs of :class:`ConsistentHashRouter`."""

    virtual_nodes: int = Field(default=100, ge=1, le=10_000)
    """Points per replica on the hash ring."""


def _h(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


@ROUTERS.register("consistent-hash")
class ConsistentHashRouter(Router):
    """Rule: every request of an adapter goes to the replica owning the adapter name's point on a hash ring
    (SHA-256, ``virtual_nodes`` points per replica); base-model requests hash their request id. Adding a replica
    moves only about 1/N of the adapters. Tie-break: none (the ring is total)."""

    rule = "replica owning hash(adapter) on a ring with virtual nodes (base model: hash of the request id)"
    Params = ConsistentHashParams

    def bind(self, num_replicas, rng):
        super().bind(num_replicas, rng)
        ring = sorted((_h(f"replica-{i}#{v}"), i) for i in range(num_replicas) for v in range(self.params.virtual_nodes))
        self._points = [p for p, _ in ring]
        self._owners = [i for _, i in ring]
        self._cache: dict[str, int] = {}

    def route(self, seq, replicas, now_s):
        key = seq.adapter if seq.adapter is not None else f"request-{seq.request_id}"
        i = self._cache.get(key)
        if i is None:
            j = bisect_right(self._points, _h(key)) % len(self._points)
            i = self._owners[j]
            if seq.adapter is not None:
                self._cache[key] = i
        return i
