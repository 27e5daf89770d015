"""Adapter tiers: GPU slots (``max_loras``), CPU cache (``max_cpu_loras``), disk.

Follows vLLM's ``LRUCacheWorkerLoRAManager``: a GPU miss copies the adapter from the CPU cache into a slot,
evicting the policy's victim; a CPU miss first reads it from disk into the CPU cache; evicting an adapter from the
CPU cache also frees its GPU slot. Adapters the current step needs, and adapters in transit, are never evicted.
"""

from __future__ import annotations

from collections.abc import Iterable

import simpy

from lorasim.engine.link import Link
from lorasim.policies.base import EvictionPolicy
from lorasim.workload.adapters import AdapterSpec

READY = "ready"


class AdapterStore:
    """GPU and CPU adapter caches of one replica, with loads over two links.

    Args:
        env: SimPy environment.
        specs: adapter name -> spec (size in bytes).
        max_loras: GPU slots.
        max_cpu_loras: CPU cache capacity (>= max_loras).
        disk_link: disk -> CPU link.
        pcie_link: CPU -> GPU link.
        gpu_policy: eviction policy of the GPU slots.
        cpu_policy: eviction policy of the CPU cache.
        recorder: receives ``on_adapter_load`` and ``on_adapter_evict``.
    """

    def __init__(self, env: simpy.Environment, specs: dict[str, AdapterSpec], max_loras: int, max_cpu_loras: int,
                 disk_link: Link, pcie_link: Link, gpu_policy: EvictionPolicy, cpu_policy: EvictionPolicy,
                 recorder):
        self.env = env
        self.specs = specs
        self.max_loras = max_loras
        self.max_cpu_loras = max_cpu_loras
        self.disk_link = disk_link
        self.pcie_link = pcie_link
        self.gpu_policy = gpu_policy
        self.cpu_policy = cpu_policy
        self.recorder = recorder
        self.gpu: dict[str, object] = {}  # adapter -> READY or the Event that fires when its load completes
        self.cpu: dict[str, object] = {}  # adapter -> READY or loading Event
        self.num_gpu_loads = 0
        self.num_disk_loads = 0

    # ---- queries -------------------------------------------------------------------------------------------
    def is_ready(self, adapter: str) -> bool:
        return self.gpu.get(adapter) is READY

    def missing(self, adapters: Iterable[str]) -> list[str]:
        """Adapters among ``adapters`` not yet ready in a GPU slot (loading ones included), in the given order."""
        return [a for a in adapters if self.gpu.get(a) is not READY]

    def gpu_names(self) -> frozenset[str]:
        return frozenset(self.gpu)

    def cpu_names(self) -> frozenset[str]:
        return frozenset(self.cpu)

    def loading(self) -> bool:
        """True while any transfer is in flight."""
        return any(st is not READY for st in self.gpu.values()) or any(st is not READY for st in self.cpu.values())

    def touch(self, adapters: Iterable[str], now_s: float) -> None:
        """Mark ``adapters`` used by a step (both tiers' recency)."""
        for a in adapters:
            self.gpu_policy.on_use(a, now_s)
            self.cpu_policy.on_use(a, now_s)

    # ---- loading -------------------------------------------------------------------------------------------
    def ensure(self, adapters: list[str], protect: set[str]):
        """SimPy generator: make every adapter in ``adapters`` ready on the GPU, one after another (vLLM loads
        them sequentially inside the step). ``protect`` (the step's adapters) is never evicted."""
        for a in adapters:
            st = self.gpu.get(a)
            if st is READY:
                continue
            if st is not None:
                yield st  # a prefetch is already bringing it in
                continue
            yield from self._load_gpu(a, protect)

    def prefetch(self, adapter: str, protect: set[str]) -> bool:
        """Start loading ``adapter`` in the background if a slot is free or evictable now.

        Returns:
            True if a load was started.
        """
        if adapter in self.gpu:
            return False
        if len(self.gpu) >= self.max_loras and not self._gpu_candidates(protect | {adapter}):
            return False
        self.env.process(self._load_gpu(adapter, protect | {adapter}))
        return True

    def _gpu_candidates(self, protect: set[str]) -> set[str]:
        return {a for a, st in self.gpu.items() if st is READY and a not in protect}

    def _cpu_candidates(self, protect: set[str]) -> set[str]:
        # an adapter being copied to the GPU must stay in the CPU cache until the copy is done
        return {a for a, st in self.cpu.items()
                if st is READY and a not in protect and (a not in self.gpu or self.gpu[a] is READY)}

    def _wait_any(self, table: dict[str, object], protect: set[str]):
        pending = [st for a, st in table.items() if st is not READY and a not in protect]
        if not pending:
            pending = [st for st in table.values() if st is not READY]
        if not pending:
            raise RuntimeError("adapter tier full of protected adapters; max_loras/max_cpu_loras too small")
        return self.env.any_of(pending)

    def _load_gpu(self, a: str, protect: set[str]):
        while a not in self.gpu and len(self.gpu) >= self.max_loras:
            cands = self._gpu_candidates(protect)
            if cands:
                self._evict_gpu(self.gpu_policy.victim(cands))
            else:
                yield self._wait_any(self.gpu, protect)
        if a in self.gpu:  # someone else started it while we waited
            if self.gpu[a] is not READY:
                yield self.gpu[a]
            return
        done = self.env.event()
        self.gpu[a] = done
        st = self.cpu.get(a)
        if st is None:
            yield from self._load_cpu(a, protect)
        elif st is not READY:
            yield st
        start = self.env.now
        size = self.specs[a].size_bytes
        yield from self.pcie_link.transfer(size)
        self.gpu[a] = READY
        self.gpu_policy.on_insert(a, self.env.now)
        self.cpu_policy.on_use(a, self.env.now)
        self.num_gpu_loads += 1
        self.recorder.on_adapter_load("cpu_to_gpu", a, start, self.env.now, size)
        done.succeed()

    def _load_cpu(self, a: str, protect: set[str]):
        keep = protect | {a}
        while a not in self.cpu and len(self.cpu) >= self.max_cpu_loras:
            cands = self._cpu_candidates(keep)
            if cands:
                self._evict_cpu(self.cpu_policy.victim(cands))
            else:
                yield self._wait_any(self.cpu, keep)
        if a in self.cpu:
            if self.cpu[a] is not READY:
                yield self.cpu[a]
            return
        done = self.env.event()
        self.cpu[a] = done
        start = self.env.now
        size = self.specs[a].size_bytes
        yield from self.disk_link.transfer(size)
        self.cpu[a] = READY
        self.cpu_policy.on_insert(a, self.env.now)
        self.num_disk_loads += 1
        self.recorder.on_adapter_load("disk_to_cpu", a, start, self.env.now, size)
        done.succeed()

    def _evict_gpu(self, a: str) -> None:
        del self.gpu[a]
        self.gpu_policy.on_remove(a)
        self.recorder.on_adapter_evict("gpu", a, self.env.now)

    def _evict_cpu(self, a: str) -> None:
        if self.gpu.get(a) is READY:
            self._evict_gpu(a)
        del self.cpu[a]
        self.cpu_policy.on_remove(a)
        self.recorder.on_adapter_evict("cpu", a, self.env.now)
