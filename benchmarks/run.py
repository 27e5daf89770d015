"""lorasim speed benchmarks (issue 6): wall time, simulated requests and engine steps per wall second, peak RSS.

Usage::

    python benchmarks/run.py [--case NAME ...] [--json] [--data-dir DIR]

Each case runs in a fresh Python process (so that its peak RSS is its own) and prints one line, or with ``--json``
one JSON object per case: ``case``, ``wall_s`` (the simulation, scenario building included), ``num_requests``,
``num_steps``, ``requests_per_s``, ``steps_per_s``, ``peak_rss_mb``, ``sim_time_s`` and ``note``. Cases:

- ``azure-conv``: the committed ``scenarios/azure-conv.yaml`` (Azure LLM inference trace 2023, conversation; needs the
  data directory).
- ``synthetic-1m``: one million synthetic requests over 1,000 adapters on one replica, ``output.records: requests``.
- ``synthetic-1m-8-replicas``: the same over 8 replicas (least-outstanding routing) at 8 times the rate.
- ``overloaded-client``: 600 req/s for an hour (about 2.1 M requests) through the benchmark client's 28,232 ports
  to one replica that serves about 15 req/s: most requests are refused at once, as in ``lorasim validate``'s heaviest
  replays.
- ``synthetic-1m-summary``, ``scale-1e5-summary``: the synthetic case with ``output.records: summary`` (no
  tables: each request folded into running totals and quantile sketches when it ends).
- ``scale-1e4``, ``scale-1e5``, ``scale-1e6``: the synthetic case at 10^4, 10^5 and 10^6 requests (per-request cost
  should stay flat).

Results are recorded in ``benchmarks/RESULTS.md`` with the machine described.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# One replica, 1,000 adapters (Zipf popularity, 10% base-model traffic), ShareGPT-like uniform lengths, Poisson
# arrivals at about two thirds of what this replica serves (mean TTFT well under a second).
SYNTHETIC = [
    "adapters.count=1000", "adapters.ranks=[8, 16]",
    "workload.arrivals={kind: poisson, rate: 5.0}",
    "workload.popularity={kind: zipf, s: 1.0, base_share: 0.1}",
    "engine.max_loras=32", "engine.max_cpu_loras=1000", "engine.max_lora_rank=16",
    "output.records=requests",
]

CASES = {
    "azure-conv": {"scenario": "scenarios/azure-conv.yaml", "overrides": [], "needs_data": True},
    "synthetic-1m": {"scenario": None, "overrides": [*SYNTHETIC, "workload.num_requests=1000000"]},
    "synthetic-1m-8-replicas": {"scenario": None, "overrides": [
        *SYNTHETIC, "workload.num_requests=1000000", "workload.arrivals={kind: poisson, rate: 40.0}",
        "cluster.replicas=8", "cluster.router.name=least-outstanding"]},
    # an overloaded benchmark replay: 600 req/s offered for 3,600 s to a replica serving ~15, through the benchmark
    # client's 28,232 ports (TIME_WAIT 60 s): about 2.1 M offered, most refused at once, as in the heaviest runs of
    # `lorasim validate`
    "overloaded-client": {"scenario": None, "overrides": [
        *SYNTHETIC, "workload.num_requests=null", "workload.arrivals={kind: poisson, rate: 600.0}",
        "workload.duration_s=3600",
        "client.max_connections=28232", "client.time_wait_s=60", "horizon_s=3600"]},
    # the synthetic-1m case with records: summary (no tables; memory bounded whatever the number of requests)
    "synthetic-1m-summary": {"scenario": None, "overrides": [
        *SYNTHETIC, "workload.num_requests=1000000", "output.records=summary"]},
    "scale-1e5-summary": {"scenario": None, "overrides": [
        *SYNTHETIC, "workload.num_requests=100000", "output.records=summary"]},
    "scale-1e4": {"scenario": None, "overrides": [*SYNTHETIC, "workload.num_requests=10000"]},
    "scale-1e5": {"scenario": None, "overrides": [*SYNTHETIC, "workload.num_requests=100000"]},
    "scale-1e6": {"scenario": None, "overrides": [*SYNTHETIC, "workload.num_requests=1000000"]},
}


def run_case(name: str, data_dir: str | None) -> dict:
    """Run one case in this process and return its measurements."""
    import lorasim
    from lorasim.engine.simulation import Simulation

    spec = CASES[name]
    path = REPO / spec["scenario"] if spec.get("scenario") else None
    t0 = time.perf_counter()
    sc = lorasim.load_scenario(path, overrides=spec["overrides"])
    res = Simulation(sc, data_dir=data_dir).run()
    s = res.summary
    wall = time.perf_counter() - t0
    return {"case": name, "wall_s": round(wall, 3), "num_requests": int(s["num_requests"]),
            "num_steps": int(s["num_steps"]), "requests_per_s": round(s["num_requests"] / wall, 1),
            "steps_per_s": round(s["num_steps"] / wall, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "sim_time_s": round(float(s.get("duration_s", float("nan"))), 1), "note": ""}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="run only this case (repeatable)")
    ap.add_argument("--json", action="store_true", help="one JSON object per case")
    ap.add_argument("--data-dir", default=None, help="data directory (default: LORASIM_DATA_DIR or ../shared/data)")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        print(json.dumps(run_case(args._child, args.data_dir)))
        return 0
    from lorasim.paths import resolve_data_dir

    data_dir = resolve_data_dir(args.data_dir)
    for name in args.case or list(CASES):
        spec = CASES[name]
        if "skip" in spec or (spec.get("needs_data") and not Path(data_dir).is_dir()):
            why = spec.get("skip") or f"no data directory at {data_dir}"
            out = {"case": name, "wall_s": None, "num_requests": None, "num_steps": None, "peak_rss_mb": None,
                   "note": f"skipped: {why}"}
        else:
            cmd = [sys.executable, __file__, "--_child", name, "--data-dir", str(data_dir)]
            p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
            if p.returncode != 0:
                out = {"case": name, "wall_s": None, "num_requests": None, "num_steps": None, "peak_rss_mb": None,
                       "note": "failed: " + (p.stderr.strip().splitlines() or ["?"])[-1]}
            else:
                out = json.loads(p.stdout.strip().splitlines()[-1])
        if args.json:
            print(json.dumps(out), flush=True)
        elif out["wall_s"] is None:
            print(f"{name:26s} {out['note']}", flush=True)
        else:
            print(f"{name:26s} {out['wall_s']:8.1f} s  {out['num_requests']:>9,} req  {out['num_steps']:>10,} steps  "
                  f"{out['requests_per_s']:>9,.0f} req/s  {out['steps_per_s']:>9,.0f} steps/s  "
                  f"{out['peak_rss_mb']:>7,.0f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
