"""Engine behaviours: preemption, aborts, load modes, user policies."""

from __future__ import annotations

import pytest

from lorasim.errors import PolicyError
from tests.helpers import FIXED_LINKS, run, scenario, single


def test_kv_shortage_preempts_and_recomputes():
    # 4 requests of 100+60 tokens in a 400-token KV cache: they cannot all grow; recompute preemption kicks in
    sc = scenario(
        model={"profile": "llama-3.1-8b_h100-64gb", "step_time": {"kind": "constant", "step_time_s": 0.01}},
        adapters={"count": 0},
        workload={"streams": [single(0.0, None, 100, 60, f"r{i}") for i in range(4)]},
        engine={"kv_cache_tokens": 400, "max_num_batched_tokens": 512},
    )
    res = run(sc)
    r = res.requests
    assert res.summary["num_preemptions"] > 0 and res.summary["num_completed"] == 4
    # recompute: the prefill of a preempted request covers its prompt and the tokens it had generated
    assert res.steps["num_prefill_tokens"].sum() > r["prompt_tokens"].sum()
    # FCFS victim choice: the first request is never preempted
    assert r.loc[r["request_id"] == 0, "num_preemptions"].item() == 0
    assert (res.steps["kv_used_blocks"] <= 400 // 16).all()


def test_unservable_requests_are_reported_not_dropped():
    sc = scenario(
        adapters={"count": 0},
        workload={"streams": [single(0.0, None, 50, 10, "ok"), single(0.0, None, 900, 200, "too-long")]},
        engine={"kv_cache_tokens": 1024},
    )
    res = run(sc)
    r = res.requests.set_index("request_id")
    assert res.summary["num_requests"] == 2 and res.summary["num_completed"] == 1 and res.summary["num_aborted"] == 1
    assert r.loc[1, "aborted"] and "exceed the KV cache" in r.loc[1, "abort_reason"]
    sc = scenario(adapters={"count": 0}, workload={"streams": [single(0.0, None, 50, 10)]},
                  engine={"max_model_len": 32})
    res = run(sc)
    assert res.summary["num_aborted"] == 1 and "max_model_len 32" in res.requests["abort_reason"].iloc[0]


def _thrash(load_mode: str):
    # 8 adapters round-robin over 2 slots, requests spaced so loads can be hidden behind running steps
    streams = [single(0.05 * i, f"lora-{i % 8}", 64, 64, f"r{i}") for i in range(48)]
    sc = scenario(
        model={"profile": "llama-3.1-8b_h100-64gb", "step_time": {"kind": "constant", "step_time_s": 0.01}},
        adapters={"count": 8, "ranks": 16},
        workload={"streams": streams},
        engine={"max_loras": 2, "max_cpu_loras": 8, "adapter_load": load_mode, **FIXED_LINKS},
    )
    return run(sc)


def test_overlapped_loads_hide_transfer_time():
    blocking, overlapped = _thrash("blocking"), _thrash("overlapped")
    assert blocking.summary["num_completed"] == overlapped.summary["num_completed"] == 48
    assert overlapped.summary["adapter_load_wait_s"] < blocking.summary["adapter_load_wait_s"]
    assert overlapped.summary["ttft_ms_mean"] < blocking.summary["ttft_ms_mean"]
    # each adapter is read from disk once (the CPU cache holds all 8)
    assert blocking.summary["disk_adapter_loads"] == overlapped.summary["disk_adapter_loads"] == 8


def test_user_policy_by_module_path():
    sc = scenario(adapters={"count": 4}, workload={"num_requests": 40},
                  scheduler={"name": "tests.policies.user_policy:NewestFirst"})
    res = run(sc)
    assert res.summary["num_completed"] == 40
    assert res.info["scheduler"] == "tests.policies.user_policy:NewestFirst"


def test_policy_breaking_an_invariant_is_caught():
    sc = scenario(adapters={"count": 4}, engine={"max_loras": 1}, workload={"num_requests": 20},
                  scheduler={"name": "tests.policies.user_policy:IgnoresAdapterCap"})
    with pytest.raises(PolicyError, match="distinct adapters in one step > max_loras 1"):
        run(sc)
