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


SCAN_SKIPS = 32  # requests a full-adapter-set scan skips one by one before it looks up the eligible ones by adapter


def admit_skip(view: ReplicaView, b: PlanBuilder) -> None:
    """vLLM V1's admission scan (see :class:`VllmScheduler`); other policies reuse it for their FCFS phases.

    Once the step's adapter set is full, only requests for its adapters and the base model can join: the scan walks
    on skipping the others until it has skipped ``SCAN_SKIPS`` of them, then visits just the eligible ones
    (:func:`admit_eligible`), so that a long queue of requests for other adapters costs O(adapters), not O(queue).
    Both visit the eligible requests in queue order, so the admissions are the same.
    """
    if b.token_budget <= 0 or b.num_running >= b.limits.max_num_seqs:
        return  # the first request the scan tried would stop it (NO_TOKENS / NO_SEQS): nothing can be admitted
    adapters, cap = b.adapters, b.max_loras
    index = view.waiting_by_adapter
    full = len(adapters) >= cap
    skips = 0
    for seq in view.waiting:
        a = seq.adapter
        if full and a is not None and a not in adapters:
            skips += 1
            if skips > SCAN_SKIPS and index is not None:
                admit_eligible(b, index, after_qpos=seq._qpos)
                return
            continue  # skip: the fast path of try_admit's ADAPTER_CAP
        r = b.try_admit(seq)
        if r is Admit.OK:
            full = len(adapters) >= cap
        elif r is not Admit.ADAPTER_CAP:
            break


def admit_eligible(b: PlanBuilder, index, after_qpos: int | None) -> None:
    """Continue a skip-rule scan once the step's adapter set is full: only requests for the step's adapters and the
    base model can still be admitted, so visit just those (merged in queue order), stopping like the scan would.

    Args:
        b: the plan being built (its adapter set is full and stays so).
        index: the waiting queue by adapter (``ReplicaView.waiting_by_adapter``).
        after_qpos: queue position the scan had reached (requests up to it were already considered).
    """
    lists = [index[a] for a in (*b.adapters, None) if a in index]
    pos = [0] * len(lists)  # next unvisited entry of each list
    if after_qpos is not None:  # entries up to after_qpos were admitted by the scan already
        for i, q in enumerate(lists):
            p, n = 0, len(q)
            while p < n and q[p]._qpos <= after_qpos:
                p += 1
            pos[i] = p
    heap = [(q[p]._qpos, i) for i, (q, p) in enumerate(zip(lists, pos)) if p < len(q)]
    heapq.heapify(heap)
    while heap:
        i = heap[0][1]
        q, p = lists[i], pos[i]
        if b.try_admit(q[p]) is not Admit.OK:
            break
        p += 1
        pos[i] = p
        if p < len(q):
            heapq.heapreplace(heap, (q[p]._qpos, i))
        else:
            heapq.heappop(heap)
