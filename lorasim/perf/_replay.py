"""Reconstruct the batch composition of each engine step of the vLLM estimator runs.

The estimator runs queue ``num_prompts`` requests of one fixed prompt length ``P`` and one fixed output length
``L`` at t=0 (``ignore_eos``), so the scheduler's state is a handful of *cohorts*: requests admitted in the same step
move in lock-step. vLLM V1 (0.8.5, chunked prefill) schedules running requests first (every decode, then the
unfinished chunk of a partially prefilled prompt), then admits waiting requests FCFS while the token budget
(``max_num_batched_tokens``, 2048 here) and ``max_num_seqs`` allow; the last admitted prompt may be cut into a chunk.
A request's first output token comes from the step that finishes its prompt; it leaves after its ``L``-th token.

Two ways to drive the replay:

* :meth:`Replay.advance` with the prefill tokens a step computed, known from the log's ``batched_tokens`` minus the
  decodes in flight. This reproduces the real step sequence, including the arrival stagger (the client's 4,096
  requests reach the server over a few hundred ms, so the first steps admit fewer requests, and those cohorts keep
  cycling for the whole run).
* :meth:`Replay.policy_prefill_tokens` to simulate what the scheduler would do with every request already waiting
  (used where the log has no ``batched_tokens``; totals over a run do not depend on the stagger, see ``fit.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ReplayError(ValueError):
    """A logged step cannot be explained by the replayed scheduler state."""


@dataclass(slots=True)
class _Cohort:
    count: int
    prefilled: int      # prompt tokens computed so far (each request)
    generated: int = 0  # output tokens so far (each request)
    first_step: int = -1


@dataclass(frozen=True, slots=True)
class StepComp:
    """Composition of one step, in the units of :class:`lorasim.perf.base.BatchStats`."""

    num_prefill_tokens: int
    num_prefill_seqs: int
    num_decode_seqs: int
    num_decode_context_tokens: int
    prefill_attention_work: int

    @property
    def num_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_seqs


@dataclass(slots=True)
class Replay:
    """Scheduler state of one fixed-length, all-at-t0 benchmark.

    Args:
        prompt_len: prompt tokens per request (``P``).
        output_len: output tokens per request (``L`` >= 1).
        num_prompts: requests queued at t=0.
    """

    prompt_len: int
    output_len: int
    num_prompts: int
    waiting: int = field(init=False)
    cohorts: list[_Cohort] = field(init=False, default_factory=list)
    finished: list[tuple[int, int, int]] = field(init=False, default_factory=list)
    """(count, step of first token, step of last token) of every finished cohort."""
    step: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.prompt_len < 1 or self.output_len < 1 or self.num_prompts < 0:
            raise ValueError("prompt_len and output_len must be >= 1")
        self.waiting = self.num_prompts

    @property
    def num_running(self) -> int:
        return sum(c.count for c in self.cohorts)

    @property
    def num_decoding(self) -> int:
        return sum(c.count for c in self.cohorts if c.prefilled >= self.prompt_len)

    @property
    def done(self) -> bool:
        return self.waiting == 0 and not self.cohorts

    def policy_prefill_tokens(self, budget: int, max_num_seqs: int) -> int:
        """Prefill tokens vLLM V1 would schedule now, with every waiting request already arrived."""
        p = self.prompt_len
        left = budget - self.num_decoding
        tokens = 0
        for c in self.cohorts:
            if c.prefilled < p:
                tokens += min((p - c.prefilled) * c.count, max(left - tokens, 0))
        room = max_num_seqs - self.num_running
        full = max(min(self.waiting, room, (left - tokens) // p), 0)
        tokens += full * p
        rest = left - tokens
        if rest > 0 and self.waiting > full and room > full:
            tokens += rest
        return tokens

    def advance(self, prefill_tokens: int) -> StepComp:
        """Run one step: every decode, plus ``prefill_tokens`` prompt tokens (partial prompts first, then new ones).

        Raises:
            ReplayError: ``prefill_tokens`` is negative or needs more requests than are waiting.
        """
        p, n = self.prompt_len, self.step
        if prefill_tokens < 0:
            raise ReplayError(f"step {n}: {prefill_tokens} prefill tokens (fewer tokens than decodes in flight)")
        decoding = [c for c in self.cohorts if c.prefilled >= p]
        comp_decode = sum(c.count for c in decoding)
        ctx = sum(c.count * (p + c.generated) for c in decoding)
        rem, seqs, attn = prefill_tokens, 0, 0
        completed: list[_Cohort] = []
        for c in self.cohorts:
            if c.prefilled < p and rem > 0:
                if c.count != 1:
                    raise ReplayError(f"step {n}: a partial cohort of {c.count} requests")
                take = min(p - c.prefilled, rem)
                attn += take * (c.prefilled + take)
                c.prefilled += take
                rem -= take
                seqs += 1
                if c.prefilled == p:
                    completed.append(c)
        if rem > 0:
            full, last = divmod(rem, p)
            if full + (last > 0) > self.waiting:
                raise ReplayError(f"step {n}: {rem} new prompt tokens need more than the {self.waiting} waiting")
            self.waiting -= full + (last > 0)
            if full:
                c = _Cohort(full, p)
                self.cohorts.append(c)
                completed.append(c)
                attn += full * p * p
                seqs += full
            if last:
                self.cohorts.append(_Cohort(1, last))
                attn += last * last
                seqs += 1
        for c in decoding:
            c.generated += 1
        for c in completed:
            c.generated, c.first_step = 1, n
        keep = []
        for c in self.cohorts:
            if c.generated >= self.output_len:
                self.finished.append((c.count, c.first_step, n))
            else:
                keep.append(c)
        self.cohorts = keep
        self.step += 1
        return StepComp(prefill_tokens, seqs, comp_decode, ctx, attn)


def simulate(prompt_len: int, output_len: int, num_prompts: int, budget: int, max_num_seqs: int,
             max_steps: int = 10_000_000) -> list[StepComp]:
    """Every step of the benchmark under :meth:`Replay.policy_prefill_tokens` (no arrival stagger, no preemption)."""
    r = Replay(prompt_len, output_len, num_prompts)
    steps = []
    while not r.done and len(steps) < max_steps:
        steps.append(r.advance(r.policy_prefill_tokens(budget, max_num_seqs)))
    return steps
