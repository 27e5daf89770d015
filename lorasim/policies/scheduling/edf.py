"""Earliest TTFT deadline first (EDF, Liu and Layland 1973; applied to LLM serving TTFT SLOs)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from lorasim._model import MAX_TIME_S, InputModel
from lorasim.policies.base import SCHEDULERS, PlanBuilder, ReplicaView, Scheduler
from lorasim.policies.scheduling.sjf import admit_in_order, eligible_waiting

SloS = Annotated[float, Field(gt=0.0, le=MAX_TIME_S)]


class EdfParams(InputModel):
    """Knobs of :class:`EdfScheduler`."""

    ttft_slo_s: SloS = 1.0
    """TTFT target of every request (base model included) unless its adapter has its own, seconds."""
    ttft_slo_s_by_adapter: dict[str, SloS] = Field(default_factory=dict)
    """Per-adapter TTFT targets, seconds (adapter name -> SLO); names not in the scenario are ignored."""


@SCHEDULERS.register("edf")
class EdfScheduler(Scheduler):
    """Earliest TTFT deadline first.

    Rule: running requests first; then waiting requests in ascending ``deadline = arrival_time_s + SLO`` (the
    adapter's ``ttft_slo_s_by_adapter`` entry, else ``ttft_slo_s``), skipping a request whose adapter would exceed
    ``max_loras``; budget, ``max_num_seqs`` or a KV failure stops the scan. Tie-break: arrival order, then queue
    order. With one SLO for all the order is arrival order (FCFS); per-adapter SLOs let tight-SLO adapters overtake.
    A preempted request keeps its original deadline (it had its first token already, so it usually sorts first, as
    in vLLM). Deadlines already missed are not dropped or demoted. Sorting costs O(waiting log waiting) per step.
    """

    rule = "earliest TTFT deadline (arrival + per-adapter SLO) first; skip rule on the adapter cap"
    Params = EdfParams

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        default, by_adapter = self.params.ttft_slo_s, self.params.ttft_slo_s_by_adapter

        def key(s):
            return s.arrival_time_s + by_adapter.get(s.adapter, default), s.arrival_time_s, s._qpos

        admit_in_order(b, sorted(eligible_waiting(view, b), key=key))
