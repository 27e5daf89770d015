"""Requests in arrival order, and client cancellations in time order, handed to a replica in bulk when they are
due (no SimPy event per arrival or cancellation)."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

from lorasim.engine.seqtable import SeqTable
from lorasim.engine.sequence import Seq


class ArrivalFeed:
    """The workload's sequences, sorted by the time they reach the scheduler, with a cursor.

    A request that arrives while a step is in flight is first seen by the next ``schedule()`` either way, so the
    replica pulls every due request at the top of its loop instead of the simulation spending one SimPy event per
    arrival; a million queued arrivals then cost a million list appends, not a million events.

    Args:
        seqs: the sequences, sorted by ``due_s`` (a list, or a :class:`~lorasim.engine.seqtable.SeqTable` whose
            sequences are created only as they are handed out).
        due_s: when each reaches the scheduler (arrival time plus the per-request overhead), seconds, non-decreasing,
            same length as ``seqs``.

    Raises:
        ValueError: lengths differ or the times decrease.
    """

    __slots__ = ("seqs", "due", "_next")

    def __init__(self, seqs: Sequence[Seq], due_s: Sequence[float]):
        if len(seqs) != len(due_s):
            raise ValueError(f"{len(seqs)} sequences but {len(due_s)} due times")
        due = np.asarray(due_s, dtype=float)
        if (np.diff(due) < 0).any():
            raise ValueError("due times must be non-decreasing")
        self.seqs = seqs if isinstance(seqs, SeqTable) else list(seqs)
        self.due: list[float] = due.tolist()
        self._next = 0

    @property
    def exhausted(self) -> bool:
        """Every sequence has been handed out."""
        return self._next >= len(self.due)

    @property
    def next_due_s(self) -> float:
        """Due time of the next sequence, or ``inf`` when exhausted."""
        return self.due[self._next] if self._next < len(self.due) else math.inf

    def pop_range(self, now_s: float) -> tuple[int, int]:
        """Hand out the positions ``i..j-1`` of every sequence due at or before ``now_s`` (``due[k]`` is each one's
        due time); the caller takes them from ``seqs``."""
        i = self._next
        j = self._next = bisect_right(self.due, now_s, lo=i)
        return i, j

    def pop_due(self, now_s: float) -> list[tuple[Seq, float]]:
        """Hand out every sequence due at or before ``now_s``, in order, each with its due time."""
        i, j = self.pop_range(now_s)
        return [(self.seqs[k], self.due[k]) for k in range(i, j)]


class PushFeed:
    """The feed of a cluster replica: a router pushes requests to it (``Replica.accept``), so it has nothing due by
    itself; ``exhausted`` once the router has dispatched every request (:meth:`close`)."""

    __slots__ = ("exhausted",)
    seqs: tuple = ()
    due: tuple = ()

    def __init__(self):
        self.exhausted = False

    @property
    def next_due_s(self) -> float:
        return math.inf

    def pop_range(self, now_s: float) -> tuple[int, int]:
        return 0, 0

    def pop_due(self, now_s: float) -> list:
        return []

    def close(self) -> None:
        """The router has dispatched every request."""
        self.exhausted = True


class CancelFeed:
    """Client cancellations in time order, with a cursor: the replica applies the due ones between steps, so
    cancellation costs no SimPy event per request (and nothing at all when no request is cancelled).

    Args:
        entries: ``(cancel_time_s, seq)`` pairs, each for a request that reaches the scheduler before it is cancelled
            (one cancelled earlier is cancelled when it is submitted, see ``Replica.submit``); any order.
    """

    __slots__ = ("_next", "_seqs", "_times")

    def __init__(self, entries: Sequence[tuple[float, Seq]]):
        order = sorted(range(len(entries)), key=lambda i: entries[i][0])
        self._times = [float(entries[i][0]) for i in order]
        self._seqs = [entries[i][1] for i in order]
        self._next = 0

    def __len__(self) -> int:
        return len(self._seqs)

    @property
    def next_s(self) -> float:
        """Time of the next cancellation, or ``inf`` when none is left."""
        return self._times[self._next] if self._next < len(self._times) else math.inf

    def add(self, t: float, seq: Seq) -> None:
        """Add a cancellation (clusters: when the router assigns the request); equal times keep insertion order."""
        j = bisect_right(self._times, t, lo=self._next)
        self._times.insert(j, float(t))
        self._seqs.insert(j, seq)

    def pop_due(self, now_s: float) -> list[Seq]:
        """Hand out every sequence whose cancellation is due at or before ``now_s``, in time order."""
        i = self._next
        j = bisect_right(self._times, now_s, lo=i)
        self._next = j
        return self._seqs[i:j]
