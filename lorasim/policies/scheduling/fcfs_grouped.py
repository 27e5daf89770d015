"""FCFS with adapter grouping (DESIGN.md seed strategy)."""

from __future__ import annotations

from lorasim.policies.base import SCHEDULERS, Admit, PlanBuilder, ReplicaView, Scheduler


@SCHEDULERS.register("fcfs-grouped")
class FcfsGroupedScheduler(Scheduler):
    """FCFS by adapter group.

    Rule: take adapters in the order of their oldest waiting request (adapters already in the step first); admit
    all waiting requests of that adapter, oldest first, then move to the next adapter while the adapter set fits;
    base-model requests form their own group. Budget, ``max_num_seqs`` or KV failure stops the scan. Tie-break:
    arrival order within a group, oldest-request order across groups.
    """

    rule = "FCFS over adapter groups: admit every waiting request of the oldest adapter, then the next, while the set fits"

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        step = b.adapters
        waiting = view.waiting
        if b.adapters_full:  # only groups already in the step (and the base model) can be admitted
            waiting = [s for s in waiting if s.adapter is None or s.adapter in step]
        groups: dict[str | None, list] = {}  # adapter -> waiting seqs in queue order
        for seq in waiting:
            groups.setdefault(seq.adapter, []).append(seq)
        order = sorted(groups, key=lambda a: (0 if (a is None or a in b.adapters) else 1))  # stable: queue order
        for adapter in order:
            for seq in groups[adapter]:
                r = b.try_admit(seq)
                if r is Admit.OK:
                    continue
                if r is Admit.ADAPTER_CAP:
                    break  # the whole group is blocked; try the next adapter
                return
