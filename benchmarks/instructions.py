"""Deterministic speed comparison: CPU instructions per simulated request, counted by valgrind.

Usage::

    python benchmarks/instructions.py [--case synthetic|replay] [--sizes N1 N2] [--repo DIR ...]

Wall time on a shared 2-core machine varies by 10-30% from run to run, which hides a 5% change. The number of
instructions a run executes does not: this script runs a case at two sizes under ``valgrind --tool=cachegrind
--cache-sim=no`` and prints ``(I(N2) - I(N1)) / (requests(N2) - requests(N1))``, the instructions one more request
costs, with imports and set-up cancelled out. The runs fix ``PYTHONHASHSEED`` and give OpenBLAS (and Arrow) one
thread, so the same code gives the same count to within about 0.05%. The count also moves by about 0.5% with the
length of the tree's path (allocation addresses shift): compare trees at paths of the same length. Cases:

- ``synthetic``: ``benchmarks/run.py``'s synthetic case (one replica, 1,000 adapters, 5 req/s) with N requests
  (default sizes 2,000 and 6,000).
- ``replay``: a ``lorasim validate`` replay of one ``ml_modelling/test_dataset`` run of ``real_runs.csv`` (the
  101st by ``run_dir``, 29.2 req/s offered over 192 adapters, about 27 req/s served) cut to a window of N seconds
  (default 100 and 300); needs the data directory (``--data-dir``, else ``LORASIM_DATA_DIR`` or ``../shared/data``).

``--repo`` names source trees to compare (each imported through ``PYTHONPATH``; default: this one), for example a
``git worktree`` of an older commit. Each measurement takes about a minute (valgrind slows Python about 50-fold).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = {
    "synthetic": """
import sys
sys.path.insert(0, {bench!r})
import lorasim
from lorasim.engine.simulation import Simulation
from run import SYNTHETIC
sc = lorasim.load_scenario(None, overrides=[*SYNTHETIC, "workload.num_requests=" + sys.argv[1]])
print("requests", Simulation(sc).run().summary["num_requests"])
""",
    "replay": """
import sys
from pathlib import Path
import pandas as pd
import lorasim
from lorasim.calibrate.validate import build_scenario
data = Path(sys.argv[2])
df = pd.read_csv(data / "vllm-lora-runs" / "real_runs.csv")
df = df[(df.group == "ml_modelling/test_dataset") & (df.status == "ok")].sort_values("run_dir")
row = df.iloc[100].to_dict()
row["total_time_arg_s"] = float(sys.argv[1])
res = lorasim.simulate(lorasim.load_scenario(build_scenario(row)), data_dir=data)
print("requests", res.summary["num_requests"])
""",
}


def count(repo: Path, case: str, size: int, data_dir: Path) -> tuple[int, int]:
    """(instructions, simulated requests) of one run of ``case`` at ``size`` with the sources of ``repo``."""
    code = CHILD[case].format(bench=str(REPO / "benchmarks"))
    # one thread for OpenBLAS (started by `import numpy`; OMP_NUM_THREADS also caps Arrow's CPU pool): its idle worker
    # spins for a varying number of instructions, which moved the replay count by up to 7% between two runs
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    p = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                        sys.executable, "-c", code, str(size), str(data_dir)], cwd=repo, env=env, capture_output=True, text=True)
    refs = re.search(r"I\s+refs:\s+([\d,]+)", p.stderr)
    reqs = re.search(r"^requests (\d+)", p.stdout, re.M)
    if p.returncode != 0 or refs is None or reqs is None:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        raise SystemExit(f"instructions.py: the {case} run at {size} failed in {repo}: {tail}")
    return int(refs.group(1).replace(",", "")), int(reqs.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=sorted(CHILD), default="synthetic")
    ap.add_argument("--sizes", type=int, nargs=2, metavar=("N1", "N2"), default=None,
                    help="requests (synthetic) or window seconds (replay) of the two runs")
    ap.add_argument("--repo", action="append", type=Path, help="source tree to measure (repeatable; default: this one)")
    ap.add_argument("--data-dir", default=None, help="data directory (default: LORASIM_DATA_DIR or ../shared/data)")
    args = ap.parse_args(argv)
    from lorasim.paths import resolve_data_dir

    data_dir = resolve_data_dir(args.data_dir).resolve()
    if args.case == "replay" and not (data_dir / "vllm-lora-runs" / "real_runs.csv").is_file():
        print(f"instructions.py: the replay case needs the data directory ({data_dir} has no "
              f"vllm-lora-runs/real_runs.csv)", file=sys.stderr)
        return 2
    if shutil.which("valgrind") is None:
        print("instructions.py: valgrind is not installed (apt install valgrind)", file=sys.stderr)
        return 2
    n1, n2 = args.sizes or ((2000, 6000) if args.case == "synthetic" else (100, 300))
    for repo in args.repo or [REPO]:
        (i1, r1), (i2, r2) = (count(repo.resolve(), args.case, n, data_dir) for n in (n1, n2))
        print(f"{str(repo):40s} {args.case}: {(i2 - i1) / (r2 - r1):,.0f} instructions per request "
              f"({r1:,} and {r2:,} requests)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
