"""The waiting queue: arrival order, preempted requests back at the head, O(1) removal of admitted requests."""

from __future__ import annotations

from collections.abc import Iterator

from lorasim.engine.sequence import Seq

BLOCK_BITS = 9
"""``count_before`` counts waiting requests per block of 2**BLOCK_BITS arrival keys."""


class WaitingQueue:
    """Waiting sequences, head first, with O(1) append, prepend and removal.

    Each sequence carries its queue key ``_qpos`` (queue order is ascending ``_qpos``): arrivals get increasing keys
    at the tail, preempted sequences decreasing keys at the head (vLLM V1 ``Scheduler._preempt_request`` does
    ``waiting.prepend_request``). Two insertion-ordered dicts keep the two ends, so admitting a handful of requests
    from a queue of a million costs a handful of operations, not a rebuild of the list.

    Policies see it as a read-only sequence: iterate (head first), ``reversed``, ``len``, truth value and ``[0]``,
    and :meth:`count_before` (a sequence's place in the queue).
    """

    __slots__ = ("_head", "_tail", "_next_tail", "_next_head", "_live", "_blocks", "_low")

    def __init__(self) -> None:
        self._head: dict[int, Seq] = {}  # preempted, inserted head-most last (iterate reversed)
        self._tail: dict[int, Seq] = {}  # arrivals, in arrival order
        self._next_tail = 0
        self._next_head = -1
        # index of the tail for count_before, built by its first call: a byte per arrival key (1 while it waits),
        # the number waiting per block of BLOCK keys, and the first block that may still hold one
        self._live: bytearray | None = None
        self._blocks: list[int] = []
        self._low = 0

    def append(self, seq: Seq) -> None:
        """Queue ``seq`` at the tail (an arrival); sets ``seq._qpos``."""
        seq._qpos = q = self._next_tail
        self._next_tail += 1
        self._tail[q] = seq
        if self._live is not None:
            self._live.append(1)
            b = q >> BLOCK_BITS
            if b < len(self._blocks):
                self._blocks[b] += 1
            else:
                self._blocks.append(1)

    def appendleft(self, seq: Seq) -> None:
        """Queue ``seq`` at the head (a preempted request); sets ``seq._qpos``."""
        seq._qpos = q = self._next_head
        self._next_head -= 1
        self._head[q] = seq

    def remove(self, seq: Seq) -> None:
        """Take ``seq`` out of the queue.

        Raises:
            KeyError: ``seq`` is not waiting in this queue.
        """
        q = seq._qpos
        d = self._tail if q >= 0 else self._head
        if d.get(q) is not seq:
            raise KeyError(f"request {seq.request_id} is not in the waiting queue")
        del d[q]
        if q >= 0 and self._live is not None:
            self._live[q] = 0
            self._blocks[q >> BLOCK_BITS] -= 1

    def count_before(self, qpos: int) -> int:
        """Number of waiting sequences ahead of queue key ``qpos`` (those with a smaller ``_qpos``).

        The first call indexes the tail in O(arrivals so far); from then on an arrival or a removal costs two
        updates, and a call sums the per-block counts from the oldest block that still holds a waiting request (in
        C), so it costs about (keys spanned by the queue) / 512 additions.
        """
        if qpos < 0:
            return sum(1 for k in self._head if k < qpos)
        if self._live is None:
            live = bytearray(self._next_tail)
            for k in self._tail:
                live[k] = 1
            step = 1 << BLOCK_BITS
            self._blocks = [live.count(1, i, i + step) for i in range(0, len(live), step)]
            self._live = live
        q = qpos if qpos < self._next_tail else self._next_tail
        b, blocks, low = q >> BLOCK_BITS, self._blocks, self._low
        while low < b and not blocks[low]:  # keys only grow: an emptied block stays empty
            low += 1
        self._low = low
        return len(self._head) + sum(blocks[low:b]) + self._live.count(1, b << BLOCK_BITS, q)

    def __iter__(self) -> Iterator[Seq]:
        yield from reversed(self._head.values())
        yield from self._tail.values()

    def __reversed__(self) -> Iterator[Seq]:
        yield from reversed(self._tail.values())
        yield from self._head.values()

    def __len__(self) -> int:
        return len(self._head) + len(self._tail)

    def __bool__(self) -> bool:
        return bool(self._head) or bool(self._tail)

    def __getitem__(self, i: int) -> Seq:
        if i == 0 and self:
            return next(iter(self))
        if i == -1 and self:
            return next(reversed(self))
        raise IndexError("WaitingQueue supports [0] and [-1] only (iterate for the rest)")
