"""The starvation watchdog: flags requests passed over for too long while a GPU slot could have served them."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable

from lorasim.engine.sequence import Seq, SeqStatus


class StarvationWatch:
    """Flags each starved request once (``Seq.starved``, ``Recorder.on_starved``).

    A waiting request ``r`` that was never scheduled is *starved* at a step when all three hold:

    1. it has waited longer than ``threshold_s`` since it arrived;
    2. the step passes it over: it admits a request that arrived after ``r``;
    3. a GPU slot is idle or evictable for ``r``: the step uses fewer than ``max_loras`` adapters (a slot is free or
       holds an adapter the step does not need), or some adapter in the step serves only requests that arrived
       after ``r`` (its slot is held for newer work; case 02's greedy policy keeps the one slot this way).

    Without 2, a FCFS queue that is merely overloaded would count as starvation; without the second half of 3, a
    greedy policy that keeps one adapter's slot busy with a steady stream never would. Every condition has the form
    ``arrival < bound``, so the starved requests of a step are a prefix, in arrival order, of the never-scheduled
    waiting requests.

    Cost: the candidates sit in one deque in arrival order (submission order: due times are non-decreasing); each
    enters and leaves it once. While the oldest waiting request is younger than the threshold a step costs O(1)
    beyond popping the requests it admitted; past the threshold O(admitted), and O(batch) only at steps that pass
    over an old request with every slot in use. A request cancelled by its client, or aborted by the scheduler, while waiting
    is dropped too, never flagged.

    Args:
        threshold_s: the longest wait that is not starvation, seconds.
        max_loras: GPU adapter slots.
        recorder: receives ``on_starved(seq, now_s)``.
    """

    __slots__ = ("_queue", "max_loras", "recorder", "threshold_s")

    def __init__(self, threshold_s: float, max_loras: int, recorder):
        self.threshold_s = threshold_s
        self.max_loras = max_loras
        self.recorder = recorder
        self._queue: deque[Seq] = deque()  # submitted requests in arrival order; scheduled ones dropped lazily

    def submit(self, seq: Seq) -> None:
        """A request entered the waiting queue for the first time."""
        self._queue.append(seq)

    def check(self, now_s: float, admitted: list[Seq], num_step_adapters: int,
              step_seqs: Callable[[], Iterable[Seq]]) -> None:
        """Flag the requests the step that starts at ``now_s`` starves.

        Args:
            now_s: the step's start.
            admitted: the waiting requests the step admits (first admissions and re-admissions after preemption).
            num_step_adapters: distinct adapters in the step.
            step_seqs: every sequence in the step (called only when every slot is in use).
        """
        q = self._queue
        while q and (not math.isnan(q[0].first_scheduled_time_s) or q[0].status >= SeqStatus.ABORTED):
            q.popleft()
        if not q or not admitted:
            return
        bound = now_s - self.threshold_s  # arrived before this: waited longer than the threshold
        if q[0].arrival_time_s >= bound:
            return
        bound = min(bound, max(s.arrival_time_s for s in admitted))  # and before a request the step admits
        if q[0].arrival_time_s >= bound:
            return
        if num_step_adapters >= self.max_loras:
            oldest: dict[str, float] = {}  # adapter -> earliest arrival among the step's requests for it
            for s in step_seqs():
                a = s.adapter
                if a is not None and s.arrival_time_s < oldest.get(a, math.inf):
                    oldest[a] = s.arrival_time_s
            bound = min(bound, max(oldest.values(), default=-math.inf))  # and before every holder of some slot
        while q:
            s = q[0]
            if not math.isnan(s.first_scheduled_time_s) or s.status >= SeqStatus.ABORTED:
                q.popleft()
                continue
            if s.arrival_time_s >= bound:
                break
            q.popleft()
            s.starved = True
            self.recorder.on_starved(s, now_s)
