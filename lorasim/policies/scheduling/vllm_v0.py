"""vLLM V0 admission (``vllm/core/scheduler.py``: ``_schedule_default``, ``_schedule_chunked_prefill`` and
``_schedule_prefills`` with ``curr_loras``; V0 was removed in vLLM 0.11)."""

from __future__ import annotations

from pydantic import Field

from lorasim._model import InputModel
from lorasim.policies.base import SCHEDULERS, Admit, PlanBuilder, ReplicaView, Scheduler, StepPlan


class VllmV0Params(InputModel):
    """Knobs of :class:`VllmV0Scheduler`."""

    watermark: float = Field(default=0.01, ge=0.0, lt=1.0)
    """Fraction of the KV blocks a new prompt must leave free (V0 ``BlockSpaceManager(watermark=0.01)``:
    ``can_allocate`` says LATER when ``free - needed < int(watermark * total)``)."""


@SCHEDULERS.register("vllm-v0")
class VllmV0Scheduler(Scheduler):
    """vLLM V0 (``vllm/core/scheduler.py``, up to vLLM 0.10).

    Rule (``_schedule_prefills``): scan the waiting queue in order; a request whose whole prompt cannot get KV
    blocks while leaving ``watermark`` of the cache free stops the scan; else a request whose adapter is not in
    ``curr_loras`` while ``len(curr_loras) >= max_loras`` is set aside (``leftover_waiting_sequences``, put back at
    the head of the queue in its original order, i.e. it keeps its place); else the token budget or ``max_num_seqs``
    stops the scan. Tie-break: queue order.

    How it differs from ``vllm`` (V1):

    - Without chunked prefill (``_schedule_default``) the queue is scanned *before* the running set, with
      ``curr_loras`` = adapters of every running request; a step that admits any prompt runs prefills only (the
      running requests skip it); only a step that admits nothing schedules the running set (with recompute
      preemption). V1 always schedules the running set first and mixes prefills with decodes.
    - With chunked prefill (``_schedule_chunked_prefill``) the running set goes first as in V1, and ``curr_loras`` is
      the adapters of the running requests scheduled in the step (the set V1 counts), but new requests are admitted
      even in a step that preempted (V1 admits none).
    - The KV check comes *before* the adapter check and covers the whole prompt (V0 allocates every prompt block at
      admission) plus the watermark: an adapter-blocked request that would not fit stops the scan, where V1 skips
      it. V1 checks only the blocks of the scheduled chunk, after the adapter check, without a watermark.
    - Shared with V1: a skipped request keeps its queue position; budget and ``max_num_seqs`` stop the scan.

    Simulator approximations: the engine still allocates KV blocks chunk by chunk, so the whole-prompt check is an
    admission test only (blocks of a prompt still being prefilled from an earlier step are not reserved); a request
    V0 would reject as NEVER fitting with the watermark (V0 ignores it) is tested without the watermark instead, so
    it is eventually served. ``delay_factor``, swapping and concurrent partial prefills (``max_num_partial_prefills``,
    default 1: no effect) are not modelled. The scan is O(waiting) per step.
    """

    rule = "vLLM V0: FCFS; whole-prompt KV (+watermark) stops, cap over curr_loras skips; unchunked: prefill-only steps"
    Params = VllmV0Params

    def schedule(self, view: ReplicaView, now_s: float) -> StepPlan:
        b = PlanBuilder(view)
        if view.limits.enable_chunked_prefill:  # _schedule_chunked_prefill: running first, then new prefills
            b.schedule_running()
            self.admit_waiting(view, b, now_s)  # V0 admits even in a step that preempted
            return b.plan
        self.admit_waiting(view, b, now_s)  # _schedule_default: prefills first
        if b.plan.scheduled:
            return b.plan  # "Don't schedule decodes if prefills are scheduled."
        skipped = b.stats.num_skipped_waiting  # the prefill scan ran in this step all the same
        b = PlanBuilder(view)
        b.schedule_running()
        b.stats.num_skipped_waiting = skipped
        return b.plan

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        if view.limits.enable_chunked_prefill:
            curr = dict.fromkeys(b.adapters)  # adapters of the scheduled running requests
        else:
            curr = dict.fromkeys(s.adapter for s in view.running if s.adapter is not None)
        cap, bs = b.max_loras, b.block_size
        total = view.kv_total_blocks
        mark = int(self.params.watermark * total)
        free = b.free_blocks  # V0 reserves a whole prompt's blocks at admission
        skipped = 0
        for seq in view.waiting:
            need = -(-seq.num_tokens // bs) - seq.num_blocks  # the prompt plus any output to recompute
            if free - need < (mark if total - need >= mark else 0):
                break  # AllocStatus.LATER
            a = seq.adapter
            if a is not None and a not in curr and len(curr) >= cap:
                skipped += 1
                continue  # leftover_waiting_sequences: back at the head, in order
            if b.try_admit(seq) is not Admit.OK:
                break  # budget or max_num_seqs
            if a is not None:
                curr[a] = None
            free -= need
        b.stats.num_skipped_waiting = skipped  # popped and pushed back: the scheduler's CPU time
