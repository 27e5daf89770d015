"""``eviction.pinned``: adapters no eviction policy may choose, validated at build time (hand-computed timelines, see
eviction_scenarios: a first use costs 0.15 s of loads, a copy back from the CPU cache 0.05 s, a step 0.01 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

import lorasim
from lorasim.engine.adapters import READY
from lorasim.engine.simulation import Simulation
from lorasim.errors import ConfigError
from lorasim.policies import EVICTIONS
from tests.helpers import scenario
from tests.policies.eviction_scenarios import STEP, evictions, finish_times, loads, uses

SEQ = [(0.0, "a"), (1.0, "b"), (2.0, "c"), (3.0, "b"), (4.0, "a")]


@pytest.mark.parametrize("name", EVICTIONS.names())
def test_pinned_adapter_is_never_the_victim(name):
    # Two slots, a pinned. t=2: slots {a, b}: b is the only candidate whatever the policy (LRU unpinned would take a,
    # used at 0.15 < 1.15); c loads by 2.15. t=3: slots {a, c}: c goes, b is copied back (3.0-3.05). t=4: a resident.
    res = uses(SEQ, {"name": name, "pinned": ["a"]})
    assert evictions(res) == [(2.0, "b"), (3.0, "c")]
    assert loads(res) == [(0.15, "a"), (1.15, "b"), (2.15, "c"), (3.05, "b")]
    assert finish_times(res) == [0.16, 1.16, 2.16, 3.06, 4.01]


def test_unpinned_lru_for_contrast():
    res = uses(SEQ, {"name": "lru"})
    assert evictions(res) == [(2.0, "a"), (4.0, "c")]
    assert finish_times(res)[-1] == 4.06


def test_pinned_adapter_stays_in_the_cpu_cache():
    # two slots, two CPU entries, a pinned. t=2: b leaves both tiers (unpinned LRU drops a from both), c is read
    # (2.0-2.1) and copied (-2.15); t=3: a is still resident (unpinned LRU: read again, finishing at 3.16).
    seq = [(0.0, "a"), (1.0, "b"), (2.0, "c"), (3.0, "a")]
    res = uses(seq, {"name": "lru", "pinned": ["a"]}, max_cpu_loras=2)
    assert evictions(res, "cpu") == [(2.0, "b")] and evictions(res) == [(2.0, "b")]
    assert finish_times(res) == [0.16, 1.16, 2.16, 3.01]
    plain = uses(seq, {"name": "lru"}, max_cpu_loras=2)
    assert evictions(plain, "cpu") == [(2.0, "a"), (3.0, "b")]
    assert finish_times(plain)[-1] == 3.16


def test_a_step_that_needs_every_slot_evicts_a_pinned_adapter_it_does_not_use():
    # Two slots, a pinned, resident from t=0. At t=1 b and c arrive together and vLLM puts both in one step (max_loras
    # 2). b takes the free slot (disk 1.0-1.1, copy -1.15); c needs a slot, every other one is pinned or in the step
    # and nothing is in flight: a is evicted at 1.15, the only way to run the step. c: disk 1.15-1.25, copy -1.30;
    # the step computes 1.30-1.31. t=2: a returns (copy 2.0-2.05) in place of b (LRU; b and c were both used at 1.30,
    # b first); pinned again, it stays when b returns at t=3 and c leaves.
    seq = [(0.0, "a"), (1.0, "b"), (1.0, "c"), (2.0, "a"), (3.0, "b")]
    res = uses(seq, {"name": "lru", "pinned": ["a"]})
    assert evictions(res) == [(1.15, "a"), (2.0, "b"), (3.0, "c")]
    assert loads(res) == [(0.15, "a"), (1.15, "b"), (1.3, "c"), (2.05, "a"), (3.05, "b")]
    assert finish_times(res) == [0.16, 1.31, 1.31, 2.06, 3.06]


def test_a_full_cpu_cache_gives_up_a_pinned_adapter_instead_of_waiting_for_itself():
    # As above with two CPU entries. At 1.15 c has a's GPU slot but the CPU cache holds a (pinned) and b (in the
    # step): the only transfer in flight is c's own, which waits for this room, so a leaves the CPU cache too. c:
    # disk 1.15-1.25, copy -1.30. t=2: a is read again (2.0-2.1, copy -2.15) in place of b in both tiers (LRU);
    # t=3: b in place of c. (Before: c waited for its own load and the run stopped with requests unfinished.)
    seq = [(0.0, "a"), (1.0, "b"), (1.0, "c"), (2.0, "a"), (3.0, "b")]
    res = uses(seq, {"name": "lru", "pinned": ["a"]}, max_cpu_loras=2)
    assert evictions(res) == [(1.15, "a"), (2.0, "b"), (3.0, "c")]
    assert evictions(res, "cpu") == [(1.15, "a"), (2.0, "b"), (3.0, "c")]
    assert loads(res) == [(0.15, "a"), (1.15, "b"), (1.3, "c"), (2.15, "a"), (3.15, "b")]
    assert finish_times(res) == [0.16, 1.31, 1.31, 2.16, 3.16]


def test_base_model_never_takes_a_slot():
    # one slot held by a; base-model requests at t=1 and 2 run without touching it; a at t=3 is a hit
    res = uses([(0.0, "a"), (1.0, None), (2.0, None), (3.0, "a")], {"name": "lru"}, max_loras=1)
    assert evictions(res) == [] and loads(res) == [(0.15, "a")]
    assert list(res.steps["num_distinct_adapters"]) == [1, 0, 0, 1]
    assert finish_times(res) == [0.16, 1.01, 2.01, 3.01]
    # with a pinned and two slots, base traffic between adapter requests changes nothing: only b is ever evicted
    res = uses([(0.0, "a"), (1.0, None), (2.0, "b"), (3.0, None), (4.0, "c")], {"name": "lfu", "pinned": ["a"]})
    assert evictions(res) == [(4.0, "b")]
    assert res.adapter_events["adapter"].notna().all()


def test_store_state_after_a_run():
    one = {"prompt": 4, "output": 1}
    sc = scenario(model={"profile": "llama-3.1-8b_h100-64gb", "step_time": STEP},
                  adapters={"names": ["a", "b", "c"], "ranks": 8},
                  workload={"streams": [
                      {"arrivals": {"kind": "single", "at_s": 0.0}, "lengths": one, "adapters": ["a"]},
                      {"arrivals": {"kind": "single", "at_s": 1.0}, "lengths": one,
                       "popularity": {"kind": "uniform", "base_share": 1.0}}]},
                  engine={"max_loras": 2, "kv_cache_tokens": 1024}, eviction={"name": "fifo", "pinned": ["a"]})
    sim = Simulation(sc)
    sim.run()
    assert sim.replica.store.pinned == {"a"}
    assert sim.replica.store.gpu == {"a": READY}  # the base model holds no slot


@pytest.mark.parametrize("name", EVICTIONS.names())
@pytest.mark.parametrize("load_mode", ["blocking", "overlapped"])
@pytest.mark.parametrize("pinned", ["[]", "[lora-0, lora-1]"])
def test_every_policy_on_the_default_workload(name, load_mode, pinned):
    # 100 adapters (lora-0 and lora-1 the most popular), 4 slots, 8 CPU entries: every request completes and the
    # tiers stay within capacity after every step (InvariantRecorder)
    from tests.helpers import run

    sc = lorasim.load_scenario(None, overrides=[
        "workload.num_requests=150", "engine.max_loras=4", "engine.max_cpu_loras=8", f"eviction.name={name}",
        f"eviction.pinned={pinned}", f"engine.adapter_load={load_mode}"])
    res = run(sc)
    assert res.summary["num_completed"] == 150
    assert res.summary["gpu_adapter_loads"] > 4  # the policy did choose victims


# ---- validation -----------------------------------------------------------------------------------------------

def _build(pinned, **engine):
    sc = scenario(adapters={"names": ["a", "b", "c"], "ranks": 8},
                  engine={"max_loras": 2, "kv_cache_tokens": 1024, **engine},
                  eviction={"name": "lru", "pinned": pinned})
    return Simulation(sc)


def test_unknown_pinned_adapter():
    with pytest.raises(ConfigError) as e:
        _build(["a", "z"])
    assert str(e.value) == "eviction.pinned: adapter 'z' is not defined under adapters (3 defined: a, b, c)"


def test_pinning_every_slot_is_refused():
    with pytest.raises(ConfigError) as e:
        _build(["a", "b"])
    assert str(e.value) == ("eviction.pinned: 2 adapter(s) pinned but engine.max_loras is 2; pin fewer than "
                            "max_loras so that other adapters keep a place")
    _build(["a", "b"], max_loras=3)  # fine: one slot left for c


def test_pinned_twice_is_refused():
    with pytest.raises(ConfigError, match="eviction.pinned: adapter 'a' is pinned twice"):
        scenario(eviction={"name": "lru", "pinned": ["a", "a"]})


def test_pinned_is_not_passed_to_the_policy_params():
    sc = scenario(eviction={"name": "lfu", "pinned": ["a"], "decay_half_life_s": 5.0})
    assert sc.eviction.pinned == ("a",) and sc.eviction.params == {"decay_half_life_s": 5.0}
    assert lorasim.load_scenario(sc) == sc  # the resolved form re-validates to the same scenario


def test_cli_one_line_error(tmp_path, monkeypatch, capsys):
    from lorasim.cli import main

    monkeypatch.chdir(tmp_path)
    Path("scn.yaml").write_text("adapters: {count: 3}\nengine: {max_loras: 2}\neviction: {name: fifo, pinned: [x]}\n")
    with pytest.raises(SystemExit) as e:
        main(["run", "scn.yaml"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "eviction.pinned: adapter 'x' is not defined under adapters (3 defined: lora-0, lora-1, lora-2)" in err
