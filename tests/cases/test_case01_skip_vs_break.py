"""Case 01 (../shared/cases/01-queue-skip-vs-break.yaml, vLLM PR 15422): a mixed queue at the adapter cap.

16 requests of 16 prompt + 16 output tokens arrive together, max_loras 4, ample KV. The first-step decision is
checked in isolation in tests/policies/test_admission.py; here the whole run goes through the engine.
"""

from __future__ import annotations

import pytest

from tests.helpers import run, scenario, single

ADAPTERS = [None, None, None, "L1", "L3", "L2", "L4", "L5", "L5", "L5", "L5", None, None, "L1", "L2", "L3"]


def case01(policy: str):
    streams = [single(0.0, a, 16, 16, f"R{i + 1}") for i, a in enumerate(ADAPTERS)]
    sc = scenario(
        adapters={"names": ["L1", "L2", "L3", "L4", "L5"], "ranks": 16},
        workload={"streams": streams},
        engine={"max_loras": 4, "max_cpu_loras": 8, "max_num_seqs": 256, "max_num_batched_tokens": 8192,
                "kv_cache_tokens": 100_000},
        scheduler={"name": policy},
    )
    res = run(sc)
    r = res.requests.set_index("request_id")
    r.index = [f"R{i + 1}" for i in r.index]  # request ids follow stream order for simultaneous arrivals
    return res, r


@pytest.mark.parametrize("policy,admitted_first", [("vllm", 12), ("fcfs-break", 7)])
def test_first_step_admissions(policy, admitted_first):
    res, r = case01(policy)
    first = r[r["first_scheduled_time_s"] == 0.0].index.tolist()
    assert len(first) == admitted_first
    if policy == "vllm":
        assert sorted(first) == sorted(set(r.index) - {"R8", "R9", "R10", "R11"})
    else:
        assert first == ["R1", "R2", "R3", "R4", "R5", "R6", "R7"]
    assert res.steps["num_prefill_tokens"].iloc[0] == 16 * admitted_first


@pytest.mark.parametrize("policy", ["vllm", "fcfs-break"])
def test_l5_waits_for_an_adapter_to_drain_and_keeps_order(policy):
    res, r = case01(policy)
    l5 = r.loc[["R8", "R9", "R10", "R11"]]
    # R8-R11 start only after every running request of one of L1-L4 has finished
    drained = min(r[r["adapter"] == a]["finish_time_s"].max() for a in ("L1", "L2", "L3", "L4"))
    assert (l5["first_scheduled_time_s"] >= drained - 1e-12).all()
    # they keep their queue order (here they are admitted together, in order)
    assert l5["first_scheduled_time_s"].is_monotonic_increasing
    assert res.summary["num_completed"] == 16


def test_skip_serves_the_queue_faster_than_break():
    _, skip = case01("vllm")
    _, brk = case01("fcfs-break")
    assert skip["e2el_s"].mean() < brk["e2el_s"].mean()
    # under break, the base-model requests behind the blocked L5 requests wait for them
    assert brk.loc["R12", "first_scheduled_time_s"] > 0 and skip.loc["R12", "first_scheduled_time_s"] == 0
