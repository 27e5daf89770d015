"""Scored admission with load/evict lists (DESIGN.md seed strategy)."""

from __future__ import annotations

from lorasim.policies.base import SCHEDULERS, Admit, PlanBuilder, ReplicaView, Scheduler


@SCHEDULERS.register("score")
class ScoreScheduler(Scheduler):
    """Score each waiting request; lowest score first.

    Rule: a request whose adapter is running (or the base model) scores 0, any other scores its arrival time; admit
    in ascending score with vLLM's skip rule; budget, ``max_num_seqs`` or KV failure stops. Tie-break: queue
    order. The load list (``prefetch_order``) is the adapters of the best-scored blocked requests, so overlapped loading
    fetches what will be admitted next.
    """

    rule = "running adapters score 0, others their arrival time; admit lowest score first (skip rule); prefetch by score"

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        running = {s.adapter for s in view.running if s.adapter is not None}
        order = sorted(
            enumerate(view.waiting),
            key=lambda t: (0.0 if t[1].adapter is None or t[1].adapter in running else t[1].arrival_time_s, t[0]),
        )
        self._blocked: list[str] = []
        for _, seq in order:
            r = b.try_admit(seq)
            if r is Admit.OK:
                continue
            if r is Admit.ADAPTER_CAP:
                if seq.adapter not in self._blocked:
                    self._blocked.append(seq.adapter)
                continue
            break

    def prefetch_order(self, view: ReplicaView) -> list[str]:
        blocked = getattr(self, "_blocked", [])
        rest = [a for a in super().prefetch_order(view) if a not in blocked]
        return (blocked + rest)[: view.limits.max_loras]
