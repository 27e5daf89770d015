"""Summary statistics with vLLM's serving-benchmark names (``benchmarks/benchmark_serving.py``).

TTFT, TPOT and E2E latency are per completed request; ITL is over every inter-token gap of every completed
request; percentiles use numpy's default (linear interpolation). Reported in milliseconds (``*_ms_*``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

PERCENTILES = (50, 90, 99)


def weighted_percentile(values: np.ndarray, counts: np.ndarray, q: float) -> float:
    """``np.percentile(np.repeat(values, counts), q)`` without materialising the repeated array.

    Args:
        values: sample values, shape (n,).
        counts: positive integer multiplicities, shape (n,).
        q: percentile in [0, 100].

    Returns:
        The percentile (linear interpolation between order statistics), or NaN when there are no samples.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if n == 0:
        return math.nan
    order = np.argsort(values, kind="stable")
    v = np.asarray(values, dtype=float)[order]
    c = np.cumsum(counts[order])
    h = (n - 1) * q / 100.0
    lo, hi = math.floor(h), math.ceil(h)
    x_lo = v[np.searchsorted(c, lo, side="right")]
    x_hi = v[np.searchsorted(c, hi, side="right")]
    return float(x_lo + (h - lo) * (x_hi - x_lo))


def _stats_ms(prefix: str, values_s: np.ndarray, out: dict) -> None:
    if len(values_s):
        ms = values_s * 1000.0
        out[f"{prefix}_ms_mean"] = float(np.mean(ms))
        for p in PERCENTILES:
            out[f"{prefix}_ms_p{p}"] = float(np.percentile(ms, p))
    else:
        out[f"{prefix}_ms_mean"] = math.nan
        for p in PERCENTILES:
            out[f"{prefix}_ms_p{p}"] = math.nan


def summarize(requests: pd.DataFrame, steps: pd.DataFrame, events: pd.DataFrame,
              itl_values_s: np.ndarray, itl_counts: np.ndarray, step_totals: dict | None = None) -> dict:
    """Flat summary of one simulation.

    Args:
        requests: the requests table (one row per request).
        steps: the steps table (one row per engine step; empty with ``records: requests``).
        events: adapter load/evict events.
        itl_values_s: inter-token latencies (s), with ``itl_counts`` multiplicities.
        step_totals: running step totals (``Recorder.step_totals``), used instead of ``steps`` when that table was
            not kept.

    Returns:
        A flat dict of scalars (see README for every key).
    """
    unfinished = requests["unfinished"] if "unfinished" in requests else False
    cancelled = requests["cancelled"] if "cancelled" in requests else pd.Series(False, index=requests.index)
    done = requests[~requests["aborted"] & ~unfinished & ~cancelled]
    n_done = len(done)
    out: dict = {
        "num_requests": int(len(requests)),
        "num_completed": int(n_done),
        "num_aborted": int(requests["aborted"].sum()),
        "num_unfinished": int(requests["unfinished"].sum()) if "unfinished" in requests else 0,
        "num_cancelled": int(requests["cancelled"].sum()) if "cancelled" in requests else 0,
    }
    if n_done:
        t0 = float(requests["arrival_time_s"].min())
        duration = float(done["finish_time_s"].max()) - t0
    else:
        duration = 0.0
    out["duration_s"] = duration
    out_tok = int(done["output_tokens"].sum())
    in_tok = int(done["prompt_tokens"].sum())
    out["total_input_tokens"] = in_tok
    out["total_output_tokens"] = out_tok
    out["request_throughput_rps"] = n_done / duration if duration > 0 else math.nan
    out["output_throughput_tok_s"] = out_tok / duration if duration > 0 else math.nan
    out["total_throughput_tok_s"] = (in_tok + out_tok) / duration if duration > 0 else math.nan

    _stats_ms("ttft", done["ttft_s"].to_numpy(), out)
    multi = done[done["output_tokens"] > 1]
    tpot = (multi["e2el_s"] - multi["ttft_s"]) / (multi["output_tokens"] - 1)
    _stats_ms("tpot", tpot.to_numpy(), out)
    itl_v = np.asarray(itl_values_s, dtype=float)
    itl_c = np.asarray(itl_counts, dtype=np.int64)
    if itl_c.sum() > 0:
        out["itl_ms_mean"] = float((itl_v * itl_c).sum() / itl_c.sum() * 1000.0)
        for p in PERCENTILES:
            out[f"itl_ms_p{p}"] = weighted_percentile(itl_v, itl_c, p) * 1000.0
    else:
        _stats_ms("itl", np.array([]), out)
    _stats_ms("e2el", done["e2el_s"].to_numpy(), out)
    _stats_ms("queue_wait", done["queue_wait_s"].to_numpy(), out)

    loads = events[events["kind"] == "load"] if len(events) else events
    out["gpu_adapter_loads"] = int((loads["tier"] == "gpu").sum()) if len(loads) else 0
    out["disk_adapter_loads"] = int((loads["tier"] == "cpu").sum()) if len(loads) else 0
    hits = requests["adapter_hit"].dropna()
    out["gpu_adapter_hit_rate"] = float(hits.mean()) if len(hits) else math.nan
    totals = step_totals if step_totals is not None and not len(steps) else None
    if totals is not None:
        out["adapter_load_wait_s"] = float(totals["load_wait_s"])
    else:
        out["adapter_load_wait_s"] = float(steps["load_wait_s"].sum()) if len(steps) else 0.0
    waits = requests["queue_wait_s"].to_numpy()
    out["max_queue_wait_s"] = float(np.nanmax(waits)) if len(waits) and not np.all(np.isnan(waits)) else 0.0
    out["num_starved_requests"] = int(requests["starved"].sum()) if "starved" in requests else 0
    out["num_preemptions"] = int(requests["num_preemptions"].sum())
    out["num_steps"] = int(len(steps)) if totals is None else int(totals["num_steps"])
    if totals is not None:
        busy = float(totals["busy_s"])
        out["mean_num_running"] = float(totals["seq_seconds"] / busy) if busy else 0.0
        out["max_num_waiting"] = int(totals["max_num_waiting"])
    elif len(steps):
        busy = float(steps["duration_s"].sum())
        out["mean_num_running"] = float((steps["num_seqs"] * steps["duration_s"]).sum() / busy) if busy else 0.0
        out["max_num_waiting"] = int(steps["num_waiting"].max())
    else:
        out["mean_num_running"] = 0.0
        out["max_num_waiting"] = 0
    return out
