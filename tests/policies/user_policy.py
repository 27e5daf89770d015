"""Example user policies loaded by ``module:Class`` in the tests."""

from __future__ import annotations

from lorasim.policies.base import Admit, PlanBuilder, ReplicaView, Scheduler, StepPlan


class NewestFirst(Scheduler):
    """Admit the newest waiting request first (LIFO), vLLM's skip rule otherwise. Tie-break: queue order reversed."""

    rule = "LIFO admission with the skip rule"

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        for seq in reversed(view.waiting):
            r = b.try_admit(seq)
            if r is not Admit.OK and r is not Admit.ADAPTER_CAP:
                break


class IgnoresAdapterCap(Scheduler):
    """A broken policy: admits everything waiting, ignoring max_loras (the engine must refuse its plans)."""

    rule = "broken on purpose"

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        pass

    def schedule(self, view: ReplicaView, now_s: float) -> StepPlan:
        plan = StepPlan()
        for seq in list(view.running) + list(view.waiting)[:8]:
            plan.scheduled.append((seq, min(seq.num_pending_tokens, 16)))
        return plan
