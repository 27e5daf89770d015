"""Adapter tiers: GPU slots (``max_loras``), CPU cache (``max_cpu_loras``), disk.

Follows vLLM's ``LRUCacheWorkerLoRAManager``: a GPU miss copies the adapter from the CPU cache into a slot,
evicting the policy's victim; a CPU miss first reads it from disk into the CPU cache; evicting an adapter from the
CPU cache also frees its GPU slot. Adapters in transit are never evicted, nor (:meth:`AdapterStore.ensure`) are
adapters the current step needs; with ``engine.adapter_activation: vllm`` (:meth:`AdapterStore.activate`) only
those the step has already activated are protected, as in vLLM.

How much the GPU tier holds is the adapter-memory layout's business (``adapter_memory``): ``flat`` slots count one
per adapter up to ``max_loras``; ``rank-paged`` pages count by rank; ``unified`` charges each resident adapter's
KV blocks to the KV cache itself (S-LoRA), so loading one may first evict others to free blocks.

Pinned adapters (``eviction.pinned``) are never offered to the eviction policies. The one exception keeps the engine
live: when a step needs more unpinned adapters than the unpinned slots (or CPU entries) hold and no transfer is in
flight, the policy chooses among the pinned adapters the step does not use. vLLM's own pinning has no answer there
(``LRUCache.remove_oldest`` raises once every entry is pinned), and its scheduler does not count pinned slots.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import filterfalse

import simpy

from lorasim.engine.clock import timeout_at
from lorasim.engine.kvcache import KVCache
from lorasim.engine.link import Link
from lorasim.policies.base import AdapterMemory, EvictionPolicy
from lorasim.workload.adapters import AdapterSpec

READY = "ready"
_LOADING = "loading"  # a GPU or CPU entry whose inline transfer is under way (see AdapterStore.load_inline)


class _PastHorizon(Exception):
    """An inline transfer would end at or after the horizon: the simulation stops while it is in flight."""

    def __init__(self, end_s: float):
        super().__init__(end_s)
        self.end_s = end_s


class SetOrder:
    """The order in which vLLM's worker walks a step's adapters: that of a Python ``set`` of their ``LoRARequest``
    objects (``InputBatch.make_lora_inputs``), whose hash is ``hash(lora_name)`` (``vllm/lora/request.py``) and so
    differs from one server process to the next (string hashing is randomised).

    Each adapter gets a random hash below 2**61 - 1 (a Python int hashes to itself there), drawn once from ``rng``;
    the order is then that of a real ``set`` of those ints, so table sizes and collisions behave as in CPython.
    The ints go in in the step's order of first appearance; vLLM inserts in the order adapters joined its persistent
    batch, which can only matter where two hashes collide in the table.

    Args:
        names: every adapter's name.
        rng: the stream the hashes are drawn from (``numpy.random.Generator``).
    """

    def __init__(self, names: list[str], rng):
        while True:
            hashes = rng.integers(0, 2**61 - 1, size=len(names)).tolist()
            if len(set(hashes)) == len(hashes):  # distinct hashes keep the inverse map exact
                break
        self._hash = dict(zip(names, hashes))
        self._name = dict(zip(hashes, names))
        self._last: tuple[list[str], list[str]] | None = None  # (input, order) of the last call

    def __call__(self, adapters: list[str]) -> list[str]:
        """``adapters`` (distinct) in the iteration order of a set they were inserted into in the given order.

        The same list as the last call's (consecutive steps of an unchanged batch) returns the same order without
        building the set again; a new list is returned either way."""
        last = self._last
        if last is not None and type(adapters) is list and last[0] == adapters:
            return last[1].copy()
        order = list(map(self._name.__getitem__, set(map(self._hash.__getitem__, adapters))))
        self._last = (list(adapters), order)
        return order.copy()


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
        pinned: adapters never chosen as victims (but see the module docstring); fewer than ``max_loras``.
        memory: the GPU adapter-memory layout (bound); None: flat slots, one per adapter, ``max_loras`` of them.
        kv: the KV cache, required when ``memory.shares_kv`` (adapters take their blocks from it).
        replica_id: the replica's index, stamped on the recorder's adapter events.
    """

    def __init__(self, env: simpy.Environment, specs: dict[str, AdapterSpec], max_loras: int, max_cpu_loras: int,
                 disk_link: Link, pcie_link: Link, gpu_policy: EvictionPolicy, cpu_policy: EvictionPolicy,
                 recorder, pinned: Iterable[str] = (), memory: AdapterMemory | None = None,
                 kv: KVCache | None = None, replica_id: int = 0):
        self.env = env
        self.specs = specs
        self.max_loras = max_loras
        self.max_cpu_loras = max_cpu_loras
        self.disk_link = disk_link
        self.pcie_link = pcie_link
        self.gpu_policy = gpu_policy
        self.cpu_policy = cpu_policy
        self.recorder = recorder
        self.replica_id = replica_id
        self.pinned = frozenset(pinned)
        # adapter -> READY, or while it loads the Event that fires when its load completes (the _LOADING marker on
        # the inline path: a step's loads finish before anything else looks, unless the horizon cuts one)
        self.gpu: dict[str, object] = {}
        self.cpu: dict[str, object] = {}
        self.shares_kv = memory is not None and memory.shares_kv
        if self.shares_kv and kv is None:
            raise ValueError("a unified adapter memory needs the KV cache")
        self.kv = kv
        if memory is None:
            self.units = dict.fromkeys(specs, 1)
            self.gpu_capacity: int | None = max_loras
        else:
            self.units = {a: memory.units(s.rank, s.size_bytes) for a, s in specs.items()}
            self.gpu_capacity = memory.capacity_units
        self.gpu_used = 0  # units held by the GPU entries (loading ones included)
        self._gpu_loading = 0  # GPU entries not yet READY (their loads in flight)
        self._epoch = 0  # bumped whenever a GPU entry is added, becomes ready or is evicted
        self._all_ready: tuple[int, list[str]] | None = None  # (epoch, adapters) of the last all-ready missing()
        self.inline_horizon_s: float | None = None  # see load_inline

    def load_inline(self, horizon_s: float | None) -> None:
        """Do each step's transfers inline up to ``horizon_s`` (None: one SimPy event per transfer, the default).

        Valid where nothing but the step that loads sees or changes the store while it loads (one replica, loads
        inside its steps, both links ``exclusive``; the engine also wants no checking recorder): :meth:`ensure` and
        :meth:`activate` then do each transfer's bookkeeping at its computed start and end times and wait once,
        until the last one ends: the same times (the same float additions), evictions, hooks and records as one
        SimPy event per transfer. A transfer that would end at or after ``horizon_s`` (``math.inf``: none) is left
        in flight, as the simulation stops before it ends. Ignored unless both links are exclusive."""
        self.inline_horizon_s = horizon_s if self.disk_link.exclusive and self.pcie_link.exclusive else None

    # ---- queries -------------------------------------------------------------------------------------------
    def is_ready(self, adapter: str) -> bool:
        return self.gpu.get(adapter) is READY

    def missing(self, adapters: list[str]) -> list[str]:
        """Adapters among ``adapters`` not yet ready in a GPU slot (loading ones included), in the given order."""
        if self._all_ready == (self._epoch, adapters):
            return []  # the same adapters as a step that found them all ready, and no GPU entry changed since
        gpu = self.gpu
        if not self._gpu_loading:  # every entry is ready: missing means absent (checked by loops in C)
            out = [] if gpu.keys() >= set(adapters) else list(filterfalse(gpu.__contains__, adapters))
        else:
            out = [a for a in adapters if gpu.get(a) is not READY]
        self._all_ready = None if out else (self._epoch, list(adapters))
        return out

    def loading(self) -> bool:
        """True while any transfer is in flight."""
        return any(st is not READY for st in self.gpu.values()) or any(st is not READY for st in self.cpu.values())

    def has_room(self, a: str) -> bool:
        """True when ``a`` can take a GPU place now without evicting anything."""
        u = self.units[a]
        if self.shares_kv:
            return len(self.gpu) < self.max_cpu_loras and self.kv.free_blocks >= u
        return self.gpu_used + u <= self.gpu_capacity

    def _room_after(self, a: str, cands: set[str]) -> bool:
        """True when evicting every adapter of ``cands`` would make room for ``a``."""
        freed = sum(self.units[c] for c in cands)
        u = self.units[a]
        if self.shares_kv:
            return len(self.gpu) - len(cands) < self.max_cpu_loras and self.kv.free_blocks + freed >= u
        return self.gpu_used - freed + u <= self.gpu_capacity

    def evictable_kv_blocks(self) -> int:
        """KV blocks held by resident adapters that could be evicted (ready, not pinned); 0 unless ``shares_kv``."""
        if not self.shares_kv:
            return 0
        pinned = self.pinned
        return sum(self.units[a] for a, st in self.gpu.items() if st is READY and a not in pinned)

    def kv_join_cost(self, a: str) -> int:
        """KV blocks a step that newly uses ``a`` takes from :meth:`evictable_kv_blocks` plus the free KV blocks:
        its own (to load it, or to keep it from being evicted), or 0 when it is resident and not counted evictable
        (pinned, or still loading). Only meaningful when ``shares_kv``."""
        st = self.gpu.get(a)
        if st is not None and (st is not READY or a in self.pinned):
            return 0
        return self.units[a]

    def reclaim_kv(self, num_blocks: int, protect: set[str]) -> None:
        """Evict resident adapters outside ``protect`` (policy's choice) until ``num_blocks`` KV blocks are free.

        Raises:
            RuntimeError: not enough can be evicted (a plan counted blocks that are not there: a bug).
        """
        while self.kv.free_blocks < num_blocks:
            cands = self._gpu_candidates(protect)
            if not cands:
                raise RuntimeError(f"unified memory: {num_blocks} KV blocks needed, {self.kv.free_blocks} free and no "
                                   f"adapter evictable; this is a bug")
            self._evict_gpu(self.gpu_policy.victim(cands))

    def release_idle(self) -> bool:
        """Unified memory, nothing running: evict every ready resident adapter, pinned ones too, so that their KV
        blocks serve the waiting requests (the liveness fallback of pinning). Returns whether any was evicted."""
        idle = [a for a, st in self.gpu.items() if st is READY]
        for a in idle:
            self._evict_gpu(a)
        return bool(idle)

    def in_flight(self) -> list:
        """The events that fire when the transfers now in flight finish (empty when none runs; never asked while
        inline transfers run)."""
        return [st for t in (self.gpu, self.cpu) for st in t.values() if st is not READY]

    def touch(self, adapters: list[str], now_s: float) -> None:
        """Mark ``adapters`` used by a step (both tiers' recency)."""
        self.gpu_policy.on_use_many(adapters, now_s)
        self.cpu_policy.on_use_many(adapters, now_s)

    def touch_steps(self, adapters: list[str], starts_s: list[float]) -> None:
        """Mark ``adapters`` used by consecutive steps starting at ``starts_s`` (as :meth:`touch` once per step)."""
        self.gpu_policy.on_use_steps(adapters, starts_s)
        self.cpu_policy.on_use_steps(adapters, starts_s)

    # ---- loading -------------------------------------------------------------------------------------------
    def ensure(self, adapters: list[str], protect: set[str]):
        """SimPy generator: make every adapter in ``adapters`` ready on the GPU, one after another (vLLM loads
        them sequentially inside the step). ``protect`` (the step's adapters) is never evicted."""
        if self.inline_horizon_s is not None:
            yield from self._wait_inline(adapters, protect)
            return
        for a in adapters:
            yield from self._bring(a, protect)

    def activate(self, adapters: list[str]):
        """SimPy generator (``adapter_activation: vllm``): activate ``adapters`` one after another in this order, as
        vLLM's ``LRUCacheWorkerLoRAManager._apply_adapters`` does: a missing one evicts the policy's victim among
        every resident adapter but those already activated (vLLM touches each in turn, so under LRU its victim is
        the least recent of the others), which may be one later in ``adapters``: that one is loaded again when its
        turn comes. Pinned adapters of the step stay protected. The caller then uses ``adapters`` (:meth:`touch`).

        Returns:
            The number of loads (reloads counted).
        """
        if self.inline_horizon_s is not None:
            return (yield from self._wait_inline(adapters, None))
        done = set(self.pinned.intersection(adapters))
        loads = 0
        for a in adapters:
            if self.gpu.get(a) is not READY:
                loads += 1
                yield from self._bring(a, done)
            done.add(a)
        return loads

    def _wait_inline(self, adapters: list[str], protect: set[str] | None):
        """SimPy generator (``inline_horizon_s`` set): load what ``adapters`` lack as :meth:`ensure` (``protect``
        given) or :meth:`activate` (None) would, the transfers done as bookkeeping at their times, then wait once
        until the last one ends. A transfer that would end at or after the horizon is waited for and never
        finished: the simulation stops first (an event-per-transfer store could be run on past it; this one
        cannot). Returns the number of loads."""
        start = now = self.env.now
        loads = 0
        done = protect if protect is not None else set(self.pinned.intersection(adapters))
        try:
            for a in adapters:
                if self.gpu.get(a) is not READY:  # every entry is ready between steps: missing means absent
                    loads += 1
                    now = self._load_inline(a, done, now)
                if protect is None:
                    done.add(a)
        except _PastHorizon as cut:
            yield timeout_at(self.env, cut.end_s)  # the simulation stops before this fires
            raise RuntimeError(f"an inline adapter transfer was cut by the horizon at {self.inline_horizon_s} s; "
                               f"the simulation cannot be run past its horizon") from None
        if now != start:
            yield timeout_at(self.env, now)
        return loads

    def _load_inline(self, a: str, keep: set[str], now_s: float) -> float:
        """:meth:`_load` with no other process and no transfer in flight: evict, reserve and transfer at once.

        Returns:
            The time ``a`` is ready on the GPU.

        Raises:
            _PastHorizon: a transfer would end at or after ``inline_horizon_s`` (started, not finished).
        """
        # ``a`` itself needs no protecting: the GPU tier has no entry for it until it is reserved, and the CPU tier
        # is only evicted from when it has none either (``_cpu_candidates`` would pass over it anyway: its GPU
        # entry is not ready)
        while not self.has_room(a):
            self._evict_gpu(self._victim(keep, gpu=True), now_s)
        self._reserve_gpu(a, _LOADING)
        if self.cpu.get(a) is not READY:
            while len(self.cpu) >= self.max_cpu_loras:
                self._evict_cpu(self._victim(keep, gpu=False), now_s)
            self.cpu[a] = _LOADING
            now_s = self._transfer_inline(a, False, now_s)
        return self._transfer_inline(a, True, now_s)

    def _transfer_inline(self, a: str, to_gpu: bool, start_s: float) -> float:
        link = self.pcie_link if to_gpu else self.disk_link
        end = start_s + link.cost.transfer_time_s(self.specs[a].size_bytes)  # env.timeout's float addition
        if end >= self.inline_horizon_s:
            raise _PastHorizon(end)
        self._transferred(a, to_gpu, start_s, end)
        return end

    def _victim(self, keep: set[str], gpu: bool) -> str:
        """The policy's victim among the unprotected entries of a tier, pinned ones as a last resort (no transfer
        is in flight to wait for).

        Raises:
            RuntimeError: every entry is one ``keep`` holds.
        """
        candidates, policy = (self._gpu_candidates, self.gpu_policy) if gpu else (self._cpu_candidates, self.cpu_policy)
        cands = candidates(keep) or candidates(keep, pinned_too=True)
        if not cands:
            raise self._no_room()
        return policy.victim(cands)

    def _no_room(self) -> RuntimeError:
        return RuntimeError(f"adapter tiers hold only adapters the step needs (GPU {sorted(self.gpu)}, CPU "
                            f"{sorted(self.cpu)}); this is a bug: max_cpu_loras >= max_loras must prevent it")

    def _bring(self, a: str, protect: set[str]):
        """SimPy generator: return once ``a`` is ready on the GPU, loading it (never evicting ``protect``) or waiting
        for the prefetch already bringing it in."""
        while self.gpu.get(a) is not READY:
            st = self.gpu.get(a)
            if st is None:
                yield from self._load(a, protect)
            else:
                yield st  # a prefetch is bringing it in; re-check when it is done

    def prefetch(self, adapter: str, protect: set[str]) -> bool:
        """Start loading ``adapter`` in the background if both tiers can take it now, without waiting.

        Slots are chosen and reserved at once (evicting unprotected adapters if needed); only the transfers run
        in a background process.

        Returns:
            True if a load was started.
        """
        if adapter in self.gpu:
            return False
        keep = protect | {adapter}
        room = self.has_room(adapter)
        gpu_cands = set() if room else self._gpu_candidates(keep)
        if not room and not (gpu_cands and self._room_after(adapter, gpu_cands)):
            return False
        need_cpu_room = adapter not in self.cpu and len(self.cpu) >= self.max_cpu_loras
        if need_cpu_room and not self._cpu_candidates(keep):
            return False
        while not self.has_room(adapter):
            victim = self.gpu_policy.victim(gpu_cands)
            gpu_cands.discard(victim)
            self._evict_gpu(victim)
        cpu_done = None
        if adapter not in self.cpu:
            if len(self.cpu) >= self.max_cpu_loras:
                self._evict_cpu(self.cpu_policy.victim(self._cpu_candidates(keep)))
            cpu_done = self.env.event()
            self.cpu[adapter] = cpu_done
        done = self.env.event()
        self._reserve_gpu(adapter, done)
        self.env.process(self._prefetch_transfers(adapter, cpu_done, done))
        return True

    def _prefetch_transfers(self, a: str, cpu_done, done):
        if cpu_done is not None:
            yield from self._transfer(a, cpu_done, to_gpu=False)
        while self.cpu[a] is not READY:  # another process is reading it from disk
            yield self.cpu[a]
        yield from self._transfer(a, done, to_gpu=True)

    def _gpu_candidates(self, protect: set[str], pinned_too: bool = False) -> set[str]:
        skip = protect if pinned_too or not self.pinned else protect | self.pinned
        if not self._gpu_loading:
            return self.gpu.keys() - skip  # every entry is ready
        return {a for a, st in self.gpu.items() if st is READY and a not in skip}

    def _cpu_candidates(self, protect: set[str], pinned_too: bool = False) -> set[str]:
        # an adapter being copied to the GPU must stay in the CPU cache until the copy is done
        skip = protect if pinned_too or not self.pinned else protect | self.pinned
        return {a for a, st in self.cpu.items()
                if st is READY and a not in skip and self.gpu.get(a, READY) is READY}

    def _make_room(self, keep: set[str], gpu: bool, own: str):
        """SimPy generator: free one entry of the GPU slots (``gpu``) or of the CPU cache for ``own``, or wait for a
        transfer to finish; as a last resort (nothing else evictable, nothing in flight) evict a pinned adapter
        ``keep`` lacks. ``own``'s GPU slot, reserved before its CPU copy exists, is not a transfer to wait for."""
        candidates, evict, policy = ((self._gpu_candidates, self._evict_gpu, self.gpu_policy) if gpu
                                     else (self._cpu_candidates, self._evict_cpu, self.cpu_policy))
        cands = candidates(keep)
        if cands:
            evict(policy.victim(cands))
            return
        events = self._pending(keep, own)
        if events:
            yield self.env.any_of(events)
            return
        cands = candidates(keep, pinned_too=True)
        if not cands:
            raise self._no_room()
        evict(policy.victim(cands))

    def _pending(self, keep: set[str], own: str) -> list:
        """Events that fire when transfers finish (those of unprotected adapters if any); empty when none runs.
        ``own``'s GPU load is left out: it is the caller's, and it waits for this room."""
        events = [st for t in (self.gpu, self.cpu) for a, st in t.items() if st is not READY and a not in keep]
        if not events:
            mine = self.gpu.get(own)
            events = [st for t in (self.gpu, self.cpu) for st in t.values() if st is not READY and st is not mine]
        return events

    def _load(self, a: str, keep: set[str]):
        """SimPy generator: bring ``a`` into a GPU slot (through the CPU cache), evicting or waiting as needed."""
        keep = keep | {a}
        while a not in self.gpu and not self.has_room(a):
            yield from self._make_room(keep, gpu=True, own=a)
        if a in self.gpu:  # another process started this load while we waited
            return
        done = self.env.event()
        self._reserve_gpu(a, done)
        while self.cpu.get(a) is not READY:
            st = self.cpu.get(a)
            if st is not None:
                yield st
            elif len(self.cpu) >= self.max_cpu_loras:
                yield from self._make_room(keep, gpu=False, own=a)
            else:
                cpu_done = self.env.event()
                self.cpu[a] = cpu_done
                yield from self._transfer(a, cpu_done, to_gpu=False)
        yield from self._transfer(a, done, to_gpu=True)

    def _transfer(self, a: str, done, to_gpu: bool):
        """SimPy generator: move ``a`` over the disk->CPU (``to_gpu=False``) or CPU->GPU link into its tier."""
        link = self.pcie_link if to_gpu else self.disk_link
        start = self.env.now
        yield from link.transfer(self.specs[a].size_bytes)
        self._transferred(a, to_gpu, start, self.env.now)
        done.succeed()

    def _transferred(self, a: str, to_gpu: bool, start_s: float, end_s: float) -> None:
        """``a``'s transfer into a tier (the GPU's: ``to_gpu``) ended at ``end_s``: mark it ready, tell the
        policies and the recorder."""
        if to_gpu:
            link, table, policy, name = self.pcie_link, self.gpu, self.gpu_policy, "cpu_to_gpu"
        else:
            link, table, policy, name = self.disk_link, self.cpu, self.cpu_policy, "disk_to_cpu"
        size = self.specs[a].size_bytes
        table[a] = READY
        self._epoch += 1
        if to_gpu:
            self._gpu_loading -= 1
        policy.on_cost(a, link.cost.transfer_time_s(size))
        policy.on_insert(a, end_s)
        if to_gpu:
            self.cpu_policy.on_use(a, end_s)
        self.recorder.replica_id = self.replica_id
        self.recorder.on_adapter_load(name, a, start_s, end_s, size)

    def _reserve_gpu(self, a: str, done) -> None:
        """Give ``a`` its GPU place (its units charged; KV blocks allocated when they share the KV cache)."""
        self._epoch += 1
        self.gpu[a] = done
        self._gpu_loading += 1
        u = self.units[a]
        self.gpu_used += u
        if self.shares_kv:
            self.kv.allocate(u)

    def _evict_gpu(self, a: str, now_s: float | None = None) -> None:
        self._epoch += 1
        del self.gpu[a]
        u = self.units[a]
        self.gpu_used -= u
        if self.shares_kv:
            self.kv.free(u)
        self.gpu_policy.on_remove(a)
        self.recorder.replica_id = self.replica_id
        self.recorder.on_adapter_evict("gpu", a, self.env.now if now_s is None else now_s)

    def _evict_cpu(self, a: str, now_s: float | None = None) -> None:
        if self.gpu.get(a) is READY:
            self._evict_gpu(a, now_s)
        del self.cpu[a]
        self.cpu_policy.on_remove(a)
        self.recorder.replica_id = self.replica_id
        self.recorder.on_adapter_evict("cpu", a, self.env.now if now_s is None else now_s)
