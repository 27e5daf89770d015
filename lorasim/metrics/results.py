"""What a simulation returns: tables as pandas DataFrames, a flat summary, and the scenario that produced them."""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lorasim.metrics.summary import summarize

if TYPE_CHECKING:
    from lorasim.engine.seqtable import SeqTable
    from lorasim.metrics.digest import RequestDigest

REQUEST_COLUMNS = (
    "request_id", "replica", "adapter", "arrival_time_s", "prompt_tokens", "output_tokens",
    "first_scheduled_time_s", "first_token_time_s", "finish_time_s", "queue_wait_s", "ttft_s", "e2el_s",
    "adapter_stall_s", "adapter_hit", "num_preemptions", "starved", "aborted", "unfinished", "abort_reason",
    "cancelled", "cancel_time_s",
)


def requests_frame(seqs: SeqTable) -> pd.DataFrame:
    """One row per request (arrival order): the workload's columns from the table's arrays, the engine's from each
    created sequence's final state; a request never created (refused by its client, or never reached) keeps the
    defaults: no times, aborted with its refusal reason or unfinished."""
    n = len(seqs)
    idx, made = seqs.created()

    def engine_col(attr: str, dtype, default) -> np.ndarray:
        out = np.full(n, default, dtype=dtype)
        if made:
            out[idx] = np.fromiter(map(attrgetter(attr), made), dtype, len(made))
        return out

    arrival = seqs.arrival_s
    first_sched = engine_col("first_scheduled_time_s", float, np.nan)
    first_tok = engine_col("first_token_time_s", float, np.nan)
    finish = engine_col("finish_time_s", float, np.nan)
    cancel_time = engine_col("cancel_time_s", float, np.nan)
    # abort reasons as codes into a table of the distinct texts (0: none), made a string column in one take
    texts: dict[str, int] = {"": 0}
    reason_code = np.zeros(n, dtype=np.int64)
    aborted = np.zeros(n, dtype=bool)
    for first, end, reason in seqs.rejected:
        reason_code[first:end] = texts.setdefault(reason, len(texts))
        aborted[first:end] = True
    hit_value, hit_missing = np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
    if made:
        reason_code[idx] = [texts.setdefault(s.abort_reason, len(texts)) for s in made]
        aborted[idx] = reason_code[idx] != 0
        hits = [s.adapter_hit for s in made]
        hit_value[idx] = np.fromiter((h is True for h in hits), bool, len(made))
        hit_missing[idx] = np.fromiter((h is None for h in hits), bool, len(made))
    cancelled = ~np.isnan(cancel_time)  # by its client (workload cancel_probability); never also aborted
    unfinished = ~aborted & ~cancelled & np.isnan(finish)  # queued or running when the simulation stopped (horizon_s)
    return pd.DataFrame({
        "request_id": np.arange(n, dtype=np.int64),
        "replica": engine_col("replica", np.int64, seqs.default_replica),
        "adapter": _strings([*seqs.adapter_names, None], seqs.adapter_index),  # index -1: the base model
        "arrival_time_s": arrival.copy(),
        "prompt_tokens": seqs.prompt_tokens.copy(),
        "output_tokens": seqs.output_tokens.copy(),
        "first_scheduled_time_s": first_sched,
        "first_token_time_s": first_tok,
        "finish_time_s": np.where(aborted, np.nan, finish),
        "queue_wait_s": first_sched - arrival,
        "ttft_s": first_tok - arrival,
        "e2el_s": np.where(aborted, np.nan, finish - arrival),
        "adapter_stall_s": engine_col("adapter_stall_s", float, 0.0),
        "adapter_hit": pd.arrays.BooleanArray(hit_value, hit_missing),
        "num_preemptions": engine_col("num_preemptions", np.int64, 0),
        "starved": engine_col("starved", bool, False),
        "aborted": aborted,
        "unfinished": unfinished,
        "abort_reason": _strings(list(texts), reason_code),
        "cancelled": cancelled,
        "cancel_time_s": cancel_time,
    })


def _strings(table: list[str | None], codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """``table[codes]`` (a negative code counts from the end) as a pandas ``string`` column, taken in C: the same
    values and dtype as ``pd.array(np.array(table, dtype=object)[codes], dtype="string")``, without a Python object
    per row."""
    dtype = pd.StringDtype()
    codes = np.where(codes < 0, codes + len(table), codes) if len(codes) and codes.min() < 0 else codes
    if dtype.storage != "pyarrow":  # pandas without pyarrow strings: the object route
        return pd.array(np.array(table, dtype=object)[codes], dtype=dtype)
    import pyarrow as pa

    return pd.array(pa.array(table, type=pa.large_string()).take(pa.array(codes)), dtype=dtype)


def empty_requests_frame() -> pd.DataFrame:
    """The requests table with its columns and dtypes and no rows (``records: summary`` keeps no rows)."""
    from lorasim.engine.seqtable import SeqTable

    none = np.array([], dtype=np.int64)
    return requests_frame(SeqTable(np.array([]), none, none, none, ()))


def slo_attainment(requests: pd.DataFrame, ttft_slo_s: float | None, tpot_slo_s: float | None,
                   duration_s: float) -> tuple[float, float]:
    """Share of all requests that completed within every SLO given (TTFT; TPOT = (E2E - TTFT) / (output - 1), taken
    as met for one-token outputs), and those requests per second of ``duration_s`` (goodput).

    Returns:
        ``(slo_attainment in [0, 1], goodput_rps)``; NaN when there are no requests or no duration.
    """
    n = len(requests)
    ok = requests["finish_time_s"].notna() & ~requests["aborted"]
    if ttft_slo_s is not None:
        ok &= requests["ttft_s"] <= ttft_slo_s
    if tpot_slo_s is not None:
        tpot = (requests["e2el_s"] - requests["ttft_s"]) / (requests["output_tokens"] - 1).where(
            requests["output_tokens"] > 1)
        ok &= tpot.isna() | (tpot <= tpot_slo_s)
    k = int(ok.sum())
    return (k / n if n else math.nan), (k / duration_s if duration_s > 0 else math.nan)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same directory, then rename (no half-written files)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_safe(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


@dataclass
class Results:
    """Outputs of one simulation.

    Attributes:
        requests: one row per request (columns: see ``REQUEST_COLUMNS``; times in seconds); no rows with
            ``output.records: summary``.
        steps: one row per engine step.
        adapter_events: adapter loads and evictions per tier.
        itl_values_s, itl_counts: inter-token latencies with multiplicities (see ``Recorder``).
        scenario: the validated scenario.
        info: deterministic run facts merged into the summary (KV capacity used, profile name).
        wall_time_s: wall-clock seconds the run took (not part of the summary, which is deterministic).
        notes: facts about the workload a user should know (trace rows kept, lengths fixed or capped).
        step_totals: running step totals (``Recorder.step_totals``); the summary uses them when ``steps`` is empty
            (``output.records: requests``).
        digest: with ``output.records: summary``, the streaming request metrics: ``requests``, ``adapter_events``
            and the ITL arrays are then empty, and the summary, ``per_adapter`` and ``per_replica`` come from it
            (percentiles exact over few samples, within 1% over many; see :mod:`lorasim.metrics.digest`).
        num_preemptions: preemptions counted by the recorder (the summary's, with a digest).
    """

    requests: pd.DataFrame
    steps: pd.DataFrame
    adapter_events: pd.DataFrame
    itl_values_s: np.ndarray
    itl_counts: np.ndarray
    scenario: object
    info: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    notes: tuple[str, ...] = ()
    step_totals: dict | None = None
    adapter_names: tuple[str, ...] = ()
    digest: RequestDigest | None = None
    num_preemptions: int = 0
    _summary: dict | None = None

    @property
    def summary(self) -> dict:
        """Flat dict of headline metrics (vLLM serving-benchmark names; times in ms where the key says so)."""
        if self._summary is None:
            d = self.digest
            if d is None:
                s = summarize(self.requests, self.steps, self.adapter_events, self.itl_values_s, self.itl_counts,
                              self.step_totals)
            else:
                s = d.summary(self.step_totals, self.num_preemptions)
            s.update({k: v for k, v in self.info.items() if k not in s})
            m = getattr(self.scenario, "metrics", None)
            if m is not None and (m.ttft_slo_s is not None or m.tpot_slo_s is not None):
                s["slo_attainment"], s["goodput_rps"] = (
                    slo_attainment(self.requests, m.ttft_slo_s, m.tpot_slo_s, s["duration_s"]) if d is None
                    else d.slo_attainment(s["duration_s"]))
            n = int(self.info.get("num_replicas", 1))
            if n > 1 and d is not None:
                s["replica_imbalance"] = d.replica_imbalance()
            elif n > 1:  # load balance: completed requests of the busiest replica over the mean (1.0 = even)
                done = self.requests["finish_time_s"].notna() & ~self.requests["aborted"]
                per = np.bincount(self.requests.loc[done, "replica"].to_numpy(dtype=np.int64), minlength=n)
                s["replica_imbalance"] = float(per.max() / per.mean()) if per.sum() else math.nan
            self._summary = s
        return self._summary

    @property
    def per_adapter(self) -> pd.DataFrame:
        """One row per defined adapter, in definition order (those without requests too), then ``(base)`` for
        base-model requests if any: ``num_requests``,
        ``num_completed``, ``num_aborted``, ``num_cancelled``, ``num_unfinished``, ``num_starved_requests``,
        ``max_queue_wait_s``, ``ttft_ms_mean``, ``ttft_ms_p99``, ``adapter_hit_rate`` (share of first schedulings that
        found the adapter in a GPU slot; NaN for the base model)."""
        if self.digest is not None:
            return self.digest.per_adapter()
        r = self.requests
        key = r["adapter"].astype("object").where(r["adapter"].notna(), "(base)")
        done = r["finish_time_s"].notna() & ~r["aborted"]
        frame = pd.DataFrame({
            "adapter": key, "completed": done, "aborted": r["aborted"], "cancelled": r["cancelled"],
            "unfinished": r["unfinished"], "starved": r["starved"], "queue_wait_s": r["queue_wait_s"],
            "ttft_ms": r["ttft_s"] * 1000.0, "hit": r["adapter_hit"].astype("float"),
        })
        g = frame.groupby("adapter", sort=False)
        out = pd.DataFrame({
            "num_requests": g.size(),
            "num_completed": g["completed"].sum(),
            "num_aborted": g["aborted"].sum(),
            "num_cancelled": g["cancelled"].sum(),
            "num_unfinished": g["unfinished"].sum(),
            "num_starved_requests": g["starved"].sum(),
            "max_queue_wait_s": g["queue_wait_s"].max(),
            "ttft_ms_mean": g["ttft_ms"].mean(),
            "ttft_ms_p99": g["ttft_ms"].quantile(0.99),
            "adapter_hit_rate": g["hit"].mean(),
        })
        order = [*self.adapter_names, *(["(base)"] if "(base)" in out.index else []),
                 *sorted(set(out.index) - set(self.adapter_names) - {"(base)"})]
        out = out.reindex(order)
        out.index.name = "adapter"
        counts = [c for c in out.columns if c.startswith("num_")]
        out[counts] = out[counts].fillna(0)
        return out.astype({c: "int64" for c in counts})

    @property
    def per_replica(self) -> pd.DataFrame:
        """One row per replica (index ``replica``): ``num_requests``, ``num_completed``, ``ttft_ms_mean``,
        ``ttft_ms_p99``, ``gpu_adapter_loads``, ``num_steps`` (0 without a steps table)."""
        if self.digest is not None:
            return self.digest.per_replica()
        n = int(self.info.get("num_replicas", 1))
        r = self.requests
        done = r["finish_time_s"].notna() & ~r["aborted"]
        g = r.assign(done=done, ttft_ms=r["ttft_s"] * 1000.0).groupby("replica")
        ev = self.adapter_events
        loads = (ev[(ev["kind"] == "load") & (ev["tier"] == "gpu")].groupby("replica").size() if len(ev)
                 else pd.Series(dtype="int64"))
        steps = self.steps.groupby("replica").size() if len(self.steps) else pd.Series(dtype="int64")
        out = pd.DataFrame({
            "num_requests": g.size(), "num_completed": g["done"].sum(), "ttft_ms_mean": g["ttft_ms"].mean(),
            "ttft_ms_p99": g["ttft_ms"].quantile(0.99), "gpu_adapter_loads": loads, "num_steps": steps,
        }).reindex(range(n))
        out.index.name = "replica"
        counts = ["num_requests", "num_completed", "gpu_adapter_loads", "num_steps"]
        out[counts] = out[counts].fillna(0)
        return out.astype({c: "int64" for c in counts})

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write ``summary.json``, ``requests.parquet``, ``steps.parquet``, ``adapter_events.parquet``,
        ``per_adapter.csv`` and ``scenario.resolved.yaml`` into ``out_dir`` (created if needed), each atomically.

        Returns:
            The paths written.
        """
        from lorasim.config import scenario_to_yaml

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []

        def put(name, writer):
            p = out / name
            _atomic_write(p, writer)
            written.append(p)

        def put_table(name, keep, frame):
            if keep:
                put(name, lambda t: frame.to_parquet(t, index=False))
            else:
                (out / name).unlink(missing_ok=True)  # from an earlier run: it would not match this one

        out_cfg = self.scenario.output
        tables = self.digest is None  # records: summary keeps no request rows and no adapter events
        put_table("requests.parquet", tables, self.requests)
        put_table("steps.parquet", getattr(out_cfg, "steps", True) and getattr(out_cfg, "records", "full") == "full",
                  self.steps)
        put_table("adapter_events.parquet", tables, self.adapter_events)
        put("per_adapter.csv", lambda t: self.per_adapter.to_csv(t))
        if int(self.info.get("num_replicas", 1)) > 1:
            put("per_replica.csv", lambda t: self.per_replica.to_csv(t))
        elif (out / "per_replica.csv").exists():
            (out / "per_replica.csv").unlink()  # from an earlier cluster run: it would not match this one
        put("scenario.resolved.yaml", lambda t: Path(t).write_text(scenario_to_yaml(self.scenario)))
        summary = {k: _json_safe(v) for k, v in self.summary.items()}
        put("summary.json", lambda t: Path(t).write_text(json.dumps(summary, indent=2) + "\n"))
        return written
