"""vtc: Virtual Token Counter fairness (Sheng et al., OSDI'24); counters and timelines computed by hand."""

from __future__ import annotations

import pytest

from lorasim.errors import ConfigError
from lorasim.policies import SCHEDULERS
from tests.helpers import run, scenario, single
from tests.policies.helpers import make_seq, running_seq, view
from tests.policies.timeline import listed_schedulers, timeline


def admitted_ids(plan):
    return [s.request_id for s, _ in plan.scheduled]


def vtc(**params):
    cls = SCHEDULERS.get("vtc")
    return cls(cls.Params(**params))


def test_listed(capsys):
    assert "vtc" in listed_schedulers(capsys)
    assert SCHEDULERS.get("vtc").rule


def test_base_model_is_a_client_of_its_own():
    # counters start at 0; ties go to the client whose oldest request is first: base (x1) then A (a1), then A again
    # (10 < 100) for a2; the 4th admission hits max_num_seqs. FCFS would take x1, a1, x2.
    q = [make_seq(1, None, prompt=100), make_seq(2, "A", prompt=10), make_seq(3, None, prompt=10),
         make_seq(4, "A", prompt=10)]
    s = vtc()
    plan = s.schedule(view(waiting=q, max_num_seqs=3), 0.0)
    assert admitted_ids(plan) == [1, 2, 4]
    assert s.counters == {None: 100.0, "A": 20.0}


def test_counters_charge_prompts_at_admission_and_outputs_at_step_end():
    # running R0 (A) decodes one token; R1 (B) is the least served but the cap (1) blocks B: skipped; R2 (A) is
    # admitted (+16 prompt tokens). At the step end R0's token and R2's first token cost 2 each: A = 16 + 4.
    s = vtc()
    v = view([running_seq(0, "A")], [make_seq(1, "B"), make_seq(2, "A")], max_loras=1)
    plan = s.schedule(v, 0.0)
    assert admitted_ids(plan) == [0, 2]
    assert s.counters == {"A": 16.0, "B": 0.0}
    s.on_step_end(plan, 0.01)
    assert s.counters == {"A": 20.0, "B": 0.0}
    assert s.prefetch_order(view(waiting=[make_seq(1, "B")], max_loras=1)) == ["B"]


def test_a_newly_backlogged_client_is_lifted_to_the_least_counter_of_the_others():
    s = vtc()
    b1, b2 = make_seq(1, "B", prompt=10), make_seq(2, "B", prompt=10)
    plan = s.schedule(view(waiting=[b1, b2], max_num_seqs=1), 0.0)  # B alone: no lift; b1 in, B = 10
    s.on_step_end(plan, 0.01)  # b1's first token: B = 12
    assert s.counters == {"B": 12.0}
    c1 = make_seq(3, "C", prompt=10)
    plan = s.schedule(view(waiting=[b2, c1], max_num_seqs=1), 0.01)  # C arrives: lifted 0 -> 12; tie: B first
    assert admitted_ids(plan) == [2]
    assert s.counters == {"B": 22.0, "C": 12.0}
    s.counters["D"] = 100.0  # a returning client keeps a larger counter (max, never lowered)
    plan = s.schedule(view(waiting=[c1, make_seq(4, "D", prompt=10)], max_num_seqs=1), 0.02)
    assert admitted_ids(plan) == [3]
    assert s.counters == {"B": 22.0, "C": 22.0, "D": 100.0}


# max_num_seqs 1, all at 0 in this queue order: A1 (10+10 tokens), B1 (25+1), A2 (10+1), B2 (10+1).
REQS = [("A1", 0.0, "A", 10, 10), ("B1", 0.0, "B", 25, 1), ("A2", 0.0, "A", 10, 1), ("B2", 0.0, "B", 10, 1)]


def test_timeline_output_tokens_count():
    # A1 runs 0-100 ms: A = 10 + 10 x 2 = 30 (nine of its tokens come from bulk-decode steps). At 100 ms B (0) wins:
    # B1, B = 25 + 2 = 27 at 110 ms; 27 < 30, so B2 goes before A2 (B = 39), then A2 at 120 ms.
    r, _ = timeline("vtc", REQS, max_num_seqs=1)
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"A1": 0.0, "B1": 0.1, "A2": 0.12, "B2": 0.11})
    assert r["finish_time_s"].to_dict() == pytest.approx({"A1": 0.1, "B1": 0.11, "A2": 0.13, "B2": 0.12})
    # prompts only (w_out 0): A = 10 < B = 25 at 110 ms, so A2 goes first; FCFS does the same
    for policy, params in (("vtc", {"w_out": 0.0}), ("vllm", None)):
        r, _ = timeline(policy, REQS, params=params, max_num_seqs=1)
        assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"A1": 0.0, "B1": 0.1, "A2": 0.11, "B2": 0.12})


def test_hold_lets_the_running_adapter_drain():
    # max_loras 1, A0 (A, 3 tokens) runs from 0 (A = 4 + 2 = 6 after step 1); at 5 ms B1, A1 (A, 3 tokens) and X
    # (base) arrive: B stays 0 (nobody else queued), A keeps 6, base is lifted to min(0, 6) = 0. At 10 ms B (0) is
    # the least served but blocked by A. skip: X and A1 join, A1 keeps A running until 40 ms, when B1 gets the slot.
    # hold: only X joins; A0 ends at 30 ms, B1 takes the slot, and A1 follows when B1 ends (40 ms).
    reqs = [("A0", 0.0, "A", 4, 3), ("B1", 0.005, "B", 4, 1), ("A1", 0.005, "A", 4, 3), ("X", 0.005, None, 4, 1)]
    r, _ = timeline("vtc", reqs)
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"A0": 0.0, "B1": 0.04, "A1": 0.01, "X": 0.01})
    r, _ = timeline("vtc", reqs, params={"on_cap": "hold"})
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"A0": 0.0, "B1": 0.03, "A1": 0.04, "X": 0.01})


@pytest.mark.parametrize("on_cap", ["skip", "hold"])
def test_case02(on_cap):
    # case 02 (one slot; A: Poisson 5 req/s for 300 s; one B request at 1 s; 128+128 tokens; max_num_seqs 8). With
    # the skip rule VTC cannot help B, whose adapter never gets the slot (the artifact has no adapter cap); holding
    # lets A drain and serves B within seconds.
    sc = scenario(
        adapters={"names": ["A", "B"], "ranks": 16},
        workload={"streams": [
            {"name": "A", "arrivals": {"kind": "poisson", "rate": 5.0}, "duration_s": 300,
             "lengths": {"prompt": 128, "output": 128}, "adapters": ["A"]},
            single(1.0, "B", 128, 128, "B"),
        ]},
        engine={"max_loras": 1, "max_cpu_loras": 2, "max_num_seqs": 8},
        scheduler={"name": "vtc", "on_cap": on_cap},
    )
    res = run(sc, check_invariants=False)
    r = res.requests
    b = r[r["adapter"] == "B"].iloc[0]
    assert res.summary["num_completed"] == res.summary["num_requests"]
    if on_cap == "skip":
        assert b["first_scheduled_time_s"] > r[r["adapter"] == "A"]["arrival_time_s"].max()
    else:
        assert b["queue_wait_s"] < 5.0


def test_params_are_validated():
    p = vtc().params
    assert (p.client, p.w_in, p.w_out, p.on_cap) == ("adapter", 1.0, 2.0, "skip")
    with pytest.raises(ConfigError, match="client"):
        scenario(scheduler={"name": "vtc", "client": "user"})
    with pytest.raises(ConfigError, match="w_out"):
        scenario(scheduler={"name": "vtc", "w_out": -1})
    with pytest.raises(ConfigError, match="on_cap"):
        scenario(scheduler={"name": "vtc", "on_cap": "stop"})


def test_tenant_clients_share_one_counter():
    # tenant T owns A and B; C is a tenant of its own. T's requests (a1 100 tokens, b1 10) and C's (c1 50, c2 50):
    # counters 0: tie -> T (a1 first in queue) = 100; then C (0) c1 = 50; C (50 < 100) c2 = 100; tie T/C at 100 ->
    # T's oldest (b1, queue position 2) before C's (none left): b1. Per adapter, B (0) would go before c2.
    q = [make_seq(1, "A", prompt=100), make_seq(2, "B", prompt=10), make_seq(3, "C", prompt=50),
         make_seq(4, "C", prompt=50)]
    s = vtc(client="tenant", tenants={"T": ["A", "B"]})
    plan = s.schedule(view(waiting=q), 0.0)
    assert admitted_ids(plan) == [1, 3, 4, 2]
    assert s.counters == {"T": 110.0, "C": 100.0}
    s.on_step_end(plan, 0.01)  # one first token each: T +2 x 2, C +2 x 2
    assert s.counters == {"T": 114.0, "C": 104.0}
    assert admitted_ids(vtc().schedule(view(waiting=q), 0.0)) == [1, 2, 3, 4]


def test_tenant_skips_only_the_capped_request():
    # cap 1, A running: T's head b1 needs a second adapter (skipped), its next request a2 uses A and is admitted
    s = vtc(client="tenant", tenants={"T": ["A", "B"]})
    plan = s.schedule(view([running_seq(0, "A")], [make_seq(1, "B"), make_seq(2, "A")], max_loras=1), 0.0)
    assert admitted_ids(plan) == [0, 2]


def test_tenants_are_validated():
    with pytest.raises(ConfigError, match="adapter 'A' is in tenants"):
        scenario(scheduler={"name": "vtc", "client": "tenant", "tenants": {"T": ["A"], "U": ["A"]}})
    with pytest.raises(ConfigError, match="tenants is only used with client: tenant"):
        scenario(scheduler={"name": "vtc", "tenants": {"T": ["A"]}})


def test_tenants_must_name_defined_adapters():
    from lorasim.engine.simulation import Simulation

    for tenants, msg in (({"a": ["lora-0", "lora-9"]}, "tenants.a: adapter 'lora-9' is not defined"),
                         ({"lora-1": ["lora-0"]}, "may not be named like adapter 'lora-1'")):
        with pytest.raises(ConfigError, match=msg):
            Simulation(scenario(adapters={"count": 4, "ranks": 8},
                                scheduler={"name": "vtc", "client": "tenant", "tenants": tenants}))


def test_knobs_without_a_name_belong_to_the_default_policy():
    with pytest.raises(ConfigError, match="flat parameter 'page_rank'"):
        scenario(adapter_memory={"page_rank": 8})
    with pytest.raises(ConfigError, match="vllm parameter 'max_wait_steps'"):
        scenario(scheduler={"max_wait_steps": 3})
    assert scenario(scheduler={"name": "vtc", "w_in": 2.0}).scheduler.params["w_in"] == 2.0
