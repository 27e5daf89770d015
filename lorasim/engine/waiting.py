"""The waiting queue: arrival order, preempted requests back at the head, O(1) removal of admitted requests."""

from __future__ import annotations

from collections.abc import Iterator

from lorasim.engine.sequence import Seq


class WaitingQueue:
    """Waiting sequences, head first, with O(1) append, prepend and removal.

    Each sequence carries its queue key ``_qpos`` (queue order is ascending ``_qpos``): arrivals get increasing keys
    at the tail, preempted sequences decreasing keys at the head (vLLM V1 ``Scheduler._preempt_request`` does
    ``waiting.prepend_request``). Two insertion-ordered dicts keep the two ends, so admitting a handful of requests
    from a queue of a million costs a handful of operations, not a rebuild of the list.

    Policies see it as a read-only sequence: iterate (head first), ``reversed``, ``len``, truth value and ``[0]``.
    """

    __slots__ = ("_head", "_tail", "_next_tail", "_next_head")

    def __init__(self) -> None:
        self._head: dict[int, Seq] = {}  # preempted, inserted head-most last (iterate reversed)
        self._tail: dict[int, Seq] = {}  # arrivals, in arrival order
        self._next_tail = 0
        self._next_head = -1

    def append(self, seq: Seq) -> None:
        """Queue ``seq`` at the tail (an arrival); sets ``seq._qpos``."""
        seq._qpos = q = self._next_tail
        self._next_tail += 1
        self._tail[q] = seq

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
