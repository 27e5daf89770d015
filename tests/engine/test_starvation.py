"""The starvation watchdog (``metrics.starvation_threshold_s``): hand-computed timelines with constant 10 ms steps and
fixed load costs (disk->CPU 0.1 s, CPU->GPU 0.05 s), and case 02 on the real profile."""

from __future__ import annotations

import pandas as pd
import pytest

import lorasim
from tests.helpers import FIXED_LINKS, run, scenario, single

STEP = {"kind": "constant", "step_time_s": 0.01}


def one_slot(policy: str, threshold_s: float | None = 0.1):
    """One GPU slot. A1 (t=0) and A2 (0.205), A3 (0.455) each decode 30 tokens; B1 (0.05) wants one token."""
    return run(scenario(
        model={"profile": "llama-3.1-8b_h100-64gb", "step_time": STEP},
        adapters={"names": ["A", "B"], "ranks": 8},
        workload={"streams": [single(0.0, "A", 4, 30, "A1"), single(0.05, "B", 4, 1, "B1"),
                              single(0.205, "A", 4, 30, "A2"), single(0.455, "A", 4, 30, "A3")]},
        engine={"max_loras": 1, "max_cpu_loras": 2, "kv_cache_tokens": 1024, **FIXED_LINKS},
        scheduler={"name": policy},
        metrics={"starvation_threshold_s": threshold_s},
    ))


@pytest.mark.parametrize("policy", ["affinity", "vllm"])
def test_b_is_flagged_once_the_slot_is_held_only_for_newer_requests(policy):
    # A loads (0.15 s) and A1 prefills by 0.16, then decodes one token per step until its 30th at 0.45. B1 (0.05) is
    # skipped at every step: the one slot is A's. Step 0.21 admits A2 (newer than B1), B1 has waited 0.16 > 0.1, but
    # the slot also serves A1, which arrived before B1: not evictable for B1, no flag. A1 finishes at 0.45; step 0.46
    # admits A3 while the slot serves only A2 (0.205) and A3 (0.455), both newer than B1: B1 is flagged (waited 0.41).
    # A3 finishes at 0.76; B1 is admitted then, evicts A, loads B (0.76-0.91) and finishes at 0.92.
    res = one_slot(policy)
    r = res.requests.set_index("request_id")
    assert list(r["adapter"]) == ["A", "B", "A", "A"]
    assert list(r["starved"]) == [False, True, False, False]
    assert list(r["first_scheduled_time_s"].round(6)) == [0.0, 0.76, 0.21, 0.46]
    assert r.loc[1, "queue_wait_s"] == pytest.approx(0.71) and r.loc[1, "finish_time_s"] == pytest.approx(0.92)
    assert res.summary["num_starved_requests"] == 1
    assert res.requests.groupby("adapter")["starved"].sum().to_dict() == {"A": 0, "B": 1}


def test_a_threshold_above_the_last_pass_over_flags_nothing():
    # the last step that admits a newer request is 0.46, when B1 had waited 0.41: with a 0.5 s threshold B1 is never
    # flagged although its wait (0.71) exceeds it: it reaches 0.5 s at 0.55, after the last pass-over
    res = one_slot("affinity", threshold_s=0.5)
    assert not res.requests["starved"].any() and res.summary["num_starved_requests"] == 0
    assert res.summary["max_queue_wait_s"] == pytest.approx(0.71)


def test_fcfs_break_waits_are_not_starvation():
    # fcfs-break stops at B1: A2 is not admitted while A1 runs. At 0.45 B1 is admitted (load B 0.45-0.60, done 0.61),
    # then A2 and A3 together at 0.61 (A copied back from the CPU cache, 0.05 s). A2 waited 0.405 and A3 0.155, over
    # the threshold, but no later arrival was ever admitted before them: nothing is flagged.
    res = one_slot("fcfs-break")
    r = res.requests.set_index("request_id")
    assert list(r["first_scheduled_time_s"].round(6)) == [0.0, 0.45, 0.61, 0.61]
    assert not r["starved"].any()


def test_watchdog_only_observes():
    on, off = one_slot("affinity"), one_slot("affinity", threshold_s=None)
    assert not off.requests["starved"].any() and off.summary["num_starved_requests"] == 0
    pd.testing.assert_frame_equal(on.requests.drop(columns="starved"), off.requests.drop(columns="starved"))
    pd.testing.assert_frame_equal(on.steps, off.steps)


def base_lifo(policy: str):
    """Base model only, one sequence at a time. R0 (t=0) decodes 20 tokens; R1 (0.005) and R2 (0.15) want one."""
    return run(scenario(
        model={"profile": "llama-3.1-8b_h100-64gb", "step_time": STEP},
        adapters={"count": 0},
        workload={"streams": [single(0.0, None, 4, 20, "R0"), single(0.005, None, 4, 1, "R1"),
                              single(0.15, None, 4, 1, "R2")]},
        engine={"max_num_seqs": 1, "kv_cache_tokens": 1024},
        scheduler={"name": policy},
        metrics={"starvation_threshold_s": 0.1},
    ))


def test_idle_slot_and_newest_first_flags_the_passed_over_request():
    # R0 runs 0.00-0.20. At 0.20 LIFO admits R2 (0.15) before R1 (0.005), which has waited 0.195 > 0.1 while the one
    # GPU slot is idle (no adapter at all): R1 is flagged. R2 runs 0.20-0.21, R1 0.21-0.22.
    res = base_lifo("tests.policies.user_policy:NewestFirst")
    r = res.requests.set_index("request_id")
    assert list(r["starved"]) == [False, True, False]
    assert list(r["first_scheduled_time_s"].round(6)) == [0.0, 0.21, 0.2]
    assert list(r["finish_time_s"].round(6)) == [0.2, 0.22, 0.21]
    assert res.summary["num_starved_requests"] == 1


def test_idle_slot_in_queue_order_flags_nothing():
    # FCFS: R1 is admitted at 0.20 after waiting 0.195 > 0.1, but nothing newer went first
    res = base_lifo("vllm")
    r = res.requests.set_index("request_id")
    assert list(r["first_scheduled_time_s"].round(6)) == [0.0, 0.2, 0.21]
    assert not r["starved"].any()


def test_threshold_must_be_positive():
    from lorasim.errors import ConfigError

    with pytest.raises(ConfigError, match="metrics.starvation_threshold_s"):
        scenario(metrics={"starvation_threshold_s": 0})


def test_default_scenario_has_no_starvation():
    res = lorasim.simulate(lorasim.load_scenario(None, overrides=["workload.num_requests=500"]))
    assert res.summary["num_starved_requests"] == 0 and not res.requests["starved"].any()


def case02(policy: str):
    """Case 02 (../shared/cases/02-greedy-affinity-starvation.yaml): 100 s of the A stream, default 30 s threshold."""
    sc = scenario(
        adapters={"names": ["A", "B"], "ranks": 16},
        workload={"streams": [
            {"name": "A", "arrivals": {"kind": "poisson", "rate": 5.0}, "duration_s": 100,
             "lengths": {"prompt": 128, "output": 128}, "adapters": ["A"]},
            single(1.0, "B", 128, 128, "B"),
        ]},
        engine={"max_loras": 1, "max_cpu_loras": 2, "max_num_seqs": 8},
        scheduler={"name": policy},
    )
    return run(sc, check_invariants=False)


def test_case02_greedy_affinity_starvation_is_flagged():
    res = case02("affinity")
    r = res.requests
    b = r[r["adapter"] == "B"].iloc[0]
    assert b["queue_wait_s"] > 90.0 and b["starved"]
    assert res.summary["num_starved_requests"] == 1  # only B: every A request is admitted within seconds


def test_case02_fcfs_break_is_not_flagged():
    res = case02("fcfs-break")
    assert res.summary["num_starved_requests"] == 0
    assert res.summary["max_queue_wait_s"] < 30.0
