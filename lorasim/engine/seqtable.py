"""The workload's requests as engine sequences, each created the first time the engine needs it.

An overloaded replay can offer millions of requests of which the benchmark client refuses most at once (no free
connection) and a horizon cuts off the rest; building a :class:`~lorasim.engine.sequence.Seq` for each would cost
more than simulating the served ones. The table keeps the workload's arrays, creates a ``Seq`` on first access, and
records client refusals as index ranges; :func:`lorasim.metrics.results.requests_frame` builds the results from
both.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from lorasim.engine.sequence import Seq, SeqStatus
from lorasim.workload.request import Request

_RELEASED = object()  # placeholder of a sequence that ended and was folded into the metrics (records: summary)


class SeqTable:
    """Sequences ``0..n-1`` in arrival order, created lazily from the workload arrays.

    Args:
        arrival_s: arrival times, seconds, shape ``(n,)``.
        prompt_tokens, output_tokens: lengths, shape ``(n,)``.
        adapter_index: position in ``adapter_names``, ``-1`` for the base model, shape ``(n,)``.
        adapter_names: the adapters' names.
        default_replica: ``Seq.replica`` of a new sequence (clusters: ``-1``, not routed yet).
    """

    __slots__ = ("arrival_s", "prompt_tokens", "output_tokens", "adapter_index", "adapter_names",
                 "default_replica", "_seqs", "_arrival", "_prompt", "_output", "_adapter", "_rejected")

    def __init__(self, arrival_s: np.ndarray, prompt_tokens: np.ndarray, output_tokens: np.ndarray,
                 adapter_index: np.ndarray, adapter_names: tuple[str, ...], default_replica: int = 0):
        self.arrival_s = np.asarray(arrival_s, dtype=float)
        self.prompt_tokens = np.asarray(prompt_tokens, dtype=np.int64)
        self.output_tokens = np.asarray(output_tokens, dtype=np.int64)
        self.adapter_index = np.asarray(adapter_index, dtype=np.int64)
        self.adapter_names = tuple(adapter_names)
        self.default_replica = default_replica
        n = len(self.arrival_s)
        self._seqs: list[Seq | None] = [None] * n
        self._arrival = self._prompt = self._output = self._adapter = None  # python lists, built on first access
        self._rejected: list[tuple[int, int, str]] = []  # (first, end, reason): refused without a Seq

    def __len__(self) -> int:
        return len(self._seqs)

    def __getitem__(self, i: int) -> Seq:
        seq = self._seqs[i]
        if seq is _RELEASED:
            raise KeyError(f"request {i} ended and was released (output.records: summary)")
        if seq is None:
            if self._arrival is None:
                self._arrival = self.arrival_s.tolist()
                self._prompt = self.prompt_tokens.tolist()
                self._output = self.output_tokens.tolist()
                self._adapter = np.array([*self.adapter_names, None], dtype=object)[self.adapter_index].tolist()
            adapter, prompt, output = self._adapter[i], self._prompt[i], self._output[i]
            seq = self._seqs[i] = Seq(Request(i, self._arrival[i], prompt, output, adapter), adapter, prompt,
                                      output, replica=self.default_replica)
        return seq

    def __iter__(self) -> Iterator[Seq]:
        """Every sequence, in order (creates those not created yet)."""
        return (self[i] for i in range(len(self._seqs)))

    def release(self, seq: Seq) -> None:
        """Drop an ended sequence (its metrics were folded in: ``records: summary``); it counts as ended from now
        on and can no longer be looked up."""
        self._seqs[seq.req.request_id] = _RELEASED

    def live(self) -> list[Seq]:
        """The sequences created and not released, in order."""
        return [s for s in self._seqs if s is not None and s is not _RELEASED]

    def num_never_created(self) -> int:
        """Requests neither created nor refused (their placeholder is still empty)."""
        return self._seqs.count(None) - self.num_rejected()

    def reject(self, first: int, end: int, reason: str) -> list[int]:
        """Requests ``first..end-1`` were refused when they arrived (aborted with ``reason``): those not created yet
        never will be; return the positions of those already created (the caller aborts them one by one)."""
        seqs, created, start = self._seqs, [], first
        for i in range(first, end):
            if seqs[i] is not None:
                created.append(i)
                if i > start:
                    self._rejected.append((start, i, reason))
                start = i + 1
        if end > start:
            self._rejected.append((start, end, reason))
        return created

    @property
    def rejected(self) -> list[tuple[int, int, str]]:
        """``(first, end, reason)`` ranges of requests refused without a sequence."""
        return self._rejected

    def num_rejected(self) -> int:
        return sum(e - f for f, e, _ in self._rejected)

    def created(self) -> tuple[np.ndarray, list[Seq]]:
        """Indices (ascending) and sequences of the requests created so far."""
        idx = [i for i, s in enumerate(self._seqs) if s is not None and s is not _RELEASED]
        return np.asarray(idx, dtype=np.int64), [self._seqs[i] for i in idx]

    def lost(self) -> list[int]:
        """Request ids neither finished, aborted, cancelled nor refused (a run to completion has none)."""
        done = (SeqStatus.FINISHED, SeqStatus.ABORTED, SeqStatus.CANCELLED)
        refused = np.zeros(len(self._seqs), dtype=bool)
        for f, e, _ in self._rejected:
            refused[f:e] = True
        return [i for i, s in enumerate(self._seqs)
                if not refused[i] and s is not _RELEASED and (s is None or s.status not in done)]
