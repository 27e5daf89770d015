"""FCFS that stops at the first adapter-blocked request: vLLM's behaviour before PR 15422 (March 2025)."""

from __future__ import annotations

from lorasim.policies.base import SCHEDULERS, Admit, PlanBuilder, ReplicaView, Scheduler


@SCHEDULERS.register("fcfs-break")
class FcfsBreakScheduler(Scheduler):
    """Strict FCFS (vLLM V1 before PR 15422).

    Rule: running requests first; then the waiting queue in order, and the first request that cannot be admitted
    for any reason (adapter cap included) stops the scan. Tie-break: queue order.
    """

    steady_decode_is_stable = True  # failures (cap, budget, max_num_seqs, KV) cannot clear while only decodes run
    rule = "strict FCFS; the first request that cannot be admitted (adapter cap included) stops the scan"

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        for seq in view.waiting:
            if b.try_admit(seq) is not Admit.OK:
                break
