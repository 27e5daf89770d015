"""Greedy adapter affinity (DESIGN.md seed strategy; the greedy policy of SGLang PR 15129)."""

from __future__ import annotations

from lorasim.policies.base import SCHEDULERS, Admit, PlanBuilder, ReplicaView, Scheduler


@SCHEDULERS.register("affinity")
class AffinityScheduler(Scheduler):
    """Requests for adapters already on the GPU first.

    Rule: admit waiting requests whose adapter is resident in a GPU slot (or in the step, or base model) in queue
    order, then the others in queue order with vLLM's skip rule; budget, ``max_num_seqs`` or KV failure stops.
    Tie-break: queue order within each class. Not starvation-free: a steady stream for a resident adapter can hold
    a request for another adapter back indefinitely (case 02).
    """

    rule = "resident-adapter requests first (queue order), then the rest with vLLM's skip rule; can starve"

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        gpu = view.gpu_adapters
        hot = [s for s in view.waiting if s.adapter is None or s.adapter in gpu or s.adapter in b.adapters]
        cold = [s for s in view.waiting if not (s.adapter is None or s.adapter in gpu or s.adapter in b.adapters)]
        for seq in hot + cold:
            r = b.try_admit(seq)
            if r is Admit.OK or r is Admit.ADAPTER_CAP:
                continue
            break
