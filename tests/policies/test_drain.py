"""drain: running adapters drain for a request the adapter cap blocks (SGLang PR 15129 / LoRADrainer)."""

from __future__ import annotations

import pytest

from lorasim.errors import ConfigError
from lorasim.policies import SCHEDULERS
from tests.helpers import scenario
from tests.policies.helpers import make_seq, running_seq, view
from tests.policies.timeline import listed_schedulers, timeline

# max_loras 1. R0 (A, 3 tokens) runs from 0; at 5 ms R1 (B), R2 (A, 3 tokens) and R3 (base) arrive, in that order.
REQS = [("R0", 0.0, "A", 4, 3), ("R1", 0.005, "B", 4, 1), ("R2", 0.005, "A", 4, 3), ("R3", 0.005, None, 4, 1)]


def admitted_ids(plan):
    return [s.request_id for s, _ in plan.scheduled]


def drain(**params):
    cls = SCHEDULERS.get("drain")
    return cls(cls.Params(**params))


def test_listed(capsys):
    assert "drain" in listed_schedulers(capsys)
    assert SCHEDULERS.get("drain").rule


def test_blocked_request_gets_the_slot_once_the_running_adapter_drains():
    # Step 2 (10 ms): R1 is blocked by A, so R2 (A) is held back while R3 (base) still runs. R0 finishes at 30 ms;
    # step 4 admits R1 (B), and now R2 is the blocked one: it waits for R1 (done at 40 ms) and runs 40-70 ms.
    r, _ = timeline("drain", REQS)
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"R0": 0.0, "R1": 0.03, "R2": 0.04, "R3": 0.01})
    assert r["finish_time_s"].to_dict() == pytest.approx({"R0": 0.03, "R1": 0.04, "R2": 0.07, "R3": 0.02})


def test_vllm_lets_the_running_adapter_jump_ahead_and_break_holds_the_base_model():
    # vllm admits R2 (A) at 10 ms, which keeps A running until 40 ms: R1 waits one step longer than under drain
    r, _ = timeline("vllm", REQS)
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"R0": 0.0, "R1": 0.04, "R2": 0.01, "R3": 0.01})
    # fcfs-break stops at R1: R3 (base) waits behind it until 40 ms, where drain admitted it at 10 ms
    r, _ = timeline("fcfs-break", REQS)
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"R0": 0.0, "R1": 0.03, "R2": 0.04, "R3": 0.04})


def test_min_wait_delays_the_drain():
    run = [running_seq(0, "A")]
    q = [make_seq(1, "B", t=0.0), make_seq(2, "A", t=0.0)]
    v = view(run, q, max_loras=1)
    assert admitted_ids(drain().schedule(v, 0.0)) == [0]  # R1 blocks at once: R2 (A) is held back
    assert admitted_ids(drain(min_wait_s=1.0).schedule(v, 0.5)) == [0, 2]  # R1 too young: skipped as in vllm
    assert admitted_ids(drain(min_wait_s=1.0).schedule(v, 1.0)) == [0]


def test_base_model_requests_behind_the_blocked_one_are_admitted():
    run = [running_seq(0, "A")]
    q = [make_seq(1, "A"), make_seq(2, "B"), make_seq(3, "A"), make_seq(4, None), make_seq(5, "C"), make_seq(6, None)]
    plan = drain().schedule(view(run, q, max_loras=1), 10.0)  # arrivals at 1..6 s
    assert admitted_ids(plan) == [0, 1, 4, 6]  # R1 is ahead of the blocked R2; R3 (A) is held back


def test_params_are_validated():
    with pytest.raises(ConfigError, match="min_wait_s"):
        scenario(scheduler={"name": "drain", "min_wait_s": -1})


def test_case02_drain_bounds_the_starved_adapter_wait():
    # case 02: a steady A stream (5 req/s) with one slot starves B under vllm's skip rule; draining serves it within
    # a couple of seconds of its arrival
    from tests.cases.test_case02_affinity_starvation import case02

    res, b, _ = case02("drain")
    assert b["queue_wait_s"] < 5.0
    assert res.summary["num_completed"] == res.summary["num_requests"]
