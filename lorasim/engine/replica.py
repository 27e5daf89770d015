"""One replica's step loop: schedule, load adapters, compute, apply (one SimPy event per step)."""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable
from functools import partial

import numpy as np
import simpy

from lorasim.engine.adapters import AdapterStore
from lorasim.engine.arrivals import ArrivalFeed, CancelFeed
from lorasim.engine.clock import timeout_at
from lorasim.engine.client import ConnectionPool
from lorasim.engine.decodes import DecodeGroup
from lorasim.engine.kvcache import KVCache
from lorasim.engine.seqtable import SeqTable
from lorasim.engine.sequence import Seq, SeqStatus
from lorasim.engine.starvation import StarvationWatch
from lorasim.engine.waiting import WaitingQueue
from lorasim.errors import PolicyError
from lorasim.metrics.recorder import Recorder
from lorasim.perf.base import BatchStats, StepTimeModel
from lorasim.policies.base import ReplicaState, ReplicaView, Scheduler, SchedulerLimits, StepPlan, add_tokens


def merged_cost(stats: BatchStats) -> BatchStats:
    """The batch as the step-time model must see it when its one adapter is merged into the base weights (dLoRA):
    no LoRA tokens, no distinct adapters."""
    return dataclasses.replace(stats, num_lora_tokens=0, num_distinct_adapters=0)


class _ActiveAdapters:
    """The adapters with a running or waiting request on a replica (membership tests, for routers)."""

    __slots__ = ("_r",)

    def __init__(self, replica: "Replica"):
        self._r = replica

    def __contains__(self, adapter) -> bool:
        return adapter in self._r.waiting_by_adapter or any(s.adapter == adapter for s in self._r._running)

    def __iter__(self):
        seen = {s.adapter for s in self._r._running} | set(self._r.waiting_by_adapter)
        return iter(sorted(a for a in seen if a is not None))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class Replica:
    """A vLLM-style engine instance: continuous batching, chunked prefill, paged KV, LoRA slots.

    Args:
        env: SimPy environment (the replica's process runs in it).
        replica_id: index of the replica.
        limits: scheduler limits.
        scheduler: batch-forming policy.
        store: adapter tiers.
        kv: KV cache.
        perf: step-time model.
        recorder: metrics hooks.
        feed: the requests, pulled by the loop as they fall due (:meth:`take_arrivals`).
        overlapped_loads: prefetch adapters of queued requests as soon as a slot can take them.
        check_invariants: re-derive and validate every plan from scratch each step (tests); otherwise plans made
            by :class:`~lorasim.policies.base.PlanBuilder` are trusted for their batch summary, and only plans
            without one are checked.
        starvation: the starvation watchdog, checked once per step (None: off).
        cancels: client cancellations, applied between steps (None: no request is cancelled; the loop then does no
            cancellation work at all).
        horizon_s: the simulation stops at this time (None: never); steady steps run in one go never cross it.
        client: the benchmark client's connections (None: unlimited); a request that finds none free is aborted
            when it arrives, and every request's connection closes when it completes, is aborted or cancelled.
        activation_order: None: a step's missing adapters are loaded one after another, none evicting another the
            step uses (:meth:`AdapterStore.ensure`); otherwise the order vLLM's worker walks a step's adapters in
            (:class:`~lorasim.engine.adapters.SetOrder`), each protecting only those before it
            (:meth:`AdapterStore.activate`).
        fast_forward: run steady decode steps in one go (:meth:`_steady_steps`) and, with exclusive links, a step's
            adapter transfers inline (:meth:`AdapterStore.load_inline`), where the scheduler, the load mode and the
            recorder allow it; the results are identical either way (False: one SimPy event per step and per
            transfer).
    """

    def __init__(self, env: simpy.Environment, replica_id: int, limits: SchedulerLimits, scheduler: Scheduler,
                 store: AdapterStore, kv: KVCache, perf: StepTimeModel, recorder, feed: ArrivalFeed,
                 overlapped_loads: bool = False, check_invariants: bool = False,
                 starvation: StarvationWatch | None = None, cancels: CancelFeed | None = None,
                 horizon_s: float | None = None, fast_forward: bool = True, client: ConnectionPool | None = None,
                 activation_order: Callable[[list[str]], list[str]] | None = None):
        self.env = env
        self.replica_id = replica_id
        self.limits = limits
        self.scheduler = scheduler
        self.store = store
        self.kv = kv
        self.perf = perf
        self.recorder = recorder
        self.overlapped_loads = overlapped_loads
        self.check_invariants = check_invariants
        self.starvation = starvation
        self.waiting = WaitingQueue()
        self.waiting_by_adapter: dict[str | None, deque[Seq]] = {}  # adapter -> its waiting seqs in queue order
        self._running: dict[Seq, None] = {}  # the running set in admission order; O(1) removal
        self._running_list: list[Seq] | None = []
        self.decodes = DecodeGroup(kv.block_size)  # steady decoders, advanced in aggregate
        self.feed = feed
        self.cancels = cancels
        self._wakeup = env.event()
        self._last_step_end_s = -1.0
        self._batch_sig: tuple | None = None  # the previous step's batch (see run: LoRA mapping rebuilt when it changes)
        self.horizon_s = math.inf if horizon_s is None else horizon_s
        self.client = client
        self.activation_order = activation_order
        rec_cls = type(recorder)
        # client refusals in bulk (SeqTable.reject), unless a recorder subclass wants each abort
        self._bulk_refusals = (client is not None and isinstance(feed.seqs, SeqTable)
                               and rec_cls.on_abort is Recorder.on_abort)
        plain_recorder = ("on_steady_steps" in rec_cls.__dict__ or (
            rec_cls.on_step_end is Recorder.on_step_end and rec_cls.on_itl is Recorder.on_itl))
        self.fast_forward = (fast_forward and scheduler.steady_decode_is_stable and not overlapped_loads
                             and not check_invariants and plain_recorder)
        store.load_inline(self.horizon_s if self.fast_forward else None)
        self._steady = False  # the last step was a pure bulk decode that completed nothing (see _steady_steps)
        self._steady_run: tuple | None = None  # (segments, skipped) of the run in flight (see _steady_steps)
        self._skipped = 0  # the last scheduled plan's BatchStats.num_skipped_waiting
        self.num_steady_steps = 0  # steps run by _steady_steps (without the scheduler)
        self._completed = 0  # requests completed so far

    @property
    def num_steps(self) -> int:
        """Engine steps completed."""
        return self.decodes.step

    @property
    def num_running(self) -> int:
        """Running sequences (``len(running)`` without building the list)."""
        return len(self._running)

    @property
    def running(self) -> list[Seq]:
        """The running sequences in admission order (vLLM's ``self.running``); do not mutate the list."""
        lst = self._running_list
        if lst is None:
            lst = self._running_list = list(self._running)
        return lst

    # ---- inputs --------------------------------------------------------------------------------------------
    def take_arrivals(self, now_s: float) -> None:
        """Queue every request of the feed due by ``now_s`` (each at its own arrival time) and wake the loop.

        Requests the client refuses (no free connection) are refused a run at a time, without creating their
        sequences, where the feed's table allows it and the recorder does not watch single aborts.
        """
        feed = self.feed
        i, j = feed.pop_range(now_s)
        seqs, due, client = feed.seqs, feed.due, self.client
        k = i
        while k < j:
            if self._bulk_refusals:
                r = client.refused_until(due, k, j)
                if r > k:
                    created = seqs.reject(k, r, client.refusal)
                    self.recorder.on_refused(r - k - len(created), due[r - 1])
                    for c in created:
                        self.submit(seqs[c], due[c])  # refused too: the pool is still full
                    k = r
                    continue
            self.submit(seqs[k], due[k])
            k += 1
        if j > i:
            if self.overlapped_loads and self.waiting:
                self._prefetch(self.scheduler.prefetch_order(self._view()))
            self.wake()

    def accept(self, seq: Seq, now_s: float) -> None:
        """A router hands over ``seq`` at ``now_s`` (clusters): queue it (with its later client cancellation, if
        any), prefetch in overlapped mode, and wake the loop."""
        self.submit(seq, now_s)
        if self.cancels is not None and now_s < seq.cancel_at_s < math.inf and seq.status is SeqStatus.WAITING:
            self.cancels.add(seq.cancel_at_s, seq)
        if self.overlapped_loads and self.waiting:
            self._prefetch(self.scheduler.prefetch_order(self._view()))
        self.wake()

    def state(self) -> ReplicaState:
        """What a router sees of this replica now."""
        store = self.store
        return ReplicaState(self.replica_id, len(self.waiting), len(self._running), self.kv.used_blocks,
                            self.kv.total_blocks, store.gpu.keys(), _ActiveAdapters(self), store.has_room)

    def submit(self, seq: Seq, arrival_s: float) -> None:
        """A request reaches the scheduler at ``arrival_s``: queue it, or abort it if it can never be served or its
        client has no free connection."""
        client = self.client
        if client is not None and not client.try_open(arrival_s):
            seq.abort_reason = client.refusal
            seq.status = SeqStatus.ABORTED
            seq.finish_time_s = arrival_s
            self.recorder.on_abort(seq, arrival_s)
            return
        if seq.abort_reason:  # set by mark_unservable or the workload (max_model_len)
            seq.status = SeqStatus.ABORTED
            seq.finish_time_s = arrival_s
            self.recorder.on_abort(seq, arrival_s)
            if client is not None:
                client.close(arrival_s)
            return
        if seq.cancel_at_s <= arrival_s:  # its client gave up before it reached the scheduler
            seq.status = SeqStatus.CANCELLED
            seq.cancel_time_s = seq.cancel_at_s
            self.recorder.on_cancel(seq, seq.cancel_at_s)
            if client is not None:
                client.close(arrival_s)
            return
        self.waiting.append(seq)
        self.waiting_by_adapter.setdefault(seq.adapter, deque()).append(seq)
        if self.starvation is not None:
            self.starvation.submit(seq)
        self.recorder.on_arrival(seq, arrival_s)

    def wake(self) -> None:
        if not self._wakeup.triggered:
            self._wakeup.succeed()

    def mark_unservable(self, seqs: SeqTable) -> None:
        """Give every sequence that can never be served an ``abort_reason`` (it is aborted when it arrives); only
        those sequences are created.

        Args:
            seqs: the workload's sequences.
        """
        kv, lim = self.kv, self.limits
        total_tokens = seqs.prompt_tokens + seqs.output_tokens
        blocks = -(-total_tokens // kv.block_size)
        if self.store.shares_kv:  # unified memory: the request's adapter takes blocks of the same pool
            units = self.store.units
            per_index = np.array([units.get(a, 0) for a in seqs.adapter_names] + [0], dtype=np.int64)  # -1: base
            blocks = blocks + per_index[seqs.adapter_index]
        too_big = blocks > kv.total_blocks
        if not lim.enable_chunked_prefill:
            too_big |= total_tokens > lim.max_num_batched_tokens
        for i in np.flatnonzero(too_big).tolist():
            seq, total = seqs[i], int(total_tokens[i])
            if seq.abort_reason:
                continue
            if self.store.shares_kv and int(blocks[i]) > kv.total_blocks >= kv.blocks_for(total):
                seq.abort_reason = (f"prompt+output {total} tokens and adapter {seq.adapter} "
                                    f"({self.store.units[seq.adapter]} blocks) exceed the unified pool "
                                    f"({kv.total_blocks} blocks)")
            elif kv.blocks_for(total) > kv.total_blocks:
                seq.abort_reason = (f"prompt+output {total} tokens exceed the KV cache "
                                    f"({kv.total_blocks * kv.block_size} tokens)")
            else:
                seq.abort_reason = (f"prompt+output {total} tokens exceed max_num_batched_tokens "
                                    f"{lim.max_num_batched_tokens} with chunked prefill disabled")

    # ---- the loop ------------------------------------------------------------------------------------------
    def run(self):
        """SimPy process: the step loop."""
        env, feed, cancels = self.env, self.feed, self.cancels
        while True:
            if self._steady and feed.next_due_s > env.now and (cancels is None or cancels.next_s > env.now):
                steady = self._steady_steps()
                if steady is not None:
                    yield steady
                    self._steady_steps_done()
                    continue
            if feed.next_due_s <= env.now:
                self.take_arrivals(env.now)
            if cancels is not None and cancels.next_s <= env.now:
                for seq in cancels.pop_due(env.now):
                    self.cancel(seq, env.now)
            if not self.running and not self.waiting:
                if feed.exhausted:
                    return
                yield from self._idle()
                continue
            plan = self.scheduler.schedule(self._view(), env.now)
            if plan.aborted:
                self._apply_aborts(plan)
                if not plan.scheduled and not plan.bulk_decode and not plan.preempted:
                    continue
            if not plan.bulk_decode and self.decodes.num:
                self._dissolve_decodes()  # the plan treats decoders one by one
            if not plan.scheduled and not plan.bulk_decode:
                if plan.preempted:
                    self._apply_preemptions(plan)
                    continue
                if not self.running and self.store.shares_kv and self.store.release_idle():
                    continue  # unified memory: idle (pinned) adapters held the blocks; freed, plan again
                if not self.running and feed.exhausted and not self.store.loading():
                    raise PolicyError(
                        f"scheduler {self.scheduler.name!r} admitted nothing at t={env.now:.3f}s with an idle replica "
                        f"and {len(self.waiting)} waiting requests (liveness violation)")
                yield from self._idle()
                continue
            start = env.now
            if plan.stats is None or self.check_invariants:
                stats, adapters, new_blocks = self._check_and_measure(plan)
            else:
                stats, adapters, new_blocks = plan.stats, plan.adapter_order, plan.num_new_blocks
            self._apply_preemptions(plan)
            admitted = self._admit(plan, start, new_blocks, adapters)
            if self.starvation is not None:
                self.starvation.check(start, admitted, stats.num_distinct_adapters, partial(self._step_seqs, plan))
            order = self.activation_order
            if order is not None and adapters:
                adapters = order(adapters)
            missing = self.store.missing(adapters) if adapters else ()
            num_loads = len(missing)
            if missing:
                if order is None:
                    yield from self.store.ensure(missing, set(adapters))
                else:
                    num_loads = yield from self.store.activate(adapters)
            load_wait = env.now - start
            self.store.touch(adapters, env.now)
            # the batch as vLLM's LoRA mapping sees it: the steady decoders (by membership) and each listed (seq, n)
            sig = (self.decodes.version if plan.bulk_decode else -1, [(id(q), n) for q, n in plan.scheduled])
            stats.batch_changed = sig != self._batch_sig
            self._batch_sig = sig
            self._skipped = stats.num_skipped_waiting  # what the scan of a repeat of this plan passes over too
            step_s = self.perf.step_time_s(stats if plan.merged is None else merged_cost(stats)) + plan.extra_time_s
            yield env.timeout(step_s)
            completed = self._completed
            self._finish_step(plan, start, load_wait, stats, num_loads)
            self.scheduler.on_step_end(plan, env.now)
            self._steady = self.fast_forward and plan.merged is None and not plan.extra_time_s and (
                (plan.bulk_decode and not plan.scheduled and not plan.preempted and not plan.aborted
                 and self._completed == completed and not missing)
                or self._only_decoders())
            if self.overlapped_loads and self.waiting:
                self._prefetch(self.scheduler.prefetch_order(self._view()))

    def _only_decoders(self) -> bool:
        """True when nothing waits, every running sequence is a steady decoder, they fit the token budget and
        adapters do not share the KV pool: the scheduler's next plan is then a bulk decode of them all (or a
        preemption, which :meth:`_steady_steps` leaves to it), by ``steady_decode_is_stable``."""
        g = self.decodes
        return (not self.waiting and 0 < g.num == len(self._running) and g.num <= self.limits.max_num_batched_tokens
                and not self.store.shares_kv)

    def _steady_steps(self):
        """Run, without the scheduler, the pure bulk-decode steps that follow one, or that follow any step after
        which nothing waits and only steady decoders run (the scheduler's ``steady_decode_is_stable`` promise makes
        each of them the plan it would return), as one SimPy event.

        The run stops before the first step that starts at or after the next arrival or cancellation, whose KV
        growth exceeds the free blocks (the scheduler must preempt), or that would end at or after ``horizon_s``:
        those go through the scheduler. A step that completes requests stays in the run when nothing waits, every
        running sequence is a steady decoder and adapters do not share the KV pool (the scheduler would then plan a
        bulk decode of the rest: nothing can be admitted, no running request gets tokens of the budget the finished
        ones free); the requests complete at its end and the run goes on with the smaller batch (a changed batch for
        the step time model). Otherwise the run stops before it. Every step is computed exactly as the step loop
        would (same batch summary, same float additions of step times, same records, the same completions at the
        same times), so results are identical with and without it.

        Returns:
            The event that fires at the end of the last step (its per-step work and completions are applied already;
            records and recency are applied by :meth:`_steady_steps_done` once it fires), or None when not even one
            step qualifies.
        """
        g, kv, perf = self.decodes, self.kv, self.perf
        if not g.num:
            self._steady = False
            return None
        limit = min(self.feed.next_due_s, self.cancels.next_s if self.cancels is not None else math.inf)
        horizon = self.horizon_s
        num, num_lora, num_adapters = g.num, g.num_lora, len(g.adapters)
        finish_due, block_due, bs, total = g._finish_due, g._block_due, g.block_size, kv.total_blocks
        inline = self._only_decoders()
        changed = self._batch_sig != (g.version, [])
        # the scheduler's scan in each of these steps: nothing waits (inline), or it passes over what it passed over
        # in the plan that started the run (the same queue, the same adapters, KV only shrinking: it stops alike)
        skipped = 0 if inline else self._skipped
        first_s = getattr(perf, "decode_step_s", None)  # a model's shortcuts for pure decode steps (changed batch,
        same_s = getattr(perf, "decode_steps_s", None)  # and the same batch again)
        if first_s is None:  # a model without them: summarise each step as the step loop does
            def first_s(n, ctx, n_lora, n_adapters, chg, n_skipped=0):
                return perf.step_time_s(BatchStats(num_decode_seqs=n, num_decode_context_tokens=ctx,
                                                   num_lora_tokens=n_lora, num_distinct_adapters=n_adapters,
                                                   batch_changed=chg, num_skipped_waiting=n_skipped))
        if same_s is None:
            def same_s(n, n_lora, n_adapters, n_skipped=0, one=first_s):  # (first_s as it is here, not rebound below)
                return lambda ctx: one(n, ctx, n_lora, n_adapters, False, n_skipped)
        if skipped:  # bind the count once (passed only when there is one: older models run where nothing is skipped)
            first_without, same_without = first_s, same_s

            def first_s(n, ctx, n_lora, n_adapters, chg):
                return first_without(n, ctx, n_lora, n_adapters, chg, skipped)

            def same_s(n, n_lora, n_adapters):
                return same_without(n, n_lora, n_adapters, skipped)
        step_s = None  # same_s of the current batch, made when its second step runs
        t = self.env.now
        segments: list[tuple] = []  # runs of steps with the same batch: (starts, ends, contexts, kv_used, running,
        #                             num, num_adapters, adapters)
        starts: list[float] = []
        ends: list[float] = []
        contexts: list[int] = []
        kv_used: list[int] = []
        running: list[int] = []
        sig_version = seg_version = g.version
        num_running = len(self._running)
        # the group's clock, context sum and the KV blocks in use, kept in locals (DecodeGroup.advance and
        # KVCache.allocate inlined) and written back before completions and at the end
        step, ctx_sum, used = g.step, g.ctx_sum, kv.used_blocks
        while t < limit:
            finishing = finish_due.get(step)
            if finishing is not None and not inline:
                break
            due_b = block_due.get(step)
            due = len(due_b) if due_b else 0
            if used + due > total:
                break
            ctx = ctx_sum + num
            if changed:
                end = t + first_s(num, ctx, num_lora, num_adapters, True)
            else:
                if step_s is None:
                    step_s = same_s(num, num_lora, num_adapters)
                end = t + step_s(ctx)
            if end >= horizon:  # a step ending at the horizon never ends: the simulation stops first
                break
            used += due
            if due_b is not None:  # the bucket moves whole (see DecodeGroup.advance)
                del block_due[step]
                if due_b:
                    block_due[step + bs] = due_b
            ctx_sum += num
            step += 1
            starts.append(t)
            ends.append(end)
            contexts.append(ctx)
            t = end
            changed = False
            sig_version = seg_version  # the step's batch (before its completions leave the group)
            if finishing is None:
                kv_used.append(used)
                running.append(num_running)
                continue
            g.step, g.ctx_sum, kv.used_blocks = step, ctx_sum, used
            adapters = list(g.adapters)  # the step's (touched once the run ends)
            self._complete_decoders(list(finishing.values()), end)
            step, ctx_sum, used = g.step, g.ctx_sum, kv.used_blocks
            num_running = len(self._running)
            kv_used.append(used)
            running.append(num_running)
            segments.append((starts, ends, contexts, kv_used, running, num, num_adapters, adapters))
            starts, ends, contexts, kv_used, running = [], [], [], [], []
            num, num_lora, num_adapters = g.num, g.num_lora, len(g.adapters)
            seg_version = g.version
            changed = True  # the next step's batch lacks them
            if not num:
                break
            step_s = None
        g.step, g.ctx_sum, kv.used_blocks = step, ctx_sum, used
        if starts:
            segments.append((starts, ends, contexts, kv_used, running, num, num_adapters, list(g.adapters)))
        if not segments:
            self._steady = False
            return None
        self._batch_sig = (sig_version, [])
        self._steady_run = (segments, skipped)
        return timeout_at(self.env, t)

    def _steady_steps_done(self) -> None:
        """The steady run's last step ended: record its steps, touch its adapters, close it."""
        segments, skipped = self._steady_run
        self._steady_run = None
        # the skip count is passed only when there is one, so that older recorders run where nothing is skipped
        extra = {"num_skipped_waiting": skipped} if skipped else {}
        for starts, ends, contexts, kv_used, running, num, num_adapters, adapters in segments:
            self.num_steady_steps += len(starts)
            if adapters:
                self.store.touch_steps(adapters if self.activation_order is None else self.activation_order(adapters),
                                       starts)
            self.recorder.on_steady_steps(self, starts, ends, num, contexts, num_adapters, kv_used, running, **extra)
        self._last_step_end_s = segments[-1][1][-1]

    def _idle(self):
        """Sleep until the next request falls due or something wakes the loop."""
        self._wakeup = self.env.event()
        due = self.feed.next_due_s
        if self.cancels is not None and self.cancels.next_s < due:
            due = self.cancels.next_s
        dt = due - self.env.now
        wait = self.env.timeout(dt) if dt < math.inf else self._wakeup
        if self.store.shares_kv and self.store.loading():
            # unified memory: a prefetch holds KV blocks until it is ready (then evictable): re-plan when it lands
            wait = self.env.any_of([wait, *self.store.in_flight()])
        yield wait

    def _view(self) -> ReplicaView:
        store = self.store
        if store.shares_kv:  # unified memory: evictable adapters' blocks count as free; a joining adapter costs its own
            free, cost, units = self.kv.free_blocks + store.evictable_kv_blocks(), store.kv_join_cost, store.units
        else:
            free, cost, units = self.kv.free_blocks, None, None
        return ReplicaView(
            limits=self.limits, running=self.running, waiting=self.waiting,
            waiting_by_adapter=self.waiting_by_adapter, kv_free_blocks=free,
            kv_total_blocks=self.kv.total_blocks, gpu_adapters=store.gpu.keys(),
            cpu_adapters=store.cpu.keys(), num_steps=self.num_steps, decodes=self.decodes, kv_join_cost=cost,
            adapter_units=units)

    def _dissolve_decodes(self) -> None:
        """Take every sequence out of the DecodeGroup (they all produced their last token when the last step ended)."""
        g = self.decodes
        for seq in g.members():
            g.remove(seq)
            seq.last_token_time_s = self._last_step_end_s

    def _prefetch(self, adapters: list[str]) -> None:
        protect = {s.adapter for s in self.running if s.adapter is not None} | set(adapters)
        for a in adapters:
            if not self.store.prefetch(a, protect):
                if not self.store.has_room(a):
                    break

    # ---- plan checking and application ---------------------------------------------------------------------
    def _check_and_measure(self, plan: StepPlan) -> tuple[BatchStats, list[str], int]:
        """Validate the plan against every engine invariant and summarise the batch from scratch.

        Returns:
            ``(stats, adapters in order of appearance (the plan's order when a builder made it), KV blocks to allocate
            after preemptions)``.

        Raises:
            PolicyError: the plan breaks an invariant (token budget, ``max_loras``, ``max_num_seqs``, KV capacity,
                a request scheduled twice or in the wrong state) or its builder summary does not match the batch.
        """
        lim = self.limits
        name = self.scheduler.name
        preempted = {id(s) for s in plan.preempted}
        for s in plan.preempted:
            if s.status is not SeqStatus.RUNNING:
                raise PolicyError(f"scheduler {name!r} preempted request {s.request_id}, which is not running")
        seen: set[int] = set()
        stats = BatchStats()
        adapters: dict[str, None] = {}  # ordered set
        tokens = 0
        new_blocks = 0
        num_admitted = 0
        bs = self.kv.block_size
        batch = plan.scheduled
        if plan.bulk_decode:
            batch = [(m, 1) for m in self.decodes.members() if id(m) not in preempted] + batch
        for seq, n in batch:
            if id(seq) in seen or id(seq) in preempted:
                raise PolicyError(f"scheduler {name!r} scheduled request {seq.request_id} twice or after preempting it")
            seen.add(id(seq))
            pending = seq.num_pending_tokens
            if seq.status is SeqStatus.WAITING:
                num_admitted += 1
            elif seq.status is not SeqStatus.RUNNING:
                raise PolicyError(f"scheduler {name!r} scheduled request {seq.request_id} in state {seq.status.name}")
            if not 1 <= n <= pending:
                raise PolicyError(f"scheduler {name!r} gave request {seq.request_id} {n} tokens (pending {pending})")
            tokens += n
            new_blocks += max(0, -(-(seq.num_computed_tokens + n) // bs) - seq.num_blocks)
            add_tokens(stats, seq, n)
            if seq.adapter is not None:
                adapters[seq.adapter] = None
        stats.num_distinct_adapters = len(adapters)
        if plan.merged is not None and set(adapters) - {plan.merged}:
            raise PolicyError(f"scheduler {name!r} merged adapter {plan.merged!r} but the step also computes "
                              f"{sorted(set(adapters) - {plan.merged})[:3]}")
        if not 0.0 <= plan.extra_time_s < math.inf:
            raise PolicyError(f"scheduler {name!r} asked for extra step time {plan.extra_time_s!r} s")
        if tokens > lim.max_num_batched_tokens:
            raise PolicyError(f"scheduler {name!r} scheduled {tokens} tokens > max_num_batched_tokens "
                              f"{lim.max_num_batched_tokens}")
        if len(adapters) > lim.max_loras:
            raise PolicyError(f"scheduler {name!r} put {len(adapters)} distinct adapters in one step > max_loras "
                              f"{lim.max_loras}")
        if len(self.running) - len(plan.preempted) + num_admitted > lim.max_num_seqs:
            raise PolicyError(f"scheduler {name!r} exceeded max_num_seqs {lim.max_num_seqs}")
        freed = sum(s.num_blocks for s in plan.preempted)
        free, need = self.kv.free_blocks + freed, new_blocks
        if self.store.shares_kv:  # unified memory: the step's adapters take blocks, evictable ones give theirs
            free += self.store.evictable_kv_blocks()
            need += sum(self.store.kv_join_cost(a) for a in adapters)
        if need > free:
            raise PolicyError(f"scheduler {name!r} needs {need} KV blocks, {free} free")
        if plan.stats is not None:  # the batch does not tell how far the scheduler's scan went: the plan does
            stats.num_skipped_waiting = plan.stats.num_skipped_waiting
            if not 0 <= stats.num_skipped_waiting <= len(self.waiting) - num_admitted:
                raise PolicyError(f"scheduler {name!r} says its scan skipped {stats.num_skipped_waiting} requests; "
                                  f"{len(self.waiting) - num_admitted} of the {len(self.waiting)} waiting were not "
                                  f"admitted")
        if plan.stats is not None and (plan.stats != stats or plan.num_new_blocks != new_blocks
                                       or set(plan.adapter_order) != set(adapters)):
            raise PolicyError(f"scheduler {name!r} returned a plan whose summary does not match its batch "
                              f"({plan.stats} vs {stats}); do not edit plan.scheduled after building it")
        # a builder's plan keeps its own adapter order (checked equal as a set): recency order, and so the run,
        # must not depend on whether plans are checked
        return stats, list(adapters if plan.stats is None else plan.adapter_order), new_blocks

    def _apply_aborts(self, plan: StepPlan) -> None:
        """Report the waiting requests the scheduler gave up on as aborted, with its reason.

        Raises:
            PolicyError: an aborted request is not waiting, or is also scheduled.
        """
        now = self.env.now
        scheduled = {id(s) for s, _ in plan.scheduled}
        for seq, reason in plan.aborted:
            if seq.status is not SeqStatus.WAITING or id(seq) in scheduled:
                raise PolicyError(f"scheduler {self.scheduler.name!r} aborted request {seq.request_id}, which is not "
                                  f"waiting (or is also scheduled)")
            self._unqueue(seq)
            seq.status = SeqStatus.ABORTED
            seq.abort_reason = reason or f"aborted by scheduler {self.scheduler.name!r}"
            seq.finish_time_s = now
            self.recorder.on_abort(seq, now)
            if self.client is not None:
                self.client.close(now)

    def _apply_preemptions(self, plan: StepPlan) -> None:
        if not plan.preempted:
            return
        g = self.decodes
        for s in plan.preempted:
            del self._running[s]
            if s._group is not None:
                g.remove(s)  # a bulk-decode plan preempted a steady decoder: write its counters back first
                s.last_token_time_s = self._last_step_end_s
        self._running_list = None
        for s in plan.preempted:  # chosen from the back: prepending each keeps their relative order
            self.kv.free(s.num_blocks)
            s.num_blocks = 0
            s.num_computed_tokens = 0
            s.num_preemptions += 1
            s.status = SeqStatus.WAITING
            self.waiting.appendleft(s)
            self.waiting_by_adapter.setdefault(s.adapter, deque()).appendleft(s)
            self.recorder.on_preempt(s, self.env.now)

    def _step_seqs(self, plan: StepPlan) -> list[Seq]:
        """Every sequence the step computes (after its preemptions and admissions)."""
        seqs = [s for s, _ in plan.scheduled]
        if plan.bulk_decode:
            seqs.extend(self.decodes.members())
        return seqs

    def _unqueue(self, seq: Seq) -> None:
        """Take a waiting sequence out of the queue and out of its adapter's queue (O(1) at the adapter's head)."""
        self.waiting.remove(seq)
        q = self.waiting_by_adapter[seq.adapter]
        if q[0] is seq:
            q.popleft()
        else:
            q.remove(seq)
        if not q:
            del self.waiting_by_adapter[seq.adapter]

    def _admit(self, plan: StepPlan, now_s: float, new_blocks: int, adapters: list[str]) -> list[Seq]:
        """Move the plan's waiting sequences to the running set and allocate the step's KV blocks (with unified
        adapter memory, first evicting resident adapters outside the step's ``adapters`` to free them).

        Returns:
            The sequences admitted (first admissions and re-admissions after preemption).
        """
        admitted = [s for s, _ in plan.scheduled if s.status is SeqStatus.WAITING]
        if admitted:
            for s in admitted:
                self._unqueue(s)
            for s in admitted:
                s.status = SeqStatus.RUNNING
                if math.isnan(s.first_scheduled_time_s):
                    s.first_scheduled_time_s = now_s
                    if s.adapter is not None:
                        s.adapter_hit = self.store.is_ready(s.adapter)
                    self.recorder.on_admit(s, now_s)
                self._running[s] = None
            self._running_list = None
        if self.store.shares_kv and new_blocks > self.kv.free_blocks:
            self.store.reclaim_kv(new_blocks, protect=set(adapters))
        self.kv.allocate(new_blocks)  # per-sequence block counts are brought up to date when the step ends
        return admitted

    def cancel(self, seq: Seq, now_s: float) -> None:
        """The client cancels ``seq`` (between steps): take it out of the queue, or out of the running set (and the
        DecodeGroup) freeing its KV blocks; a request already finished, aborted or cancelled is left alone."""
        st = seq.status
        if st is SeqStatus.WAITING:
            self._unqueue(seq)
        elif st is SeqStatus.RUNNING:
            if seq._group is not None:
                self.decodes.remove(seq)  # write its counters back first (as a preempted steady decoder)
                seq.last_token_time_s = self._last_step_end_s
            del self._running[seq]
            self._running_list = None
            self.kv.free(seq.num_blocks)
            seq.num_blocks = 0
        else:
            return
        seq.status = SeqStatus.CANCELLED
        seq.cancel_time_s = now_s
        self.recorder.on_cancel(seq, now_s)
        if self.client is not None:
            self.client.close(now_s)

    def _complete(self, seq: Seq, now_s: float) -> None:
        """The sequence produced its last token: free its KV blocks and record it."""
        self._completed += 1
        seq.status = SeqStatus.FINISHED
        del self._running[seq]
        self._running_list = None
        seq.finish_time_s = now_s
        self.kv.free(seq.num_blocks)
        seq.num_blocks = 0
        self.recorder.on_complete(seq, now_s)
        if self.client is not None:
            self.client.close(now_s)

    def _complete_decoders(self, seqs: list[Seq], now_s: float) -> None:
        """Steady decoders that produced their last token at the step ending at ``now_s``: out of the group, done."""
        g = self.decodes
        for seq in seqs:
            g.remove(seq)
            seq.last_token_time_s = now_s
            self._complete(seq, now_s)

    def _finish_step(self, plan: StepPlan, start_s: float, load_wait_s: float, stats: BatchStats,
                     num_loads: int) -> None:
        now = self.env.now
        prev_end = self._last_step_end_s
        num_bulk_itl = 0
        rec = self.recorder
        bs = self.kv.block_size
        for seq, n in plan.scheduled:
            if load_wait_s > 0.0:
                seq.adapter_stall_s += load_wait_s
            c = seq.num_computed_tokens = seq.num_computed_tokens + n
            nb = (c + bs - 1) // bs
            if nb > seq.num_blocks:
                seq.num_blocks = nb
            if c < seq.num_prompt_tokens + seq.num_output_tokens:
                continue  # a prefill chunk that did not finish the prompt
            seq.num_output_tokens += 1
            if seq.num_output_tokens == 1:
                seq.first_token_time_s = now
            elif seq.last_token_time_s == prev_end:
                num_bulk_itl += 1
            else:
                rec.on_itl(now - seq.last_token_time_s)
            seq.last_token_time_s = now
            if seq.num_output_tokens >= seq.max_output_tokens:
                self._complete(seq, now)
        g = self.decodes
        finishing = g.finishing() if plan.bulk_decode else []
        num_bulk_itl += g.num  # every member decoded one token; each had its last one when the previous step ended
        g.advance(load_wait_s)
        self._complete_decoders(finishing, now)
        # sequences that now decode one token per step join the group
        joiners = self.running if not plan.bulk_decode else (s for s, _ in plan.scheduled)
        for seq in joiners:
            if seq._since < 0 and seq.status is SeqStatus.RUNNING and seq.is_decode:
                g.add(seq)
        if num_bulk_itl:
            rec.on_itl(now - prev_end, num_bulk_itl)
        self._last_step_end_s = now
        rec.on_step_end(self, start_s, now, load_wait_s, stats, num_loads, len(plan.preempted))
