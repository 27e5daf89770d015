"""A tiny scenario whose whole timeline is computed by hand (constant 10 ms steps, fixed load costs)."""

from __future__ import annotations

import math

import pytest

from tests.helpers import FIXED_LINKS, run, scenario, single


@pytest.fixture(scope="module")
def res():
    sc = scenario(
        model={"profile": "llama-3.1-8b_h100-64gb", "step_time": {"kind": "constant", "step_time_s": 0.01}},
        adapters={"names": ["a"], "ranks": 8},
        workload={"streams": [single(0.0, "a", 4, 3, "r0"), single(0.015, "a", 4, 2, "r1")]},
        engine={"max_loras": 1, "kv_cache_tokens": 1024, **FIXED_LINKS},
    )
    return run(sc)


def test_request_times_by_hand(res):
    # step 1 starts at 0: r0's adapter is read from disk (0.1 s) and copied to the GPU (0.05 s), then the prefill
    # (0.01 s) ends at 0.16 with r0's first token. r1 arrived at 0.015, mid-step, and joins step 2 (0.16-0.17):
    # r0 decodes its 2nd token, r1 prefills and gets its first. Step 3 (0.17-0.18): both decode and finish.
    r = res.requests.set_index("request_id")
    assert r.loc[0, "first_scheduled_time_s"] == pytest.approx(0.0)
    assert r.loc[0, "first_token_time_s"] == pytest.approx(0.16)
    assert r.loc[0, "finish_time_s"] == pytest.approx(0.18)
    assert r.loc[0, "ttft_s"] == pytest.approx(0.16)
    assert r.loc[0, "adapter_stall_s"] == pytest.approx(0.15)
    assert r.loc[1, "first_scheduled_time_s"] == pytest.approx(0.16)
    assert r.loc[1, "queue_wait_s"] == pytest.approx(0.145)
    assert r.loc[1, "ttft_s"] == pytest.approx(0.155)
    assert r.loc[1, "e2el_s"] == pytest.approx(0.165)
    assert not r["aborted"].any()


def test_steps_by_hand(res):
    s = res.steps
    assert list(s["start_time_s"].round(6)) == [0.0, 0.16, 0.17]
    assert list(s["duration_s"].round(6)) == [0.16, 0.01, 0.01]
    assert list(s["load_wait_s"].round(6)) == [0.15, 0.0, 0.0]
    assert list(s["num_prefill_tokens"]) == [4, 4, 0]
    assert list(s["num_decode_seqs"]) == [0, 1, 2]
    assert list(s["num_adapter_loads"]) == [1, 0, 0]
    assert list(s["num_distinct_adapters"]) == [1, 1, 1]


def test_summary_by_hand(res):
    m = res.summary
    assert m["num_requests"] == 2 and m["num_completed"] == 2 and m["num_aborted"] == 0
    assert m["duration_s"] == pytest.approx(0.18)
    assert m["request_throughput_rps"] == pytest.approx(2 / 0.18)
    assert m["output_throughput_tok_s"] == pytest.approx(5 / 0.18)
    assert m["total_throughput_tok_s"] == pytest.approx(13 / 0.18)
    assert m["ttft_ms_mean"] == pytest.approx((160 + 155) / 2)
    assert m["tpot_ms_mean"] == pytest.approx(10.0)  # r0: (0.18-0.16)/2; r1: (0.18-0.17)/1
    assert m["itl_ms_mean"] == pytest.approx(10.0) and m["itl_ms_p99"] == pytest.approx(10.0)
    assert m["e2el_ms_p50"] == pytest.approx((180 + 165) / 2)
    assert m["gpu_adapter_loads"] == 1 and m["disk_adapter_loads"] == 1
    assert m["gpu_adapter_hit_rate"] == pytest.approx(0.5)  # r0 needed a load, r1 found the adapter resident
    assert m["max_queue_wait_s"] == pytest.approx(0.145)
    assert m["num_preemptions"] == 0
    assert m["kv_cache_tokens"] == 1024


def test_adapter_events(res):
    ev = res.adapter_events
    assert list(ev["kind"]) == ["load", "load"]
    assert list(ev["tier"]) == ["cpu", "gpu"]
    assert list(ev["time_s"].round(6)) == [0.1, 0.15]
    assert list(ev["duration_s"].round(6)) == [0.1, 0.05]
    assert all(ev["size_bytes"] > 0)


def test_chunked_prefill_and_budget():
    # one 100-token prompt with a 32-token budget: chunks 32+32+32+4, the 4th step samples the first token
    sc = scenario(
        model={"profile": "llama-3.1-8b_h100-64gb", "step_time": {"kind": "constant", "step_time_s": 0.01}},
        adapters={"count": 0},
        workload={"streams": [single(0.0, None, 100, 2)]},
        engine={"max_num_batched_tokens": 32, "kv_cache_tokens": 1024},
    )
    res = run(sc)
    assert list(res.steps["num_prefill_tokens"]) == [32, 32, 32, 4, 0]
    r = res.requests.iloc[0]
    assert r["ttft_s"] == pytest.approx(0.04)
    assert r["e2el_s"] == pytest.approx(0.05)
    assert math.isnan(res.summary["gpu_adapter_hit_rate"])  # no adapter requests at all


def test_request_overhead_delays_queue_entry():
    # the profile's fitted API/tokenization overhead (6.884 ms for Llama-3.1-8B) precedes the first step
    base = dict(model={"profile": "llama-3.1-8b_h100-64gb", "step_time": {"kind": "constant", "step_time_s": 0.01}},
                adapters={"count": 0}, workload={"streams": [single(0.5, None, 8, 2)]})
    r0 = run(scenario(**base, engine={"kv_cache_tokens": 1024})).requests.iloc[0]
    r1 = run(scenario(**base, engine={"kv_cache_tokens": 1024, "request_overhead_s": None})).requests.iloc[0]
    assert r0["ttft_s"] == pytest.approx(0.01) and r0["first_scheduled_time_s"] == pytest.approx(0.5)
    assert r1["first_scheduled_time_s"] == pytest.approx(0.5 + 0.006884)
    assert r1["ttft_s"] == pytest.approx(0.006884 + 0.01)
    assert r1["arrival_time_s"] == 0.5  # arrival stays the client's time


def test_horizon_stops_the_run_and_reports_unfinished():
    # the same timeline cut at 0.175 s: r0 and r1 are mid-way through step 3 (0.17-0.18), so neither finishes;
    # both have their first token (0.16 and 0.17), and nothing is dropped from the requests table.
    sc = scenario(
        model={"profile": "llama-3.1-8b_h100-64gb", "step_time": {"kind": "constant", "step_time_s": 0.01}},
        adapters={"names": ["a"], "ranks": 8},
        workload={"streams": [single(0.0, "a", 4, 3, "r0"), single(0.015, "a", 4, 2, "r1")]},
        engine={"max_loras": 1, "kv_cache_tokens": 1024, **FIXED_LINKS},
        horizon_s=0.175,
    )
    res = run(sc)
    r = res.requests.set_index("request_id")
    assert list(r["unfinished"]) == [True, True] and not r["aborted"].any()
    assert r["finish_time_s"].isna().all()
    assert list(r["first_token_time_s"].round(6)) == [0.16, 0.17]
    m = res.summary
    assert (m["num_requests"], m["num_completed"], m["num_unfinished"], m["num_aborted"]) == (2, 0, 2, 0)
    assert list(res.steps["start_time_s"].round(6)) == [0.0, 0.16]  # the step in flight at the horizon is not recorded


def test_horizon_after_the_last_finish_changes_nothing(res):
    sc = scenario(
        model={"profile": "llama-3.1-8b_h100-64gb", "step_time": {"kind": "constant", "step_time_s": 0.01}},
        adapters={"names": ["a"], "ranks": 8},
        workload={"streams": [single(0.0, "a", 4, 3, "r0"), single(0.015, "a", 4, 2, "r1")]},
        engine={"max_loras": 1, "kv_cache_tokens": 1024, **FIXED_LINKS},
        horizon_s=10.0,
    )
    late = run(sc)
    assert late.summary["num_unfinished"] == 0
    assert late.requests.drop(columns="unfinished").equals(res.requests.drop(columns="unfinished"))


def test_scheduler_skips_cost_time_by_hand():
    """vLLM's scan pops and pushes back each request whose adapter would exceed max_loras; the step-time model
    charges ``scheduler_skip_ms`` for each (here 5 ms, on 10 ms steps; loads 0.1 s from disk + 0.05 s to the GPU).

    r0 (a, 2 tokens), r1 (b) and r2 (c) arrive at 0 with max_loras 1. Step 1: r0 is admitted, r1 and r2 skipped:
    0.15 s of loads + 10 ms + 2 x 5 ms = 0.17. Step 2: r0 decodes and finishes, both skipped again: 0.02. Step 3:
    r1 joins (load 0.15 s), r2 skipped: 0.165. Step 4: r2 alone: 0.16.
    """
    from lorasim.perf.linear import LinearStepTimeModel

    model = LinearStepTimeModel(base_ms=10.0, prefill_token_ms=0.0, prefill_seq_ms=0.0, decode_seq_ms=0.0,
                                decode_context_token_ms=0.0, prefill_attention_ms=0.0, scheduler_skip_ms=5.0)
    sc = scenario(
        adapters={"names": ["a", "b", "c"], "ranks": 8},
        workload={"streams": [single(0.0, "a", 4, 2, "r0"), single(0.0, "b", 4, 1, "r1"),
                              single(0.0, "c", 4, 1, "r2")]},
        engine={"max_loras": 1, "max_cpu_loras": 3, "kv_cache_tokens": 1024, **FIXED_LINKS},
    )
    for check in (True, False):  # checked plans and the fast path agree
        s = run(sc, check_invariants=check, step_time_model=model).steps
        assert list(s["num_skipped_waiting"]) == [2, 2, 1, 0]
        assert list(s["duration_s"].round(9)) == [0.17, 0.02, 0.165, 0.16]
        assert list(s["start_time_s"].round(9)) == [0.0, 0.17, 0.19, 0.355]
