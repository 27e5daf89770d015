"""Replay real vLLM multi-LoRA runs in lorasim and compare predicted with measured metrics.

Each kept run (``status == "ok"``, per-adapter Poisson arrivals, ShareGPT prompts, a supported model) becomes a
scenario: the model's H100 profile, ``n_adapters`` adapters with ranks cycled from ``adapter_rank_pool``,
per-adapter Poisson arrivals with ``adapter_rate_values`` (shuffled assignment) over ``total_time_arg_s``, the
ShareGPT Llama-3 empirical lengths, the run's engine limits (NaN ``max_num_seqs``/``max_num_batched_tokens`` ->
vLLM V1 defaults 256/2048) and seed 0. The client is the benchmark's: one TCP connection per request, at most
28,232 ports (Linux's default ephemeral range) in flight or in TIME_WAIT (60 s); a request that finds none fails at
once and does not count (``client`` section; OS defaults, nothing fitted). Adapters take GPU slots as the runs'
worker did (``engine.adapter_activation: vllm``): one at a time in Python-set order, so a load can evict an adapter
the same step still needs, which is then loaded again (``LRUCacheWorkerLoRAManager._apply_adapters`` in the runs'
vLLM fork; nothing fitted).

Window rule (as the benchmark's by-time summary): the simulation stops at the window end (``horizon_s``) and only
requests finished by then count. Predicted ``total_tok_s`` = (prompt + output tokens of those) / window,
``req_throughput_rps`` = count / window, TTFT mean/p99 over those requests. ``predicted_itl_ms_mean`` is the
simulation summary's ``itl_ms_mean``: every inter-token gap produced inside the window, including those of requests
still running at its end (the benchmark counts finished requests only; ITL barely depends on the difference).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from lorasim.errors import DataFileError
from lorasim.parallel import run_tasks
from lorasim.paths import resolve_data_dir

RUNS_REL = "vllm-lora-runs/real_runs.csv"
HOLDOUT_NAME = "holdout_real_runs.csv"
TWIN_REL = "vllm-lora-runs/dt_archived_vs_real.csv"
LENGTHS_REL = "traces/sharegpt/sharegpt_v3_first_turn_lengths.csv"
PROFILES = {"llama-3.1-8b-instruct": "llama-3.1-8b_h100-64gb", "qwen-2.5-7b-instruct": "qwen-2.5-7b_h100-64gb"}
REQUIRED = ("group", "run_dir", "status", "model", "max_loras", "max_cpu_loras", "max_lora_rank", "max_num_seqs",
            "max_num_batched_tokens", "n_adapters", "adapter_rank_pool", "arrival_process", "adapter_rate_values",
            "aggregate_rate_rps", "total_time_arg_s", "dataset", "total_tok_s", "req_throughput_rps",
            "ttft_mean_ms", "ttft_p99_ms", "itl_mean_ms")
# output metric name -> measured column in the runs CSV
METRICS = {"total_tok_s": "total_tok_s", "req_throughput_rps": "req_throughput_rps", "ttft_ms_mean": "ttft_mean_ms",
           "ttft_ms_p99": "ttft_p99_ms", "itl_ms_mean": "itl_mean_ms"}
# published twin: our metric -> its column in dt_archived_vs_real.csv
TWIN = {"total_tok_s": "dt_total_throughput", "itl_ms_mean": "dt_itl", "ttft_ms_mean": "dt_ttft"}


def _int(v) -> int:
    """An integer field of the runs CSV (``4``, ``4.0`` or ``"4"``); ValueError otherwise."""
    f = float(v)
    if not f.is_integer():
        raise ValueError(f"{v!r} is not an integer")
    return int(f)


def _int_or(v, default: int) -> int:
    return default if v is None or (isinstance(v, float) and math.isnan(v)) else _int(v)


def skip_reason(row: dict) -> str | None:
    """Why a runs-CSV row cannot be replayed, or None when it can."""
    if row["status"] != "ok":
        return f"status {row['status']}"
    if not str(row["arrival_process"]).startswith("per-adapter Poisson"):
        return "arrival_process not per-adapter Poisson"
    if "sharegpt" not in str(row["dataset"]).lower():
        return "dataset not ShareGPT"
    if row["model"] not in PROFILES:
        return f"no profile for model {row['model']}"
    if not (isinstance(row["total_time_arg_s"], (int, float)) and row["total_time_arg_s"] > 0):
        return "no total_time_arg_s"
    return None


# The runs' client (benchmark_serving_by_time.py) opens one aiohttp session, so one TCP connection and one local port,
# per request; Linux's default ephemeral range 32768-60999 holds 28,232 ports and a closed connection keeps its port
# for TIME_WAIT (60 s). Requests beyond that fail at once and are not counted. OS defaults, not fitted.
BENCHMARK_CLIENT = {"max_connections": 28232, "time_wait_s": 60.0}


def build_scenario(row: dict) -> dict:
    """The scenario dict that replays one real run (see the module docstring)."""
    ranks = [_int(v) for v in str(row["adapter_rank_pool"]).split()]
    rates = [float(v) for v in str(row["adapter_rate_values"]).split()]
    return {
        "seed": 0,
        "horizon_s": float(row["total_time_arg_s"]),  # the benchmark's window: later finishes do not count
        "model": {"profile": PROFILES[row["model"]]},
        "adapters": {"count": _int(row["n_adapters"]), "ranks": ranks},
        "workload": {
            "arrivals": {"kind": "per_adapter_poisson", "rates": rates, "assignment": "shuffled"},
            "duration_s": float(row["total_time_arg_s"]),
            "lengths": {"kind": "empirical", "path": LENGTHS_REL, "prompt_column": "prompt_len_llama3",
                        "output_column": "output_len_llama3", "filter_column": "vllm_keep_llama3"},
        },
        "engine": {"max_loras": _int(row["max_loras"]),
                   "max_cpu_loras": _int_or(row["max_cpu_loras"], _int(row["max_loras"])),  # vLLM: unset = max_loras
                   "max_lora_rank": _int(row["max_lora_rank"]),
                   "max_num_seqs": _int_or(row["max_num_seqs"], 256),
                   "max_num_batched_tokens": _int_or(row["max_num_batched_tokens"], 2048),
                   "adapter_activation": "vllm"},  # the runs' worker activates a step's adapters one at a time
        "metrics": {"starvation_threshold_s": None},  # not a benchmark metric; its per-step check costs time
        "output": {"records": "requests"},  # the window metrics need the requests only, not a row per step
        "client": BENCHMARK_CLIENT,
    }


def window_metrics(requests: pd.DataFrame, window_s: float) -> dict:
    """Benchmark-style metrics over the requests finished (not aborted) at or before ``window_s``."""
    done = requests[(~requests["aborted"].astype(bool)) & (requests["finish_time_s"] <= window_s)]
    n = len(done)
    ttft_ms = done["ttft_s"].to_numpy(dtype=float) * 1000.0
    return {"total_tok_s": float(done["prompt_tokens"].sum() + done["output_tokens"].sum()) / window_s,
            "req_throughput_rps": n / window_s,
            "ttft_ms_mean": float(ttft_ms.mean()) if n else math.nan,
            "ttft_ms_p99": float(np.percentile(ttft_ms, 99)) if n else math.nan}


def replay_run(row: dict, data_dir: str) -> dict:
    """Simulate one run; return its validation.csv row. Top-level so that worker processes can pickle it."""
    import lorasim

    t0 = time.perf_counter()
    res = lorasim.simulate(lorasim.load_scenario(build_scenario(row)), data_dir=data_dir)
    pred = window_metrics(res.requests, float(row["total_time_arg_s"]))
    pred["itl_ms_mean"] = float(res.summary["itl_ms_mean"])
    out = {"run_dir": row["run_dir"], "model": row["model"], "group": row["group"], "max_loras": _int(row["max_loras"]),
           "n_adapters": _int(row["n_adapters"]), "aggregate_rate_rps": float(row["aggregate_rate_rps"])}
    for m, col in METRICS.items():
        out[f"measured_{m}"] = float(row[col])
        out[f"predicted_{m}"] = pred[m]
    out["wall_s"] = time.perf_counter() - t0
    return out


def load_runs(runs_path: Path) -> pd.DataFrame:
    """The runs CSV, with ``_line`` (the row's line in the file) added.

    Raises:
        DataFileError: the file is missing, unreadable or lacks a required column.
    """
    if runs_path.is_dir():
        raise DataFileError(runs_path, "is a directory, not a runs CSV")
    if not runs_path.is_file():
        raise DataFileError(runs_path, "runs file not found (set --data-dir or --runs)")
    try:
        df = pd.read_csv(runs_path)
    except (OSError, ValueError) as exc:
        raise DataFileError(runs_path, f"cannot read as CSV ({exc})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataFileError(runs_path, f"missing columns: {', '.join(missing)}")
    return df.assign(_line=np.arange(len(df)) + 2)  # line 1 is the header


def check_row(row: dict, runs_path: Path) -> None:
    """Refuse a kept row whose values cannot make a scenario, naming the file, line, run and field.

    Raises:
        DataFileError: a value is not a number where one is needed, or the scenario it makes is invalid.
    """
    import lorasim

    where = f"line {row['_line']} ({row['run_dir']})"
    try:
        sc = build_scenario(row)
        for col in ("aggregate_rate_rps", "n_adapters", *METRICS.values()):
            float(row[col])
    except (TypeError, ValueError) as exc:
        raise DataFileError(runs_path, f"{where}: bad value ({exc})") from None
    try:
        lorasim.load_scenario(sc)
    except lorasim.LorasimError as exc:
        raise DataFileError(runs_path, f"{where}: {exc}") from None


def select_runs(df: pd.DataFrame, group: str | None = None, model: str | None = None,
                limit: int | None = None, max_rate: float | None = None) -> tuple[list[dict], dict[str, int]]:
    """Kept rows (sorted by run_dir; ``limit`` picks evenly spaced ones) and skip counts by reason.

    ``max_rate`` leaves out runs whose ``aggregate_rate_rps`` is above it (heavily overloaded runs simulate millions
    of requests); they are counted as skipped.
    """
    if group is not None:
        df = df[df["group"] == group]
    if model is not None:
        df = df[df["model"] == model]
    kept, skips = [], {}
    for row in df.sort_values("run_dir", kind="stable").to_dict("records"):
        why = skip_reason(row)
        if why is None and max_rate is not None and not row["aggregate_rate_rps"] <= max_rate:
            why = f"aggregate_rate_rps above --max-rate {max_rate:g}"
        if why is None:
            kept.append(row)
        else:
            skips[why] = skips.get(why, 0) + 1
    if limit is not None and 0 < limit < len(kept):
        idx = np.linspace(0, len(kept) - 1, limit).round().astype(int)
        picked = [kept[i] for i in sorted(set(idx.tolist()))]
        skips[f"not picked by --limit {limit}"] = len(kept) - len(picked)
        kept = picked
    return kept, skips


def prepare_runs(runs_path: str | Path | None = None, data_dir: str | Path | None = None, group: str | None = None,
                 model: str | None = None, limit: int | None = None, max_rate: float | None = None,
                 ) -> tuple[Path, Path, list[dict], dict[str, int]]:
    """Load and select the runs to replay and check that each makes a valid scenario (before any replay).

    Returns:
        ``(runs file, data directory, kept rows, skip counts by reason)``.

    Raises:
        DataFileError: the runs file is missing or malformed (a bad row is named by its line).
    """
    ddir = resolve_data_dir(data_dir)
    path = Path(runs_path) if runs_path is not None else ddir / RUNS_REL
    runs, skips = select_runs(load_runs(path), group, model, limit, max_rate)
    for row in runs:
        check_row(row, path)
    return path, ddir, runs, skips


def replay_runs(runs: list[dict], runs_path: Path, data_dir: Path, workers: int = 1, dask_address=None,
                on_run: Callable[[int, int, dict], None] | None = None, done: list[dict] | None = None,
                ) -> pd.DataFrame:
    """Replay ``runs`` (from :func:`prepare_runs`); one row per run sorted by run_dir (see :func:`validate_runs`).

    ``done``, if given, receives each row as it finishes (what an interrupted caller can still write).
    """
    rows: list[dict] = done if done is not None else []
    for _, row in run_tasks(replay_run, [(r, str(data_dir)) for r in runs], workers, dask_address):
        rows.append(row)
        if on_run is not None:
            on_run(len(rows), len(runs), row)
    return finish_table(rows, runs_path, data_dir)


def finish_table(rows: list[dict], runs_path: Path, data_dir: Path) -> pd.DataFrame:
    """The validation table of replayed ``rows``: sorted by run_dir, with the published twin's predictions for
    the holdout file."""
    cols = ["run_dir", "model", "group", "max_loras", "n_adapters", "aggregate_rate_rps"]
    cols += [f"{p}_{m}" for m in METRICS for p in ("measured", "predicted")] + ["wall_s"]
    out = pd.DataFrame(rows, columns=cols).sort_values("run_dir", kind="stable").reset_index(drop=True)
    if runs_path.name == HOLDOUT_NAME:
        out = attach_twin(out, data_dir / TWIN_REL)
    return out


def validate_runs(runs_path: str | Path | None = None, data_dir: str | Path | None = None, group: str | None = None,
                  model: str | None = None, limit: int | None = None, workers: int = 1, max_rate: float | None = None,
                  dask_address=None, on_run: Callable[[int, int, dict], None] | None = None,
                  ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Replay the selected runs; return (one row per run sorted by run_dir, skip counts by reason).

    Args:
        workers: local worker processes (1: in this process); results are identical either way.
        dask_address: a Dask distributed scheduler address or ``distributed.Client``; replaces ``workers``.
        on_run: called after each replay with ``(done, total, row)`` (progress display).

    Raises:
        DataFileError: the runs file (or, for the holdout, the published twin's file) is missing or malformed.
        ConfigError: no Dask scheduler answers at ``dask_address``.
    """
    path, ddir, runs, skips = prepare_runs(runs_path, data_dir, group, model, limit, max_rate)
    return replay_runs(runs, path, ddir, workers, dask_address, on_run), skips


def attach_twin(df: pd.DataFrame, twin_path: Path) -> pd.DataFrame:
    """Add the published digital twin's predictions (``published_twin_*``), matched on run_dir."""
    if not twin_path.is_file():
        raise DataFileError(twin_path, "published twin file not found")
    tw = pd.read_csv(twin_path)
    missing = [c for c in ("real_dir", *TWIN.values()) if c not in tw.columns]
    if missing:
        raise DataFileError(twin_path, f"missing columns: {', '.join(missing)}")
    tw = tw.drop_duplicates("real_dir").set_index("real_dir")
    for m, col in TWIN.items():
        df[f"published_twin_{m}"] = df["run_dir"].map(tw[col]).astype(float)
    return df


def _ape(pred: pd.Series, meas: pd.Series) -> pd.Series:
    return ((pred - meas) / meas).abs() * 100.0


UNDERLOADED_SHARE = 0.95
"""A run is underloaded when it served at least this share of the requests it was offered
(``measured_req_throughput_rps >= UNDERLOADED_SHARE * aggregate_rate_rps``), overloaded otherwise."""


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Error summary per (model, group, load): ``load`` is ``all``, then ``underloaded`` and ``overloaded`` (see
    :data:`UNDERLOADED_SHARE`; a class with no run is left out). Columns: n, MAPE of total_tok_s, ITL mean abs %
    error and mean signed % error (bias), share of runs with TTFT mean within 30%, and the published twin's where
    the table has them."""
    recs = []
    under = df["measured_req_throughput_rps"] >= UNDERLOADED_SHARE * df["aggregate_rate_rps"]
    for (model, group), g in df.groupby(["model", "group"], sort=True):
        u = under.loc[g.index]
        for load, part in (("all", g), ("underloaded", g[u]), ("overloaded", g[~u])):
            if part.empty:
                continue
            rec = {"model": model, "group": group, "load": load, "n": len(part),
                   "tok_mape_pct": _ape(part.predicted_total_tok_s, part.measured_total_tok_s).mean(),
                   "itl_mape_pct": _ape(part.predicted_itl_ms_mean, part.measured_itl_ms_mean).mean(),
                   "itl_bias_pct": ((part.predicted_itl_ms_mean / part.measured_itl_ms_mean - 1) * 100).mean(),
                   "ttft_within_30pct": (_ape(part.predicted_ttft_ms_mean, part.measured_ttft_ms_mean) <= 30).mean()}
            if "published_twin_total_tok_s" in part:
                rec["twin_tok_mape_pct"] = _ape(part.published_twin_total_tok_s, part.measured_total_tok_s).mean()
                rec["twin_itl_mape_pct"] = _ape(part.published_twin_itl_ms_mean, part.measured_itl_ms_mean).mean()
                rec["twin_ttft_within_30pct"] = (_ape(part.published_twin_ttft_ms_mean,
                                                      part.measured_ttft_ms_mean) <= 30).mean()
            recs.append(rec)
    return pd.DataFrame(recs)


def plot(df: pd.DataFrame, path: Path) -> None:
    """Three log-log panels (total_tok_s, ttft_ms_mean, itl_ms_mean), predicted vs measured, with y = x."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, m in zip(axes, ("total_tok_s", "ttft_ms_mean", "itl_ms_mean")):
        for model, g in df.groupby("model", sort=True):
            ax.scatter(g[f"measured_{m}"], g[f"predicted_{m}"], s=14, alpha=0.7, label=model)
        vals = df[[f"measured_{m}", f"predicted_{m}"]].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if vals.size:
            lo, hi = vals.min() / 1.2, vals.max() * 1.2
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"measured {m}")
        ax.set_ylabel(f"predicted {m}")
        ax.set_title(m)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(df: pd.DataFrame, out_dir: Path) -> pd.DataFrame:
    """Write ``validation.csv`` (one row per run), ``summary.csv`` (:func:`summarize`) and the plot; return the
    summary."""
    df.to_csv(out_dir / "validation.csv", index=False)
    summ = summarize(df)
    summ.to_csv(out_dir / "summary.csv", index=False)
    plot(df, out_dir / "predicted_vs_measured.png")
    return summ
