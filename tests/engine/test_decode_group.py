"""The engine's fast paths must decide exactly what the plain vLLM loops decide: runs with a fast path disabled give
identical request and step tables. Fast paths: the DecodeGroup (steady decoders in bulk) and the waiting queue
indexed by adapter (a full step visits only eligible requests)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import lorasim
from lorasim.engine.replica import Replica
from lorasim.engine.simulation import Simulation
from lorasim.policies.base import PlanBuilder

CONFIGS = [
    ["workload.num_requests=400"],  # the default scenario, adapter-bound
    ["workload.num_requests=300", "engine.kv_cache_tokens=6000", "engine.max_num_batched_tokens=256"],  # preemption
    ["workload.num_requests=300", "workload.arrivals.rate=40", "workload.popularity.base_share=1.0",
     "engine.max_num_seqs=64", "engine.max_num_batched_tokens=32"],  # token budget binds: chunks after decodes
    ["workload.num_requests=300", "engine.adapter_load=overlapped", "scheduler.name=score"],
    ["workload.num_requests=300", "engine.max_loras=2", "engine.kv_cache_tokens=8000"],  # full steps + preemption
]


def _no_index_view(original):
    def view(self):
        v = original(self)
        v.waiting_by_adapter = None
        return v
    return view


@pytest.mark.parametrize("fast_path", ["decode_group", "waiting_index"])
@pytest.mark.parametrize("overrides", CONFIGS)
def test_fast_path_matches_per_sequence_loop(monkeypatch, overrides, fast_path):
    sc = lorasim.load_scenario(None, overrides=overrides)
    fast = lorasim.simulate(sc)
    if fast_path == "decode_group":
        # per-sequence plans only: the steady-step fast path, which relies on the scheduler's bulk decode, goes too
        monkeypatch.setattr(PlanBuilder, "_schedule_decodes_in_bulk", lambda self: False)
        slow = Simulation(sc, fast_forward=False).run()
    else:
        monkeypatch.setattr(Replica, "_view", _no_index_view(Replica._view))
        slow = lorasim.simulate(sc)
    pd.testing.assert_frame_equal(fast.requests, slow.requests)
    pd.testing.assert_frame_equal(fast.steps, slow.steps)
    assert json.dumps(fast.summary, sort_keys=True) == json.dumps(slow.summary, sort_keys=True)


def test_configs_exercise_the_fallbacks():
    preempting = lorasim.simulate(lorasim.load_scenario(None, overrides=CONFIGS[1]))
    assert preempting.summary["num_preemptions"] > 0
    crowded = lorasim.simulate(lorasim.load_scenario(None, overrides=CONFIGS[2]))
    full = crowded.steps["num_prefill_tokens"] + crowded.steps["num_decode_seqs"] == 32
    assert full.mean() > 0.5  # most steps use the whole 32-token budget: decodes first, then a prefill chunk


@pytest.mark.parametrize("overrides", [CONFIGS[1], CONFIGS[4]])
def test_bulk_decode_preempts_without_dissolving(monkeypatch, overrides):
    """The KV-shortage configs take the bulk path with victims (so the equivalence above covers it)."""
    seen = {"bulk_with_victims": 0}
    original = PlanBuilder._schedule_decodes_in_bulk

    def spy(self):
        ok = original(self)
        if ok and self.plan.preempted:
            seen["bulk_with_victims"] += 1
        return ok

    monkeypatch.setattr(PlanBuilder, "_schedule_decodes_in_bulk", spy)
    lorasim.simulate(lorasim.load_scenario(None, overrides=overrides))
    assert seen["bulk_with_victims"] > 0
