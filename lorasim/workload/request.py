"""The request as the workload produces it: immutable, engine-independent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Request:
    """One inference request.

    Attributes:
        request_id: per-simulation id, 0..n-1 in arrival order.
        arrival_time_s: arrival time in seconds from the start of the simulation.
        prompt_tokens: prompt length in tokens (>= 1).
        output_tokens: number of tokens to generate (>= 1).
        adapter: LoRA adapter name, or ``None`` for a base-model request.
    """

    request_id: int
    arrival_time_s: float
    prompt_tokens: int
    output_tokens: int
    adapter: str | None = None
