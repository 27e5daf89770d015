"""vLLM V1 admission: FCFS, skipping adapter-blocked requests (``vllm/v1/core/sched/scheduler.py``, PR 15422)."""

from __future__ import annotations

from lorasim.policies.base import SCHEDULERS, Admit, PlanBuilder, ReplicaView, Scheduler


@SCHEDULERS.register("vllm")
class VllmScheduler(Scheduler):
    """vLLM V1 (March 2025 onward).

    Rule: running requests first; then the waiting queue in order, where a request whose adapter would exceed
    ``max_loras`` is skipped and keeps its queue position, and the token budget, ``max_num_seqs`` or a KV allocation
    failure stops the scan. Tie-break: queue order (arrival order; preempted requests return to the head).
    """

    rule = "FCFS; skip a request whose adapter would exceed max_loras (it keeps its place); budget/seqs/KV stop the scan"

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        adapters, cap = b.adapters, b.max_loras
        full = len(adapters) >= cap
        for seq in view.waiting:
            a = seq.adapter
            if full and a is not None and a not in adapters:
                continue  # skip: the fast path of try_admit's ADAPTER_CAP
            r = b.try_admit(seq)
            if r is Admit.OK:
                full = len(adapters) >= cap
            elif r is not Admit.ADAPTER_CAP:
                break
