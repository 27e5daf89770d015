"""Adapter draining (SGLang PR 15129; refined by PR 17913, ``python/sglang/srt/lora/lora_drainer.py``)."""

from __future__ import annotations

from pydantic import Field

from lorasim._model import MAX_TIME_S, InputModel
from lorasim.policies.base import SCHEDULERS, Admit, PlanBuilder, ReplicaView, Scheduler


class DrainParams(InputModel):
    """Knobs of :class:`DrainScheduler`."""

    min_wait_s: float = Field(default=0.0, ge=0.0, le=MAX_TIME_S)
    """An adapter-blocked request starts a drain only once it has waited this long since its arrival; younger
    blocked requests are skipped as in ``vllm`` (SGLang ``LoRADrainer(max_wait_time_secs=0.0)``)."""


@SCHEDULERS.register("drain")
class DrainScheduler(Scheduler):
    """Drain the running adapters for a request the adapter cap blocks.

    Rule: running requests first; then the waiting queue in order with vLLM's skip rule until the first request
    whose adapter would exceed ``max_loras`` (and that has waited ``min_wait_s``); from there on only base-model
    requests are admitted, so no new request joins the running adapters, they drain, a slot frees and the blocked
    request is admitted in a later step (the drain lasts until then: each step the oldest blocked request is the
    target again). Budget, ``max_num_seqs`` or a KV failure stops the scan. Tie-break: queue order.

    Unlike ``fcfs-break``, base-model requests behind the blocked one still run; unlike ``vllm``, a steady stream for
    a running adapter cannot starve another adapter (case 02). SGLang's ``LoRADrainer`` is finer: it drains only one
    running adapter per starving one (the one with the fewest remaining tokens) and still admits requests to a
    draining adapter whose ``max_new_tokens`` is within 1.2x of its longest remaining run; here every running
    adapter drains, which frees the first slot no later but idles the others.
    """

    rule = "FCFS with skip until a request is adapter-blocked; then only base-model requests until it gets a slot"
    Params = DrainParams

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        step, cap = b.adapters, b.max_loras
        min_wait = self.params.min_wait_s
        full = len(step) >= cap
        target = None  # the request the running adapters drain for
        it = iter(view.waiting)
        for seq in it:
            a = seq.adapter
            if full and a is not None and a not in step:  # would exceed max_loras
                if now_s - seq.arrival_time_s >= min_wait:
                    target = seq
                    break
                continue  # too young to start a drain: skipped as in vllm
            r = b.try_admit(seq)
            if r is Admit.OK:
                full = len(step) >= cap
            elif r is not Admit.ADAPTER_CAP:
                return
        if target is None:
            return
        index = view.waiting_by_adapter
        if index is not None:  # the base-model requests behind the target, in queue order
            q = target._qpos
            rest = (s for s in index.get(None, ()) if s._qpos > q)
        else:
            rest = (s for s in it if s.adapter is None)
        for seq in rest:
            if b.try_admit(seq) is not Admit.OK:
                return
