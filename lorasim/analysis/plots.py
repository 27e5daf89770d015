"""Pictures of a run or a sweep (matplotlib, Agg backend): latency CDFs, a timeline, per-adapter waits, and metrics
against a swept parameter. ``lorasim plot DIR`` draws them from ``lorasim run --out`` or ``lorasim sweep --out``
directories; the functions take the tables directly for notebooks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lorasim.errors import LorasimError


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_cdfs(requests: pd.DataFrame, path: str | Path) -> Path:
    """CDFs of TTFT, TPOT and E2E latency of the completed requests (ms, log x), one panel each."""
    if not len(requests):
        raise LorasimError("no requests table: run with output.records: full or requests for latency CDFs "
                           "(records: summary keeps none)")
    plt = _plt()
    done = requests[requests["finish_time_s"].notna() & ~requests["aborted"]]
    tpot = (done["e2el_s"] - done["ttft_s"]) / (done["output_tokens"] - 1).where(done["output_tokens"] > 1)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (name, v) in zip(axes, (("TTFT", done["ttft_s"]), ("TPOT", tpot), ("E2E latency", done["e2el_s"]))):
        x = np.sort(v.dropna().to_numpy() * 1000.0)
        if len(x):
            ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post")
            ax.set_xscale("log")
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{len(done):,} completed requests")
    return _save(fig, path)


def timeline(steps: pd.DataFrame, adapter_events: pd.DataFrame, path: str | Path, bins: int = 400) -> Path:
    """Queue length, running sequences, KV use, resident adapters and adapter loads over time (per replica)."""
    plt = _plt()
    if not len(steps):
        raise LorasimError("no steps table: run with output.records: full for a timeline")
    fig, axes = plt.subplots(5, 1, figsize=(11, 10), sharex=True)
    for rep, s in steps.groupby("replica"):
        t = s["start_time_s"].to_numpy()
        label = f"replica {rep}"
        axes[0].plot(t, s["num_waiting"], lw=0.8, label=label)
        axes[1].plot(t, s["num_running"], lw=0.8, label=label)
        axes[2].plot(t, s["kv_used_blocks"], lw=0.8, label=label)
    ev = adapter_events
    if len(ev):
        gpu = ev[ev["tier"] == "gpu"].sort_values("time_s", kind="stable")
        for rep, e in gpu.groupby("replica"):
            delta = np.where(e["kind"] == "load", 1, -1).cumsum()
            axes[3].step(e["time_s"], delta, where="post", lw=0.8, label=f"replica {rep}")
        loads = gpu[gpu["kind"] == "load"]["time_s"]
        if len(loads):
            axes[4].hist(loads, bins=min(bins, max(10, len(loads) // 5)))
    for ax, name in zip(axes, ("waiting requests", "running sequences", "KV blocks used", "resident adapters (GPU)",
                               "GPU adapter loads")):
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    if steps["replica"].nunique() > 1:
        axes[0].legend(fontsize=7, ncol=4)
    return _save(fig, path)


def adapter_waits(per_adapter: pd.DataFrame, path: str | Path, top: int = 30) -> Path:
    """Mean TTFT and longest queue wait of the adapters with the longest waits (bar chart)."""
    plt = _plt()
    d = per_adapter[per_adapter["num_requests"] > 0].sort_values("max_queue_wait_s", ascending=False).head(top)
    fig, ax = plt.subplots(figsize=(11, 4))
    x = np.arange(len(d))
    ax.bar(x - 0.2, d["max_queue_wait_s"], 0.4, label="longest queue wait (s)")
    ax.bar(x + 0.2, d["ttft_ms_mean"] / 1000.0, 0.4, label="mean TTFT (s)")
    ax.set_xticks(x, d.index, rotation=90, fontsize=7)
    ax.set_ylabel("seconds")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def sweep_metrics(table: pd.DataFrame, grid_keys: list[str], path: str | Path,
                  metrics: tuple[str, ...] = ("ttft_ms_p99", "request_throughput_rps")) -> Path:
    """Each metric (mean over seeds, min-max band) against the first grid key, one line per combination of the
    other grid keys."""
    plt = _plt()
    if not grid_keys:
        raise LorasimError("the sweep has no grid keys to plot against")
    x, others = grid_keys[0], grid_keys[1:]
    missing = [m for m in metrics if m not in table]
    if missing:
        raise LorasimError(f"metric {missing[0]!r} is not a column of the sweep table")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.8), squeeze=False)
    groups = table.groupby(others, sort=False) if others else [((), table)]
    for key, g in groups:
        label = ", ".join(f"{k}={v}" for k, v in zip(others, key if isinstance(key, tuple) else (key,))) or None
        agg = g.groupby(x, sort=True)[list(metrics)].agg(["mean", "min", "max"])
        for ax, m in zip(axes[0], metrics):
            ax.plot(agg.index, agg[(m, "mean")], "o-", label=label)
            ax.fill_between(agg.index, agg[(m, "min")], agg[(m, "max")], alpha=0.15)
    for ax, m in zip(axes[0], metrics):
        ax.set_xlabel(x)
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
        if others:
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_dir(src: str | Path, out: str | Path | None = None,
             metrics: tuple[str, ...] = ("ttft_ms_p99", "request_throughput_rps")) -> list[Path]:
    """Draw every picture the directory's outputs allow; return the PNG paths.

    Raises:
        LorasimError: the directory holds neither a run (``requests.parquet``, or ``per_adapter.csv`` alone from
            ``records: summary``) nor a sweep (``sweep.parquet``).
    """
    src = Path(src)
    out = Path(out) if out is not None else src
    out.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    if (src / "sweep.parquet").exists():
        import json

        keys = list(json.loads((src / "sweep.json").read_text())["grid"])
        made.append(sweep_metrics(pd.read_parquet(src / "sweep.parquet"), keys, out / "sweep.png", metrics))
    elif (src / "requests.parquet").exists() or (src / "per_adapter.csv").exists():
        if (src / "requests.parquet").exists():
            made.append(latency_cdfs(pd.read_parquet(src / "requests.parquet"), out / "latency_cdf.png"))
            if (src / "steps.parquet").exists():
                ev = (pd.read_parquet(src / "adapter_events.parquet") if (src / "adapter_events.parquet").exists()
                      else pd.DataFrame(columns=["time_s", "replica", "kind", "tier"]))
                made.append(timeline(pd.read_parquet(src / "steps.parquet"), ev, out / "timeline.png"))
        else:  # records: summary: no request or step rows
            print(f"lorasim: note: {src} holds no requests.parquet (output.records: summary): no latency CDFs or "
                  f"timeline", file=sys.stderr)
        if (src / "per_adapter.csv").exists():
            made.append(adapter_waits(pd.read_csv(src / "per_adapter.csv", index_col="adapter"),
                                      out / "adapter_waits.png"))
    else:
        raise LorasimError(f"{src}: neither a run (requests.parquet) nor a sweep (sweep.parquet) output directory")
    return made


def _save(fig, path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path
