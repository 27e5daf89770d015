"""multi-queue: Chameleon's size-based multi-level queues with a starvation guard; timelines computed by hand (10 ms
steps, free loads, every plan re-checked against the engine invariants)."""

from __future__ import annotations

import pytest

from lorasim.errors import ConfigError
from lorasim.policies import SCHEDULERS
from tests.helpers import scenario
from tests.policies.helpers import make_seq, running_seq, view
from tests.policies.timeline import listed_schedulers, timeline


def admitted_ids(plan):
    return [s.request_id for s, _ in plan.scheduled]


def mq(**params):
    cls = SCHEDULERS.get("multi-queue")
    return cls(cls.Params(**params))


def test_listed(capsys):
    assert "multi-queue" in listed_schedulers(capsys)
    assert SCHEDULERS.get("multi-queue").rule


def test_levels_and_predictors():
    s = mq(size_bounds_tokens=[10, 20])
    # oracle sizes: 4+6=10 -> queue 0 (bound inclusive); 4+7=11 -> 1; 10+10=20 -> 1; 15+6=21 -> 2
    sizes = [(4, 6, 0), (4, 7, 1), (10, 10, 1), (15, 6, 2)]
    for prompt, output, want in sizes:
        assert s.level(make_seq(0, None, prompt, output)) == want
    p = mq(size_bounds_tokens=[10, 20], predictor="prompt_only")
    assert [p.level(make_seq(0, None, pr, o)) for pr, o, _ in sizes] == [0, 0, 0, 1]


def test_order_smallest_queue_first_fcfs_within():
    # bounds [10]: sizes 30 (R0), 8 (R1), 5 (R2), 12 (R3); queue 0 = R1, R2 (in queue order), queue 1 = R0, R3
    q = [make_seq(0, None, 20, 10), make_seq(1, None, 4, 4), make_seq(2, None, 4, 1), make_seq(3, None, 8, 4)]
    v = view(waiting=q)
    assert admitted_ids(mq(size_bounds_tokens=[10], max_wait_s=None).schedule(v, 1.0)) == [1, 2, 0, 3]
    # prompt_only: prompts 20, 4, 4, 8 -> queue 0 = R1, R2, R3; queue 1 = R0
    assert admitted_ids(mq(size_bounds_tokens=[10], predictor="prompt_only", max_wait_s=None)
                        .schedule(v, 1.0)) == [1, 2, 3, 0]


def test_overdue_requests_first_in_queue_order():
    # arrivals 0, 1, 2, 3 s; at t=3.5 with max_wait_s 2: R0 (big) and R1 (big) waited 3.5 and 2.5 s > 2: overdue
    q = [make_seq(0, None, 20, 10), make_seq(1, None, 20, 10), make_seq(2, None, 4, 1), make_seq(3, None, 4, 1)]
    assert admitted_ids(mq(size_bounds_tokens=[10], max_wait_s=2.0).schedule(view(waiting=q), 3.5)) == [0, 1, 2, 3]
    # at t=2.5 only R0 is overdue
    assert admitted_ids(mq(size_bounds_tokens=[10], max_wait_s=2.0).schedule(view(waiting=q), 2.5)) == [0, 2, 3, 1]


def test_adapter_cap_skips_the_smallest():
    # A runs, max_loras 1: the small B request (queue 0) is skipped, the big A request (queue 1) admitted
    q = [make_seq(1, "B", 4, 1), make_seq(2, "A", 30, 30)]
    plan = mq(size_bounds_tokens=[10]).schedule(view([running_seq(0, "A")], q, max_loras=1), 3.0)
    assert admitted_ids(plan) == [0, 2]


def test_budget_stops_the_scan():
    # the smallest request does not fit what the budget leaves without chunking: the scan stops there
    q = [make_seq(1, None, 100, 1), make_seq(2, None, 4, 1)]
    plan = mq(size_bounds_tokens=[50], max_wait_s=None).schedule(
        view(waiting=q, max_num_batched_tokens=64, chunked=False), 0.0)
    assert admitted_ids(plan) == [2]  # R2 (size 5, queue 0) first; R1 (size 101) then does not fit 60 tokens: stop


def test_timeline_small_first():
    # max_num_seqs 1, bounds [6]; at t=0: R0 (4+3 = 7, queue 1), S1 and S2 (4+1 = 5, queue 0). multi-queue: S1 0-10,
    # S2 10-20, R0 20-50 ms (3 steps: prefill + 2 decodes). vllm: R0 0-30, S1 30-40, S2 40-50.
    reqs = [("R0", 0.0, None, 4, 3), ("S1", 0.0, None, 4, 1), ("S2", 0.0, None, 4, 1)]
    r, _ = timeline("multi-queue", reqs, {"size_bounds_tokens": [6]}, max_num_seqs=1)
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"R0": 0.02, "S1": 0.0, "S2": 0.01})
    assert r["finish_time_s"].to_dict() == pytest.approx({"R0": 0.05, "S1": 0.01, "S2": 0.02})
    r, _ = timeline("vllm", reqs, max_num_seqs=1)
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"R0": 0.0, "S1": 0.03, "S2": 0.04})


SMALL_STREAM = [("R0", 0.0, None, 4, 3)] + [(f"S{k}", 0.01 * k, None, 4, 1) for k in range(6)]


def test_timeline_starvation_guard():
    # max_num_seqs 1; a small request (one step) arrives every 10 ms from t=0, so queue 0 is never empty at a step
    # start. Guard 25 ms: at the step starting at 30 ms R0 has waited 30 ms > 25 ms and goes first (30-60 ms, it is
    # not preempted by later small requests); S3, S4, S5 follow at 60, 70, 80 ms.
    r, _ = timeline("multi-queue", SMALL_STREAM, {"size_bounds_tokens": [6], "max_wait_s": 0.025}, max_num_seqs=1)
    want = {"R0": 0.03, "S0": 0.0, "S1": 0.01, "S2": 0.02, "S3": 0.06, "S4": 0.07, "S5": 0.08}
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx(want)
    assert r.loc["R0", "finish_time_s"] == pytest.approx(0.06)


def test_timeline_without_guard_big_request_waits_for_the_stream():
    r, _ = timeline("multi-queue", SMALL_STREAM, {"size_bounds_tokens": [6], "max_wait_s": None}, max_num_seqs=1)
    want = {"R0": 0.06, "S0": 0.0, "S1": 0.01, "S2": 0.02, "S3": 0.03, "S4": 0.04, "S5": 0.05}
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx(want)


def test_timeline_adapter_cap_skip_and_no_preemption():
    # max_loras 1, bounds [6]; at t=0: A1 (A, size 5, queue 0), A3 (A, size 20, queue 1), B2 (B, size 5, queue 0).
    # Step 1: order A1, B2, A3; A1 takes the step's one adapter, B2 is skipped (cap), A3 (A) joins. A1 finishes in
    # step 1; A3 decodes 15 more steps (to 160 ms) and is not preempted for the smaller B2, which the cap keeps out
    # until A3 has finished: B2 runs 160-170 ms.
    reqs = [("A1", 0.0, "A", 4, 1), ("A3", 0.0, "A", 4, 16), ("B2", 0.0, "B", 4, 1)]
    r, steps = timeline("multi-queue", reqs, {"size_bounds_tokens": [6]})
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"A1": 0.0, "A3": 0.0, "B2": 0.16})
    assert r["finish_time_s"].to_dict() == pytest.approx({"A1": 0.01, "A3": 0.16, "B2": 0.17})
    assert (steps["num_distinct_adapters"] <= 1).all()


def test_params_validated():
    with pytest.raises(ConfigError, match="size_bounds_tokens"):
        scenario(scheduler={"name": "multi-queue", "size_bounds_tokens": [2048, 512]})
    with pytest.raises(ConfigError, match="predictor"):
        scenario(scheduler={"name": "multi-queue", "predictor": "magic"})
    with pytest.raises(ConfigError, match="max_wait_s"):
        scenario(scheduler={"name": "multi-queue", "max_wait_s": -1})
    sc = scenario(scheduler={"name": "multi-queue", "size_bounds_tokens": [100], "max_wait_s": None})
    assert sc.scheduler.params == {"predictor": "oracle", "size_bounds_tokens": [100], "max_wait_s": None}
