"""S-LoRA's scheduler (Sheng et al., "S-LoRA: Serving Thousands of Concurrent LoRA Adapters", MLSys'24,
arXiv 2311.03285; ``S-LoRA/slora/server/router/manager.py`` ``_step`` and ``req_queue.py``
``ReqQueue._can_add_new_req``)."""

from __future__ import annotations

import math
from bisect import insort

from pydantic import Field

from lorasim._model import MAX_TIME_S, InputModel
from lorasim.engine.sequence import Seq
from lorasim.policies.base import SCHEDULERS, Admit, PlanBuilder, ReplicaView, Scheduler, StepPlan


class SLoraParams(InputModel):
    """Knobs of :class:`SLoraScheduler` (S-LoRA's router arguments)."""

    max_wait_steps: int = Field(default=10, ge=0, le=10_000)
    """Decode steps between two prefill batches while requests wait (S-LoRA ``--max_wait_tokens``, default 10)."""
    abort_after_s: float | None = Field(default=None, gt=0, le=MAX_TIME_S)
    """Early abort: a request still waiting this long after it arrived is aborted (its TTFT SLO is lost anyway);
    unset: never."""


@SCHEDULERS.register("slora")
class SLoraScheduler(Scheduler):
    """S-LoRA: separate prefill and decode steps, FCFS admission under a worst-case future-memory check.

    Rule: when nothing runs, or after ``max_wait_steps`` decode steps, a step prefills a new batch: the waiting
    queue in FCFS order, each request admitted only if the KV cache (minus the adapters' own blocks under
    ``unified`` memory) can hold every running and admitted request at its final length at the worst moment (S-LoRA's
    ``_can_add_new_req``: sorted by remaining output, ``max_i(sum_{j<=i} current_j + (i+1) x remaining_i)``, plus a
    block of rounding per request); the first request that fails the check or any engine limit stops the batch (no
    skipping). Otherwise the step decodes the running batch. Nothing is preempted, as the check leaves room for every
    admitted request to finish. Tie-break: queue (arrival) order. With ``abort_after_s``, waiting requests older than
    that are aborted first (early abort against a TTFT SLO).

    Pair it with ``adapter_memory: unified`` (S-LoRA's pool) and ``engine.adapter_load: overlapped`` (the next
    batch's adapters are prefetched in queue order while the running batch decodes), and a large ``max_loras``
    (S-LoRA has no per-step adapter cap).

    Approximations: S-LoRA counts memory in tokens; the check here adds one block of rounding per request so that
    the paged KV cache never has to preempt. A prompt longer than the token budget is chunked by the engine (S-LoRA
    requires ``batch_max_tokens`` >= the longest prompt); its later chunks run in decode steps.
    """

    rule = ("prefill a FCFS batch every max_wait_steps decode steps under a worst-case future-KV check (stop at the "
            "first misfit); no preemption; optional early abort")
    Params = SLoraParams

    def __init__(self, params=None):
        super().__init__(params)
        self._decodes_since_prefill = 0

    def schedule(self, view: ReplicaView, now_s: float) -> StepPlan:
        b = PlanBuilder(view)
        if self.params.abort_after_s is not None:
            self._early_abort(view, b.plan, now_s)
        aborted = {id(s) for s, _ in b.plan.aborted}
        if view.waiting and (not view.running or self._decodes_since_prefill >= self.params.max_wait_steps):
            if self._prefill_batch(view, b, aborted):
                self._decodes_since_prefill = 0
                return b.plan
        b.schedule_running()
        if b.plan.scheduled or b.plan.bulk_decode:
            self._decodes_since_prefill += 1
        return b.plan

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:  # pragma: no cover
        raise NotImplementedError("slora plans whole steps in schedule()")

    def _early_abort(self, view: ReplicaView, plan: StepPlan, now_s: float) -> None:
        """Abort the waiting requests (from the head: the oldest) that have waited past ``abort_after_s``."""
        limit = self.params.abort_after_s
        for seq in view.waiting:
            if now_s - seq.arrival_time_s <= limit:
                break
            plan.aborted.append((seq, f"slora early abort: waited longer than abort_after_s {limit} s"))

    def _prefill_batch(self, view: ReplicaView, b: PlanBuilder, aborted: set[int]) -> bool:
        """Admit a FCFS batch of waiting requests under the future-memory check; return whether any was admitted."""
        bs = view.limits.block_size
        # (remaining output tokens, tokens held) of every request that will be running, by remaining descending
        lens = sorted(((-(s.max_output_tokens - s.num_output_tokens), s.num_prompt_tokens + s.num_output_tokens)
                       for s in view.running))
        units = view.adapter_units
        adapters = {s.adapter for s in view.running if s.adapter is not None}  # they decode together next
        held = sum(units[x] for x in adapters) if units is not None else 0  # those adapters' blocks (unified)
        capacity = view.kv_total_blocks * bs
        admitted = 0
        for seq in view.waiting:
            if id(seq) in aborted:
                continue
            a = seq.adapter
            new_adapter = a is not None and a not in adapters
            if new_adapter and len(adapters) >= view.limits.max_loras:
                break  # the merged batch would exceed the per-step adapter cap
            insort(lens, (-(seq.max_output_tokens - seq.num_output_tokens - 1), seq.num_tokens + 1))
            extra = units[a] if units is not None and new_adapter else 0
            adapter_tokens = (held + extra) * bs
            alone = len(lens) == 1  # a request that fits the cache alone is never refused (the engine aborts others)
            if not alone and worst_case_tokens(lens) + len(lens) * (bs - 1) > capacity - adapter_tokens:
                break
            if b.try_admit(seq) is not Admit.OK:
                break
            if new_adapter:
                adapters.add(a)
                held += extra
            admitted += 1
        return admitted > 0


def worst_case_tokens(lens: list[tuple[int, int]]) -> int:
    """S-LoRA's peak KV demand: ``max_i (sum_{j<=i} held_j + (i+1) x remaining_i)`` over requests sorted by
    remaining output descending.

    Args:
        lens: ``(-remaining_tokens, held_tokens)`` per request, sorted ascending (remaining descending).

    Returns:
        Tokens, 0 for no requests.
    """
    peak, held = 0, 0
    for i, (neg_left, has) in enumerate(lens):
        held += has
        need = held + (i + 1) * -neg_left
        if need > peak:
            peak = need
    return peak
