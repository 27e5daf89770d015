"""edf: earliest TTFT deadline first; timelines computed by hand (10 ms steps, free loads)."""

from __future__ import annotations

import pytest

from lorasim.errors import ConfigError
from lorasim.policies import SCHEDULERS
from tests.helpers import scenario
from tests.policies.helpers import make_seq, running_seq, view
from tests.policies.timeline import listed_schedulers, timeline


def admitted_ids(plan):
    return [s.request_id for s, _ in plan.scheduled]


def edf(**params):
    cls = SCHEDULERS.get("edf")
    return cls(cls.Params(**params))


def test_listed(capsys):
    assert "edf" in listed_schedulers(capsys)
    assert SCHEDULERS.get("edf").rule


def test_order_by_deadline():
    # deadlines: R1 (A) 0.0 + 1.0 = 1.0; R2 (fast) 0.5 + 0.1 = 0.6; R3 (base) 0.2 + 1.0 = 1.2
    q = [make_seq(1, "A", t=0.0), make_seq(2, "fast", t=0.5), make_seq(3, None, t=0.2)]
    plan = edf(ttft_slo_s_by_adapter={"fast": 0.1}).schedule(view(waiting=q), 0.6)
    assert admitted_ids(plan) == [2, 1, 3]
    assert admitted_ids(edf().schedule(view(waiting=q), 0.6)) == [1, 3, 2]  # one SLO: arrival order


def test_equal_deadlines_go_by_arrival_then_queue_order():
    q = [make_seq(1, "A", t=0.5), make_seq(2, "B", t=0.25), make_seq(3, "B", t=0.25)]
    plan = edf(ttft_slo_s_by_adapter={"A": 0.25, "B": 0.5}).schedule(view(waiting=q), 0.6)  # all due at 0.75
    assert admitted_ids(plan) == [2, 3, 1]


def test_adapter_cap_skips_the_most_urgent():
    q = [make_seq(1, "fast", t=0.0), make_seq(2, "A", t=0.0)]
    plan = edf(ttft_slo_s_by_adapter={"fast": 0.1}).schedule(view([running_seq(0, "A")], q, max_loras=1), 0.1)
    assert admitted_ids(plan) == [0, 2]


REQS = [("R0", 0.0, "A", 4, 2), ("R1", 0.001, "A", 4, 1), ("R2", 0.005, "F", 4, 1)]


def test_timeline_tight_slo_overtakes():
    # max_num_seqs 1: R0 runs 0-20 ms. At 20 ms R1 (A, due 1.001 s) and R2 (F, SLO 5 ms: due 10 ms) wait: R2 first.
    r, _ = timeline("edf", REQS, params={"ttft_slo_s_by_adapter": {"F": 0.005}}, adapters=("A", "F"),
                    max_num_seqs=1)
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"R0": 0.0, "R1": 0.03, "R2": 0.02})
    assert r["finish_time_s"].to_dict() == pytest.approx({"R0": 0.02, "R1": 0.04, "R2": 0.03})


def test_timeline_one_slo_is_fcfs():
    for policy in ("edf", "vllm"):
        r, _ = timeline(policy, REQS, adapters=("A", "F"), max_num_seqs=1)
        assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"R0": 0.0, "R1": 0.02, "R2": 0.03})


def test_params_are_validated():
    p = edf().params
    assert p.ttft_slo_s == 1.0 and p.ttft_slo_s_by_adapter == {}
    with pytest.raises(ConfigError, match="ttft_slo_s_by_adapter"):
        scenario(scheduler={"name": "edf", "ttft_slo_s_by_adapter": {"A": 0}})
    with pytest.raises(ConfigError, match="ttft_slo_s"):
        scenario(scheduler={"name": "edf", "ttft_slo_s": -1.0})
    sc = scenario(scheduler={"name": "edf", "ttft_slo_s": 0.5, "ttft_slo_s_by_adapter": {"A": 0.25}})
    assert sc.scheduler.build().params.ttft_slo_s_by_adapter == {"A": 0.25}
