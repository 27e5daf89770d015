"""Policy interfaces: what a policy sees (a read-only view) and what it returns (a plan).

Policies never touch the SimPy environment. A scheduler receives a :class:`ReplicaView` and the current time and
returns a :class:`StepPlan`; the engine validates and applies it. The shared :class:`PlanBuilder` implements the
bookkeeping every vLLM-style scheduler needs (token budget, ``max_num_seqs``, KV blocks, recompute preemption and
the adapter cap), so a policy only decides the *order* and the *stop/skip rule* of admissions.
"""

from __future__ import annotations

import enum
from collections import Counter
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import BaseModel

from lorasim._model import InputModel

from lorasim.engine.decodes import DecodeGroup
from lorasim.engine.sequence import Seq
from lorasim.perf.base import BatchStats
from lorasim.policies.registry import Registry


class NoParams(InputModel):
    """A policy without knobs."""



@dataclass(frozen=True, slots=True)
class SchedulerLimits:
    """The engine limits a scheduler must respect (vLLM's names).

    Attributes:
        max_num_seqs: most sequences in the running set.
        max_num_batched_tokens: most tokens computed in one step.
        max_loras: most distinct adapters in one step (base model not counted).
        enable_chunked_prefill: a prompt may be split across steps; if False, a prompt that does not fit the
            remaining token budget stops admission.
        block_size: KV-cache block size in tokens.
    """

    max_num_seqs: int
    max_num_batched_tokens: int
    max_loras: int
    enable_chunked_prefill: bool
    block_size: int


@dataclass(slots=True)
class ReplicaView:
    """Read-only snapshot handed to a scheduler each step.

    Attributes:
        limits: engine limits.
        running: the running set in admission order (vLLM's ``self.running``).
        waiting: the waiting queue, head first (preempted requests are put back at the head): iterate it, or use
            ``reversed``, ``len`` and ``[0]``; the engine's is a :class:`~lorasim.engine.waiting.WaitingQueue`.
        kv_free_blocks: free KV blocks now.
        kv_total_blocks: KV capacity in blocks.
        gpu_adapters: adapters resident (or being loaded) in GPU slots (a live, read-only view).
        cpu_adapters: adapters in the CPU cache (a live, read-only view).
        num_steps: engine steps completed so far.
        waiting_by_adapter: the waiting queue split by adapter (``None``: base model), each in queue order (ascending
            ``Seq._qpos``); None in hand-built views.
        decodes: the running sequences in steady decode, in aggregate (None in hand-built views); members are the
            first ``decodes.num`` entries of ``running`` when no prefill precedes a decode.
        kv_join_cost: with an adapter memory that shares the KV pool (``unified``): KV blocks a step that newly uses
            an adapter takes from ``kv_free_blocks`` (which then also counts the blocks of evictable resident
            adapters); None otherwise (adapters cost no KV blocks).
        adapter_units: with a shared pool, adapter -> KV blocks it occupies when resident; None otherwise.
    """

    limits: SchedulerLimits
    running: Sequence[Seq]
    waiting: Collection[Seq]
    kv_free_blocks: int
    kv_total_blocks: int
    gpu_adapters: Collection[str]
    cpu_adapters: Collection[str]
    num_steps: int = 0
    decodes: DecodeGroup | None = None
    waiting_by_adapter: Mapping[str | None, Sequence[Seq]] | None = None
    kv_join_cost: Callable[[str], int] | None = None
    adapter_units: Mapping[str, int] | None = None

    def blocks_needed(self, seq: Seq, num_new_tokens: int) -> int:
        """Additional KV blocks ``seq`` needs to compute ``num_new_tokens`` more tokens."""
        bs = self.limits.block_size
        total = -(-(seq.num_computed_tokens + num_new_tokens) // bs)
        return max(0, total - seq.num_blocks)


@dataclass(slots=True)
class StepPlan:
    """A scheduler's decision for one step.

    Attributes:
        scheduled: ``(seq, num_new_tokens)`` in batch order; running sequences and admissions alike.
        preempted: running sequences to preempt (recompute), in the order they were chosen.
        stats: the batch summary, filled by :class:`PlanBuilder` (None: the engine computes it).
        num_new_blocks: KV blocks the step allocates (after its preemptions freed theirs), filled by
            :class:`PlanBuilder`.
        adapter_order: the step's distinct adapters in order of first appearance, filled by :class:`PlanBuilder`.
        bulk_decode: every member of the replica's :class:`~lorasim.engine.decodes.DecodeGroup` not in
            ``preempted`` decodes one token in this step without being listed in ``scheduled`` (set only by
            :class:`PlanBuilder`).
        aborted: ``(seq, reason)`` for waiting requests the scheduler gives up on (e.g. S-LoRA's early abort
            against a TTFT SLO); the engine reports each aborted with the reason before it applies the rest.
        extra_time_s: time the step spends beyond its computation (e.g. dLoRA's merge/unmerge switch), seconds.
        merged: the step runs with this adapter merged into the base weights (dLoRA): it is computed at base-model
            cost, without LoRA kernels; every sequence of the step must use that adapter or the base model.
    """

    scheduled: list[tuple[Seq, int]] = field(default_factory=list)
    preempted: list[Seq] = field(default_factory=list)
    stats: BatchStats | None = None
    num_new_blocks: int | None = None
    adapter_order: list[str] | None = None
    bulk_decode: bool = False
    aborted: list[tuple[Seq, str]] = field(default_factory=list)
    extra_time_s: float = 0.0
    merged: str | None = None

    @property
    def is_empty(self) -> bool:
        return not self.scheduled and not self.preempted and not self.bulk_decode and not self.aborted

    @property
    def adapters(self) -> set[str]:
        """Distinct adapters of the scheduled sequences."""
        return {s.adapter for s, _ in self.scheduled if s.adapter is not None}


def can_admit(adapters_in_step, adapter: str | None, max_loras: int) -> bool:
    """The LoRA constraint: may a request for ``adapter`` join a step already using ``adapters_in_step``?

    Base-model requests (``adapter is None``) never count against ``max_loras``; an adapter already in the step
    adds nothing; a new adapter needs room under the cap (vLLM V1 ``Scheduler.schedule``, PR 15422).
    """
    return adapter is None or adapter in adapters_in_step or len(adapters_in_step) < max_loras


def add_tokens(stats: BatchStats, seq: Seq, n: int) -> None:
    """Account ``n`` tokens of ``seq`` in ``stats``: one decode token, or a prefill chunk (and LoRA tokens).

    Distinct adapters are counted by the caller.
    """
    c = seq.num_computed_tokens
    if seq.num_output_tokens > 0 and c + 1 == seq.num_prompt_tokens + seq.num_output_tokens:
        stats.num_decode_seqs += 1
        stats.num_decode_context_tokens += c + 1
    else:
        stats.num_prefill_seqs += 1
        stats.num_prefill_tokens += n
        stats.prefill_attention_work += n * (c + n)
    if seq.adapter is not None:
        stats.num_lora_tokens += n


class Admit(enum.Enum):
    """Outcome of :meth:`PlanBuilder.try_admit`."""

    OK = "ok"
    ADAPTER_CAP = "adapter_cap"  # the step already holds max_loras other adapters (vLLM: skip)
    NO_TOKENS = "no_tokens"  # token budget exhausted, or an unchunkable prompt does not fit (vLLM: stop)
    NO_SEQS = "no_seqs"  # running set at max_num_seqs (vLLM: stop)
    NO_KV = "no_kv"  # KV blocks cannot be allocated (vLLM: stop)


class PlanBuilder:
    """Incremental step planning with vLLM V1's accounting; does not mutate any sequence.

    It also summarises the batch as it goes (``plan.stats``, ``plan.num_new_blocks``, ``plan.adapter_order``), so
    the engine need not walk the batch again.

    Args:
        view: the replica view the plan is built against.
    """

    def __init__(self, view: ReplicaView):
        self.view = view
        self.limits = view.limits
        self.max_loras = view.limits.max_loras
        self.block_size = view.limits.block_size
        self.token_budget = view.limits.max_num_batched_tokens
        self.free_blocks = view.kv_free_blocks
        self.adapters: dict[str, None] = {}  # ordered set of the step's adapters
        self.stats = BatchStats()
        self.plan = StepPlan(stats=self.stats, num_new_blocks=0, adapter_order=[])
        self._running = view.running  # the running list as it stands after planned preemptions (copied on write)
        self._running_owned = False
        self.num_running = len(self._running)
        self._kv_join_cost = view.kv_join_cost

    def _own_running(self) -> list[Seq]:
        """The running list, copied the first time the plan changes it (the view's list belongs to the replica)."""
        if not self._running_owned:
            self._running = list(self._running)
            self._running_owned = True
        return self._running

    def adapter_kv_blocks(self, adapter: str | None) -> int:
        """KV blocks the step takes for ``adapter`` if it joins now (0 when it is already in the step, is the base
        model, or adapters do not share the KV pool)."""
        if adapter is None or self._kv_join_cost is None or adapter in self.adapters:
            return 0
        return self._kv_join_cost(adapter)

    @property
    def preempted_any(self) -> bool:
        return bool(self.plan.preempted)

    @property
    def adapters_full(self) -> bool:
        """True when the step already holds ``max_loras`` distinct adapters."""
        return len(self.adapters) >= self.max_loras

    def schedule_running(self) -> None:
        """Schedule the running set first, in order, preempting from the back on KV shortage (vLLM V1).

        Each running sequence gets ``min(pending tokens, remaining budget)`` tokens. When its blocks cannot be
        allocated, the last running sequence is preempted (recompute) until they can; if the sequence itself is
        the victim, the scan stops.
        """
        if self.view.decodes is not None and self.view.decodes.num and self._schedule_decodes_in_bulk():
            return
        i = 0
        running = self._own_running()
        bs = self.block_size
        while i < len(running) and self.token_budget > 0:
            seq = running[i]
            c = seq.num_computed_tokens
            pending = seq.num_prompt_tokens + seq.num_output_tokens - c
            n = pending if pending < self.token_budget else self.token_budget
            need = (c + n + bs - 1) // bs - seq.num_blocks
            extra = self.adapter_kv_blocks(seq.adapter) if self._kv_join_cost is not None else 0
            if need + extra > self.free_blocks:
                scheduled = True
                while need + extra > self.free_blocks:
                    victim = running.pop()
                    self.free_blocks += victim.num_blocks
                    self.plan.preempted.append(victim)
                    self.num_running -= 1
                    if victim is seq:
                        scheduled = False
                        break
                if not scheduled:
                    break
            self._add(seq, n, need if need > 0 else 0)
            i += 1

    def _schedule_decodes_in_bulk(self) -> bool:
        """The same decision as the loop below, in O(prefilling sequences + victims): when the steady decoders come
        first in the running order and fit the token budget, every decoder gets one token (``plan.bulk_decode``) and
        the rest are scheduled one by one. On KV shortage the victims are the shortest suffix of the running list
        whose blocks make the rest fit, which is what the loop's preempt-from-the-back arrives at.

        Returns:
            False (nothing changed) when the per-sequence loop must decide.
        """
        g = self.view.decodes
        running = self._running
        tail = running[g.num:]
        if g.num > self.token_budget or (tail and any(s._since >= 0 for s in tail)):
            return False
        bs, free = self.block_size, self.free_blocks
        due = g.blocks_due()
        if self._kv_join_cost is not None:  # the step keeps (or loads) its adapters' blocks: an upper bound
            joining = dict.fromkeys(g.adapters)
            joining.update(dict.fromkeys(s.adapter for s in tail if s.adapter is not None))
            free -= sum(self.adapter_kv_blocks(a) for a in joining)
        keep = len(running)  # running[:keep] stay; running[keep:] are preempted (from the back)
        held = 0  # blocks the victims free
        while True:
            num_decoders = keep if keep < g.num else g.num
            budget, avail = self.token_budget - num_decoders, free + held - due
            tail_plan = []
            for seq in running[g.num:keep]:
                if budget <= 0:
                    break
                c = seq.num_computed_tokens
                pending = seq.num_prompt_tokens + seq.num_output_tokens - c
                n = pending if pending < budget else budget
                need = (c + n + bs - 1) // bs - seq.num_blocks
                need = need if need > 0 else 0
                tail_plan.append((seq, n, need))
                budget -= n
                avail -= need
            if avail >= 0:
                break
            if keep <= 1:
                return False  # nothing fits even alone: the per-sequence loop handles it
            keep -= 1
            victim = running[keep]
            held += victim.num_blocks
            if keep < g.num and g.is_due(victim):
                due -= 1
        plan, st = self.plan, self.stats
        if keep < len(running):
            victims = running[keep:][::-1]  # in the order the loop would pick them: the last one first
            plan.preempted.extend(victims)
            running = self._own_running()
            del running[keep:]
            self.num_running -= len(victims)
            self.free_blocks += held
        group_victims = [] if keep >= g.num else plan.preempted[-(g.num - keep):]
        plan.bulk_decode = True
        self.token_budget -= num_decoders
        self.free_blocks -= due
        plan.num_new_blocks += due
        st.num_decode_seqs += num_decoders
        st.num_decode_context_tokens += g.ctx_sum + num_decoders
        st.num_lora_tokens += g.num_lora
        adapters = g.adapters.keys()
        if group_victims:
            gone: Counter = Counter()
            for v in group_victims:
                st.num_decode_context_tokens -= v.num_computed_tokens
                if v.adapter is not None:
                    st.num_lora_tokens -= 1
                    gone[v.adapter] += 1
            adapters = [a for a, k in g.adapters.items() if k > gone.get(a, 0)]
        if self.adapters:  # not the first thing this builder scheduled
            adapters = [a for a in adapters if a not in self.adapters]
        if self._kv_join_cost is not None:
            self.free_blocks -= sum(self._kv_join_cost(a) for a in adapters)
        if self.adapters:
            self.adapters.update(dict.fromkeys(adapters))
        else:
            self.adapters = dict.fromkeys(adapters)
        plan.adapter_order.extend(adapters)
        st.num_distinct_adapters += len(adapters)
        for seq, n, need in tail_plan:
            self._add(seq, n, need)
        return True

    def try_admit(self, seq: Seq) -> Admit:
        """Try to admit a waiting sequence under every limit; on ``OK`` it joins the plan."""
        if self.token_budget <= 0:
            return Admit.NO_TOKENS
        lim = self.limits
        if self.num_running >= lim.max_num_seqs:
            return Admit.NO_SEQS
        a = seq.adapter
        if a is not None and a not in self.adapters and len(self.adapters) >= self.max_loras:
            return Admit.ADAPTER_CAP
        n = seq.num_prompt_tokens + seq.num_output_tokens - seq.num_computed_tokens
        if n > self.token_budget:
            if not lim.enable_chunked_prefill:
                return Admit.NO_TOKENS
            n = self.token_budget
        need = self.view.blocks_needed(seq, n)
        if need + (self.adapter_kv_blocks(a) if self._kv_join_cost is not None else 0) > self.free_blocks:
            return Admit.NO_KV
        self._add(seq, n, need)
        self.num_running += 1
        return Admit.OK

    def _add(self, seq: Seq, n: int, need_blocks: int) -> None:
        plan = self.plan
        plan.scheduled.append((seq, n))
        self.token_budget -= n
        self.free_blocks -= need_blocks
        plan.num_new_blocks += need_blocks
        add_tokens(self.stats, seq, n)
        a = seq.adapter
        if a is not None and a not in self.adapters:
            if self._kv_join_cost is not None:
                self.free_blocks -= self._kv_join_cost(a)
            self.adapters[a] = None
            plan.adapter_order.append(a)
            self.stats.num_distinct_adapters += 1


class Scheduler(ABC):
    """A replica's batch former: which requests run in the next step and how many tokens each computes.

    Subclasses define :meth:`admit_waiting`; running sequences are scheduled first with vLLM V1's recompute
    preemption, and no request is admitted in a step that preempted (vLLM V1). A subclass may override
    :meth:`schedule` entirely (it must return a plan the engine's invariants accept).
    """

    name: ClassVar[str] = ""
    rule: ClassVar[str] = ""  # one-line admission rule and tie-break, shown by `lorasim policies`
    Params: ClassVar[type[BaseModel]] = NoParams
    steady_decode_is_stable: ClassVar[bool] = False
    """Promise that lets the engine skip :meth:`schedule` (see ``Replica._steady_steps``): once a plan only decodes
    the DecodeGroup in bulk (no admission, no preemption, no abort), every later plan is that same bulk decode until
    a request arrives, completes or is cancelled, or the decoders' KV growth no longer fits; with nothing waiting
    and every running request a steady decoder within the token budget, the plan is that bulk decode (or, on KV
    shortage, a preemption); and :meth:`on_step_end` does nothing for such plans. True only for policies whose
    admission failures cannot clear by themselves over time (vLLM's: a full adapter set, token budget,
    ``max_num_seqs`` or KV blocks, all fixed or shrinking while only decodes run). Leave it False for
    time-dependent or stateful policies."""

    def __init__(self, params: BaseModel | None = None):
        self.params = params if params is not None else self.Params()

    def schedule(self, view: ReplicaView, now_s: float) -> StepPlan:
        """Return the plan for the step that starts at ``now_s``."""
        b = PlanBuilder(view)
        b.schedule_running()
        if not b.preempted_any:
            self.admit_waiting(view, b, now_s)
        return b.plan

    def check_adapters(self, names: set[str]) -> None:
        """Refuse parameters that name adapters the scenario does not define (raise ValueError with the parameter's
        path); default: nothing to check."""

    @abstractmethod
    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        """Admit waiting sequences through ``b.try_admit`` in the policy's order, stopping or skipping by its rule."""

    def prefetch_order(self, view: ReplicaView) -> list[str]:
        """Adapters to load ahead, most wanted first; called by the engine only in ``overlapped`` load mode.

        Default: the adapters of waiting requests in queue order (deduplicated, at most ``max_loras``).
        """
        seen: dict[str, None] = {}
        for s in view.waiting:
            if s.adapter is not None and s.adapter not in seen:
                seen[s.adapter] = None
                if len(seen) >= view.limits.max_loras:
                    break
        return list(seen)

    def on_step_end(self, plan: StepPlan, now_s: float) -> None:
        """Called after the engine applied ``plan`` (for stateful policies)."""


class EvictionPolicy(ABC):
    """Chooses which adapter leaves a full cache tier (GPU slots or CPU cache).

    The store tells the policy about every insertion, use and removal; ``victim`` picks among the candidates the
    store allows (adapters not needed by the current step, not being transferred and not pinned by
    ``eviction.pinned``). Each tier has its own instance.

    Hooks, in the order the store calls them for one adapter: :meth:`on_cost` (optional, default no-op) with the
    adapter's transfer time into this tier, then :meth:`on_insert` when it is resident; :meth:`on_use` /
    :meth:`on_use_many` for every step that uses it; :meth:`on_remove` when it is evicted. A policy written before
    :meth:`on_cost` existed keeps working unchanged.
    """

    name: ClassVar[str] = ""
    rule: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, params: BaseModel | None = None):
        self.params = params if params is not None else self.Params()

    def on_cost(self, adapter: str, reload_s: float) -> None:
        """The store is about to insert ``adapter``, whose transfer into this tier takes ``reload_s`` seconds (what
        evicting it would cost when it is next needed: the CPU->GPU copy for the GPU slots, the disk read for the CPU
        cache). Called just before each :meth:`on_insert`; default: ignored."""

    @abstractmethod
    def on_insert(self, adapter: str, now_s: float) -> None: ...

    @abstractmethod
    def on_use(self, adapter: str, now_s: float) -> None: ...

    def on_use_many(self, adapters: list[str], now_s: float) -> None:
        """A step used ``adapters`` (in this order); default: :meth:`on_use` for each. Override for speed."""
        for a in adapters:
            self.on_use(a, now_s)

    def on_use_steps(self, adapters: list[str], starts_s: list[float]) -> None:
        """Consecutive steps starting at ``starts_s`` each used ``adapters`` (in this order) and nothing else
        happened to the tier between them; default: :meth:`on_use_many` per step. A policy whose state after such a
        run depends only on the last use (recency order) overrides it with one call."""
        for t in starts_s:
            self.on_use_many(adapters, t)

    @abstractmethod
    def on_remove(self, adapter: str) -> None: ...

    @abstractmethod
    def victim(self, candidates: set[str]) -> str:
        """Return one of ``candidates`` (non-empty) to evict."""


SCHEDULERS: Registry = Registry("scheduler", Scheduler)
EVICTIONS: Registry = Registry("eviction", EvictionPolicy)


@dataclass(frozen=True, slots=True)
class MemoryLayout:
    """What an :class:`AdapterMemory` needs to know about the replica's GPU memory.

    Attributes:
        max_loras: GPU adapter slots of a flat layout (vLLM ``--max-loras``), also the per-step adapter cap.
        max_lora_rank: rank a flat slot is padded to.
        max_cpu_loras: CPU cache capacity (every GPU-resident adapter is also held there).
        kv_block_bytes: bytes of one KV block (block_size tokens x KV bytes per token, per GPU).
    """

    max_loras: int
    max_lora_rank: int
    max_cpu_loras: int
    kv_block_bytes: int


class AdapterMemory(ABC):
    """How the GPU memory that holds adapters is organised: what a resident adapter occupies, how much the adapter
    tier holds, and how much of the memory budget is taken out of the KV cache for it.

    The engine asks three things: :meth:`reserved_slots` (flat ``max_lora_rank`` slots whose memory the KV budget
    loses up front), :meth:`units` (what one resident adapter occupies) and :attr:`capacity_units` (what the tier
    holds; ``None`` when adapters take their units from the KV pool itself, :attr:`shares_kv`). Policies are pure
    accounting: the :class:`~lorasim.engine.adapters.AdapterStore` charges and releases the units.
    """

    name: ClassVar[str] = ""
    rule: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    shares_kv: ClassVar[bool] = False  # adapters take KV blocks from the KV cache (one pool)

    def __init__(self, params: BaseModel | None = None):
        self.params = params if params is not None else self.Params()
        self.layout: MemoryLayout | None = None

    def bind(self, layout: MemoryLayout) -> None:
        """Attach the replica's layout (called once, before any other method)."""
        self.layout = layout

    @abstractmethod
    def reserved_slots(self) -> int:
        """Slots of ``max_lora_rank`` whose memory is taken from the KV budget before the KV cache is sized."""

    @abstractmethod
    def units(self, rank: int, size_bytes: int) -> int:
        """Units a resident adapter of this rank and size occupies (slots, pages or KV blocks), >= 1."""

    @property
    @abstractmethod
    def capacity_units(self) -> int | None:
        """Units the GPU adapter tier holds; None when adapters share the KV pool (:attr:`shares_kv`)."""


ADAPTER_MEMORIES: Registry = Registry("adapter_memory", AdapterMemory)


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """What a router sees of one replica when a request arrives (read-only; a snapshot).

    Attributes:
        index: replica index.
        num_waiting: requests queued.
        num_running: requests in the running set.
        kv_used_blocks: KV blocks in use.
        kv_total_blocks: KV capacity in blocks.
        gpu_adapters: adapters resident (or loading) in GPU memory.
        active_adapters: adapters with a running or waiting request.
        can_load: ``can_load(adapter)``: the adapter would take a GPU place now without evicting anything.
    """

    index: int
    num_waiting: int
    num_running: int
    kv_used_blocks: int
    kv_total_blocks: int
    gpu_adapters: Collection[str]
    active_adapters: Collection[str]
    can_load: Callable[[str], bool]

    @property
    def outstanding(self) -> int:
        """Requests queued or running."""
        return self.num_waiting + self.num_running

    @property
    def kv_fraction(self) -> float:
        """KV use in [0, 1]."""
        return self.kv_used_blocks / self.kv_total_blocks if self.kv_total_blocks else 1.0


class Router(ABC):
    """Sends each arriving request to one replica of a cluster (``cluster.router``).

    Routers never touch the SimPy environment: :meth:`route` gets the request and a :class:`ReplicaState` per
    replica and returns an index. Random choices use the generator given to :meth:`bind` (the ``router`` stream).
    """

    name: ClassVar[str] = ""
    rule: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, params: BaseModel | None = None):
        self.params = params if params is not None else self.Params()
        self.num_replicas = 0
        self.rng = None

    def bind(self, num_replicas: int, rng) -> None:
        """Attach the cluster size and the router's random generator (called once, before any route)."""
        self.num_replicas = num_replicas
        self.rng = rng

    @abstractmethod
    def route(self, seq: Seq, replicas: Sequence[ReplicaState], now_s: float) -> int:
        """Index of the replica that gets ``seq`` (arriving at ``now_s``)."""


def least_loaded(replicas: Iterable[ReplicaState]) -> int:
    """Index of the replica with the fewest outstanding requests (ties: lower KV use, then lower index)."""
    return min(replicas, key=lambda r: (r.outstanding, r.kv_fraction, r.index)).index


ROUTERS: Registry = Registry("router", Router)
