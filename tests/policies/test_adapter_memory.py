"""Adapter-memory layouts: flat (vLLM slots), rank-paged, unified (S-LoRA pool). KV capacity from the same budget,
tier capacity in units, and the unified pool's exact block accounting."""

from __future__ import annotations

import math

import pytest

from lorasim.engine.simulation import Simulation
from lorasim.errors import ConfigError
from lorasim.perf.profile import load_profile
from lorasim.policies import ADAPTER_MEMORIES
from tests.helpers import InvariantRecorder, run, scenario, single
from tests.policies.timeline import FREE_LINKS

PROFILE = "llama-3.1-8b_h100-64gb"


def sim(memory: dict | str, **engine) -> Simulation:
    return Simulation(scenario(adapters={"count": 8, "ranks": [8, 16]},
                               workload={"num_requests": 1},
                               engine={"max_loras": 4, "max_lora_rank": 16, "max_cpu_loras": 8, **engine},
                               adapter_memory=memory if isinstance(memory, dict) else {"name": memory}))


def test_listed_in_policies_json(capsys):
    import json

    from lorasim.cli import main

    try:
        main(["policies", "--json"])
    except SystemExit as e:
        assert e.code == 0
    assert json.loads(capsys.readouterr().out)["adapter_memory"] == ["flat", "rank-paged", "unified"]


def test_kv_capacity_follows_from_one_budget():
    p = load_profile(PROFILE)
    flat, paged, unified = sim("flat"), sim("rank-paged"), sim("unified")
    # flat and rank-paged reserve max_loras x max_lora_rank slot memory; unified reserves none
    assert flat.replica.kv.total_blocks * 16 == p.kv_cache_tokens(4, 16, True) == paged.replica.kv.total_blocks * 16
    assert unified.replica.kv.total_blocks * 16 == p.kv_cache_tokens(0, 16, True)
    slot_tokens = 4 * 16 * p.memory.lora_slot_bytes_per_rank / (p.shape.kv_bytes_per_token)
    assert unified.replica.kv.total_blocks - flat.replica.kv.total_blocks == pytest.approx(slot_tokens / 16, abs=1)


def test_units_and_capacity():
    flat, paged, unified = sim("flat").replica.store, sim("rank-paged").replica.store, sim("unified").replica.store
    assert flat.gpu_capacity == 4 and set(flat.units.values()) == {1}
    # pages of 8 ranks: rank 8 -> 1 page, rank 16 -> 2 pages; 4 x 16 / 8 = 8 pages
    assert paged.gpu_capacity == 8 and sorted(set(paged.units.values())) == [1, 2]
    # unified: ceil(adapter bytes / block bytes) KV blocks, block = 16 tokens x 128 KiB (Llama-3.1-8B, bf16)
    shape = load_profile(PROFILE).shape
    block = 16 * shape.kv_bytes_per_token
    s = sim("unified")
    for a in s.adapters:
        assert s.replica.store.units[a.name] == math.ceil(a.size_bytes / block)
    assert unified.gpu_capacity is None


def test_page_rank_must_divide_max_lora_rank():
    with pytest.raises(ConfigError, match="page_rank 3 must divide engine.max_lora_rank 16"):
        sim({"name": "rank-paged", "page_rank": 3})


def test_unified_pool_too_small_for_max_loras_is_refused():
    with pytest.raises(ConfigError, match=r"unified: 4 of the largest adapters \(one step.s worth\) take 160 KV blocks but the pool holds 100; lower engine.max_loras or raise engine.kv_cache_tokens"):
        sim("unified", kv_cache_tokens=1600)


def churn(memory: str, **engine):
    """Eight adapters (ranks 8 and 16) requested round-robin, one at a time, with free loads."""
    streams = [single(0.05 * i, f"lora-{i % 8}", 16, 2) for i in range(32)]
    sc = scenario(adapters={"count": 8, "ranks": [8, 16]}, workload={"streams": streams},
                  engine={"max_loras": 4, "max_lora_rank": 16, "max_cpu_loras": 8, **FREE_LINKS, **engine},
                  adapter_memory={"name": memory})
    return run(sc)


def gpu_loads(res) -> int:
    ev = res.adapter_events
    return int(((ev["kind"] == "load") & (ev["tier"] == "gpu")).sum())


def test_rank_paged_keeps_more_adapters_resident():
    # flat: 4 slots for 8 adapters cycled round-robin -> every request reloads (LRU): 32 loads. rank-paged: 8 pages
    # hold 4 rank-8 (1 page) + 2 rank-16 (2 pages) = 6 adapters at most, still fewer than 8 -> LRU still misses
    # on a cycle of 8; with 6 adapters in the cycle it hits after the first round.
    assert gpu_loads(churn("flat")) == 32
    assert gpu_loads(churn("rank-paged")) == 32
    six = [f"lora-{i}" for i in (0, 1, 2, 3, 4, 6)]  # ranks 8,16,8,16,8,8: 1+2+1+2+1+1 = 8 pages
    streams = [single(0.05 * i, six[i % 6], 16, 2) for i in range(30)]
    for memory, loads in (("flat", 30), ("rank-paged", 6)):
        sc = scenario(adapters={"count": 8, "ranks": [8, 16]}, workload={"streams": streams},
                      engine={"max_loras": 4, "max_lora_rank": 16, "max_cpu_loras": 8, **FREE_LINKS},
                      adapter_memory={"name": memory})
        assert gpu_loads(run(sc)) == loads, memory


def test_unified_keeps_idle_adapters_until_kv_needs_their_blocks():
    # ample pool: after the first round all 8 adapters stay resident (8 loads for 32 requests)
    assert gpu_loads(churn("unified")) == 8
    # a pool with room for requests plus ~4 adapters: idle adapters are evicted to make room
    res = churn("unified", kv_cache_tokens=(4 * 40 + 8) * 16)
    assert 8 < gpu_loads(res) <= 32
    assert res.summary["num_completed"] == 32


def test_unified_kv_accounting_is_exact_every_step():
    rec = InvariantRecorder()
    streams = [single(0.002 * i, f"lora-{i % 8}", 200, 30) for i in range(64)]
    sc = scenario(adapters={"count": 8, "ranks": [8, 16]}, workload={"streams": streams},
                  engine={"max_loras": 4, "max_lora_rank": 16, "max_cpu_loras": 8, "kv_cache_tokens": 300 * 16},
                  adapter_memory={"name": "unified"})
    res = run(sc, recorder=rec)  # InvariantRecorder: KV used == running blocks + resident adapters' blocks
    assert rec.counters["checked_steps"] == len(res.steps) > 0
    assert res.summary["num_completed"] == 64
    assert (res.steps["kv_used_blocks"] <= 300).all()


def unified_u1(**engine):
    """The fresh-user case: 4 rank-32 adapters (80 blocks each), a pool of 125 blocks."""
    return scenario(adapters={"count": 4, "ranks": 32},
                    workload={"num_requests": 20, "lengths": {"prompt": 800, "output": 100}},
                    engine={"max_loras": 1, "max_lora_rank": 32, "kv_cache_tokens": 2000, **engine},
                    adapter_memory={"name": "unified"})


def test_unified_request_that_cannot_fit_beside_its_adapter_is_aborted_with_a_reason():
    # 900 tokens = 57 blocks + the adapter's 80 > 125: never servable, reported aborted at arrival
    res = run(unified_u1())
    assert res.summary["num_aborted"] == 20 and res.summary["num_completed"] == 0
    assert res.requests["abort_reason"].str.contains("exceed the unified pool").all()
    # 620 + 100 tokens = 45 blocks + 80 = 125: fits, every request completes
    ok = run(unified_u1().model_copy(update={"workload": scenario(workload={
        "num_requests": 20, "lengths": {"prompt": 620, "output": 100}}).workload}))
    assert ok.summary["num_completed"] == 20


def test_unified_pinned_adapter_gives_its_blocks_back_when_nothing_runs():
    sc = scenario(adapters={"count": 3, "ranks": 32},
                  workload={"num_requests": 20, "lengths": {"prompt": 800, "output": 100},
                            "popularity": {"kind": "weights", "weights": {"lora-0": 0.1, "lora-1": 0.45,
                                                                          "lora-2": 0.45}}},
                  engine={"max_loras": 2, "max_cpu_loras": 3, "max_lora_rank": 32, "kv_cache_tokens": 3000},
                  eviction={"name": "lru", "pinned": ["lora-0"]}, adapter_memory={"name": "unified"})
    res = run(sc)
    assert res.summary["num_completed"] == 20


def test_per_adapter_lists_every_adapter_in_definition_order():
    res = run(scenario(adapters={"count": 12, "ranks": 8},
                       workload={"num_requests": 30, "popularity": {"kind": "weights",
                                                                    "weights": {"lora-0": 1.0, "lora-10": 1.0}}}))
    pa = res.per_adapter
    assert list(pa.index) == [f"lora-{i}" for i in range(12)]
    assert pa.loc["lora-3", "num_requests"] == 0 and pa["num_requests"].sum() == 30
