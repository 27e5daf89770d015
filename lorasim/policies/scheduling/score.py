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
        hot: list = []  # score 0, kept in queue order
        cold: list = []
        for seq in view.waiting:
            (hot if seq.adapter is None or seq.adapter in running else cold).append(seq)
        self._cold, self._blocked = cold, None
        for seq in hot:
            r = b.try_admit(seq)
            if r is not Admit.OK and r is not Admit.ADAPTER_CAP:
                return
        if b.adapters_full:
            return  # a full step admits no cold request: none of their adapters is in it
        cold.sort(key=lambda s: s.arrival_time_s)  # stable: queue order breaks ties
        self._cold = cold
        self._blocked = []
        for seq in cold:
            r = b.try_admit(seq)
            if r is Admit.OK:
                continue
            if r is Admit.ADAPTER_CAP:
                if seq.adapter not in self._blocked:
                    self._blocked.append(seq.adapter)
                continue
            break

    def prefetch_order(self, view: ReplicaView) -> list[str]:
        blocked = getattr(self, "_blocked", None)
        if blocked is None:  # the step was full before the cold requests: all of them are blocked
            cold = sorted(getattr(self, "_cold", []), key=lambda s: s.arrival_time_s)
            blocked = list(dict.fromkeys(s.adapter for s in cold))
        rest = [a for a in super().prefetch_order(view) if a not in blocked]
        return (blocked + rest)[: view.limits.max_loras]
