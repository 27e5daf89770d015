"""Tiny eviction scenarios whose timelines are computed by hand: constant 10 ms steps, fixed load costs
(disk->CPU 0.1 s, CPU->GPU 0.05 s), one request at a time, each a 4-token prompt and one output token (one step)."""

from __future__ import annotations

from tests.helpers import FIXED_LINKS, run, scenario, single

STEP = {"kind": "constant", "step_time_s": 0.01}


def uses(seq: list[tuple[float, str | None]], eviction: dict, *, max_loras: int = 2, max_cpu_loras: int = 3,
         ranks=8, links=None, **engine):
    """Run one single-request stream per ``(arrival_s, adapter)`` (None: base model) over adapters a, b, c."""
    streams = [single(t, a, 4, 1, f"r{i}") for i, (t, a) in enumerate(seq)]
    sc = scenario(
        model={"profile": "llama-3.1-8b_h100-64gb", "step_time": STEP},
        adapters={"names": ["a", "b", "c"], "ranks": ranks},
        workload={"streams": streams},
        engine={"max_loras": max_loras, "max_cpu_loras": max_cpu_loras, "kv_cache_tokens": 1024,
                **(links or FIXED_LINKS), **engine},
        eviction=eviction,
    )
    return run(sc)


def evictions(res, tier: str = "gpu") -> list[tuple[float, str]]:
    """``(time_s, adapter)`` of every eviction from ``tier``, in order, times rounded to the microsecond."""
    ev = res.adapter_events
    ev = ev[(ev["kind"] == "evict") & (ev["tier"] == tier)]
    return [(round(t, 6), a) for t, a in zip(ev["time_s"], ev["adapter"])]


def loads(res, tier: str = "gpu") -> list[tuple[float, str]]:
    """``(end_time_s, adapter)`` of every load into ``tier`` (gpu: CPU->GPU copies; cpu: disk reads)."""
    ev = res.adapter_events
    ev = ev[(ev["kind"] == "load") & (ev["tier"] == tier)]
    return [(round(t, 6), a) for t, a in zip(ev["time_s"], ev["adapter"])]


def finish_times(res) -> list[float]:
    return [round(t, 6) for t in res.requests.sort_values("request_id")["finish_time_s"]]
