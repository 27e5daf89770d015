"""sjf: shortest predicted output first, with aging; timelines computed by hand (10 ms steps, free loads)."""

from __future__ import annotations

import pytest

from lorasim.errors import ConfigError
from lorasim.policies import SCHEDULERS
from tests.helpers import scenario
from tests.policies.helpers import make_seq, running_seq, view
from tests.policies.timeline import listed_schedulers, timeline


def admitted_ids(plan):
    return [s.request_id for s, _ in plan.scheduled]


def sjf(**params):
    cls = SCHEDULERS.get("sjf")
    return cls(cls.Params(**params))


def test_listed(capsys):
    assert "sjf" in listed_schedulers(capsys)
    assert SCHEDULERS.get("sjf").rule


def test_order_by_predictor():
    # arrivals 2, 1, 0 s (queue order reversed on purpose), outputs 20, 10, 30
    q = [make_seq(2, None, output=20), make_seq(1, None, output=10), make_seq(0, None, output=30)]
    v = view(waiting=q)
    assert admitted_ids(sjf(aging_tokens_per_s=0).schedule(v, 3.0)) == [1, 2, 0]  # oracle: shortest first
    # aging 100 tok/s: scores 20-100*1, 10-100*2, 30-100*3 = -80, -190, -270: the oldest first
    assert admitted_ids(sjf().schedule(v, 3.0)) == [0, 1, 2]
    assert admitted_ids(sjf(predictor="mean").schedule(v, 3.0)) == [0, 1, 2]  # constant prediction: FCFS
    assert admitted_ids(sjf(predictor="mean", aging_tokens_per_s=0).schedule(v, 3.0)) == [2, 1, 0]  # queue order


def test_oracle_uses_the_remaining_output_of_a_preempted_request():
    back = make_seq(1, None, output=50)
    back.num_output_tokens = 45  # preempted after 45 tokens (recompute): 5 to go
    plan = sjf(aging_tokens_per_s=0).schedule(view(waiting=[make_seq(2, None, output=10), back]), 3.0)
    assert admitted_ids(plan) == [1, 2]


def test_adapter_cap_skips_the_shortest():
    q = [make_seq(1, "B", output=1), make_seq(2, "A", output=5)]
    plan = sjf().schedule(view([running_seq(0, "A")], q, max_loras=1), 3.0)
    assert admitted_ids(plan) == [0, 2]


def test_timeline_shortest_first():
    # max_num_seqs 1, three base requests at 0 with 3, 1 and 2 output tokens: R1 runs 0-10 ms, R2 10-30 ms,
    # R0 30-60 ms. vllm serves them in arrival order: R0 0-30, R1 30-40, R2 40-60.
    reqs = [("R0", 0.0, None, 4, 3), ("R1", 0.0, None, 4, 1), ("R2", 0.0, None, 4, 2)]
    r, _ = timeline("sjf", reqs, max_num_seqs=1)
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"R0": 0.03, "R1": 0.0, "R2": 0.01})
    assert r["finish_time_s"].to_dict() == pytest.approx({"R0": 0.06, "R1": 0.01, "R2": 0.03})
    r, _ = timeline("vllm", reqs, max_num_seqs=1)
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"R0": 0.0, "R1": 0.03, "R2": 0.04})


@pytest.mark.parametrize("aging,first,second", [(0.0, "R2", "R1"), (300.0, "R1", "R2")])
def test_timeline_aging_lets_an_older_long_request_ahead(aging, first, second):
    # max_num_seqs 1: R0 runs 0-20 ms. At 20 ms R1 (4 tokens, arrived 1 ms) and R2 (1 token, arrived 15 ms) wait.
    # Without aging R2 goes first; at 300 tok/s, R1 scores 4 - 300*0.019 = -1.7 < R2's 1 - 300*0.005 = -0.5.
    reqs = [("R0", 0.0, None, 4, 2), ("R1", 0.001, None, 4, 4), ("R2", 0.015, None, 4, 1)]
    r, _ = timeline("sjf", reqs, params={"aging_tokens_per_s": aging}, max_num_seqs=1)
    assert r.loc[first, "first_scheduled_time_s"] == pytest.approx(0.02)
    out_first = 4 if first == "R1" else 1
    assert r.loc[second, "first_scheduled_time_s"] == pytest.approx(0.02 + 0.01 * out_first)
    assert r["finish_time_s"].max() == pytest.approx(0.07)


def test_params_are_validated():
    p = sjf().params
    assert (p.predictor, p.mean_output_tokens, p.aging_tokens_per_s) == ("oracle", 256, 100.0)
    with pytest.raises(ConfigError, match="predictor"):
        scenario(scheduler={"name": "sjf", "predictor": "learned"})
    with pytest.raises(ConfigError, match="aging_tokens_per_s"):
        scenario(scheduler={"name": "sjf", "aging_tokens_per_s": -1})
    with pytest.raises(ConfigError, match="mean_output_tokens"):
        scenario(scheduler={"name": "sjf", "predictor": "mean", "mean_output_tokens": 0})
