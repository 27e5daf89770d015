"""The ``lorasim`` command line: thin — parse, load the scenario, simulate, write and print."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from lorasim.calibrate.cli import calibrate_app
from lorasim.errors import LorasimError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Discrete-event simulator of multi-LoRA LLM serving (vLLM semantics).")
app.add_typer(calibrate_app, name="calibrate")
console = Console()

SUMMARY_ROWS = (
    ("Requests", ("num_requests", "num_completed", "num_aborted", "num_cancelled", "num_unfinished", "duration_s")),
    ("Throughput", ("request_throughput_rps", "output_throughput_tok_s", "total_throughput_tok_s")),
    ("TTFT (ms)", ("ttft_ms_mean", "ttft_ms_p50", "ttft_ms_p90", "ttft_ms_p99")),
    ("TPOT (ms)", ("tpot_ms_mean", "tpot_ms_p50", "tpot_ms_p90", "tpot_ms_p99")),
    ("ITL (ms)", ("itl_ms_mean", "itl_ms_p50", "itl_ms_p90", "itl_ms_p99")),
    ("E2E latency (ms)", ("e2el_ms_mean", "e2el_ms_p50", "e2el_ms_p90", "e2el_ms_p99")),
    ("Adapters", ("gpu_adapter_loads", "disk_adapter_loads", "gpu_adapter_hit_rate", "adapter_load_wait_s")),
    ("Queue", ("max_queue_wait_s", "num_starved_requests", "num_preemptions", "max_num_waiting", "kv_cache_tokens")),
)


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def prepare_out_dir(out_dir: Path) -> None:
    """Create the output directory before the run, so that a bad ``--out`` fails at once, not after it.

    Raises:
        LorasimError: the path is an existing file or cannot be created.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise LorasimError(f"--out {out_dir}: exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LorasimError(f"--out {out_dir}: cannot create the directory ({exc.strerror or exc})") from None


def print_summary(summary: dict, title: str) -> None:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("group")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for group, keys in SUMMARY_ROWS:
        for i, k in enumerate(keys):
            if k in summary:
                table.add_row(group if i == 0 else "", k, _fmt(summary[k]))
    console.print(table)


@app.command()
def run(
    scenario: Optional[Path] = typer.Argument(None, help="Scenario YAML; omitted: the embedded default scenario."),
    set_: list[str] = typer.Option([], "--set", help="Override a leaf by dotted path, e.g. engine.max_loras=16 "
                                   "(repeatable; values parsed as YAML)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Root seed (replaces the scenario's seed)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write summary.json, requests.parquet, steps.parquet, "
                                       "adapter_events.parquet and scenario.resolved.yaml here."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory for traces and length tables "
                                            "(default: $LORASIM_DATA_DIR, else ../shared/data beside the repo)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of a table."),
) -> None:
    """Simulate one scenario and print its summary."""
    from lorasim import load_scenario, simulate

    sc = load_scenario(scenario, overrides=set_, seed=seed)
    out_dir = out if out is not None else (Path(sc.output.dir) if sc.output.dir else None)
    if out_dir is not None:
        prepare_out_dir(out_dir)
    if not as_json:
        console.print(f"[bold]lorasim[/] {scenario if scenario else 'embedded default scenario'}: "
                      f"scheduler={sc.scheduler.name}, max_loras={sc.engine.max_loras}, "
                      f"max_cpu_loras={sc.engine.cpu_loras}, seed={sc.seed}")
    res = simulate(sc, data_dir=data_dir)
    for note in res.notes:
        print(f"lorasim: note: {note}", file=sys.stderr)
    if out_dir is not None:
        try:
            res.write(out_dir)
        except OSError as exc:
            raise LorasimError(f"{out_dir}: cannot write the results ({exc.strerror or exc})") from None
    if as_json:
        print(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                          for k, v in res.summary.items()}, indent=2, allow_nan=False))
        return
    print_summary(res.summary, title=f"summary ({res.wall_time_s:.2f} s wall, {res.summary['num_steps']:,} steps)")
    if out_dir is not None:
        console.print(f"wrote {out_dir}/")


@app.command()
def policies(as_json: bool = typer.Option(
        False, "--json", help='Print {"scheduler": [...], "eviction": [...], "adapter_memory": [...], "router": [...]}: '
                              'sorted names by kind, plug-ins included; router is an empty list until routers '
                              'exist.')) -> None:
    """List every registered policy with its one-line rule (built-ins and plug-ins of the entry-point group
    `lorasim.policies`)."""
    from lorasim.policies import ADAPTER_MEMORIES, EVICTIONS, SCHEDULERS

    kinds = {"scheduler": SCHEDULERS, "eviction": EVICTIONS, "adapter_memory": ADAPTER_MEMORIES}
    if as_json:
        # router: a kind of policy without a registry yet (clusters), listed empty so the shape is stable
        print(json.dumps({**{k: r.names() for k, r in kinds.items()}, "router": []}))
        return
    table = Table(show_header=True, header_style="bold")
    for col in ("kind", "name", "rule"):
        table.add_column(col)
    for kind, reg in kinds.items():
        for name, cls in reg.items():
            table.add_row(kind, name, cls.rule)
    console.print(table)


@app.command()
def profiles() -> None:
    """List the shipped performance profiles."""
    from lorasim.perf.profile import list_profiles, load_profile

    table = Table(show_header=True, header_style="bold")
    table.add_column("name", no_wrap=True)
    table.add_column("model", no_wrap=True)
    table.add_column("device")
    for name in list_profiles():
        p = load_profile(name)
        table.add_row(name, p.shape.name, p.device)
    console.print(table)


@app.command()
def show(
    scenario: Optional[Path] = typer.Argument(None, help="Scenario YAML; omitted: the embedded default."),
    set_: list[str] = typer.Option([], "--set", help="Override a leaf by dotted path."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory for traces and length tables."),
) -> None:
    """Validate a scenario (schema, profile, adapter tiers, data files) and print it with every default filled in."""
    from lorasim.config import load_scenario, scenario_to_yaml
    from lorasim.engine.simulation import Simulation

    sc = load_scenario(scenario, overrides=set_)
    Simulation(sc, data_dir=data_dir)  # builds everything a run needs, without running
    print(scenario_to_yaml(sc), end="")


@app.command()
def validate(
    runs: Optional[Path] = typer.Option(None, "--runs", help="Runs CSV (default: <data dir>/vllm-lora-runs/real_runs.csv)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory (lengths table, runs)."),
    out: Path = typer.Option(..., "--out", help="Write validation.csv and predicted_vs_measured.png here."),
    group: Optional[str] = typer.Option(None, "--group", help="Only runs of this group."),
    model: Optional[str] = typer.Option(None, "--model", help="Only runs of this model."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most N runs (evenly spaced by run_dir)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Worker processes (default: one per CPU; "
                                          "results identical to serial)."),
    max_rate: Optional[float] = typer.Option(None, "--max-rate", help="Leave out runs offered more than this many "
                                             "requests/s (overloaded runs simulate millions of requests)."),
) -> None:
    """Replay real vLLM runs (per-adapter Poisson, ShareGPT) and compare predicted with measured metrics."""
    from lorasim.calibrate.validate import summarize, validate_runs, write_outputs

    prepare_out_dir(out)
    if workers is None:
        workers = os.cpu_count() or 1
    df, skips = validate_runs(runs, data_dir, group=group, model=model, limit=limit, workers=workers,
                              max_rate=max_rate)
    write_outputs(df, out)
    summ = summarize(df)
    for rec in summ.to_dict("records"):
        line = (f"{rec['model']} | {rec['group']} | n={rec['n']}: total_tok_s MAPE {rec['tok_mape_pct']:.1f}%, "
                f"ITL mean abs err {rec['itl_mape_pct']:.1f}% (bias {rec['itl_bias_pct']:+.1f}%), "
                f"TTFT mean within 30%: {rec['ttft_within_30pct']:.0%}")
        if "twin_tok_mape_pct" in rec:
            line += (f" | published twin: total_tok_s MAPE {rec['twin_tok_mape_pct']:.1f}%, "
                     f"ITL {rec['twin_itl_mape_pct']:.1f}%, TTFT within 30%: {rec['twin_ttft_within_30pct']:.0%}")
        print(line)
    skipped = sum(skips.values())
    print(f"replayed {len(df)} runs; skipped {skipped}" + (": " + ", ".join(f"{k}: {v}" for k, v in sorted(skips.items())) if skips else ""))
    print(f"wrote {out}/validation.csv, {out}/predicted_vs_measured.png")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors (bad scenario, data or command line) become one line on stderr and exit status 2."""
    try:
        rc = app(args=argv, standalone_mode=False)
    except LorasimError as exc:
        print(f"lorasim: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("lorasim: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise  # a bug in lorasim: keep the traceback
        # a command-line usage error (click's ClickException protocol, as typer raises it)
        if not exc.format_message().strip():
            sys.exit(0)  # `lorasim` alone: the help was printed
        ctx = getattr(exc, "ctx", None)
        hint = f"lorasim {ctx.info_name} --help" if ctx is not None and ctx.parent is not None else "lorasim --help"
        print(f"lorasim: error: {exc.format_message()} (see {hint})", file=sys.stderr)
        sys.exit(exc.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
