"""The linear step-time model: a step's wall time as a weighted sum of what the batch computes.

All coefficients are in **milliseconds** (the calibration boundary); :meth:`LinearStepTimeModel.step_time_s`
returns seconds. The form, term by term (``n_*`` from :class:`~lorasim.perf.base.BatchStats`)::

    step_ms = base_ms                                        # per-step fixed cost: launch, schedule, sample, output
            + prefill_token_ms        * num_prefill_tokens   # GEMMs over prompt tokens
            + prefill_seq_ms          * num_prefill_seqs     # per prefill chunk: bookkeeping, sampling of its token
            + decode_seq_ms           * num_decode_seqs      # per decoding sequence: GEMM row + attention + sampling
            + decode_context_token_ms * num_decode_context_tokens  # decode attention reads the KV cache
            + prefill_attention_ms    * prefill_attention_work     # prefill attention ~ chunk * (context + chunk)
      when LoRA is enabled on the server (every step, even with no adapter in the batch):
            + lora_base_ms
            + lora_slot_ms      * max_loras                  # per GPU slot, measured with base-model-only batches
            + lora_slot_rank_ms * max_loras * max_lora_rank
      and, in a step where at least one sequence uses an adapter ("LoRA-active" step):
            + lora_active_ms                                 # the shrink/expand kernels run at all
            + lora_token_rank_ms * num_tokens * max_lora_rank  # kernel work, every slot padded to max_lora_rank
            + lora_token_slot_ms * num_tokens * max_loras    # launch grid spans all tokens x all slots
            + lora_adapter_ms    * num_distinct_adapters     # per adapter segment (its weights are read)
            + lora_prefill_token_slot_ms * num_prefill_tokens * max_loras  # prefill-heavy LoRA steps cost more
            + lora_batch_change_ms   if the batch differs from the previous step's (vLLM rebuilds the LoRA mapping)
      and, whatever the batch:
            + scheduler_skip_ms * num_skipped_waiting        # the scheduler's scan passes over adapter-blocked requests

The LoRA token terms use **all** tokens of a LoRA-active step, not only ``num_lora_tokens``: vLLM's V1 Triton LoRA
kernels size their launch grid by the whole batch (``cdiv(num_tokens, BLOCK_M)`` x slots) and are skipped only when
no token uses an adapter. The per-slot terms reflect that grid (``max_loras`` slots are launched whether used or not).
``lora_prefill_token_slot_ms`` is there because prefill-heavy LoRA steps cost more than the all-token terms predict
(without it, 600-2,048-token LoRA steps are under-predicted by 15-31%); it scales with ``max_loras`` because the
max_loras-1 runs show no such cost and max_loras 400 vs 300 slows the same benchmark by 16.5%.
``lora_batch_change_ms`` is what a LoRA step costs when its batch is not the previous step's: vLLM's
``set_adapter_mapping`` rebuilds the punica token mapping and kernel metadata only when the mapping changed. In the
calibration benchmarks (closed loop, all requests sent at once) few steps change batch; in open-loop serving almost
every step does. It is measured within each run, changed against unchanged steps (:func:`lorasim.perf.fit.
fit_batch_change_ms`); base-model servers show no such difference.
``scheduler_skip_ms`` is CPU time in vLLM's scheduler: each step its admission loop pops every waiting request whose
adapter would exceed ``max_loras`` and pushes it back (``vllm/v1/core/sched/scheduler.py``), until a request stops
the scan; an overloaded server with more adapters than slots walks its whole waiting queue (tens of thousands of
requests) every step. Measured on the scheduler's own timer (``scheduler_time_s``) against the number of requests
skipped (:func:`lorasim.perf.fit.fit_scheduler_skip_ms`).
See ``lorasim/perf/fit.py`` for the data each term is fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass

from lorasim.perf.base import BatchStats

MIN_STEP_S = 1e-4
"""Floor of any predicted step (seconds): a linear fit must never yield a zero or negative duration."""


@dataclass(frozen=True, slots=True)
class LinearStepTimeModel:
    """Step time from fitted linear coefficients, for one server configuration.

    Build it with :meth:`lorasim.perf.profile.Profile.step_time_model`. The per-server LoRA terms (slots, rank) are
    folded into constants at construction, so :meth:`step_time_s` costs a handful of multiplications.

    Attributes:
        base_ms: fixed per-step cost (ms).
        prefill_token_ms: ms per prefill token.
        prefill_seq_ms: ms per sequence with a prefill chunk in the step.
        decode_seq_ms: ms per decoding sequence.
        decode_context_token_ms: ms per KV token read by decoding sequences.
        prefill_attention_ms: ms per prefill attention token pair (``chunk * (context_before + chunk)``).
        lora_always_ms: LoRA cost of every step when LoRA is enabled (``lora_base + slots`` terms), ms.
        lora_active_ms: extra fixed cost of a step with at least one adapter token, ms.
        lora_token_ms: ms per token of a LoRA-active step (``rank`` and ``slot`` terms folded in).
        lora_prefill_token_ms: extra ms per prefill token of a LoRA-active step (``slot`` term folded in).
        lora_adapter_ms: ms per distinct adapter in the step.
        lora_batch_change_ms: extra ms of a LoRA-active step whose batch changed (``BatchStats.batch_changed``).
        scheduler_skip_ms: ms per waiting request the admission scan passed over (``BatchStats.num_skipped_waiting``).
        min_step_s: floor of the returned duration, seconds.
    """

    base_ms: float
    prefill_token_ms: float
    prefill_seq_ms: float
    decode_seq_ms: float
    decode_context_token_ms: float
    prefill_attention_ms: float
    lora_always_ms: float = 0.0
    lora_active_ms: float = 0.0
    lora_token_ms: float = 0.0
    lora_prefill_token_ms: float = 0.0
    lora_adapter_ms: float = 0.0
    lora_batch_change_ms: float = 0.0
    scheduler_skip_ms: float = 0.0
    min_step_s: float = MIN_STEP_S

    def step_time_ms_unclamped(self, batch: BatchStats) -> float:
        """The linear prediction in milliseconds, without the floor (for fitting reports and tests)."""
        ms = (self.base_ms
              + self.prefill_token_ms * batch.num_prefill_tokens
              + self.prefill_seq_ms * batch.num_prefill_seqs
              + self.decode_seq_ms * batch.num_decode_seqs
              + self.decode_context_token_ms * batch.num_decode_context_tokens
              + self.prefill_attention_ms * batch.prefill_attention_work
              + self.lora_always_ms)
        if batch.num_lora_tokens > 0 or batch.num_distinct_adapters > 0:
            ms += (self.lora_active_ms + self.lora_token_ms * batch.num_tokens
                   + self.lora_prefill_token_ms * batch.num_prefill_tokens
                   + self.lora_adapter_ms * batch.num_distinct_adapters)
            if batch.batch_changed:
                ms += self.lora_batch_change_ms
        if batch.num_skipped_waiting:
            ms += self.scheduler_skip_ms * batch.num_skipped_waiting
        return ms

    def step_time_s(self, batch: BatchStats) -> float:
        """Seconds the step takes (always >= ``min_step_s`` > 0)."""
        return max(self.step_time_ms_unclamped(batch) / 1000.0, self.min_step_s)

    def decode_step_s(self, num_decode_seqs: int, num_decode_context_tokens: int, num_lora_tokens: int,
                      num_distinct_adapters: int, batch_changed: bool, num_skipped_waiting: int = 0) -> float:
        """:meth:`step_time_s` of a step that only decodes, without building its :class:`BatchStats` (the engine's
        steady steps): the same additions in the same order, less those of zero terms, so the same float."""
        ms = self.base_ms + self.decode_seq_ms * num_decode_seqs
        ms = ms + self.decode_context_token_ms * num_decode_context_tokens
        ms = ms + self.lora_always_ms
        if num_lora_tokens > 0 or num_distinct_adapters > 0:
            ms += (self.lora_active_ms + self.lora_token_ms * num_decode_seqs
                   + self.lora_adapter_ms * num_distinct_adapters)
            if batch_changed:
                ms += self.lora_batch_change_ms
        if num_skipped_waiting:
            ms += self.scheduler_skip_ms * num_skipped_waiting
        return max(ms / 1000.0, self.min_step_s)

    def decode_steps_s(self, num_decode_seqs: int, num_lora_tokens: int, num_distinct_adapters: int,
                       num_skipped_waiting: int = 0):
        """:meth:`decode_step_s` as a function of the context tokens alone, for consecutive pure decode steps of the
        same batch (``batch_changed`` False): the terms that do not depend on the context are added once, in the
        same order, so each call returns the same float as :meth:`decode_step_s`.

        Returns:
            ``f(num_decode_context_tokens) -> seconds``.
        """
        head = self.base_ms + self.decode_seq_ms * num_decode_seqs
        per_ctx, always, floor = self.decode_context_token_ms, self.lora_always_ms, self.min_step_s
        # an absent term adds 0.0, which changes no float but -0.0 (which the floor, > 0, replaces anyway)
        lora = skip = 0.0
        if num_lora_tokens > 0 or num_distinct_adapters > 0:
            lora = (self.lora_active_ms + self.lora_token_ms * num_decode_seqs
                    + self.lora_adapter_ms * num_distinct_adapters)
        if num_skipped_waiting:
            skip = self.scheduler_skip_ms * num_skipped_waiting

        def step_s(ctx: int) -> float:
            ms = head + per_ctx * ctx
            ms = ms + always
            ms += lora
            ms += skip
            return max(ms / 1000.0, floor)
        return step_s
