"""Streaming request metrics for ``output.records: summary``: the summary and per-adapter/per-replica tables in
memory that does not grow with the number of requests.

Each request is folded in when it ends (completes, is aborted or cancelled) and the engine then drops it; requests
still in flight when the run stops are folded in at the end. Counts, token totals, means, maxima, hit rates and SLO
attainment are exact (means up to the order of float additions). A percentile over at most ``EXACT_UP_TO`` samples
(``EXACT_UP_TO_GROUP`` for one adapter's or replica's TTFT) is exact (the samples are kept, and interpolated as ``records: full`` does); over more it comes from DDSketch
(Masson, Rim and Lee, "DDSketch: a fast and fully-mergeable quantile sketch with relative-error guarantees", VLDB
2019; the ``ddsketch`` package): within ``RELATIVE_ACCURACY`` (1%) of the order statistic at rank
``floor(p/100 * (n - 1))``, where ``records: full`` interpolates linearly between that one and the next (numpy's
default). Sketch values sit on a logarithmic grid about 2% wide, so two metrics can report the same value.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from ddsketch import DDSketch

from lorasim.metrics.summary import PERCENTILES, weighted_percentile

RELATIVE_ACCURACY = 0.01
EXACT_UP_TO = 1000  # samples a metric keeps for exact percentiles before it relies on its sketch alone
EXACT_UP_TO_GROUP = 100  # the same for each adapter's and replica's TTFT (there can be thousands of adapters)
BASE = "(base)"


class Quantiles:
    """One metric's samples: count and sum exact, percentiles exact up to ``exact_up_to`` samples, then DDSketch.

    Memory: at most ``exact_up_to`` kept samples plus the sketch's buckets (a few hundred for latencies).
    """

    __slots__ = ("sketch", "exact_up_to", "add", "_values", "_weights")

    def __init__(self, exact_up_to: int = EXACT_UP_TO):
        self.sketch = DDSketch(RELATIVE_ACCURACY)
        self.exact_up_to = exact_up_to
        self._values: list[float] | None = []
        self._weights: list[float] = []
        self.add = self._add_and_keep
        """``add(value, weight=1.0)``: one sample (``weight`` of them)."""

    def _add_and_keep(self, value: float, weight: float = 1.0) -> None:
        self.sketch.add(value, weight)
        if self._values is None:  # a caller that held on to this method past the switch
            return
        if self.sketch.count > self.exact_up_to:
            self._values = None  # too many to keep: the sketch alone from now on
            self._weights = []
            self.add = self.sketch.add
        else:
            self._values.append(value)
            self._weights.append(weight)

    @property
    def count(self) -> float:
        return self.sketch.count

    def mean(self) -> float:
        """Mean of the samples (NaN when there are none)."""
        return self.sketch.sum / self.sketch.count if self.sketch.count else math.nan

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (``p`` in [0, 100]); NaN when there are no samples."""
        if not self.sketch.count:
            return math.nan
        if self._values is not None:
            return weighted_percentile(np.asarray(self._values), np.asarray(self._weights, dtype=np.int64), p)
        return self.sketch.get_quantile_value(p / 100.0)


def _quantile_stats(prefix: str, q: Quantiles, out: dict) -> None:
    """``{prefix}_ms_mean`` and ``{prefix}_ms_p50/p90/p99`` from samples in seconds (NaN when there are none)."""
    out[f"{prefix}_ms_mean"] = q.mean() * 1000.0
    for p in PERCENTILES:
        out[f"{prefix}_ms_p{p}"] = q.percentile(p) * 1000.0


class _Group:
    """Per-adapter or per-replica tallies (exact) and a TTFT sketch."""

    __slots__ = ("completed", "aborted", "cancelled", "starved", "routed", "max_queue_wait_s", "hits", "hit_n",
                 "ttft", "gpu_loads")

    def __init__(self):
        self.completed = self.aborted = self.cancelled = self.starved = self.routed = 0
        self.max_queue_wait_s = math.nan
        self.hits = self.hit_n = self.gpu_loads = 0
        self.ttft = Quantiles(EXACT_UP_TO_GROUP)  # seconds, every request that produced a first token


class RequestDigest:
    """Folds ended requests into running totals and quantile sketches.

    Args:
        arrival_s: every request's arrival time, seconds, shape ``(n,)`` (the workload's arrays).
        prompt_tokens, output_tokens: lengths, shape ``(n,)``.
        adapter_index: position in ``index_names``, ``-1`` for the base model, shape ``(n,)``.
        index_names: the adapter names ``adapter_index`` refers to (the workload's).
        adapter_names: the defined adapters, in definition order (the per-adapter table's rows).
        num_replicas: replicas of the run.
        ttft_slo_s, tpot_slo_s: the scenario's SLOs (``metrics``), None when unset.
    """

    def __init__(self, arrival_s: np.ndarray, adapter_index: np.ndarray, index_names: tuple[str, ...],
                 adapter_names: tuple[str, ...], num_replicas: int = 1, ttft_slo_s: float | None = None, tpot_slo_s: float | None = None):
        self.num_requests = len(arrival_s)
        self.t0_s = float(np.min(arrival_s)) if len(arrival_s) else 0.0
        self.adapter_names = tuple(adapter_names)
        self.index_names = tuple(index_names)
        self._adapter_index = np.asarray(adapter_index, dtype=np.int64)
        self.num_replicas = num_replicas
        self.ttft_slo_s, self.tpot_slo_s = ttft_slo_s, tpot_slo_s
        self.slo = ttft_slo_s is not None or tpot_slo_s is not None
        self.ttft, self.tpot, self.e2el, self.queue_wait, self.itl = (Quantiles() for _ in range(5))
        self.completed = self.aborted = self.cancelled = self.unfinished = 0
        self.input_tokens = self.output_tokens = 0
        self.max_finish_s = -math.inf
        self.max_queue_wait_s = math.nan
        self.hits = self.hit_n = 0
        self.slo_met = 0
        self.gpu_loads = self.disk_loads = 0
        self.adapters: dict[str | None, _Group] = {}
        self.replicas: dict[int, _Group] = {}
        self.steps_per_replica: list[int] = [0] * num_replicas  # engine steps, set when the run ends

    # ---- folding ---------------------------------------------------------------------------------------------
    def _adapter(self, adapter: str | None) -> _Group:
        g = self.adapters.get(adapter)
        if g is None:
            g = self.adapters[adapter] = _Group()
        return g

    def _replica(self, replica: int) -> _Group | None:
        if replica < 0:
            return None  # never routed (a cluster run stopped before its arrival)
        g = self.replicas.get(replica)
        if g is None:
            g = self.replicas[replica] = _Group()
        return g

    def admitted(self, seq) -> None:
        """``seq`` was scheduled for the first time: its queue wait and whether its adapter was in a GPU slot."""
        wait = seq.first_scheduled_time_s - seq.arrival_time_s
        if not wait <= self.max_queue_wait_s:  # also when the maximum is still NaN
            self.max_queue_wait_s = wait
        g = self._adapter(seq.adapter)
        if not wait <= g.max_queue_wait_s:
            g.max_queue_wait_s = wait
        if seq.adapter_hit is not None:
            self.hit_n += 1
            g.hit_n += 1
            if seq.adapter_hit:
                self.hits += 1
                g.hits += 1

    def starved(self, seq) -> None:
        self._adapter(seq.adapter).starved += 1

    def adapter_load(self, tier: str, replica: int) -> None:
        """An adapter load into ``tier`` (``gpu`` or ``cpu``) finished on ``replica``."""
        if tier == "gpu":
            self.gpu_loads += 1
            g = self._replica(replica)
            if g is not None:
                g.gpu_loads += 1
        else:
            self.disk_loads += 1

    def _ttft(self, seq, ga: _Group, gr: _Group | None) -> float:
        ttft = seq.first_token_time_s - seq.arrival_time_s
        if ttft == ttft:  # produced a first token
            ga.ttft.add(ttft)
            if gr is not None:
                gr.ttft.add(ttft)
        return ttft

    def ended(self, seq) -> None:
        """Fold in a request that completed, was aborted or cancelled, or (at the end) is still unfinished, by the
        same rules as the requests table: aborted when it has an abort reason, else cancelled when it has a cancel
        time, else completed when it has a finish time, else unfinished."""
        ga, gr = self._adapter(seq.adapter), self._replica(seq.replica)
        if gr is not None:
            gr.routed += 1
        ttft = self._ttft(seq, ga, gr)
        if seq.abort_reason:
            self.aborted += 1
            ga.aborted += 1
            return
        if seq.cancel_time_s == seq.cancel_time_s:
            self.cancelled += 1
            ga.cancelled += 1
            return
        finish = seq.finish_time_s
        if finish != finish:
            self.unfinished += 1
            return
        self.completed += 1
        ga.completed += 1
        if gr is not None:
            gr.completed += 1
        out_tok = seq.num_output_tokens
        self.input_tokens += seq.num_prompt_tokens
        self.output_tokens += out_tok
        if finish > self.max_finish_s:
            self.max_finish_s = finish
        e2el = finish - seq.arrival_time_s
        self.ttft.add(ttft)
        self.e2el.add(e2el)
        self.queue_wait.add(seq.first_scheduled_time_s - seq.arrival_time_s)
        tpot = (e2el - ttft) / (out_tok - 1) if out_tok > 1 else math.nan
        if out_tok > 1:
            self.tpot.add(tpot)
        if self.slo and (self.ttft_slo_s is None or ttft <= self.ttft_slo_s) and (
                self.tpot_slo_s is None or out_tok <= 1 or tpot <= self.tpot_slo_s):
            self.slo_met += 1

    def refused(self, first: int, end: int) -> None:
        """Requests ``first..end-1`` were refused by their client without becoming sequences (aborted)."""
        self.aborted += end - first
        if self.num_replicas == 1:  # a single replica's requests are all its own, refused ones too
            self._replica(0).routed += end - first
        idx = self._adapter_index[first:end]
        names = self.index_names
        for i, k in zip(*np.unique(idx, return_counts=True)):
            self._adapter(names[i] if i >= 0 else None).aborted += int(k)

    def never_created(self, count: int) -> None:
        """``count`` requests never became sequences and were not refused (a horizon stopped the run first)."""
        self.unfinished += count
        if self.num_replicas == 1:
            self._replica(0).routed += count

    # ---- results -----------------------------------------------------------------------------------------
    def summary(self, step_totals: dict, num_preemptions: int) -> dict:
        """The keys of :func:`lorasim.metrics.summary.summarize`, in its order, with the step-derived ones from
        ``step_totals`` (``Recorder.step_totals``), and ``percentile_relative_accuracy``."""
        n_done = self.completed
        duration = self.max_finish_s - self.t0_s if n_done else 0.0
        out: dict = {"num_requests": self.num_requests, "num_completed": n_done, "num_aborted": self.aborted,
                     "num_unfinished": self.unfinished, "num_cancelled": self.cancelled, "duration_s": duration,
                     "total_input_tokens": self.input_tokens, "total_output_tokens": self.output_tokens}
        ok = duration > 0
        out["request_throughput_rps"] = n_done / duration if ok else math.nan
        out["output_throughput_tok_s"] = self.output_tokens / duration if ok else math.nan
        out["total_throughput_tok_s"] = (self.input_tokens + self.output_tokens) / duration if ok else math.nan
        _quantile_stats("ttft", self.ttft, out)
        _quantile_stats("tpot", self.tpot, out)
        _quantile_stats("itl", self.itl, out)
        _quantile_stats("e2el", self.e2el, out)
        _quantile_stats("queue_wait", self.queue_wait, out)
        out["gpu_adapter_loads"] = self.gpu_loads
        out["disk_adapter_loads"] = self.disk_loads
        out["gpu_adapter_hit_rate"] = self.hits / self.hit_n if self.hit_n else math.nan
        out["adapter_load_wait_s"] = float(step_totals["load_wait_s"])
        out["max_queue_wait_s"] = 0.0 if math.isnan(self.max_queue_wait_s) else self.max_queue_wait_s
        out["num_starved_requests"] = sum(g.starved for g in self.adapters.values())
        out["num_preemptions"] = int(num_preemptions)
        out["num_steps"] = int(step_totals["num_steps"])
        busy = float(step_totals["busy_s"])
        out["mean_num_running"] = float(step_totals["seq_seconds"] / busy) if busy else 0.0
        out["max_num_waiting"] = int(step_totals["max_num_waiting"])
        out["percentile_relative_accuracy"] = RELATIVE_ACCURACY
        return out

    def slo_attainment(self, duration_s: float) -> tuple[float, float]:
        """``(slo_attainment, goodput_rps)`` as :func:`lorasim.metrics.results.slo_attainment` computes them."""
        n = self.num_requests
        return (self.slo_met / n if n else math.nan), (self.slo_met / duration_s if duration_s > 0 else math.nan)

    def replica_imbalance(self) -> float:
        """Completed requests of the busiest replica over the mean (1.0: even); NaN when none completed."""
        per = np.array([self.replicas[r].completed if r in self.replicas else 0 for r in range(self.num_replicas)])
        return float(per.max() / per.mean()) if per.sum() else math.nan

    def per_adapter(self) -> pd.DataFrame:
        """The table of :attr:`lorasim.metrics.results.Results.per_adapter` (same columns and row order)."""
        counts = np.bincount(self._adapter_index + 1, minlength=len(self.index_names) + 1)  # [base, adapters...]
        requested = {None: int(counts[0]), **{a: int(k) for a, k in zip(self.index_names, counts[1:])}}
        keys: list[str | None] = list(self.adapter_names)
        if requested[None]:
            keys.append(None)
        rows = []
        for a in keys:
            g = self.adapters.get(a) or _Group()
            n = requested.get(a, 0)
            rows.append({
                "adapter": BASE if a is None else a, "num_requests": n, "num_completed": g.completed,
                "num_aborted": g.aborted, "num_cancelled": g.cancelled,
                "num_unfinished": n - g.completed - g.aborted - g.cancelled, "num_starved_requests": g.starved,
                "max_queue_wait_s": g.max_queue_wait_s,
                "ttft_ms_mean": g.ttft.mean() * 1000.0, "ttft_ms_p99": g.ttft.percentile(99) * 1000.0,
                "adapter_hit_rate": g.hits / g.hit_n if g.hit_n else math.nan,
            })
        return pd.DataFrame(rows).set_index("adapter")

    def per_replica(self) -> pd.DataFrame:
        """The table of :attr:`lorasim.metrics.results.Results.per_replica`."""
        rows = []
        for r in range(self.num_replicas):
            g = self.replicas.get(r) or _Group()
            rows.append({
                "replica": r, "num_requests": g.routed, "num_completed": g.completed,
                "ttft_ms_mean": g.ttft.mean() * 1000.0, "ttft_ms_p99": g.ttft.percentile(99) * 1000.0,
                "gpu_adapter_loads": g.gpu_loads, "num_steps": self.steps_per_replica[r],
            })
        return pd.DataFrame(rows).set_index("replica")
