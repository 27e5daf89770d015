"""Steady decode steps run without the scheduler (``Replica._steady_steps``) give exactly the results of the
step-by-step loop: the same requests, steps, adapter events, inter-token latencies and summary, bit for bit."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import lorasim
from lorasim.engine.simulation import Simulation
from tests.helpers import InvariantRecorder

CONFIGS = [
    ["workload.num_requests=300", "workload.arrivals.rate=0.5"],  # light load: long steady runs
    ["workload.num_requests=400"],  # the default scenario, adapter-bound
    ["workload.num_requests=300", "engine.kv_cache_tokens=6000", "engine.max_num_batched_tokens=256"],  # preemption
    ["workload.num_requests=300", "workload.arrivals.rate=1", "horizon_s=120"],  # the horizon cuts a run
    ["workload.num_requests=300", "workload.arrivals.rate=1", "workload.cancel_probability=0.3",
     "workload.cancel_after_s=[0.0, 20.0]"],  # cancellations end runs
    ["workload.num_requests=300", "workload.arrivals.rate=1", "eviction.name=lfu"],  # per-step uses (counts)
    ["workload.num_requests=300", "workload.arrivals.rate=1", "eviction.name=cost-aware"],
    ["workload.num_requests=300", "workload.arrivals.rate=2", "adapter_memory.name=unified"],
    ["workload.num_requests=300", "workload.arrivals.rate=2", "scheduler.name=fcfs-break"],
    # adapter loads done inline (AdapterStore.load_inline): vLLM's activation order (a load may evict an
    # adapter the step activates later), pinned adapters as the last resort, a small CPU tier (disk reads, CPU
    # evictions taking GPU entries with them)
    ["workload.num_requests=400", "engine.adapter_activation=vllm"],
    ["workload.num_requests=400", "eviction.pinned=[lora-0, lora-1, lora-2]", "engine.max_loras=4",
     "engine.adapter_activation=vllm"],
    ["workload.num_requests=400", "engine.max_cpu_loras=20"],
]


def both(overrides):
    sc = lorasim.load_scenario(None, overrides=overrides)
    fast, slow = Simulation(sc), Simulation(sc, fast_forward=False)
    return fast, fast.run(), slow, slow.run()


@pytest.mark.parametrize("overrides", CONFIGS)
def test_identical_to_step_by_step(overrides):
    fast_sim, fast, slow_sim, slow = both(overrides)
    assert fast_sim.replica.num_steady_steps > 0  # the fast path ran
    assert slow_sim.replica.num_steady_steps == 0
    pd.testing.assert_frame_equal(fast.requests, slow.requests, check_exact=True)
    pd.testing.assert_frame_equal(fast.steps, slow.steps, check_exact=True)
    pd.testing.assert_frame_equal(fast.adapter_events, slow.adapter_events, check_exact=True)
    assert np.array_equal(fast.itl_values_s, slow.itl_values_s) and np.array_equal(fast.itl_counts, slow.itl_counts)
    assert json.dumps(fast.summary, sort_keys=True) == json.dumps(slow.summary, sort_keys=True)


def test_inline_loads_stop_at_the_horizon_like_transfer_events():
    """A horizon that falls inside an adapter transfer, or exactly at its end, stops the simulation with that
    transfer unrecorded in both the inline load path and the one-event-per-transfer path."""
    base = ["workload.num_requests=400"]
    loads = Simulation(lorasim.load_scenario(None, overrides=base), fast_forward=False).run().adapter_events
    loads = loads[loads["kind"] == "load"].reset_index(drop=True)
    cpu = loads[loads["tier"] == "cpu"].iloc[3]  # a disk read, then its copy to the GPU
    gpu = loads[(loads["tier"] == "gpu") & (loads["time_s"] > cpu["time_s"])].iloc[0]
    cpu_end, gpu_end = float(cpu["time_s"]), float(gpu["time_s"])
    for horizon in (cpu_end - cpu["duration_s"] / 2, cpu_end, gpu_end - gpu["duration_s"] / 2, gpu_end,
                    gpu_end + 1e-9):
        horizon = float(horizon)
        fast_sim, fast, slow_sim, slow = both([*base, f"horizon_s={horizon!r}"])
        assert fast_sim.replica.store.inline_horizon_s == horizon and slow_sim.replica.store.inline_horizon_s is None
        pd.testing.assert_frame_equal(fast.adapter_events, slow.adapter_events, check_exact=True)
        pd.testing.assert_frame_equal(fast.requests, slow.requests, check_exact=True)
        pd.testing.assert_frame_equal(fast.steps, slow.steps, check_exact=True)
        assert (fast.adapter_events["time_s"] < horizon).all()
    # at the end of the disk read the read is not recorded; a moment later the copy is
    short = both([*base, f"horizon_s={cpu_end!r}"])[1].adapter_events
    assert not ((short["time_s"] == cpu_end) & (short["kind"] == "load")).any()
    later = both([*base, f"horizon_s={gpu_end + 1e-9!r}"])[1].adapter_events
    assert ((later["time_s"] == gpu_end) & (later["kind"] == "load") & (later["tier"] == "gpu")).any()


def test_inline_loads_only_where_nothing_else_sees_the_store():
    """Inline transfers need a lone replica loading inside its steps, and stay off wherever the replica's fast paths
    are off (a scheduler without the steady promise, a checking recorder, invariant checks)."""
    for overrides, kw, inline in (([], {}, math.inf), (["horizon_s=50"], {}, 50.0),
                                  (["engine.adapter_load=overlapped"], {}, None), (["cluster.replicas=2"], {}, None),
                                  (["scheduler.name=vtc"], {}, None), ([], {"recorder": InvariantRecorder()}, None),
                                  ([], {"check_invariants": True}, None), ([], {"fast_forward": False}, None)):
        sim = Simulation(lorasim.load_scenario(None, overrides=["workload.num_requests=20", *overrides]), **kw)
        assert sim.replica.store.inline_horizon_s == inline, (overrides, kw)


def test_a_horizon_at_the_end_of_a_steady_step():
    """A step that would end exactly at the horizon never ends (the simulation stops first): a steady run stops
    before it, as the step loop does (it used to run it, completions included)."""
    base = ["workload.num_requests=300", "workload.arrivals.rate=0.5"]
    steps = Simulation(lorasim.load_scenario(None, overrides=base), fast_forward=False).run().steps
    ends = (steps["start_time_s"] + steps["duration_s"]).tolist()  # the engine's own float additions
    for k in (100, 155, 156, 240):
        fast_sim, fast, _, slow = both([*base, f"horizon_s={ends[k]!r}"])
        assert fast_sim.replica.num_steady_steps > 0
        pd.testing.assert_frame_equal(fast.steps, slow.steps, check_exact=True)
        pd.testing.assert_frame_equal(fast.requests, slow.requests, check_exact=True)
        assert json.dumps(fast.summary, sort_keys=True) == json.dumps(slow.summary, sort_keys=True)
        assert len(slow.steps) == k  # step k ends at the horizon: not recorded


def test_light_load_skips_most_scheduler_calls():
    fast_sim, fast, _, _ = both(CONFIGS[0])
    assert fast_sim.replica.num_steady_steps > 0.8 * len(fast.steps)
    # at light load nothing waits: only the steps that admit a request need the scheduler; the pure decode step
    # after a prefill and the steps that complete requests are steady steps
    scheduled = len(fast.steps) - fast_sim.replica.num_steady_steps
    assert scheduled == int((fast.steps["num_prefill_seqs"] > 0).sum())


def test_off_for_stateful_schedulers_overlapped_loads_and_checking_recorders():
    for overrides, kw in ((["scheduler.name=vtc"], {}), (["engine.adapter_load=overlapped"], {}),
                          ([], {"recorder": InvariantRecorder()}), ([], {"check_invariants": True})):
        sim = Simulation(lorasim.load_scenario(None, overrides=["workload.num_requests=50", *overrides]), **kw)
        assert not sim.replica.fast_forward, overrides or kw
        sim.run()
        assert sim.replica.num_steady_steps == 0


@pytest.mark.parametrize("overrides", [CONFIGS[1], CONFIGS[2], CONFIGS[7]])
def test_exclusive_links_change_nothing(monkeypatch, overrides):
    """One replica loading inside its steps never queues for a link, so its links skip the SimPy resource
    (``Link.exclusive``); going through the resource anyway gives the same tables, bit for bit."""
    from lorasim.engine.link import Link

    sc = lorasim.load_scenario(None, overrides=overrides)
    fast_sim = Simulation(sc)
    assert all(link.exclusive for link in (fast_sim.replica.store.disk_link, fast_sim.replica.store.pcie_link))
    fast = fast_sim.run()
    original = Link.__init__
    monkeypatch.setattr(Link, "__init__", lambda self, *a, **kw: original(self, *a, **{**kw, "exclusive": False}))
    slow = Simulation(sc).run()
    assert fast.summary["gpu_adapter_loads"] > 0
    pd.testing.assert_frame_equal(fast.requests, slow.requests, check_exact=True)
    pd.testing.assert_frame_equal(fast.steps, slow.steps, check_exact=True)
    pd.testing.assert_frame_equal(fast.adapter_events, slow.adapter_events, check_exact=True)
    assert json.dumps(fast.summary, sort_keys=True) == json.dumps(slow.summary, sort_keys=True)


def test_links_are_shared_resources_with_prefetch_or_replicas():
    for overrides in (["engine.adapter_load=overlapped"], ["cluster.replicas=2"]):
        sim = Simulation(lorasim.load_scenario(None, overrides=["workload.num_requests=20", *overrides]))
        assert not sim.replica.store.pcie_link.exclusive, overrides


def test_steady_steps_carry_the_scans_skips():
    """In the adapter-bound default scenario, requests wait for other adapters during steady runs: each steady step
    costs the skipped requests of the plan that started its run (the same queue and adapters: the scan stops alike),
    and the tables still equal the step-by-step loop's (``test_identical_to_step_by_step``, CONFIGS[1])."""
    from lorasim.metrics.recorder import Recorder

    seen = []

    class Spy(Recorder):
        def on_steady_steps(self, replica, *args, num_skipped_waiting=0):
            seen.append(num_skipped_waiting)
            super().on_steady_steps(replica, *args, num_skipped_waiting=num_skipped_waiting)

    sc = lorasim.load_scenario(None, overrides=CONFIGS[1])
    sim = Simulation(sc, recorder=Spy())
    res = sim.run()
    assert sim.replica.fast_forward and max(seen) > 0
    assert sim.perf.scheduler_skip_ms > 0
    steps = res.steps
    skipped = steps[steps["num_skipped_waiting"] > 0]
    assert len(skipped) > 0 and (skipped["num_waiting"] >= skipped["num_skipped_waiting"]).all()
    assert (steps.loc[steps["num_waiting"] == 0, "num_skipped_waiting"] == 0).all()


def test_models_with_some_or_none_of_the_shortcuts():
    """Step-time models with only ``step_time_s``, or with ``decode_step_s`` but no ``decode_steps_s``, run steady
    steps that charge the skipped requests and equal the step-by-step loop."""
    from lorasim.perf.profile import load_profile

    sc = lorasim.load_scenario(None, overrides=CONFIGS[1])
    m = load_profile(sc.model.profile).step_time_model(sc.engine.max_lora_rank, True, sc.engine.max_loras)

    class Plain:
        def step_time_s(self, batch):
            return m.step_time_s(batch)

    class FirstOnly(Plain):
        def decode_step_s(self, num, ctx, num_lora, num_adapters, changed, num_skipped_waiting=0):
            return m.decode_step_s(num, ctx, num_lora, num_adapters, changed, num_skipped_waiting)

    reference = Simulation(sc, step_time_model=m, fast_forward=False).run().steps
    assert (reference["num_skipped_waiting"] > 0).any()
    for model in (Plain(), FirstOnly()):
        sim = Simulation(sc, step_time_model=model)
        steps = sim.run().steps
        assert sim.replica.num_steady_steps > 0
        pd.testing.assert_frame_equal(steps, reference, check_exact=True)
