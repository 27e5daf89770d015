"""Shortest predicted output first, with aging: the SJF that length-aware LLM schedulers approximate (Fu et al.,
"Efficient LLM Scheduling by Learning to Rank", NeurIPS'24, hao-ai-lab/vllm-ltr), with an oracle or a constant
predictor."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

from pydantic import Field

from lorasim._model import MAX_TOKENS, InputModel
from lorasim.engine.sequence import Seq
from lorasim.policies.base import SCHEDULERS, Admit, PlanBuilder, ReplicaView, Scheduler


class SjfParams(InputModel):
    """Knobs of :class:`SjfScheduler`."""

    predictor: Literal["oracle", "mean"] = "oracle"
    """``oracle``: the request's true remaining output length (an upper bound on what any length predictor can
    achieve); ``mean``: the constant ``mean_output_tokens`` for every request (no information: FCFS by arrival when
    ``aging_tokens_per_s`` > 0, queue order when it is 0)."""
    mean_output_tokens: int = Field(default=256, ge=1, le=MAX_TOKENS)
    """The prediction of the ``mean`` predictor, tokens."""
    aging_tokens_per_s: float = Field(default=100.0, ge=0.0, le=1e9)
    """Priority a request gains per second of waiting, in predicted output tokens (0: pure SJF, which can starve
    long requests)."""


def eligible_waiting(view: ReplicaView, b: PlanBuilder) -> Iterable[Seq]:
    """The waiting requests that could still join the step: all of them, or, once the step's adapter set is full
    and the queue index is available, only those for the step's adapters and the base model (not in queue order)."""
    index = view.waiting_by_adapter
    if index is not None and b.adapters_full:
        return [s for a in (*b.adapters, None) for s in index.get(a, ())]
    return view.waiting


def admit_in_order(b: PlanBuilder, order: Iterable[Seq]) -> None:
    """Admit ``order`` through ``b``, skipping requests the adapter cap blocks and stopping at any other failure."""
    full = b.adapters_full
    step = b.adapters
    for seq in order:
        a = seq.adapter
        if full and a is not None and a not in step:
            continue  # skip: the fast path of try_admit's ADAPTER_CAP
        r = b.try_admit(seq)
        if r is Admit.OK:
            full = b.adapters_full
        elif r is not Admit.ADAPTER_CAP:
            return


@SCHEDULERS.register("sjf")
class SjfScheduler(Scheduler):
    """Shortest predicted output first, with aging.

    Rule: running requests first; then waiting requests in ascending ``score = predicted_output_tokens -
    aging_tokens_per_s * wait_s`` (``wait_s`` since arrival), skipping a request whose adapter would exceed
    ``max_loras``; budget, ``max_num_seqs`` or a KV failure stops the scan. Tie-break: queue order. Since every
    request ages at the same rate, the order equals that of ``predicted + aging_tokens_per_s * arrival_time_s``, which
    is what is sorted. The ``oracle`` predictor uses the true remaining output (an upper bound on any predictor);
    ``mean`` gives every request the same prediction, so the order degenerates to arrival order (FCFS, preempted
    requests included) with aging, or queue order without it. Sorting costs O(waiting log waiting) per step.
    """

    rule = "shortest predicted output first (oracle or mean), aged by waiting time; skip rule on the adapter cap"
    Params = SjfParams

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        order = sorted(eligible_waiting(view, b), key=self._key())
        admit_in_order(b, order)

    def _key(self) -> Callable[[Seq], tuple[float, int]]:
        p = self.params
        k = p.aging_tokens_per_s
        if p.predictor == "oracle":
            return lambda s: (s.max_output_tokens - s.num_output_tokens + k * s.arrival_time_s, s._qpos)
        mean = p.mean_output_tokens
        return lambda s: (mean + k * s.arrival_time_s, s._qpos)
