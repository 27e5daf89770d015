"""Batch completion: admit only adapters already running (DESIGN.md seed strategy)."""

from __future__ import annotations

from lorasim.policies.base import SCHEDULERS, Admit, PlanBuilder, ReplicaView, Scheduler


@SCHEDULERS.register("batch-completion")
class BatchCompletionScheduler(Scheduler):
    """Let the running batch drain before switching adapters.

    Rule: while any adapter request is running, admit only waiting requests for adapters in the running set (and
    base-model requests), in queue order; once no adapter request runs, admit in queue order with vLLM's skip rule,
    which forms the next batch. Budget, ``max_num_seqs`` or KV failure stops. Tie-break: queue order.
    """

    rule = "while adapters run, admit only their requests (and base); when none run, FCFS with skip forms the next set"

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        running = {s.adapter for s in view.running if s.adapter is not None}
        for seq in view.waiting:
            if running and seq.adapter is not None and seq.adapter not in running:
                continue
            r = b.try_admit(seq)
            if r is Admit.OK or r is Admit.ADAPTER_CAP:
                continue
            break
