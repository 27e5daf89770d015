"""Parameter sweeps: a grid of scenario overrides x seeds, run in parallel, resumable, one tidy table.

``lorasim sweep SCENARIO --grid engine.max_loras=8,16,32 --grid scheduler.name=vllm,fcfs-break --seeds 3 --out DIR``
runs every combination (the product of the grid keys, in the order given) with seeds ``seed, seed+1, ...`` of the
scenario's root seed. Each finished point is written at once to ``DIR/points/`` (atomically), so an interrupted
sweep loses nothing and the same command resumes it; at the end ``DIR/sweep.parquet`` and ``DIR/sweep.csv`` hold one
row per point (grid columns named by key path, ``seed``, then every summary field), in grid order whatever the
order of completion. Points run in local processes (``workers``) or on a Dask distributed cluster (``dask``); each
point is an independent simulation seeded by name, so the table is identical either way.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lorasim.config.loader import _parse_value, load_scenario
from lorasim.errors import ConfigError
from lorasim.metrics.results import _atomic_write
from lorasim.parallel import run_tasks

MANIFEST = "sweep.json"


@dataclass(frozen=True)
class Point:
    """One simulation of the sweep: grid values (in grid-key order) and a seed."""

    values: tuple
    seed: int

    def overrides(self, keys: Sequence[str]) -> list[str]:
        return [f"{k}={json.dumps(v)}" for k, v in zip(keys, self.values)] + [f"seed={self.seed}"]

    def file_name(self, keys: Sequence[str]) -> str:
        ident = json.dumps({"grid": dict(zip(keys, self.values)), "seed": self.seed}, sort_keys=True)
        return hashlib.sha256(ident.encode()).hexdigest()[:20] + ".json"


def split_values(raw: str) -> list[str]:
    """Split ``v1,v2,...`` at top-level commas (commas inside ``[]``, ``{}`` or quotes belong to a value)."""
    out, depth, quote, cur = [], 0, "", []
    for ch in raw:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """``["key.path=v1,v2", ...]`` -> ``{key.path: [v1, v2], ...}`` (values parsed as YAML), in the order given.

    Raises:
        ConfigError: an item without ``=``, an empty value, a key or a value given twice, or the key ``seed`` (use
            ``--seeds``).
    """
    grid: dict[str, list] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"--grid {item!r}: expected key.path=v1,v2,...")
        if key == "seed":
            raise ConfigError("--grid seed=...: seeds are set with --seeds K (seed, seed+1, ... of the scenario)")
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice")
        parts = split_values(raw)
        if any(p == "" for p in parts):
            raise ConfigError(f"--grid {item!r}: an empty value")
        values = [_parse_value(p) for p in parts]
        dup = next((p for i, (p, v) in enumerate(zip(parts, values)) if v in values[:i]), None)
        if dup is not None:
            raise ConfigError(f"--grid {key}: value {dup!r} given twice (each point would run twice)")
        grid[key] = values
    return grid


class Sweep:
    """A grid over one scenario.

    Args:
        scenario: scenario file (None: the embedded default).
        grid: key path -> values (see :func:`parse_grid`).
        seeds: seeds per point (``seed``, ``seed + 1``, ... of the scenario's root seed).
        overrides: ``--set`` overrides applied to every point before its grid values.
        data_dir: data directory for traces and lengths.

    Raises:
        ConfigError: a grid value (or override) makes an invalid scenario; the message names the point.
    """

    def __init__(self, scenario: str | Path | None, grid: dict[str, list], seeds: int = 1,
                 overrides: Sequence[str] = (), data_dir: str | Path | None = None):
        if seeds < 1:
            raise ConfigError(f"--seeds {seeds}: at least 1")
        self.scenario = None if scenario is None else str(scenario)
        self.grid = grid
        self.keys = list(grid)
        self.overrides = list(overrides)
        self.data_dir = None if data_dir is None else str(data_dir)
        base = load_scenario(scenario, overrides=self.overrides)
        self._base_json = base.model_dump_json()
        self.points = [Point(tuple(vals), base.seed + k)
                       for vals in itertools.product(*grid.values()) for k in range(seeds)]
        self.seeds = seeds
        for p in self.points[::seeds]:  # validate every grid combination before anything runs
            try:
                load_scenario(scenario, overrides=[*self.overrides, *p.overrides(self.keys)])
            except ConfigError as exc:
                where = ", ".join(f"{k}={v!r}" for k, v in zip(self.keys, p.values))
                raise ConfigError(f"grid point {where}: {exc}") from None

    def manifest(self) -> dict:
        # the scenario's content, not just its path: an edited file is a different sweep
        digest = hashlib.sha256(self._base_json.encode()).hexdigest()
        return {"scenario": self.scenario, "scenario_sha256": digest, "grid": self.grid, "seeds": self.seeds,
                "set": self.overrides}

    def run(self, out_dir: str | Path, workers: int = 1, dask_address: str | None = None,
            on_point: Callable[[int, int], None] | None = None) -> pd.DataFrame:
        """Run the points not finished yet in ``out_dir`` and write the table.

        Args:
            out_dir: output directory (created; a directory holding another sweep is refused).
            workers: local worker processes (1: in this process).
            dask_address: a Dask distributed scheduler address (``tcp://host:8786``) or a ``distributed.Client``;
                replaces ``workers``.
            on_point: called after each finished point with ``(done, total)`` (progress bars).

        Returns:
            The table (also written to ``sweep.parquet`` and ``sweep.csv``).

        Raises:
            ConfigError: ``out_dir`` holds a different sweep.
        """
        out = Path(out_dir)
        points_dir = out / "points"
        points_dir.mkdir(parents=True, exist_ok=True)
        mpath = out / MANIFEST
        manifest = self.manifest()
        if mpath.exists():
            try:
                old = json.loads(mpath.read_text())
            except ValueError:
                raise ConfigError(f"{mpath}: damaged (not JSON); use another --out") from None
            if old != json.loads(json.dumps(manifest)):
                raise ConfigError(f"{out}: holds a different sweep ({MANIFEST} differs); use another --out")
        else:
            _atomic_text(mpath, json.dumps(manifest, indent=2))
        todo = [p for p in self.points if not (points_dir / p.file_name(self.keys)).exists()]
        total, done = len(self.points), len(self.points) - len(todo)
        if on_point is not None:
            on_point(done, total)
        args = [(self.scenario, [*self.overrides, *p.overrides(self.keys)], self.data_dir) for p in todo]
        for p, summary in _execute(todo, args, workers, dask_address):
            row = {**dict(zip(self.keys, p.values)), "seed": p.seed, **summary}
            _atomic_text(points_dir / p.file_name(self.keys), json.dumps(row, allow_nan=True))
            done += 1
            if on_point is not None:
                on_point(done, total)
        table = self.table(out)
        _atomic_write(out / "sweep.parquet", lambda t: table.to_parquet(t, index=False))
        _atomic_write(out / "sweep.csv", lambda t: table.to_csv(t, index=False))
        return table

    def table(self, out_dir: str | Path) -> pd.DataFrame:
        """The finished points of ``out_dir`` in grid order (one row each)."""
        points_dir = Path(out_dir) / "points"
        rows = []
        for p in self.points:
            f = points_dir / p.file_name(self.keys)
            if f.exists():
                try:
                    rows.append(json.loads(f.read_text()))
                except ValueError:
                    raise ConfigError(f"{f}: a damaged point file; delete it and rerun to recompute it") from None
        table = pd.DataFrame(rows)
        for k in self.keys:  # a list-valued grid value stays one cell
            if k in table and table[k].map(lambda v: isinstance(v, (list, dict))).any():
                table[k] = table[k].map(json.dumps)
        return table


def lean_records(sc):
    """The scenario with ``output.records: requests`` where it keeps ``full`` (the summary is the same without the
    per-step table); ``requests`` and ``summary`` are left as they are."""
    if sc.output.records != "full":
        return sc
    return sc.model_copy(update={"output": sc.output.model_copy(update={"records": "requests"})})


def run_point(scenario: str | None, overrides: list[str], data_dir: str | None) -> dict:
    """Simulate one point and return its summary (top level: picklable for worker processes and Dask). Only the
    summary is kept, so the point keeps no per-step table (``output.records: full`` becomes ``requests``: same
    summary; ``summary`` is kept)."""
    import lorasim

    sc = lean_records(lorasim.load_scenario(scenario, overrides=overrides))
    res = lorasim.simulate(sc, data_dir=data_dir)
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in res.summary.items()}


def _execute(points: list[Point], args: list[tuple], workers: int, dask_address) -> Iterable[tuple[Point, dict]]:
    """Yield ``(point, summary)`` as points finish (any order)."""
    for i, summary in run_tasks(run_point, args, workers, dask_address):
        yield points[i], summary


def _atomic_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda t: Path(t).write_text(text + "\n"))
