"""The seam between the engine and the performance model.

The engine summarises each step's batch as a :class:`BatchStats` and asks a :class:`StepTimeModel` how long the
step takes. Adapter transfers are costed per link by :class:`LinkCost`. Any object with a ``step_time_s`` method
can stand in for the fitted models (tests use :class:`ConstantStepTimeModel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(slots=True)
class BatchStats:
    """What one engine step computes.

    Attributes:
        num_prefill_tokens: tokens of prompt (or recompute) chunks scheduled in this step.
        num_prefill_seqs: sequences contributing a prefill chunk.
        num_decode_seqs: sequences decoding one token.
        num_decode_context_tokens: sum over decoding sequences of their KV length (tokens read by attention).
        prefill_attention_work: sum over prefill chunks of ``chunk * (context_before + chunk)`` (token pairs).
        num_lora_tokens: tokens (prefill + decode) of sequences that use an adapter.
        num_distinct_adapters: distinct adapters among the step's sequences (base model not counted).
        batch_changed: the step's batch differs from the previous step's (a request joined, left, or changed its
            number of tokens); vLLM then rebuilds its LoRA token mapping. False for a repeat of the previous batch.
        num_skipped_waiting: waiting requests the scheduler's admission scan passed over before it stopped (vLLM V1
            pops and pushes back each request whose adapter would exceed ``max_loras``): CPU time of the scheduler,
            which can walk the whole waiting queue every step.
    """

    num_prefill_tokens: int = 0
    num_prefill_seqs: int = 0
    num_decode_seqs: int = 0
    num_decode_context_tokens: int = 0
    prefill_attention_work: int = 0
    num_lora_tokens: int = 0
    num_distinct_adapters: int = 0
    batch_changed: bool = False
    num_skipped_waiting: int = 0

    @property
    def num_tokens(self) -> int:
        """All tokens in the step (prefill tokens + one per decoding sequence)."""
        return self.num_prefill_tokens + self.num_decode_seqs


@runtime_checkable
class StepTimeModel(Protocol):
    """Predicts the wall time of one engine step (forward pass + scheduling overhead)."""

    def step_time_s(self, batch: BatchStats) -> float:
        """Return the step duration in seconds (> 0) for ``batch``."""
        ...


@dataclass(frozen=True, slots=True)
class ConstantStepTimeModel:
    """Every step takes ``step_time_s`` seconds; for tests and analytic checks."""

    step_s: float

    def step_time_s(self, batch: BatchStats) -> float:
        return self.step_s


@dataclass(frozen=True, slots=True)
class LinkCost:
    """Cost of one adapter transfer over a link: ``overhead_s + size_bytes / bandwidth_bytes_per_s``.

    Attributes:
        overhead_s: fixed per-load cost in seconds (>= 0).
        bandwidth_bytes_per_s: sustained bandwidth (> 0; ``inf`` means bytes cost nothing).
    """

    overhead_s: float
    bandwidth_bytes_per_s: float

    def transfer_time_s(self, size_bytes: int) -> float:
        """Seconds to move ``size_bytes`` over this link."""
        return self.overhead_s + size_bytes / self.bandwidth_bytes_per_s
