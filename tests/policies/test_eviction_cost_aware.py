"""Cost-aware eviction: hand-computed timelines with adapters of different reload cost.

Adapter a has rank 64, b and c rank 8. The Llama-3.1-8B adapter size is rank x 81,920 (sum of d_in + d_out over the
7 target modules) x 32 layers x 2 bytes: 41,943,040 bytes at rank 8, 8x that at rank 64. The CPU->GPU link has no
overhead and moves 41,943,040 / 0.05 bytes per second, so copying b or c takes 0.05 s and a 0.4 s; disk reads cost
0.1 s each. Steps take 0.01 s; every request is one step.
"""

from __future__ import annotations

import math

import pytest

from lorasim.engine.simulation import Simulation
from lorasim.policies import EVICTIONS
from lorasim.policies.base import EvictionPolicy
from lorasim.policies.eviction.lru import LruEviction
from tests.helpers import INF, scenario
from tests.policies.eviction_scenarios import STEP, evictions, finish_times, loads, uses

RANK8_BYTES = 8 * 81_920 * 32 * 2
LINKS = {"disk_to_cpu": {"overhead_s": 0.1, "bandwidth_bytes_per_s": INF},
         "cpu_to_gpu": {"overhead_s": 0.0, "bandwidth_bytes_per_s": RANK8_BYTES / 0.05}}
SEQ = [(0.0, "a"), (1.0, "b"), (2.0, "b"), (3.0, "c"), (4.0, "a")]


def run_seq(eviction: dict, seq=SEQ):
    return uses(seq, eviction, ranks=[64, 8, 8], links=LINKS, max_lora_rank=64)


def test_sizes_and_copy_times_are_the_hand_values():
    res = run_seq({"name": "lru"})
    ev = res.adapter_events
    ev = ev[ev["kind"] == "load"]
    sizes = dict(zip(ev["adapter"], ev["size_bytes"]))
    assert sizes == {"a": 8 * RANK8_BYTES, "b": RANK8_BYTES, "c": RANK8_BYTES}
    # a: disk 0-0.1, copy 0.1-0.5; b: disk 1.0-1.1, copy -1.15
    assert loads(res)[:2] == [(0.5, "a"), (1.15, "b")]


def test_keeps_the_expensive_adapter():
    # t=3, slots {a, b}, default half-life 60 s; decayed uses times reload time:
    #   a: 2^-(2.5/60) x 0.4 s                      = 0.972 x 0.4  = 0.389
    #   b: (2^-(1.85/60) + 2^-(1/60)) x 0.05 s      = 1.968 x 0.05 = 0.098   -> b goes, c loads by 3.15
    # t=4: a is resident (finishes 4.01).
    res = run_seq({"name": "cost-aware"})
    assert evictions(res) == [(3.0, "b")]
    assert finish_times(res) == [0.51, 1.16, 2.01, 3.16, 4.01]
    assert res.summary["gpu_adapter_loads"] == 3


@pytest.mark.parametrize("name,second", [("lru", "b"), ("lfu", "c")])
def test_recency_and_frequency_evict_the_expensive_adapter(name, second):
    # LRU (a used at 0.5 < 2.0) and LFU (1 use < 2) both drop a at t=3 and copy it back at t=4 for 0.4 s, evicting
    # b (LRU: used at 2.0 < 3.15) or c (LFU: 1 use < b's 2).
    res = run_seq({"name": name})
    assert evictions(res) == [(3.0, "a"), (4.0, second)]
    assert finish_times(res)[-1] == 4.41


@pytest.mark.parametrize("half_life_s,victim", [(60.0, "b"), (1.0, "b"), (0.5, "a")])
def test_half_life_sets_how_fast_rate_forgets(half_life_s, victim):
    # at t=3:  half-life 1 s:   a 2^-2.5 x 0.4 = 0.071 > b (2^-1.85 + 2^-1) x 0.05 = 0.039      -> b goes
    #          half-life 0.5 s: a 2^-5 x 0.4 = 0.0125 < b (2^-3.7 + 2^-2) x 0.05 = 0.0164       -> a goes
    res = run_seq({"name": "cost-aware", "half_life_s": half_life_s})
    assert evictions(res)[0] == (3.0, victim)


def test_policy_alone_remembers_rates_across_evictions():
    p = EVICTIONS.get("cost-aware")()
    for a, cost in (("a", 1.0), ("b", 1.0)):
        p.on_cost(a, cost)
        p.on_insert(a, 0.0)
    p.on_use_many(["a", "a", "a", "b"], 0.0)
    p.on_remove("a")
    p.on_cost("a", 1.0)
    p.on_insert("a", 1.0)  # back with its history: 3 uses beat b's 1
    assert p.victim({"a", "b"}) == "b"
    p.on_cost("b", 4.0)  # ... unless b costs more than 3x as much to reload
    p.on_remove("b")
    p.on_insert("b", 1.0)
    assert p.victim({"a", "b"}) == "a"
    p.on_cost("c", 0.0)  # free to reload: first to go
    p.on_insert("c", 1.0)
    p.on_use("c", 1.0)
    assert p.victim({"a", "b", "c"}) == "c"


# ---- the on_cost hook: what the store reports, and policies that ignore it ------------------------------------------

class CostSpy(LruEviction):
    """LRU that records the reload times the store reports."""

    def __init__(self, params=None):
        super().__init__(params)
        self.costs: dict[str, list[float]] = {}  # adapter -> reported reload seconds, one per insertion

    def on_cost(self, adapter: str, reload_s: float) -> None:
        self.costs.setdefault(adapter, []).append(reload_s)


class MinimalFifo(EvictionPolicy):
    """A user policy written against the original ABC (no on_cost, no on_use_many)."""

    rule = "test"

    def __init__(self, params=None):
        super().__init__(params)
        self.order: list[str] = []

    def on_insert(self, adapter, now_s):
        self.order.append(adapter)

    def on_use(self, adapter, now_s):
        pass

    def on_remove(self, adapter):
        self.order.remove(adapter)

    def victim(self, candidates):
        return next(a for a in self.order if a in candidates)


def _sim(eviction_name: str) -> Simulation:
    sc = scenario(
        model={"profile": "llama-3.1-8b_h100-64gb", "step_time": STEP},
        adapters={"names": ["a", "b", "c"], "ranks": [64, 8, 8]},
        workload={"streams": [{"arrivals": {"kind": "single", "at_s": t}, "lengths": {"prompt": 4, "output": 1},
                               "adapters": [a], "name": f"r{i}"} for i, (t, a) in enumerate(SEQ)]},
        engine={"max_loras": 2, "max_cpu_loras": 3, "kv_cache_tokens": 1024, "max_lora_rank": 64, **LINKS},
        eviction={"name": eviction_name},
    )
    return Simulation(sc, check_invariants=True)


def test_store_reports_each_tiers_reload_time_on_insert():
    sim = _sim(f"{__name__}:CostSpy")
    sim.run()
    store = sim.replica.store
    # GPU slots: the CPU->GPU copy; a is inserted twice (t=0 and, LRU having evicted it at t=3, again at t=4)
    assert store.gpu_policy.costs == {"a": [pytest.approx(0.4)] * 2, "b": [pytest.approx(0.05)],
                                      "c": [pytest.approx(0.05)]}
    assert store.cpu_policy.costs == {"a": [0.1], "b": [0.1], "c": [0.1]}  # the disk read


def test_policy_without_on_cost_still_works():
    res = _sim(f"{__name__}:MinimalFifo").run()
    # FIFO: a goes at t=3 (loaded first), and is copied back at t=4 evicting b (0.4 s)
    assert evictions(res) == [(3.0, "a"), (4.0, "b")]
    assert math.isclose(res.requests["finish_time_s"].iloc[-1], 4.41)
