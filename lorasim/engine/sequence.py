"""Engine-side state of one request as it moves through a replica."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lorasim.workload.request import Request

if TYPE_CHECKING:
    from lorasim.engine.decodes import DecodeGroup


class SeqStatus(enum.IntEnum):
    WAITING = 0
    RUNNING = 1
    FINISHED = 2
    ABORTED = 3
    CANCELLED = 4  # cancelled by its client (workload ``cancel_probability``)


@dataclass(slots=True, eq=False)
class Seq:
    """Mutable state of a request inside the engine. Policies read it; only the engine writes it.

    Token accounting follows vLLM V1: ``num_tokens = prompt + generated``; a step schedules
    ``num_tokens - num_computed_tokens`` tokens (or a chunk of them); when a step brings ``num_computed_tokens`` up to
    ``num_tokens`` a new token is sampled. Recompute preemption resets ``num_computed_tokens`` to 0, so the prompt and
    the tokens generated so far are prefilled again.
    """

    req: Request
    adapter: str | None
    num_prompt_tokens: int
    max_output_tokens: int
    _c: int = 0  # computed tokens (at step `_since` when in a DecodeGroup)
    _g: int = 0  # output tokens generated (likewise)
    _nb: int = 0  # KV blocks held (outside a DecodeGroup)
    _since: int = -1  # step index at which the sequence joined its replica's DecodeGroup; -1: not in one
    _group: "DecodeGroup | None" = None
    _qpos: int = 0  # position key in the waiting queue: queue order is ascending _qpos
    status: SeqStatus = SeqStatus.WAITING
    num_preemptions: int = 0
    adapter_stall_s: float = 0.0  # time this request's steps spent waiting for adapter loads
    adapter_hit: bool | None = None  # adapter already in a GPU slot when first scheduled (None: base model)
    starved: bool = False  # flagged by the starvation watchdog (lorasim.engine.starvation)
    first_scheduled_time_s: float = float("nan")
    first_token_time_s: float = float("nan")
    last_token_time_s: float = float("nan")
    finish_time_s: float = float("nan")
    abort_reason: str = ""
    cancel_at_s: float = float("inf")  # when the client cancels it (workload cancel_probability); inf: never
    cancel_time_s: float = float("nan")  # when the engine applied the cancellation (NaN: not cancelled)
    arrival_time_s: float = float("nan")  # copied from ``req`` (read on hot paths: a slot, not a property)
    replica: int = 0  # the replica serving it (clusters: chosen by the router)

    def __post_init__(self) -> None:
        self.arrival_time_s = self.req.arrival_time_s

    # Token counters. A sequence in steady decode lives in its replica's DecodeGroup, which advances every member by
    # one token per step without touching it; its counters are then derived from the group's step clock.
    @property
    def num_computed_tokens(self) -> int:
        if self._since < 0:
            return self._c
        return self._c + self._group.step - self._since

    @num_computed_tokens.setter
    def num_computed_tokens(self, v: int) -> None:
        assert self._since < 0, "a sequence in a DecodeGroup is advanced by the group"
        self._c = v

    @property
    def num_output_tokens(self) -> int:
        if self._since < 0:
            return self._g
        return self._g + self._group.step - self._since

    @num_output_tokens.setter
    def num_output_tokens(self, v: int) -> None:
        assert self._since < 0, "a sequence in a DecodeGroup is advanced by the group"
        self._g = v

    @property
    def num_blocks(self) -> int:
        """KV blocks held."""
        if self._since < 0:
            return self._nb
        return -(-self.num_computed_tokens // self._group.block_size)

    @num_blocks.setter
    def num_blocks(self, v: int) -> None:
        assert self._since < 0, "a sequence in a DecodeGroup is advanced by the group"
        self._nb = v

    @property
    def request_id(self) -> int:
        return self.req.request_id

    @property
    def num_tokens(self) -> int:
        """Prompt tokens plus tokens generated so far."""
        return self.num_prompt_tokens + self.num_output_tokens

    @property
    def num_pending_tokens(self) -> int:
        """Tokens the next step must compute before the next token can be sampled."""
        return self.num_prompt_tokens + self.num_output_tokens - self.num_computed_tokens

    @property
    def is_decode(self) -> bool:
        """True when the next step decodes exactly one token (prefill, or recompute, is done)."""
        return self.num_output_tokens > 0 and self.num_computed_tokens == self.num_prompt_tokens + self.num_output_tokens - 1
