"""vLLM V1 admission: FCFS, skipping adapter-blocked requests (``vllm/v1/core/sched/scheduler.py``, PR 15422)."""

from __future__ import annotations

import heapq

from lorasim.policies.base import SCHEDULERS, Admit, PlanBuilder, ReplicaView, Scheduler


@SCHEDULERS.register("vllm")
class VllmScheduler(Scheduler):
    """vLLM V1 (March 2025 onward).

    Rule: running requests first; then the waiting queue in order, where a request whose adapter would exceed
    ``max_loras`` is skipped and keeps its queue position, and the token budget, ``max_num_seqs`` or a KV allocation
    failure stops the scan. Tie-break: queue order (arrival order; preempted requests return to the head).
    """

    steady_decode_is_stable = True  # failures (cap, budget, max_num_seqs, KV) cannot clear while only decodes run
    rule = "FCFS; skip a request whose adapter would exceed max_loras (it keeps its place); budget/seqs/KV stop the scan"

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        admit_skip(view, b)


def admit_skip(view: ReplicaView, b: PlanBuilder) -> None:
    """vLLM V1's admission scan (see :class:`VllmScheduler`); other policies reuse it for their FCFS phases.

    Also sets ``b.stats.num_skipped_waiting``: the waiting requests vLLM's loop pops and pushes back before it
    stops (CPU time of the scheduler, costed by the step-time model).
    """
    if b.token_budget <= 0 or b.num_running >= b.limits.max_num_seqs:
        return  # the first request the scan tried would stop it (NO_TOKENS / NO_SEQS): nothing can be admitted
    adapters, cap = b.adapters, b.max_loras
    index = view.waiting_by_adapter
    full = len(adapters) >= cap
    if full and index is not None:
        _count_skipped(view, b, b.num_running, admit_eligible(b, index, after_qpos=None))
        return
    first, skipped, max_seqs = b.num_running, 0, b.limits.max_num_seqs
    for seq in view.waiting:
        a = seq.adapter
        if full and a is not None and a not in adapters:
            skipped += 1
            continue  # skip: the fast path of try_admit's ADAPTER_CAP
        r = b.try_admit(seq)
        if r is Admit.OK:
            if b.token_budget <= 0 or b.num_running >= max_seqs:
                break  # vLLM's loop stops at its top, before looking at the next request
            full = len(adapters) >= cap
            if full and index is not None:
                _count_skipped(view, b, first, admit_eligible(b, index, after_qpos=seq._qpos))
                return
        elif r is Admit.ADAPTER_CAP:
            skipped += 1
        else:
            break
    b.stats.num_skipped_waiting = skipped


def _count_skipped(view: ReplicaView, b: PlanBuilder, first: int, stop) -> None:
    """Set ``b.stats.num_skipped_waiting`` after a scan that ended in :func:`admit_eligible`.

    Before the step's adapter set filled, the scan skipped nothing; after, every request it passed over without
    admitting it was skipped. So the count is (requests the scan passed) - (requests admitted), where the scan passed
    the whole queue (``stop`` None and budget left), the requests up to the last admitted one (budget or
    ``max_num_seqs`` used up: vLLM checks them at the top of its loop), or those ahead of ``stop`` (the request that
    failed on KV blocks or an unchunkable prompt).
    """
    admitted = b.num_running - first
    if b.token_budget <= 0 or b.num_running >= b.limits.max_num_seqs:
        passed = _place(view.waiting, b.plan.scheduled[-1][0]) + 1 if admitted else 0
    elif stop is None:
        passed = len(view.waiting)
    else:
        passed = _place(view.waiting, stop)
    b.stats.num_skipped_waiting = passed - admitted


def _place(waiting, seq) -> int:
    """How many requests wait ahead of ``seq`` (:meth:`WaitingQueue.count_before` on the engine's queue; hand-built
    views are walked)."""
    count_before = getattr(waiting, "count_before", None)
    if count_before is not None:
        return count_before(seq._qpos)
    return next(i for i, s in enumerate(waiting) if s is seq)


def admit_eligible(b: PlanBuilder, index, after_qpos: int | None):
    """Continue a skip-rule scan once the step's adapter set is full: only requests for the step's adapters and the
    base model can still be admitted, so visit just those (merged in queue order), stopping like the scan would.

    Args:
        b: the plan being built (its adapter set is full and stays so).
        index: the waiting queue by adapter (``ReplicaView.waiting_by_adapter``).
        after_qpos: queue position the scan had reached (requests up to it were already considered).

    Returns:
        The request that stopped the scan (it was not admitted), or None when every eligible request was admitted.
    """
    adapters = b.adapters
    if len(index) <= len(adapters):  # few adapters wait: walk the queue's index instead of the step's adapters
        lists = (q for a, q in index.items() if q and (a is None or a in adapters))
    else:
        lists = filter(None, map(index.get, (*adapters, None)))  # their non-empty queues
    # heap entries: (queue key of the list's next entry, that entry's index, the list); queue keys are unique, so
    # entries never tie and the lists themselves are never compared
    if after_qpos is None:
        heap = [(q[0]._qpos, 0, q) for q in lists]
    else:  # entries up to after_qpos were admitted by the scan already
        heap = []
        for q in lists:
            p, n = 0, len(q)
            while p < n and q[p]._qpos <= after_qpos:
                p += 1
            if p < n:
                heap.append((q[p]._qpos, p, q))
    heapq.heapify(heap)
    while heap:
        _, p, q = heap[0]
        if b.try_admit(q[p]) is not Admit.OK:
            return q[p]
        p += 1
        if p < len(q):
            heapq.heapreplace(heap, (q[p]._qpos, p, q))
        else:
            heapq.heappop(heap)
    return None
