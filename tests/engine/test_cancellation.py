"""Client-side cancellation (workload ``cancel_probability`` / ``cancel_after_s``): timelines computed by hand
(constant 10 ms steps, free loads, no request overhead, every plan and every step's state invariant-checked)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lorasim.engine.simulation import Simulation
from lorasim.errors import ConfigError
from tests.helpers import run, scenario, single

STEP = {"profile": "llama-3.1-8b_h100-64gb", "step_time": {"kind": "constant", "step_time_s": 0.01}}
FREE_LINKS = {"disk_to_cpu": {"overhead_s": 0.0, "bandwidth_bytes_per_s": float("inf")},
              "cpu_to_gpu": {"overhead_s": 0.0, "bandwidth_bytes_per_s": float("inf")}}


def cancelled_after(stream: dict, delay_s) -> dict:
    return {**stream, "cancel_probability": 1.0, "cancel_after_s": delay_s}


def sim(streams, **engine):
    return scenario(model=STEP, adapters={"names": ["a"], "ranks": 8}, workload={"streams": streams},
                    engine={"max_loras": 1, "kv_cache_tokens": 1024, **FREE_LINKS, **engine})


def by_name(res, names):
    r = res.requests.set_index("request_id").sort_index()
    r.index = names
    return r


def check_counts(res):
    m = res.summary
    assert m["num_completed"] + m["num_aborted"] + m["num_cancelled"] + m["num_unfinished"] == m["num_requests"]
    r = res.requests
    assert not (r["cancelled"] & (r["aborted"] | r["unfinished"])).any()
    assert r.loc[r["cancelled"], "finish_time_s"].isna().all() and r.loc[r["cancelled"], "e2el_s"].isna().all()


def test_cancel_while_waiting_takes_effect_at_the_step_end():
    # max_num_seqs 1: R0 (4+3) runs 0-30 ms; R1 waits. R1's client cancels at 15 ms, during step 2 (10-20 ms): the
    # engine applies it when that step ends (20 ms). R0 finishes at 30 ms; three steps in all.
    res = run(sim([single(0.0, "a", 4, 3, "r0"), cancelled_after(single(0.0, "a", 4, 2, "r1"), 0.015)],
                  max_num_seqs=1))
    r = by_name(res, ["R0", "R1"])
    assert list(r["cancelled"]) == [False, True]
    assert r.loc["R1", "cancel_time_s"] == pytest.approx(0.02)
    assert math.isnan(r.loc["R1", "first_scheduled_time_s"]) and math.isnan(r.loc["R1", "finish_time_s"])
    assert r.loc["R0", "finish_time_s"] == pytest.approx(0.03)
    assert list(res.steps["num_waiting"]) == [1, 1, 0]
    m = res.summary
    assert (m["num_requests"], m["num_completed"], m["num_cancelled"], m["num_aborted"], m["num_unfinished"]) == \
        (2, 1, 1, 0, 0)
    assert m["e2el_ms_mean"] == pytest.approx(30.0)  # R1 is not in the latency stats
    check_counts(res)


def test_cancel_a_steady_decoder_frees_its_blocks():
    # R0 (4+10) and R1 (4+2) at 0; R0's client cancels at 35 ms. R0 decodes in the DecodeGroup from step 2 on; its
    # 4th step ends at 40 ms, when the cancellation applies (4 tokens made). R1 finished at 20 ms. R2 (4+1) arrives
    # at 50 ms and runs 50-60 ms alone, finishing in its one step: the cache is empty after it (R0's block was freed;
    # kv_used_blocks is recorded at each step end, after that step's completions).
    res = run(sim([cancelled_after(single(0.0, "a", 4, 10, "r0"), 0.035), single(0.0, "a", 4, 2, "r1"),
                   single(0.05, "a", 4, 1, "r2")]))
    r = by_name(res, ["R0", "R1", "R2"])
    assert list(r["cancelled"]) == [True, False, False]
    assert r.loc["R0", "cancel_time_s"] == pytest.approx(0.04)
    assert r.loc["R0", "first_token_time_s"] == pytest.approx(0.01)  # reported, but not counted in TTFT stats
    assert list(res.steps["start_time_s"].round(6)) == [0.0, 0.01, 0.02, 0.03, 0.05]
    assert list(res.steps["num_decode_seqs"]) == [0, 2, 1, 1, 0]
    assert list(res.steps["kv_used_blocks"]) == [2, 1, 1, 1, 0]
    assert res.summary["ttft_ms_mean"] == pytest.approx(10.0)
    check_counts(res)


def test_cancel_during_chunked_prefill():
    # a 100-token prompt in 32-token chunks (steps end at 10, 20, 30, 40 ms); cancelled at 15 ms -> applied at 20 ms
    # after two chunks: no first token, and nothing runs after it
    sc = scenario(model=STEP, adapters={"count": 0},
                  workload={"streams": [cancelled_after(single(0.0, None, 100, 2), 0.015)]},
                  engine={"max_num_batched_tokens": 32, "kv_cache_tokens": 1024})
    res = run(sc)
    assert list(res.steps["num_prefill_tokens"]) == [32, 32]
    r = res.requests.iloc[0]
    assert r["cancelled"] and r["cancel_time_s"] == pytest.approx(0.02) and math.isnan(r["first_token_time_s"])
    check_counts(res)


def test_cancel_before_reaching_the_scheduler():
    # a request overhead of 10 ms: R0's client cancels 5 ms after arrival, before R0 is queued; R1 runs normally
    res = run(sim([cancelled_after(single(0.0, "a", 4, 2, "r0"), 0.005), single(0.0, "a", 4, 2, "r1")],
                  request_overhead_s=0.01))
    r = by_name(res, ["R0", "R1"])
    assert list(r["cancelled"]) == [True, False]
    assert r.loc["R0", "cancel_time_s"] == pytest.approx(0.005)
    assert list(res.steps["num_seqs"]) == [1, 1]
    check_counts(res)


def test_cancel_after_finish_is_a_no_op():
    res = run(sim([cancelled_after(single(0.0, "a", 4, 2, "r0"), 1.0)]))
    r = res.requests.iloc[0]
    assert not r["cancelled"] and math.isnan(r["cancel_time_s"]) and r["finish_time_s"] == pytest.approx(0.02)
    assert res.summary["num_completed"] == 1 and res.summary["num_cancelled"] == 0


def test_cancel_during_the_last_step_counts_as_completed():
    # R0 (4+2): steps 0-10 and 10-20 ms; its client cancels at 15 ms, but R0 completes in the step that ends at 20 ms,
    # before the cancellation is applied
    res = run(sim([cancelled_after(single(0.0, "a", 4, 2, "r0"), 0.015)]))
    r = res.requests.iloc[0]
    assert not r["cancelled"] and r["finish_time_s"] == pytest.approx(0.02)
    assert res.summary["num_completed"] == 1 and res.summary["num_cancelled"] == 0


def test_cancel_a_running_and_a_preempted_request():
    # KV 4 blocks of 16: R0 and R1 (16+40 each, 4 blocks at most) hold 2 blocks each after 16 decodes; at 33 tokens
    # each needs a 3rd: R1 (last running) is preempted (about 170 ms) and cannot come back while R0 holds 3 blocks.
    # Both clients cancel at 300 ms: R0 while running (a steady decoder), R1 while waiting after its preemption.
    streams = [cancelled_after(single(0.0, "a", 16, 40, "r0"), 0.3), cancelled_after(single(0.0, "a", 16, 40, "r1"),
                                                                                      0.3)]
    res = run(sim(streams, kv_cache_tokens=64))
    r = by_name(res, ["R0", "R1"])
    assert list(r["num_preemptions"]) == [0, 1]
    assert list(r["cancelled"]) == [True, True] and not r["aborted"].any()
    assert r["cancel_time_s"].round(6).tolist() == [0.3, 0.3]
    assert res.steps["start_time_s"].iloc[-1] == pytest.approx(0.29)  # nothing runs after the cancellations
    check_counts(res)


def many(p: float, delay, seed: int = 0, **engine):
    return scenario(
        seed=seed, model=STEP, adapters={"count": 4, "ranks": 8},
        workload={"arrivals": {"kind": "poisson", "rate": 200.0}, "num_requests": 300,
                  "lengths": {"prompt": {"kind": "uniform", "low": 8, "high": 64},
                              "output": {"kind": "uniform", "low": 2, "high": 40}},
                  **({"cancel_probability": p, "cancel_after_s": delay} if p else {})},
        engine={"max_loras": 2, "kv_cache_tokens": 2048, "max_num_batched_tokens": 128, **FREE_LINKS, **engine})


def test_random_cancellation_counts_and_determinism():
    res = run(many(0.5, [0.0, 0.2]))
    check_counts(res)
    m = res.summary
    assert m["num_unfinished"] == 0 and m["num_aborted"] == 0
    assert 100 <= m["num_cancelled"] <= 150  # at most the 50% chosen; some finish before their client gives up
    r = res.requests
    c = r[r["cancelled"]]
    assert (c["cancel_time_s"] >= c["arrival_time_s"]).all()
    assert (c["cancel_time_s"] <= c["arrival_time_s"] + 0.2 + 0.5).all()  # within the range, plus a step at most
    again = run(many(0.5, [0.0, 0.2]))
    assert again.requests.equals(res.requests)
    # the cancel:<stream> random stream leaves every other draw unchanged
    plain = run(many(0.0, None))
    cols = ["arrival_time_s", "adapter", "prompt_tokens", "output_tokens"]
    assert plain.requests[cols].equals(res.requests[cols])
    assert plain.summary["num_cancelled"] == 0 and not plain.requests["cancelled"].any()


def test_overlapped_loads_with_cancellation():
    res = run(many(0.3, 0.05, adapter_load="overlapped"))
    check_counts(res)
    assert res.summary["num_cancelled"] > 0 and res.summary["num_unfinished"] == 0


def test_disabled_cancellation_builds_no_feed():
    assert Simulation(many(0.0, None)).replica.cancels is None
    assert Simulation(many(0.0, 1.0)).replica.cancels is None  # a delay alone cancels nothing


def test_horizon_leaves_pending_cancellations_unfinished():
    sc = sim([cancelled_after(single(0.0, "a", 4, 10, "r0"), 0.5)])
    sc = sc.model_copy(update={"horizon_s": 0.035})
    res = run(sc)
    r = res.requests.iloc[0]
    assert r["unfinished"] and not r["cancelled"]
    check_counts(res)


def test_config_checks():
    with pytest.raises(ConfigError, match="cancel_after_s"):
        sim([{**single(0.0, "a", 4, 2), "cancel_probability": 0.5}])
    with pytest.raises(ConfigError, match="low <= high"):
        sim([{**single(0.0, "a", 4, 2), "cancel_probability": 0.5, "cancel_after_s": [2.0, 1.0]}])
    with pytest.raises(ConfigError, match="cancel_probability"):
        sim([{**single(0.0, "a", 4, 2), "cancel_probability": 1.5, "cancel_after_s": 1.0}])
    with pytest.raises(ConfigError, match="cancel_after_s"):
        sim([{**single(0.0, "a", 4, 2), "cancel_probability": 0.5, "cancel_after_s": -1.0}])


def test_requests_table_columns():
    res = run(many(0.5, 0.01))
    assert res.requests["cancelled"].dtype == np.bool_
    assert res.requests["cancel_time_s"].dtype == np.float64


@pytest.mark.parametrize("cancel", [False, True])
def test_cancelled_waiting_request_is_never_flagged_starved(cancel):
    # sjf (no aging), max_num_seqs 1, watchdog threshold 5 ms. R0 (4+3) runs 0-30 ms; R1 (4+10, t=0) and R2 (4+1,
    # t=1 ms) wait. At 30 ms sjf admits R2 (shorter) over R1, which has waited 30 ms: R1 is starved, unless its
    # client cancelled it at 15 ms (applied at 20 ms), before that step.
    r1 = single(0.0, None, 4, 10, "r1")
    streams = [single(0.0, None, 4, 3, "r0"), cancelled_after(r1, 0.015) if cancel else r1,
               single(0.001, None, 4, 1, "r2")]
    sc = scenario(model=STEP, adapters={"count": 0}, workload={"streams": streams},
                  engine={"max_num_seqs": 1, "kv_cache_tokens": 1024},
                  scheduler={"name": "sjf", "aging_tokens_per_s": 0},
                  metrics={"starvation_threshold_s": 0.005})
    res = run(sc)
    r = by_name(res, ["R0", "R1", "R2"])
    assert r.loc["R2", "first_scheduled_time_s"] == pytest.approx(0.03)
    assert list(r["starved"]) == [False, not cancel, False]
    assert list(r["cancelled"]) == [False, cancel, False]
    assert res.summary["num_starved_requests"] == (0 if cancel else 1)
    check_counts(res)
