"""Non-preemptive multi-level queues by predicted request size, with a starvation guard (the scheduler of Chameleon,
Iliakopoulou et al., "Chameleon: Adaptive Caching and Scheduling for Many-Adapter LLM Inference Environments",
arXiv 2411.17741)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import Field, field_validator

from lorasim._model import MAX_TIME_S, MAX_TOKENS, InputModel
from lorasim.engine.sequence import Seq
from lorasim.policies.base import SCHEDULERS, PlanBuilder, ReplicaView, Scheduler
from lorasim.policies.scheduling.sjf import admit_in_order, eligible_waiting


class MultiQueueParams(InputModel):
    """Knobs of :class:`MultiQueueScheduler`."""

    predictor: Literal["oracle", "prompt_only"] = "oracle"
    """Predicted size of a request: ``oracle`` = prompt tokens + its true output tokens (an upper bound on any
    output-length predictor); ``prompt_only`` = prompt tokens (what is known without a predictor)."""
    size_bounds_tokens: list[Annotated[int, Field(ge=1, le=MAX_TOKENS)]] = Field(
        default_factory=lambda: [512, 2048], min_length=1)
    """Queue boundaries, strictly increasing: queue 0 holds predicted sizes <= the first bound, queue ``i`` sizes in
    ``(bounds[i-1], bounds[i]]``, the last queue everything above the last bound."""
    max_wait_s: float | None = Field(default=10.0, ge=0.0, le=MAX_TIME_S)
    """Starvation guard: a request that has waited longer than this since its arrival is served before every
    queue (overdue requests in queue order); unset (null): no guard, large requests can starve."""

    @field_validator("size_bounds_tokens")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"must be strictly increasing, got {v}")
        return v


@SCHEDULERS.register("multi-queue")
class MultiQueueScheduler(Scheduler):
    """Chameleon's multi-level queues by predicted size (non-preemptive).

    Rule: running requests first (they are never preempted for a smaller request; only vLLM's recompute preemption
    on KV shortage applies); then waiting requests in this order: overdue requests (waited longer than
    ``max_wait_s`` since arrival) first, then the non-empty queue of the smallest predicted sizes, then the next
    queue, and so on. A request's queue is fixed by its predicted size (``prompt_tokens + output_tokens`` with the
    ``oracle`` predictor, ``prompt_tokens`` with ``prompt_only``) against ``size_bounds_tokens``; a preempted
    request stays in its queue. Skip rule on the adapter cap (a request whose adapter would exceed ``max_loras`` is
    passed over and keeps its place); budget, ``max_num_seqs`` or a KV failure stops the scan.
    Tie-break: queue order (FCFS within a queue and among overdue requests; preempted requests at the head).
    Source: Iliakopoulou et al., Chameleon (arXiv 2411.17741), section 4 (non-preemptive multi-queue scheduler with
    size-based queues and a starvation bound); the paper also adapts the queue boundaries and per-queue quotas
    online, which this policy leaves out (fixed boundaries). Sorting costs O(waiting log waiting) per step.
    """

    rule = ("smallest predicted size (prompt + output, oracle or prompt_only) queue first, FCFS within; requests "
            "waiting over max_wait_s first; non-preemptive; skip rule on the adapter cap")
    Params = MultiQueueParams

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        admit_in_order(b, sorted(eligible_waiting(view, b), key=self._key(now_s)))

    def level(self, seq: Seq) -> int:
        """The queue of ``seq``: 0 for the smallest predicted sizes."""
        size = seq.num_prompt_tokens
        if self.params.predictor == "oracle":
            size += seq.max_output_tokens
        return bisect_left(self.params.size_bounds_tokens, size)

    def _key(self, now_s: float) -> Callable[[Seq], tuple[int, int]]:
        max_wait, level = self.params.max_wait_s, self.level
        if max_wait is None:
            return lambda s: (level(s), s._qpos)
        bound = now_s - max_wait  # arrived before this: waited longer than max_wait_s
        return lambda s: (-1 if s.arrival_time_s < bound else level(s), s._qpos)
