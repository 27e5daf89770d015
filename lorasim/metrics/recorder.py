"""Metric hooks: the engine calls ``on_*``; records are flat columns, turned into DataFrames once at the end."""

from __future__ import annotations

from collections import defaultdict

from lorasim.metrics.digest import RequestDigest


class Recorder:
    """Collects per-step, per-adapter-event and inter-token-latency records.

    Per-request records are not appended here: every request's state lives in its engine ``Seq`` (created only when
    the engine first needs it, see :class:`~lorasim.engine.seqtable.SeqTable`) and the results table is built from
    those and the workload's arrays once, at the end. ITL samples are stored as ``(value_s, count)`` pairs: all
    sequences that decoded in two consecutive steps share one inter-token latency (the time between the two step
    ends), so a step contributes one pair, not one sample per token.

    With ``records: summary`` (:meth:`stream_requests`), ended requests and ITL samples go into a
    :class:`~lorasim.metrics.digest.RequestDigest` instead, adapter events are only counted, and each ended request
    is handed to ``release`` so that the engine can drop it: memory stays bounded however long the run.
    """

    STEP_COLUMNS = (
        "replica", "start_time_s", "duration_s", "load_wait_s", "num_seqs", "num_prefill_tokens",
        "num_prefill_seqs", "num_decode_seqs", "num_decode_context_tokens", "num_distinct_adapters",
        "num_adapter_loads", "num_preempted", "num_running", "num_waiting", "kv_used_blocks", "num_skipped_waiting",
    )
    EVENT_COLUMNS = ("time_s", "replica", "kind", "tier", "adapter", "duration_s", "size_bytes")

    def __init__(self, keep_steps: bool = True):
        self.keep_steps = keep_steps  # False (records: requests): step totals only, no per-step rows
        self.step_totals = {"num_steps": 0, "busy_s": 0.0, "seq_seconds": 0.0, "load_wait_s": 0.0,
                            "max_num_waiting": 0}
        self.steps: dict[str, list] = {c: [] for c in self.STEP_COLUMNS}
        self.events: dict[str, list] = {c: [] for c in self.EVENT_COLUMNS}
        self.itl_values_s: list[float] = []
        self.itl_counts: list[int] = []
        self.counters: dict[str, int] = defaultdict(int)
        self.replica_id = 0
        self.digest: RequestDigest | None = None
        self._release = None

    def stream_requests(self, digest: RequestDigest, release) -> None:
        """Switch to ``records: summary``: fold ended requests and ITL samples into ``digest``, count adapter events
        without rows, keep no per-step rows, and call ``release(seq)`` once a request has been folded in."""
        self.digest = digest
        self._release = release
        self.keep_steps = False

    def make_consistent(self) -> None:
        """Cut every record column to the shortest one (a run interrupted in the middle of a hook's appends)."""
        for cols in (self.steps, self.events):
            n = min((len(v) for v in cols.values()), default=0)
            for v in cols.values():
                del v[n:]
        n = min(len(self.itl_values_s), len(self.itl_counts))
        del self.itl_values_s[n:], self.itl_counts[n:]

    # engine hooks ------------------------------------------------------------------------------------------------
    def on_arrival(self, seq, now_s: float) -> None:
        self.counters["arrivals"] += 1

    def on_abort(self, seq, now_s: float) -> None:
        self.counters["aborted"] += 1
        if self.digest is not None:
            self._ended(seq)

    def _ended(self, seq) -> None:
        self.digest.ended(seq)
        self._release(seq)

    def on_refused(self, count: int, now_s: float) -> None:
        """``count`` requests, due by ``now_s``, were refused by their client (no free connection) without becoming
        sequences; a recorder that overrides :meth:`on_abort` gets each of them there instead."""
        self.counters["aborted"] += count

    def on_cancel(self, seq, now_s: float) -> None:
        """The request's client cancelled it; the engine applied it at ``now_s`` (between steps)."""
        self.counters["cancelled"] += 1
        if self.digest is not None:
            self._ended(seq)

    def on_admit(self, seq, now_s: float) -> None:
        """``seq`` is scheduled for the first time (its ``first_scheduled_time_s`` and ``adapter_hit`` are set)."""
        if self.digest is not None:
            self.digest.admitted(seq)

    def on_starved(self, seq, now_s: float) -> None:
        """The starvation watchdog flagged ``seq`` at the step starting at ``now_s`` (once per request)."""
        self.counters["starved"] += 1
        if self.digest is not None:
            self.digest.starved(seq)

    def on_preempt(self, seq, now_s: float) -> None:
        self.counters["preemptions"] += 1

    def on_complete(self, seq, now_s: float) -> None:
        self.counters["completed"] += 1
        if self.digest is not None:
            self._ended(seq)

    def on_itl(self, value_s: float, count: int = 1) -> None:
        if self.digest is not None:
            self.digest.itl.add(value_s, count)
            return
        self.itl_values_s.append(value_s)
        self.itl_counts.append(count)

    def on_step_end(self, replica, start_s: float, end_s: float, load_wait_s: float, stats, num_loads: int,
                    num_preempted: int) -> None:
        if not self.keep_steps:
            t = self.step_totals
            d = end_s - start_s
            t["num_steps"] += 1
            t["busy_s"] += d
            t["seq_seconds"] += (stats.num_prefill_seqs + stats.num_decode_seqs) * d
            t["load_wait_s"] += load_wait_s
            if len(replica.waiting) > t["max_num_waiting"]:
                t["max_num_waiting"] = len(replica.waiting)
            return
        c = self.steps
        c["replica"].append(replica.replica_id)
        c["start_time_s"].append(start_s)
        c["duration_s"].append(end_s - start_s)
        c["load_wait_s"].append(load_wait_s)
        c["num_seqs"].append(stats.num_prefill_seqs + stats.num_decode_seqs)
        c["num_prefill_tokens"].append(stats.num_prefill_tokens)
        c["num_prefill_seqs"].append(stats.num_prefill_seqs)
        c["num_decode_seqs"].append(stats.num_decode_seqs)
        c["num_decode_context_tokens"].append(stats.num_decode_context_tokens)
        c["num_distinct_adapters"].append(stats.num_distinct_adapters)
        c["num_adapter_loads"].append(num_loads)
        c["num_preempted"].append(num_preempted)
        c["num_running"].append(replica.num_running)
        c["num_waiting"].append(len(replica.waiting))
        c["kv_used_blocks"].append(replica.kv.used_blocks)
        c["num_skipped_waiting"].append(stats.num_skipped_waiting)

    def on_steady_steps(self, replica, starts_s: list[float], ends_s: list[float], num_decode_seqs: int,
                        context_tokens: list[int], num_distinct_adapters: int, kv_used_blocks: list[int],
                        num_running: list[int], num_skipped_waiting: int = 0) -> None:
        """Consecutive pure decode steps run in one go (``Replica._steady_steps``): the same records as
        :meth:`on_step_end` and :meth:`on_itl` for each, in bulk. Every step decodes ``num_decode_seqs`` sequences
        that all produced a token at the previous step's end, loads nothing and preempts nothing; ``context_tokens``,
        ``kv_used_blocks`` and ``num_running`` (after the step's completions) are per step; the scheduler's scan
        skips ``num_skipped_waiting`` waiting requests in each; only the last step may complete requests (their
        ``on_complete`` came first). The engine runs steps this way only for a recorder that does not override
        :meth:`on_step_end` or :meth:`on_itl`, or that overrides this method too."""
        k = len(starts_s)
        durations = [e - s for s, e in zip(starts_s, ends_s)]
        if self.digest is not None:
            add = self.digest.itl.add
            for d in durations:
                add(d, num_decode_seqs)
        else:
            self.itl_values_s.extend(durations)
            self.itl_counts.extend([num_decode_seqs] * k)
        if not self.keep_steps:
            t = self.step_totals
            t["num_steps"] += k
            busy_s, seq_seconds = t["busy_s"], t["seq_seconds"]
            for d in durations:  # one addition at a time, as on_step_end does
                busy_s += d
                seq_seconds += num_decode_seqs * d
            t["busy_s"], t["seq_seconds"] = busy_s, seq_seconds
            t["max_num_waiting"] = max(t["max_num_waiting"], len(replica.waiting))
            return
        c = self.steps
        c["replica"].extend([replica.replica_id] * k)
        c["start_time_s"].extend(starts_s)
        c["duration_s"].extend(durations)
        c["load_wait_s"].extend([0.0] * k)
        c["num_seqs"].extend([num_decode_seqs] * k)
        c["num_prefill_tokens"].extend([0] * k)
        c["num_prefill_seqs"].extend([0] * k)
        c["num_decode_seqs"].extend([num_decode_seqs] * k)
        c["num_decode_context_tokens"].extend(context_tokens)
        c["num_distinct_adapters"].extend([num_distinct_adapters] * k)
        c["num_adapter_loads"].extend([0] * k)
        c["num_preempted"].extend([0] * k)
        c["num_running"].extend(num_running)
        c["num_waiting"].extend([len(replica.waiting)] * k)
        c["kv_used_blocks"].extend(kv_used_blocks)
        c["num_skipped_waiting"].extend([num_skipped_waiting] * k)

    def on_adapter_load(self, link: str, adapter: str, start_s: float, end_s: float, size_bytes: int) -> None:
        tier = "cpu" if link == "disk_to_cpu" else "gpu"
        if self.digest is not None:
            self.digest.adapter_load(tier, self.replica_id)
            return
        self._event(end_s, "load", tier, adapter, end_s - start_s, size_bytes)

    def on_adapter_evict(self, tier: str, adapter: str, now_s: float) -> None:
        if self.digest is not None:
            return
        self._event(now_s, "evict", tier, adapter, 0.0, 0)

    def _event(self, t, kind, tier, adapter, dur, size) -> None:
        e = self.events
        e["time_s"].append(t)
        e["replica"].append(self.replica_id)
        e["kind"].append(kind)
        e["tier"].append(tier)
        e["adapter"].append(adapter)
        e["duration_s"].append(dur)
        e["size_bytes"].append(size)
