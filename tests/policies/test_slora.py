"""slora: separate prefill and decode steps, FCFS under S-LoRA's worst-case future-memory check, early abort;
timelines computed by hand (10 ms steps, free loads)."""

from __future__ import annotations

import pytest

from lorasim.policies import SCHEDULERS
from lorasim.policies.scheduling.slora import worst_case_tokens
from tests.helpers import run, scenario, single
from tests.policies.timeline import FREE_LINKS, STEP_S, listed_schedulers, timeline


def test_listed(capsys):
    assert "slora" in listed_schedulers(capsys)
    assert SCHEDULERS.get("slora").rule


def test_worst_case_tokens_by_hand():
    # (remaining, held): (10, 5), (4, 20), (1, 3), sorted by remaining descending.
    # i=0: 5 + 1*10 = 15; i=1: 25 + 2*4 = 33; i=2: 28 + 3*1 = 31 -> 33
    assert worst_case_tokens([(-10, 5), (-4, 20), (-1, 3)]) == 33
    assert worst_case_tokens([]) == 0


def test_prefill_waits_for_max_wait_steps():
    # R0 (A, prompt 4, output 5) at 0; R1 (A, 4, 2) at 15 ms; max_wait_steps 2.
    # step0 [0,10]: prefill R0. step1, step2: decode R0 (R1 waits: 1 < 2 decodes since the prefill at step2's start).
    # step3 [30,40]: prefill R1 alone (R0 paused). step4: decode both (R1 done at 50). step5: R0's last token (60).
    reqs = [("R0", 0.0, "A", 4, 5), ("R1", 0.015, "A", 4, 2)]
    r, steps = timeline("slora", reqs, params={"max_wait_steps": 2}, max_loras=4)
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"R0": 0.0, "R1": 0.03})
    assert r["first_token_time_s"].to_dict() == pytest.approx({"R0": 0.01, "R1": 0.04})
    assert r["finish_time_s"].to_dict() == pytest.approx({"R0": 0.06, "R1": 0.05})
    assert steps["num_seqs"].tolist() == [1, 1, 1, 1, 2, 1]  # the prefill step runs R1 alone
    # vLLM admits R1 into the running batch at the next step (20 ms)
    rv, _ = timeline("vllm", reqs, max_loras=4)
    assert rv.loc["R1", "first_scheduled_time_s"] == pytest.approx(0.02)


def test_future_memory_check_avoids_preemption():
    # KV of 4 blocks (64 tokens); two requests of 16 + 20 tokens (3 blocks each at the end). vLLM admits both and
    # must preempt when they grow; S-LoRA's check (2 x 17 held + 2 x 19 remaining + 2 x 15 rounding = 102 > 64)
    # admits the second only after the first finishes, so nothing is preempted.
    reqs = [("R0", 0.0, "A", 16, 20), ("R1", 0.0, "A", 16, 20)]
    rv, _ = timeline("vllm", reqs, kv_cache_tokens=64, max_loras=4)
    rs, _ = timeline("slora", reqs, kv_cache_tokens=64, max_loras=4)
    assert rv["num_preemptions"].sum() > 0
    assert rs["num_preemptions"].sum() == 0
    assert rs.loc["R1", "first_scheduled_time_s"] == pytest.approx(rs.loc["R0", "finish_time_s"])


def test_early_abort_reports_the_request():
    # max_num_seqs 1: R1 waits behind R0 (10 tokens); abort_after_s 0.05 -> aborted at the first step start more than
    # 50 ms after its arrival at 1 ms: 60 ms.
    sc = scenario(
        model={"profile": "llama-3.1-8b_h100-64gb", "step_time": {"kind": "constant", "step_time_s": STEP_S}},
        adapters={"names": ["A"], "ranks": 8},
        workload={"streams": [single(0.0, "A", 4, 10, "R0"), single(0.001, "A", 4, 2, "R1")]},
        engine={"max_loras": 1, "max_num_seqs": 1, "kv_cache_tokens": 4096, **FREE_LINKS},
        scheduler={"name": "slora", "abort_after_s": 0.05},
    )
    res = run(sc)
    r = res.requests.set_index("request_id")
    assert res.summary["num_completed"] == 1 and res.summary["num_aborted"] == 1
    assert bool(r.loc[1, "aborted"]) and "slora early abort" in r.loc[1, "abort_reason"]
    assert r.loc[0, "finish_time_s"] == pytest.approx(0.1)
