"""dLoRA's dynamic batching (Wu et al., "dLoRA: Dynamically Orchestrating Requests and Adapters for LoRA LLM
Serving", OSDI'24: merged/unmerged inference modes, section 4, with credit-based starvation prevention)."""

from __future__ import annotations

from collections import Counter
from typing import Optional

from pydantic import Field

from lorasim._model import MAX_TIME_S, InputModel
from lorasim.engine.sequence import Seq
from lorasim.policies.base import SCHEDULERS, Admit, PlanBuilder, ReplicaView, Scheduler, StepPlan
from lorasim.policies.scheduling.vllm import admit_skip


class DLoraParams(InputModel):
    """Knobs of :class:`DLoraScheduler`."""

    merge_share: float = Field(default=0.9, gt=0.0, le=1.0)
    """Switch to merged mode when one adapter holds at least this share of the queued and running requests."""
    min_merge_requests: int = Field(default=4, ge=1, le=1_000_000)
    """...and at least this many of them (a merged batch of one request gains little)."""
    max_credit_s: float = Field(default=1.0, gt=0.0, le=MAX_TIME_S)
    """Credit that ends merged mode: the time a passed-over client (another adapter, or the base model) has waited
    with requests queued while the merged adapter was served, seconds."""
    switch_s: float = Field(default=0.01, ge=0.0, le=60.0)
    """Cost of one merge or unmerge (``W += B A`` or ``W -= B A`` over the target modules), added to the step that
    runs first in the new mode, seconds. Default: reading and writing an 8B model's linear weights once at ~3 TB/s
    (2 x 14 GB / 3 TB/s ~ 10 ms)."""


@SCHEDULERS.register("dlora")
class DLoraScheduler(Scheduler):
    """dLoRA: credit-based choice between a merged single-adapter batch and an unmerged (LoRA-kernel) batch.

    Rule: in *unmerged* mode the step is vLLM's (FCFS with skip, LoRA kernels); when one adapter holds at least
    ``merge_share`` of the queued and running requests (and ``min_merge_requests``), the replica merges it: running
    requests of other clients are preempted (their credit starts), and from then on steps run only that adapter's
    requests, FCFS, at base-model cost (``StepPlan.merged``). Every other client with queued requests earns credit
    as time passes; when one reaches ``max_credit_s``, or the merged adapter has nothing left to run, the replica
    unmerges, and stays unmerged for ``max_credit_s`` (so the clients it passed over are served before it can merge
    again). Each switch adds ``switch_s`` to the next step. Tie-break: the adapter with the most requests (equal
    counts: the one whose oldest request is first in queue order); within a mode, queue order.

    Approximations: dLoRA tunes the merge threshold online by comparing measured merged and unmerged throughput; a
    fixed ``merge_share`` stands in for it. Credits are waiting time, not dLoRA's exact credit units.
    """

    rule = ("merge the adapter holding >= merge_share of requests (others preempted, base-model cost); unmerge when "
            "a passed-over client's credit (wait) reaches max_credit_s; each switch costs switch_s")
    Params = DLoraParams

    def __init__(self, params=None):
        super().__init__(params)
        self.merged: Optional[str] = None  # the adapter merged into the base weights; None: unmerged mode
        self.credits: dict[str | None, float] = {}  # client -> credit (s), while merged
        self._switch_pending = False  # the next step pays switch_s
        self._last_s: float | None = None
        self._unmerged_at_s = -float("inf")  # when the replica last unmerged

    def schedule(self, view: ReplicaView, now_s: float) -> StepPlan:
        elapsed = 0.0 if self._last_s is None else now_s - self._last_s
        self._last_s = now_s
        if self.merged is None and now_s - self._unmerged_at_s >= self.params.max_credit_s:
            target = self._merge_target(view)
            if target is not None:
                self.merged, self.credits, self._switch_pending = target, {}, True
                others = [s for s in view.running if s.adapter != target]
                if others:  # only the merged adapter's requests can run: preempt the rest (last first)
                    return StepPlan(preempted=others[::-1])
        elif self.merged is not None:
            self._earn_credit(view, elapsed)
            if self._should_unmerge(view):
                self.merged, self.credits, self._switch_pending = None, {}, True
                self._unmerged_at_s = now_s
        b = PlanBuilder(view)
        b.schedule_running()
        if not b.preempted_any:
            self.admit_waiting(view, b, now_s)
        plan = b.plan
        if self._switch_pending and (plan.scheduled or plan.bulk_decode):
            plan.extra_time_s = self.params.switch_s
            self._switch_pending = False
        if self.merged is not None and plan.adapter_order:
            plan.merged = self.merged
        return plan

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        if self.merged is None:  # unmerged: vLLM's FCFS with skip
            admit_skip(view, b)
            return
        index = view.waiting_by_adapter
        queue = index.get(self.merged, ()) if index is not None else [s for s in view.waiting
                                                                      if s.adapter == self.merged]
        for seq in list(queue):  # merged: only the merged adapter's requests, FCFS
            if b.try_admit(seq) is not Admit.OK:
                break

    # ---- mode decisions ------------------------------------------------------------------------------------
    def _merge_target(self, view: ReplicaView) -> str | None:
        counts: Counter[str | None] = Counter(s.adapter for s in view.running)
        first: dict[str | None, int] = {}  # client -> queue position key of its oldest waiting request
        if view.waiting_by_adapter is not None:
            for a, q in view.waiting_by_adapter.items():
                if q:
                    counts[a] += len(q)
                    first[a] = q[0]._qpos
        else:
            for i, s in enumerate(view.waiting):
                counts[s.adapter] += 1
                first.setdefault(s.adapter, i)
        total = sum(counts.values())
        cands = [(n, -first.get(a, -1), a) for a, n in counts.items() if a is not None]
        if not cands:
            return None
        n, _, a = max(cands)
        if n >= self.params.min_merge_requests and n >= self.params.merge_share * total:
            return a
        return None

    def _earn_credit(self, view: ReplicaView, elapsed_s: float) -> None:
        if view.waiting_by_adapter is not None:
            waiting = [c for c, q in view.waiting_by_adapter.items() if q and c != self.merged]
        else:
            waiting = list({s.adapter for s in view.waiting if s.adapter != self.merged})
        for c in waiting:
            self.credits[c] = self.credits.get(c, 0.0) + elapsed_s

    def _should_unmerge(self, view: ReplicaView) -> bool:
        if any(v >= self.params.max_credit_s for v in self.credits.values()):
            return True
        busy = any(s.adapter == self.merged for s in view.running)
        if not busy:
            index = view.waiting_by_adapter
            busy = bool(index.get(self.merged)) if index is not None else any(
                s.adapter == self.merged for s in view.waiting)
        return not busy and bool(view.waiting)
