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
        gpu, step = view.gpu_adapters, b.adapters
        hot: list = []
        cold: list = []
        for seq in view.waiting:
            a = seq.adapter
            (hot if a is None or a in gpu or a in step else cold).append(seq)
        for seq in hot:
            r = b.try_admit(seq)
            if r is not Admit.OK and r is not Admit.ADAPTER_CAP:
                return
        full = b.adapters_full
        for seq in cold:
            if full and seq.adapter not in step:
                continue  # skip: the fast path of try_admit's ADAPTER_CAP
            r = b.try_admit(seq)
            if r is Admit.OK:
                full = b.adapters_full
            elif r is not Admit.ADAPTER_CAP:
                break
