"""Capacity planning: the smallest setting that meets every SLO, and the highest rate a setting sustains.

``lorasim plan SCENARIO --slo ttft_ms_p99<=2000 --minimize engine.max_loras`` searches the integer values of one
key for the smallest that meets every SLO on every seed, assuming more is never worse (monotone: binary search over
``[low, high]``). ``--max-rate`` instead scales every arrival rate of the workload (synthetic rates; traces'
``rate_scale``) and searches the largest factor at which the SLOs hold (the goodput knee), for the scenario as given
or for the ``--minimize`` answer.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lorasim.config.loader import load_scenario
from lorasim.errors import ConfigError

_SLO = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


@dataclass(frozen=True)
class Slo:
    """``metric op bound`` on a summary metric (``ttft_ms_p99<=2000``)."""

    metric: str
    op: str
    bound: float

    def met(self, summary: dict) -> bool:
        v = summary.get(self.metric)
        return v is not None and not (isinstance(v, float) and math.isnan(v)) and _OPS[self.op](v, self.bound)

    def margin(self, summary: dict) -> float:
        """How far inside the SLO the value is (positive: met), in the metric's unit."""
        v = summary.get(self.metric, math.nan)
        return (self.bound - v) if self.op in ("<=", "<") else (v - self.bound)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


def parse_slos(items: Sequence[str], known: Sequence[str]) -> list[Slo]:
    """Parse ``--slo`` strings.

    Raises:
        ConfigError: malformed, or the metric is not a summary metric (the message lists a few).
    """
    out = []
    for item in items:
        m = _SLO.match(item)
        if not m:
            raise ConfigError(f"--slo {item!r}: expected metric<=value (or >=, <, >), e.g. ttft_ms_p99<=2000")
        metric, op, bound = m.group(1), m.group(2), float(m.group(3))
        if metric not in known:
            close = [k for k in known if k.split("_")[0] == metric.split("_")[0]][:6]
            raise ConfigError(f"--slo {item!r}: {metric!r} is not a summary metric"
                              + (f" (did you mean one of {', '.join(close)}?)" if close else ""))
        out.append(Slo(metric, op, bound))
    if not out:
        raise ConfigError("give at least one --slo")
    return out


def eval_also(expr: str, x: int) -> int | float | str:
    """Evaluate an ``--also`` value: a literal, or arithmetic in ``x`` (the candidate) with ``min``/``max``."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        return expr
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Call, ast.Load, ast.Add, ast.Sub,
               ast.Mult, ast.FloorDiv, ast.Div, ast.USub)
    if not all(isinstance(n, allowed) for n in ast.walk(tree)):
        raise ConfigError(f"--also {expr!r}: only numbers, x, + - * / //, min() and max() are allowed")
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and n.id not in ("x", "min", "max"):
            raise ConfigError(f"--also {expr!r}: unknown name {n.id!r} (the candidate value is x)")
    try:
        v = eval(compile(tree, "<also>", "eval"), {"__builtins__": {}}, {"x": x, "min": min, "max": max})
    except (ArithmeticError, TypeError, ValueError) as exc:
        raise ConfigError(f"--also {expr!r} at x={x}: {exc}") from None
    return int(v) if isinstance(v, float) and v.is_integer() else v


def scale_rates(data: dict, factor: float) -> dict:
    """Multiply every arrival rate of a scenario dict's workload by ``factor`` (in place; returns it).

    Raises:
        ConfigError: a stream whose arrivals have no rate to scale (``burst``, ``single``).
    """
    wl = data.setdefault("workload", {})
    streams = wl.get("streams") if isinstance(wl, dict) and "streams" in wl else None
    if streams is None:
        streams = [wl]
    for i, st in enumerate(streams):
        if st.get("kind") == "trace":
            st["rate_scale"] = st.get("rate_scale", 1.0) * factor
            continue
        arr = st.setdefault("arrivals", {"kind": "poisson", "rate": 1.0})
        kind = arr.get("kind", "poisson")
        if kind in ("poisson", "gamma", "constant"):
            arr["rate"] = arr.get("rate", 1.0) * factor
        elif kind == "per_adapter_poisson":
            if arr.get("rates") is not None:
                arr["rates"] = [r * factor for r in arr["rates"]]
            if arr.get("rate_by_adapter") is not None:
                arr["rate_by_adapter"] = {k: r * factor for k, r in arr["rate_by_adapter"].items()}
        else:
            raise ConfigError(f"--max-rate: workload stream {i} has {kind!r} arrivals, which have no rate to scale")
    return data


@dataclass
class Trial:
    """One evaluated setting: the overrides, per-seed summaries, and whether every SLO held on every seed."""

    overrides: list[str]
    summaries: list[dict]
    meets: bool
    label: dict = field(default_factory=dict)


class Planner:
    """Runs trials of one scenario for :func:`minimize` and :func:`max_rate`.

    Args:
        scenario: scenario file (None: the embedded default).
        slos: the SLOs.
        seeds: seeds per trial (``seed``, ``seed+1``, ...); a trial meets the SLOs only if every seed does.
        overrides: ``--set`` overrides for every trial.
        data_dir: data directory.
        simulate: ``(scenario) -> summary`` (tests may stub it); default: lorasim's.
    """

    def __init__(self, scenario: str | Path | None, slos: list[Slo], seeds: int = 1, overrides: Sequence[str] = (),
                 data_dir: str | Path | None = None, simulate: Callable | None = None):
        self.scenario, self.slos, self.seeds = scenario, slos, seeds
        self.overrides, self.data_dir = list(overrides), data_dir
        self.base = load_scenario(scenario, overrides=self.overrides)
        self._simulate = simulate
        self.trials: list[Trial] = []

    def _summary(self, sc) -> dict:
        if self._simulate is not None:
            return self._simulate(sc)
        import lorasim

        from lorasim.sweep import lean_records

        return lorasim.simulate(lean_records(sc), data_dir=self.data_dir).summary

    def trial(self, extra: list[str], rate_factor: float = 1.0, label: dict | None = None) -> Trial:
        summaries = []
        for k in range(self.seeds):
            ov = [*self.overrides, *extra, f"seed={self.base.seed + k}"]
            if rate_factor != 1.0:
                data = load_scenario(self.scenario, overrides=ov).model_dump(mode="python", exclude_unset=False)
                sc = load_scenario(scale_rates(data, rate_factor))
            else:
                sc = load_scenario(self.scenario, overrides=ov)
            summaries.append(self._summary(sc))
        t = Trial(extra, summaries, all(s.met(x) for s in self.slos for x in summaries), label or {})
        self.trials.append(t)
        return t


def minimize(p: Planner, key: str, low: int, high: int, also: Sequence[str] = ()) -> tuple[int | None, Trial | None,
                                                                                           Trial | None]:
    """Smallest integer ``key`` in ``[low, high]`` meeting the SLOs (binary search, monotone assumption).

    Returns:
        ``(answer or None, its trial, the runner-up trial: the largest value tried that fails, or None)``.
    """
    def run(x: int) -> Trial:
        extra = [f"{key}={x}"] + [f"{k}={eval_also(v, x)}" for k, v in (a.split("=", 1) for a in also)]
        return p.trial(extra, label={key: x})

    top = run(high)
    if not top.meets:
        return None, None, top
    lo, hi, best, fail = low, high, top, None
    while lo < hi:
        mid = (lo + hi) // 2
        t = run(mid)
        if t.meets:
            hi, best = mid, t
        else:
            lo, fail = mid + 1, t
    return hi, best, fail


def max_rate(p: Planner, extra: list[str], low: float = 0.05, high: float = 64.0, rel_tol: float = 0.02
             ) -> tuple[float | None, Trial | None]:
    """Largest factor on every arrival rate at which the SLOs hold (bisection on a log scale, to ``rel_tol``).

    Returns:
        ``(factor or None when even ``low`` fails, its trial)``.
    """
    t_low = p.trial(extra, low, label={"rate_factor": low})
    if not t_low.meets:
        return None, None
    t_high = p.trial(extra, high, label={"rate_factor": high})
    if t_high.meets:
        return high, t_high
    lo, hi, best = low, high, t_low
    while hi / lo > 1 + rel_tol:
        mid = math.sqrt(lo * hi)
        t = p.trial(extra, mid, label={"rate_factor": mid})
        if t.meets:
            lo, best = mid, t
        else:
            hi = mid
    return lo, best
