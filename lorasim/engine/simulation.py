"""Build a simulation from a validated scenario and run it: the only place that wires components together."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import simpy

from lorasim.config.scenario import Scenario
from lorasim.engine.adapters import AdapterStore, SetOrder
from lorasim.engine.arrivals import ArrivalFeed, CancelFeed, PushFeed
from lorasim.engine.client import ConnectionPool
from lorasim.engine.kvcache import KVCache
from lorasim.engine.link import Link
from lorasim.engine.replica import Replica
from lorasim.engine.seqtable import SeqTable
from lorasim.engine.starvation import StarvationWatch
from lorasim.errors import ConfigError, PolicyError
from lorasim.metrics.digest import RequestDigest
from lorasim.metrics.recorder import Recorder
from lorasim.metrics.results import Results, empty_requests_frame, requests_frame
from lorasim.perf.base import ConstantStepTimeModel, LinkCost, StepTimeModel
from lorasim.perf.profile import Profile, load_profile
from lorasim.perf.shapes import ALL_TARGET_MODULES, MODEL_SHAPES, ModelShape
from lorasim.policies.base import AdapterMemory, MemoryLayout, SchedulerLimits
from lorasim.rng import RngStreams
from lorasim.workload import AdapterSpec, build_adapters, build_request_arrays


def resolve_shape(scenario: Scenario, profile: Profile) -> ModelShape:
    """The model shape: the scenario's ``model.shape`` if set, else the profile's."""
    shape = scenario.model.shape
    if isinstance(shape, ModelShape):
        return shape
    if isinstance(shape, str):
        if shape not in MODEL_SHAPES:
            raise ConfigError(f"model.shape: unknown model {shape!r}; known: {', '.join(sorted(MODEL_SHAPES))}")
        return MODEL_SHAPES[shape]
    return profile.shape


def check_adapter_tiers(scenario: Scenario, shape: ModelShape, adapters: list[AdapterSpec]) -> None:
    """Refuse configurations whose adapter tiers cannot hold what they promise (case 08).

    Raises:
        ConfigError: an adapter's rank exceeds ``max_lora_rank``; the GPU or CPU adapter memory budget holds fewer
            adapters than ``max_loras`` / ``max_cpu_loras``.
    """
    eng = scenario.engine
    for a in adapters:
        if a.rank > eng.max_lora_rank:
            raise ConfigError(f"adapters: adapter {a.name!r} has rank {a.rank} > engine.max_lora_rank "
                              f"{eng.max_lora_rank}; it cannot fit a GPU slot")
    modules = sorted({m for a in adapters for m in a.target_modules}) or list(ALL_TARGET_MODULES)
    slot_bytes = shape.adapter_size_bytes(eng.max_lora_rank, modules)
    if eng.gpu_memory_for_adapters_bytes is not None:
        fits = eng.gpu_memory_for_adapters_bytes // slot_bytes
        if fits < eng.max_loras:
            raise ConfigError(
                f"engine.gpu_memory_for_adapters_bytes ({eng.gpu_memory_for_adapters_bytes}) holds {fits} slot(s) of "
                f"max_lora_rank {eng.max_lora_rank} ({slot_bytes} bytes each) but engine.max_loras is {eng.max_loras}")
    if eng.cpu_memory_for_adapters_bytes is not None and adapters:
        biggest = max(a.size_bytes for a in adapters)
        fits = eng.cpu_memory_for_adapters_bytes // biggest
        if fits < eng.cpu_loras:
            raise ConfigError(
                f"engine.cpu_memory_for_adapters_bytes ({eng.cpu_memory_for_adapters_bytes}) holds {fits} adapter(s) of "
                f"the largest size ({biggest} bytes) but engine.max_cpu_loras is {eng.cpu_loras}")


def check_pinned(scenario: Scenario, adapters: list[AdapterSpec]) -> None:
    """Refuse pinned adapters that do not exist or that would fill a tier.

    Raises:
        ConfigError: ``eviction.pinned`` names an adapter the scenario does not define, or pins ``max_loras`` or more
            adapters (``max_cpu_loras`` >= ``max_loras``, so the CPU cache keeps a free entry too).
    """
    pinned = scenario.eviction.pinned
    if not pinned:
        return
    names = {a.name for a in adapters}
    unknown = [a for a in pinned if a not in names]
    if unknown:
        known = ", ".join(a.name for a in adapters[:5]) + (", ..." if len(adapters) > 5 else "")
        raise ConfigError(f"eviction.pinned: adapter {unknown[0]!r} is not defined under adapters "
                          f"({len(adapters)} defined: {known or 'none'})")
    eng = scenario.engine
    for field, cap in (("max_loras", eng.max_loras), ("max_cpu_loras", eng.cpu_loras)):
        if len(pinned) >= cap:
            raise ConfigError(f"eviction.pinned: {len(pinned)} adapter(s) pinned but engine.{field} is {cap}; pin "
                              f"fewer than {field} so that other adapters keep a place")


def check_memory(scenario: Scenario, memory: AdapterMemory, adapters: list[AdapterSpec], kv: KVCache) -> None:
    """Refuse an adapter-memory layout that cannot hold a step's worth of adapters.

    Raises:
        ConfigError: with ``unified`` memory, an adapter needs more KV blocks than the whole pool, or ``max_loras`` of
            the largest adapters would not fit in it (a step could never run); with a paged layout, ``max_loras`` of
            the largest adapters exceed the pages.
    """
    if not adapters:
        return
    units = [memory.units(a.rank, a.size_bytes) for a in adapters]
    biggest = max(units)
    need = min(scenario.engine.max_loras, len(adapters)) * biggest
    if memory.shares_kv:
        if need > kv.total_blocks:
            k = min(scenario.engine.max_loras, len(adapters))
            fix = ("raise engine.kv_cache_tokens" if scenario.engine.kv_cache_tokens is not None
                   else "raise engine.gpu_memory_utilization")
            raise ConfigError(f"adapter_memory: unified: {k} of the largest adapters (one step's worth) take {need} "
                              f"KV blocks but the pool holds {kv.total_blocks}; lower engine.max_loras or {fix}")
    elif memory.capacity_units is not None and need > memory.capacity_units:
        raise ConfigError(f"adapter_memory: {scenario.adapter_memory.name}: {need} units needed for max_loras "
                          f"adapters, {memory.capacity_units} available")


class Simulation:
    """One simulation run: a SimPy environment, its RNG streams, a replica and its recorder.

    Args:
        scenario: validated scenario.
        data_dir: data directory for trace and length files (default: ``lorasim.paths.resolve_data_dir``).
        step_time_model: replaces the scenario's step-time model (tests, what-ifs).
        recorder: a :class:`Recorder` (subclass) to receive the hooks; default a plain one.
        check_invariants: re-derive and validate every step's plan (slower; the tests turn it on).
        fast_forward: let the replica run steady decode steps without the scheduler, in one SimPy event, and a
            lone replica that loads inside its steps do a step's adapter transfers without an event each
            (``AdapterStore.load_inline``), where the scheduler, the load mode and the recorder allow it
            (``Replica.fast_forward``); identical results (False: one event and one scheduler call per step, one
            event per transfer, for equivalence tests).

    Raises:
        ConfigError, DataFileError: the scenario cannot be built (impossible tiers, KV capacity, missing files).
    """

    def __init__(self, scenario: Scenario, data_dir: str | Path | None = None,
                 step_time_model: StepTimeModel | None = None, recorder: Recorder | None = None,
                 check_invariants: bool = False, fast_forward: bool = True):
        self.scenario = scenario
        self.rngs = RngStreams(scenario.seed)
        eng = scenario.engine
        self.profile = load_profile(scenario.model.profile)
        self.shape = resolve_shape(scenario, self.profile)
        self.adapters = build_adapters(scenario.adapters, self.shape, self.rngs)
        check_adapter_tiers(scenario, self.shape, self.adapters)
        check_pinned(scenario, self.adapters)
        arrays = build_request_arrays(scenario.workload, self.adapters, self.rngs, data_dir)
        self.notes: tuple[str, ...] = tuple(n for n in arrays.notes if n)
        specs = {a.name: a for a in self.adapters}
        used = np.unique(arrays.adapter_index[arrays.adapter_index >= 0]).tolist()
        unknown = {arrays.adapter_names[i] for i in used} - set(specs)
        if unknown:
            raise ConfigError(f"workload: requests name adapters not defined under adapters: {sorted(unknown)[:5]}")
        self.lora_enabled = eng.enable_lora if eng.enable_lora is not None else bool(self.adapters)
        self.memory = self._adapter_memory(scenario)
        if eng.kv_cache_tokens is not None:
            kv_tokens = eng.kv_cache_tokens
        else:  # the slots the layout reserves come out of the same budget (unified: none, adapters share the pool)
            kv_tokens = self.profile.kv_cache_tokens(
                self.memory.reserved_slots(), eng.max_lora_rank, self.lora_enabled, eng.gpu_memory_utilization,
                eng.max_num_seqs)
        if kv_tokens < eng.block_size:
            raise ConfigError(f"engine: the derived KV cache holds {kv_tokens} tokens (less than one block); "
                              f"lower max_loras/max_lora_rank or set engine.kv_cache_tokens")
        if step_time_model is not None:
            self.perf = step_time_model
        elif scenario.model.step_time.kind == "constant":
            self.perf = ConstantStepTimeModel(scenario.model.step_time.step_time_s)
        else:
            self.perf = self.profile.step_time_model(eng.max_lora_rank, self.lora_enabled, eng.max_loras)
        self.env = simpy.Environment()
        self.recorder = recorder if recorder is not None else Recorder()
        self.recorder.keep_steps = scenario.output.records == "full"
        link_costs = {}
        for name in ("disk_to_cpu", "cpu_to_gpu"):
            cfg, base = getattr(eng, name), self.profile.link_cost(name)
            link_costs[name] = LinkCost(
                base.overhead_s if cfg.overhead_s is None else cfg.overhead_s,
                base.bandwidth_bytes_per_s if cfg.bandwidth_bytes_per_s is None else cfg.bandwidth_bytes_per_s)
        limits = SchedulerLimits(eng.max_num_seqs, eng.max_num_batched_tokens, eng.max_loras,
                                 eng.enable_chunked_prefill, eng.block_size)
        max_len = eng.max_model_len
        cl = scenario.cluster
        n = cl.replicas
        # a request's Seq is created when the engine first needs it (-1: not routed yet; stays -1 for requests a
        # horizon_s cuts off before they arrive)
        self.seqs = SeqTable(arrays.arrival_s, arrays.prompt_tokens, arrays.output_tokens, arrays.adapter_index,
                             arrays.adapter_names, default_replica=-1 if n > 1 else 0)
        if max_len is not None:
            total = arrays.prompt_tokens + arrays.output_tokens
            for i in np.flatnonzero(total > max_len).tolist():
                self.seqs[i].abort_reason = f"prompt+output {int(total[i])} > max_model_len {max_len}"
        self.request_overhead_s = (self.profile.request_overhead_s if eng.request_overhead_s is None
                                   else eng.request_overhead_s)
        # a request reaches the scheduler request_overhead_s after it arrives (API server, tokenization)
        due_s = (arrays.arrival_s + self.request_overhead_s).tolist()
        self.due_s = due_s
        cancels = self._cancel_feed(arrays.cancel_after_s, due_s)
        client = (None if scenario.client.max_connections is None else
                  ConnectionPool(scenario.client.max_connections, scenario.client.time_wait_s))
        # replicas of one host share its disk and PCIe links: gpus_per_host / tensor-parallel GPUs per replica
        per_host = max(1, cl.gpus_per_host // self.profile.tensor_parallel_size)
        host_links: dict[int, dict[str, Link]] = {}
        exclusive = n == 1 and eng.adapter_load == "blocking"  # one process loads, one adapter at a time
        self.replicas: list[Replica] = []
        for i in range(n):
            links = host_links.get(i // per_host)
            if links is None:
                links = host_links[i // per_host] = {k: Link(self.env, k, c, exclusive=exclusive)
                                                     for k, c in link_costs.items()}
            kv = KVCache(kv_tokens, eng.block_size)
            if i == 0:  # every replica has the same layout and KV capacity
                check_memory(scenario, self.memory, self.adapters, kv)
            store = AdapterStore(
                self.env, specs, eng.max_loras, eng.cpu_loras, links["disk_to_cpu"], links["cpu_to_gpu"],
                scenario.eviction.build(), scenario.eviction.build(), self.recorder, pinned=scenario.eviction.pinned,
                memory=self.memory if i == 0 else self._adapter_memory(scenario), kv=kv, replica_id=i)
            scheduler = scenario.scheduler.build()
            try:
                scheduler.check_adapters(set(specs))
            except ValueError as exc:
                raise ConfigError(f"scheduler: {scenario.scheduler.name}: {exc}") from None
            feed = ArrivalFeed(self.seqs, due_s) if n == 1 else PushFeed()
            self.replicas.append(Replica(
                self.env, i, limits, scheduler, store, kv, self.perf, self.recorder, feed,
                overlapped_loads=eng.adapter_load == "overlapped", check_invariants=check_invariants,
                starvation=self._starvation_watch(scenario),
                cancels=cancels if n == 1 else (CancelFeed([]) if cancels is not None else None),
                horizon_s=scenario.horizon_s, fast_forward=fast_forward and n == 1, client=client,
                activation_order=(SetOrder(list(specs), self.rngs.get(f"adapter_hash/{i}"))  # a process each
                                  if eng.adapter_activation == "vllm" else None)))
        self.replica = self.replicas[0]
        self.router = None
        if n > 1:
            self.router = cl.router.build()
            self.router.bind(n, self.rngs.get("router"))
        self.replica.mark_unservable(self.seqs)
        self.adapter_names = tuple(a.name for a in self.adapters)
        if scenario.output.records == "summary":  # fold each request in when it ends, then drop it
            m = scenario.metrics
            self.recorder.stream_requests(
                RequestDigest(arrays.arrival_s, arrays.adapter_index, arrays.adapter_names, self.adapter_names,
                              num_replicas=n, ttft_slo_s=m.ttft_slo_s, tpot_slo_s=m.tpot_slo_s),
                self.seqs.release)
        # the scenario as run: defaults that depend on other fields made explicit (KV capacity and link costs left
        # unset stay derived from the profile, so that editing max_loras in the resolved file still moves them)
        resolved = scenario.model_dump(mode="python")
        resolved["engine"].update(max_cpu_loras=eng.cpu_loras, enable_lora=self.lora_enabled)
        self.resolved = Scenario.model_validate(resolved)
        self.info = {"kv_cache_tokens": int(kv.total_blocks * kv.block_size), "profile": self.profile.name,
                     "num_adapters": len(self.adapters), "scheduler": scenario.scheduler.name,
                     "adapter_activation": eng.adapter_activation, "num_replicas": n}

    def _cancel_feed(self, cancel_after_s: np.ndarray | None, due_s: list[float]) -> CancelFeed | None:
        """Set each cancelled request's ``cancel_at_s`` (arrival + delay); the cancellations that fall after the
        request reaches the scheduler go into the replica's feed (the others are applied when it is submitted)."""
        if cancel_after_s is None:
            return None
        entries = []
        for i in np.flatnonzero(~np.isnan(cancel_after_s)).tolist():
            seq = self.seqs[i]
            seq.cancel_at_s = t = seq.req.arrival_time_s + float(cancel_after_s[i])
            if t > due_s[i]:
                entries.append((t, seq))
        return CancelFeed(entries)

    def _adapter_memory(self, scenario: Scenario) -> AdapterMemory:
        """The scenario's adapter-memory layout, bound to this replica's shape.

        Raises:
            ConfigError: the layout refuses the engine settings (e.g. ``page_rank`` not dividing ``max_lora_rank``).
        """
        eng = scenario.engine
        per_token = self.shape.kv_bytes_per_token / self.profile.tensor_parallel_size
        memory = scenario.adapter_memory.build()
        try:
            memory.bind(MemoryLayout(eng.max_loras, eng.max_lora_rank, eng.cpu_loras,
                                     max(1, math.ceil(per_token * eng.block_size))))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return memory

    def _starvation_watch(self, scenario: Scenario) -> StarvationWatch | None:
        threshold = scenario.metrics.starvation_threshold_s
        return None if threshold is None else StarvationWatch(threshold, scenario.engine.max_loras, self.recorder)

    def _arrivals(self):
        """SimPy process (overlapped loads only): hand each request to the replica the moment it is due, so that
        its adapter can be prefetched while a step is in flight. Blocking mode needs no process: the replica pulls
        due requests between steps."""
        env, replica, feed = self.env, self.replica, self.replica.feed
        while not feed.exhausted:
            dt = feed.next_due_s - env.now
            if dt > 0:
                yield env.timeout(dt)
            replica.take_arrivals(env.now)

    def _route(self):
        """SimPy process (clusters): at each request's due time, ask the router for a replica and hand it over."""
        env, router, replicas = self.env, self.router, self.replicas
        n = len(replicas)
        for seq, due in zip(self.seqs, self.due_s):
            dt = due - env.now
            if dt > 0:
                yield env.timeout(dt)
            i = router.route(seq, [r.state() for r in replicas], env.now)
            if not (isinstance(i, int) and 0 <= i < n):
                raise PolicyError(f"router {router.name!r} returned {i!r} for request {seq.request_id}; expected a "
                                  f"replica index in [0, {n})")
            seq.replica = i
            replicas[i].accept(seq, env.now)
        for r in replicas:
            r.feed.close()
            r.wake()

    def run(self, stop_on_interrupt: bool = False) -> Results:
        """Run to completion (every request finished, aborted or cancelled), or to ``horizon_s``; return the results.

        Args:
            stop_on_interrupt: a KeyboardInterrupt (Ctrl-C) stops the simulation where it is and returns the results
                so far, with ``info["incomplete"] = True`` and ``info["stopped_at_s"]`` (requests not finished are
                reported unfinished); otherwise it propagates.
        """
        t0 = time.perf_counter()
        if self.router is not None:
            self.env.process(self._route())
        elif self.replica.overlapped_loads:
            self.env.process(self._arrivals())
        for r in self.replicas:
            self.env.process(r.run())
        horizon = self.scenario.horizon_s
        incomplete = False
        try:
            self.env.run(until=horizon)
        except KeyboardInterrupt:
            if not stop_on_interrupt:
                raise
            incomplete = True
            self.info.update(incomplete=True, stopped_at_s=float(self.env.now))
            self.recorder.make_consistent()
        lost = self.seqs.lost() if horizon is None and not incomplete else []
        if lost:
            raise RuntimeError(f"{len(lost)} requests neither finished, aborted nor cancelled (first: {lost[:5]}); "
                               "this is a bug")
        rec = self.recorder
        digest = rec.digest
        if digest is not None:  # records: summary: the requests still in the engine, and those never created
            for seq in self.seqs.live():
                digest.ended(seq)
            for first, end, _ in self.seqs.rejected:
                digest.refused(first, end)
            digest.never_created(self.seqs.num_never_created())
            digest.steps_per_replica = [r.num_steps for r in self.replicas]
        return Results(
            requests=requests_frame(self.seqs) if digest is None else empty_requests_frame(),
            steps=pd.DataFrame(rec.steps),
            adapter_events=pd.DataFrame(rec.events),
            itl_values_s=np.asarray(rec.itl_values_s, dtype=float),
            itl_counts=np.asarray(rec.itl_counts, dtype=np.int64),
            scenario=self.resolved,
            info=dict(self.info),
            wall_time_s=time.perf_counter() - t0,
            notes=self.notes,
            step_totals=dict(rec.step_totals),
            adapter_names=self.adapter_names,
            digest=digest,
            num_preemptions=rec.counters["preemptions"],
        )


def simulate(scenario: Scenario, data_dir: str | Path | None = None,
             step_time_model: StepTimeModel | None = None) -> Results:
    """Build and run one simulation. See :class:`Simulation`."""
    return Simulation(scenario, data_dir, step_time_model).run()
