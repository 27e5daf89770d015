"""Running sequences in steady decode, advanced in aggregate: O(changes) per step instead of O(running).

A sequence whose prefill is done decodes one token in every step while it stays scheduled. Rather than touching each
one every step, a :class:`DecodeGroup` keeps running totals (members, context tokens, LoRA members, adapters) and
two timetables keyed by step index: when each member next needs a KV block (every ``block_size`` steps) and when it
finishes. A member's counters are derived from the group's step clock (see :class:`~lorasim.engine.sequence.Seq`).
A step in which the scheduler does not give every member exactly one token (budget or KV shortage, a policy that
schedules otherwise) dissolves the group first; the engine then works per sequence and regroups afterwards.
"""

from __future__ import annotations

from lorasim.engine.sequence import Seq


class DecodeGroup:
    """The steady decoders of one replica.

    Args:
        block_size: KV block size in tokens.

    Attributes:
        step: the step clock: index of the step about to run (or running).
        num: members.
        ctx_sum: sum of members' computed tokens at the start of step ``step``.
        num_lora: members that use an adapter.
        adapters: adapter -> number of members using it (insertion-ordered).
        stall_s: cumulative adapter-load wait of the steps run by the group (members' stall = difference).
        version: counts joins and removals (equal versions: same members).
    """

    def __init__(self, block_size: int):
        self.block_size = block_size
        self.step = 0
        self.num = 0
        self.ctx_sum = 0
        self.num_lora = 0
        self.adapters: dict[str, int] = {}  # a plain dict: Counter's missing-key and delete hooks run in Python
        self.stall_s = 0.0
        self.version = 0
        self._block_due: dict[int, dict[int, Seq]] = {}  # step -> {id(seq): seq} needing a new block in it
        self._finish_due: dict[int, dict[int, Seq]] = {}  # step -> {id(seq): seq} producing their last token in it
        self._due_res: dict[int, int] = {}  # id(seq) -> its due step modulo block_size (its key's residue)
        self._stall_base: dict[int, float] = {}  # id(seq) -> stall_s when it joined

    def blocks_due(self) -> int:
        """KV blocks the members need for the step about to run."""
        due = self._block_due.get(self.step)
        return len(due) if due else 0

    def is_due(self, seq: Seq) -> bool:
        """True when member ``seq`` needs a new KV block in the step about to run."""
        return self._due_res.get(id(seq)) == self.step % self.block_size

    def add(self, seq: Seq) -> None:
        """Join a sequence whose next step decodes one token (prefill done, not finished)."""
        c, g, step = seq._c, seq._g, self.step
        assert seq._since < 0 and g >= 1 and c == seq.num_prompt_tokens + g - 1 and g < seq.max_output_tokens
        seq._since = step
        seq._group = self
        self.version += 1
        self.num += 1
        self.ctx_sum += c
        a = seq.adapter
        if a is not None:
            self.num_lora += 1
            self.adapters[a] = self.adapters.get(a, 0) + 1
        key = id(seq)
        due = step + (-c) % self.block_size
        self._block_due.setdefault(due, {})[key] = seq
        self._due_res[key] = due % self.block_size
        self._finish_due.setdefault(step + seq.max_output_tokens - g - 1, {})[key] = seq
        self._stall_base[key] = self.stall_s

    def remove(self, seq: Seq) -> None:
        """Take a member out, writing its current counters (as of the clock) back into it."""
        key = id(seq)
        c, g = seq.num_computed_tokens, seq.num_output_tokens
        step, bs = self.step, self.block_size
        due_step = step + (self._due_res.pop(key) - step) % bs  # the one key of that residue in [step, step + bs)
        due = self._block_due[due_step]
        del due[key]
        if not due:
            del self._block_due[due_step]
        fin_step = seq._since + seq.max_output_tokens - seq._g - 1
        fin = self._finish_due[fin_step]
        del fin[key]
        if not fin:
            del self._finish_due[fin_step]
        seq.adapter_stall_s += self.stall_s - self._stall_base.pop(key)
        seq._since = -1
        seq._group = None
        self.version += 1
        seq._c, seq._g, seq._nb = c, g, -(-c // self.block_size)
        self.num -= 1
        self.ctx_sum -= c
        a = seq.adapter
        if a is not None:
            self.num_lora -= 1
            n = self.adapters[a] - 1
            if n:
                self.adapters[a] = n
            else:
                del self.adapters[a]

    def members(self) -> list[Seq]:
        """Current members, in the order they joined within each block-due step (deterministic)."""
        return [s for due in self._block_due.values() for s in due.values()]

    def finishing(self) -> list[Seq]:
        """Members that produce their last token in the step about to run."""
        due = self._finish_due.get(self.step)
        return list(due.values()) if due else []

    def advance(self, load_wait_s: float) -> None:
        """Close the step: every member computed one token; move the block timetable; tick the clock.

        Members that finished in this step are still members: the engine removes them right after.
        """
        self.stall_s += load_wait_s
        self.ctx_sum += self.num
        step = self.step
        due = self._block_due.pop(step, None)
        if due:
            # key step + block_size does not exist yet (keys lie in [step, step + block_size)): the bucket moves
            # whole, keeping its members' order, and each member's residue stays
            self._block_due[step + self.block_size] = due
        self.step = step + 1
