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
    ("SLO", ("slo_attainment", "goodput_rps")),
    ("Cluster", ("num_replicas", "replica_imbalance")),
    ("Records", ("percentile_relative_accuracy",)),  # records: summary: percentiles over many samples are sketched
)


RUN_OUTPUTS = ("summary.json", "requests.parquet", "steps.parquet", "adapter_events.parquet", "per_adapter.csv",
               "per_replica.csv", "scenario.resolved.yaml", "latency_cdf.png", "timeline.png", "adapter_waits.png")


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if v is None:
        return "-"
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
    force: bool = typer.Option(False, "--force", help="Overwrite the results already in the --out directory."),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Leave out malformed trace rows (reported: "
                                       "how many and which lines) instead of stopping at the first."),
) -> None:
    """Simulate one scenario and print its summary. Ctrl-C stops the run and writes what it has, marked
    incomplete."""
    from lorasim import load_scenario
    from lorasim.engine.simulation import Simulation

    overrides = list(set_)
    sc = load_scenario(scenario, overrides=overrides, seed=seed)
    if skip_bad_rows:
        streams = [st.model_copy(update={"bad_rows": "skip"}) if st.kind == "trace" else st
                   for st in sc.workload.streams]
        sc = sc.model_copy(update={"workload": sc.workload.model_copy(update={"streams": streams})})
    out_dir = out if out is not None else (Path(sc.output.dir) if sc.output.dir else None)
    if out_dir is not None:
        prepare_out_dir(out_dir)
        if (out_dir / "summary.json").exists() and not force:
            raise LorasimError(f"--out {out_dir}: holds the results of an earlier run (summary.json); use --force to "
                               f"overwrite them, or another directory")
        if force:  # no earlier result may stay beside this run's (summary.json first: it marks a complete run)
            for name in RUN_OUTPUTS:
                (out_dir / name).unlink(missing_ok=True)
    try:
        sim = Simulation(sc, data_dir=data_dir)
    except KeyboardInterrupt:
        print("lorasim: interrupted while building the workload; nothing was written", file=sys.stderr)
        sys.exit(130)
    if not as_json:
        console.print(f"[bold]lorasim[/] {scenario if scenario else 'embedded default scenario'}: "
                      f"scheduler={sc.scheduler.name}, max_loras={sc.engine.max_loras}, "
                      f"max_cpu_loras={sc.engine.cpu_loras}, adapter_activation={sc.engine.adapter_activation}, "
                      f"seed={sc.seed}")
    res = sim.run(stop_on_interrupt=True)
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
    if res.info.get("incomplete"):
        print(f"lorasim: interrupted at t={res.info['stopped_at_s']:.3f} s of simulated time; the results are "
              f"incomplete (summary incomplete: true; requests in flight are unfinished)", file=sys.stderr)
        sys.exit(130)


@app.command()
def policies(as_json: bool = typer.Option(
        False, "--json", help='Print {"scheduler": [...], "eviction": [...], "adapter_memory": [...], "router": [...]}: '
                              'sorted names by kind, plug-ins included.')) -> None:
    """List every registered policy with its one-line rule (built-ins and plug-ins of the entry-point group
    `lorasim.policies`)."""
    from lorasim.policies import ADAPTER_MEMORIES, EVICTIONS, ROUTERS, SCHEDULERS

    kinds = {"scheduler": SCHEDULERS, "eviction": EVICTIONS, "adapter_memory": ADAPTER_MEMORIES, "router": ROUTERS}
    if as_json:
        print(json.dumps({k: r.names() for k, r in kinds.items()}))
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
    out: Path = typer.Option(..., "--out", help="Write validation.csv, summary.csv and predicted_vs_measured.png here."),
    group: Optional[str] = typer.Option(None, "--group", help="Only runs of this group."),
    model: Optional[str] = typer.Option(None, "--model", help="Only runs of this model."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="At most N runs (evenly spaced by run_dir)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Worker processes (default: one per CPU; "
                                          "results identical to serial)."),
    max_rate: Optional[float] = typer.Option(None, "--max-rate", help="Leave out runs offered more than this many "
                                             "requests/s (overloaded runs simulate millions of requests)."),
    dask: Optional[str] = typer.Option(None, "--dask", help="Replay on this Dask distributed scheduler "
                                       "(tcp://host:8786) instead of local processes."),
    force: bool = typer.Option(False, "--force", help="Overwrite the validation already in the --out directory."),
) -> None:
    """Replay real vLLM runs (per-adapter Poisson, ShareGPT) and compare predicted with measured metrics."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from lorasim.calibrate.validate import UNDERLOADED_SHARE, finish_table, prepare_runs, replay_runs, write_outputs

    runs_path, ddir, selected, skips = prepare_runs(runs, data_dir, group=group, model=model, limit=limit,
                                                    max_rate=max_rate)
    if not selected:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(skips.items())) or "the file has no runs"
        raise LorasimError(f"{runs_path}: no run to replay with these options ({why})")
    if out.is_dir() and (out / "validation.csv").exists() and not force:
        raise LorasimError(f"--out {out}: holds an earlier validation (validation.csv); use --force to overwrite it "
                           f"or choose another directory")
    prepare_out_dir(out)
    if workers is None:
        workers = os.cpu_count() or 1
    err_console = Console(stderr=True)
    done: list[dict] = []
    try:
        with Progress(TextColumn("validate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      TextColumn("{task.description}"), console=err_console) as bar:
            task = bar.add_task("", total=len(selected))

            def on_run(n: int, total: int, row: dict) -> None:
                err = row["predicted_total_tok_s"] / row["measured_total_tok_s"] - 1
                name = f"{row['model'].split('-instruct')[0]} {'/'.join(row['run_dir'].split('/')[-2:])}"
                last = f"{name} tok/s {err:+.0%} ({row['wall_s']:.1f} s)"
                bar.update(task, completed=n, description=f"last: {last}")
                if not err_console.is_terminal:  # a log file: one line per run instead of a live bar
                    err_console.print(f"[{n}/{total}] {last}", highlight=False)

            df = replay_runs(selected, runs_path, ddir, workers, dask, on_run, done)
    except KeyboardInterrupt:
        if done:
            write_outputs(finish_table(done, runs_path, ddir), out)
            print(f"lorasim: interrupted after {len(done)} of {len(selected)} runs; wrote those to "
                  f"{out}/validation.csv", file=sys.stderr)
        else:
            print("lorasim: interrupted before any run finished; nothing was written", file=sys.stderr)
        sys.exit(130)
    summ = write_outputs(df, out)
    for rec in summ.to_dict("records"):
        line = (f"{rec['model']} | {rec['group']} | {rec['load']} n={rec['n']}: total_tok_s MAPE "
                f"{rec['tok_mape_pct']:.1f}%, "
                f"ITL mean abs err {rec['itl_mape_pct']:.1f}% (bias {rec['itl_bias_pct']:+.1f}%), "
                f"TTFT mean within 30%: {rec['ttft_within_30pct']:.0%}")
        if "twin_tok_mape_pct" in rec:
            line += (f" | published twin: total_tok_s MAPE {rec['twin_tok_mape_pct']:.1f}%, "
                     f"ITL {rec['twin_itl_mape_pct']:.1f}%, TTFT within 30%: {rec['twin_ttft_within_30pct']:.0%}")
        print(line)
    skipped = sum(skips.values())
    print(f"replayed {len(df)} runs; skipped {skipped}" + (": " + ", ".join(f"{k}: {v}" for k, v in sorted(skips.items())) if skips else ""))
    print(f"underloaded: served >= {UNDERLOADED_SHARE:.0%} of the requests offered; wrote {out}/validation.csv, {out}/summary.csv, "
          f"{out}/predicted_vs_measured.png")


@app.command()
def sweep(
    scenario: Optional[Path] = typer.Argument(None, help="Scenario YAML; omitted: the embedded default scenario."),
    grid: list[str] = typer.Option(..., "--grid", help="key.path=v1,v2,... (repeatable; the sweep runs the product "
                                   "of the grids; values parsed as YAML, commas inside [] or {} kept)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Seeds per point: seed, seed+1, ... of the scenario."),
    out: Path = typer.Option(..., "--out", help="Write sweep.parquet, sweep.csv, sweep.json and points/ here; the "
                                                "same command on the same directory resumes an interrupted sweep."),
    set_: list[str] = typer.Option([], "--set", help="Override a leaf for every point (before the grid values)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Local worker processes (default: one "
                                          "per CPU)."),
    dask: Optional[str] = typer.Option(None, "--dask", help="Run on this Dask distributed scheduler "
                                       "(tcp://host:8786) instead of local processes."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory for traces and length tables."),
) -> None:
    """Run a grid of scenario variants x seeds and write one tidy table (a row per point, every summary field)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from lorasim.sweep import Sweep, parse_grid

    sw = Sweep(scenario, parse_grid(grid), seeds=seeds, overrides=set_, data_dir=data_dir)  # grid checked first
    prepare_out_dir(out)
    console.print(f"[bold]lorasim sweep[/] {len(sw.points)} points ({len(sw.points) // seeds} grid values x {seeds} "
                  f"seed(s)) -> {out}/")
    progress = [-1, len(sw.points)]

    def on_point(done: int, total: int) -> None:
        if progress[0] < 0 and done:  # the first call reports the points an earlier run already finished
            bar.console.print(f"resuming: {done} of {total} points already done in {out}/points")
        progress[:] = [done, total]
        bar.update(task, completed=done)

    try:
        with Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True)) as bar:
            task = bar.add_task("sweep", total=len(sw.points))
            table = sw.run(out, workers=workers or os.cpu_count() or 1, dask_address=dask, on_point=on_point)
    except KeyboardInterrupt:
        print(f"lorasim: interrupted; {max(progress[0], 0)} of {progress[1]} points are done and kept in {out}/points "
              f"(the same command resumes the sweep)", file=sys.stderr)
        sys.exit(130)
    console.print(f"wrote {out}/sweep.parquet and {out}/sweep.csv ({len(table)} rows)")


@app.command()
def plan(
    scenario: Optional[Path] = typer.Argument(None, help="Scenario YAML; omitted: the embedded default scenario."),
    slo: list[str] = typer.Option(..., "--slo", help="metric<=value on a summary metric, e.g. ttft_ms_p99<=2000 "
                                  "(repeatable; >=, <, > too)."),
    minimize: Optional[str] = typer.Option(None, "--minimize", help="Integer key to minimize, e.g. "
                                           "engine.max_loras (assumes more is never worse)."),
    range_: str = typer.Option("1:256", "--range", help="LOW:HIGH search range of --minimize."),
    also: list[str] = typer.Option([], "--also", help="key=expr set with each candidate x, e.g. "
                                   "'engine.max_cpu_loras=max(64, 2*x)' (repeatable)."),
    max_rate_: bool = typer.Option(False, "--max-rate", help="Find the largest factor on every arrival rate that "
                                   "still meets the SLOs (for the --minimize answer, or the scenario as given)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Seeds per trial; a trial meets the SLOs only if every "
                              "seed does."),
    set_: list[str] = typer.Option([], "--set", help="Override a leaf for every trial."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory for traces and length tables."),
    plot: Path = typer.Option(Path("lorasim-plan.png"), "--plot", help="Save the trials' plot here."),
    as_json: bool = typer.Option(False, "--json", help='Print {"answer": {key: value}, "meets_slos": ..., '
                                 '"points": [...]} instead of the sentence and table.'),
) -> None:
    """Find the smallest setting that meets every SLO (--minimize), or the highest load it sustains (--max-rate)."""
    from lorasim.metrics.summary import summarize  # noqa: F401  (import check of the metric names below)
    from lorasim.plan import Planner, max_rate, minimize as search, parse_slos

    if minimize is None and not max_rate_:
        raise LorasimError("give --minimize KEY, --max-rate, or both")
    known = _summary_keys()
    slos = parse_slos(slo, known)
    try:
        low, high = (int(v) for v in range_.split(":"))
    except ValueError:
        raise LorasimError(f"--range {range_!r}: expected LOW:HIGH integers, e.g. 1:256") from None
    if not 0 <= low <= high:
        raise LorasimError(f"--range {range_!r}: need 0 <= LOW <= HIGH")
    p = Planner(scenario, slos, seeds=seeds, overrides=set_, data_dir=data_dir)
    answer: dict = {}
    meets, extra, runner = True, [], None
    if minimize is not None:
        value, best, runner = search(p, minimize, low, high, also)
        # runner-up: the largest value tried that misses the SLOs (the answer minus one when the search ends there)
        meets = value is not None
        if meets:
            answer[minimize] = value
            extra = best.overrides
    if max_rate_ and meets:
        factor, _ = max_rate(p, extra)
        meets = factor is not None
        answer["rate_factor"] = factor
    points = [{**t.label, "meets_slos": t.meets,
               **{s.metric: max(x[s.metric] for x in t.summaries) if s.op in ("<=", "<")
                  else min(x[s.metric] for x in t.summaries) for s in slos}} for t in p.trials]
    _plan_plot(points, slos, plot)
    if as_json:
        print(json.dumps({"answer": answer, "meets_slos": meets, "points": points}, allow_nan=False, default=str))
        return
    slo_txt = " and ".join(map(str, slos))
    if minimize is not None and answer.get(minimize) is None:
        console.print(f"No {minimize} in [{low}, {high}] meets {slo_txt}.")
    elif minimize is not None:
        margins = ", ".join(f"{s.metric} {min(s.margin(x) for x in best.summaries):,.3g} inside" for s in slos)
        console.print(f"The smallest {minimize} that meets {slo_txt} is [bold]{answer[minimize]}[/] (margin: "
                      f"{margins})" + (f"; the runner-up {runner.label[minimize]} misses" if runner is not None
                                       else "") + ".")
    if max_rate_:
        f = answer.get("rate_factor")
        console.print("Even 0.05x the offered rate misses the SLOs." if f is None else
                      f"It sustains up to [bold]{f:.3g}x[/] the scenario's arrival rates within the SLOs.")
    table = Table(show_header=True, header_style="bold")
    for col in points[0]:
        table.add_column(col)
    for pt in points:
        table.add_row(*(_fmt(v) for v in pt.values()))
    console.print(table)
    console.print(f"plot: {plot}")


@app.command("plot")
def plot_cmd(
    directory: Path = typer.Argument(..., help="A `lorasim run --out` or `lorasim sweep --out` directory."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the PNGs here (default: into DIRECTORY)."),
    metric: list[str] = typer.Option([], "--metric", help="Sweep metrics to plot (default: ttft_ms_p99 and "
                                     "request_throughput_rps; repeatable)."),
) -> None:
    """Draw latency CDFs, a timeline and per-adapter waits of a run, or metrics against the grid of a sweep."""
    from lorasim.analysis.plots import plot_dir

    if not directory.is_dir():
        raise LorasimError(f"{directory}: not a directory")
    try:
        made = plot_dir(directory, out, tuple(metric) or ("ttft_ms_p99", "request_throughput_rps"))
    except (OSError, ValueError, KeyError) as exc:  # unreadable or damaged outputs, an unwritable --out
        raise LorasimError(f"{directory}: cannot plot ({type(exc).__name__}: {exc})") from None
    for p in made:
        console.print(f"wrote {p}")


def _summary_keys() -> list[str]:
    """Every summary metric name (from a tiny run of the default scenario)."""
    from lorasim import load_scenario, simulate

    s = simulate(load_scenario(None, overrides=["workload.num_requests=2"])).summary
    numeric = [k for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return numeric + ["slo_attainment", "goodput_rps", "replica_imbalance"]


def _plan_plot(points: list[dict], slos, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xkeys = list(dict.fromkeys(next(iter(d)) for d in points))  # the searched key, then rate_factor
    fig, axes = plt.subplots(len(xkeys), len(slos), figsize=(4.5 * len(slos), 3.5 * len(xkeys)), squeeze=False)
    for row, xkey in zip(axes, xkeys):
        pts = sorted((d for d in points if xkey in d), key=lambda d: d[xkey])
        for ax, s in zip(row, slos):
            ax.plot([d[xkey] for d in pts], [d[s.metric] for d in pts], "o-")
            ax.axhline(s.bound, color="red", ls="--", label=str(s))
            ax.set_xlabel(xkey)
            ax.set_ylabel(s.metric)
            ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except (OSError, ValueError) as exc:
        raise LorasimError(f"--plot {path}: cannot write the plot ({getattr(exc, 'strerror', None) or exc})") from None
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors (bad scenario, data or command line) become one line on stderr and exit status 2."""
    try:
        rc = app(args=argv, standalone_mode=False)
    except LorasimError as exc:
        print(f"lorasim: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("lorasim: interrupted", file=sys.stderr)
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
