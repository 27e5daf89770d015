"""dlora: merged single-adapter batches at base-model cost, switch costs, credit-based unmerge."""

from __future__ import annotations

import pytest

from lorasim.policies import SCHEDULERS
from tests.helpers import run, scenario, single
from tests.policies.helpers import make_seq, running_seq, view
from tests.policies.timeline import FREE_LINKS, listed_schedulers, timeline


def dlora(**params):
    cls = SCHEDULERS.get("dlora")
    return cls(cls.Params(**params))


def test_listed(capsys):
    assert "dlora" in listed_schedulers(capsys)


def test_merges_the_dominant_adapter_and_charges_the_switch_once():
    s = dlora(switch_s=0.02)
    q = [make_seq(i, "A") for i in range(9)] + [make_seq(9, "B")]  # A holds 9/10 >= 0.9
    plan = s.schedule(view(waiting=q), 0.0)
    assert s.merged == "A" and plan.merged == "A" and plan.extra_time_s == 0.02
    assert {x.adapter for x, _ in plan.scheduled} == {"A"}  # B is passed over
    plan2 = s.schedule(view([running_seq(i, "A") for i in range(9)], [make_seq(9, "B")]), 0.01)
    assert plan2.merged == "A" and plan2.extra_time_s == 0.0


def test_merging_preempts_other_clients_last_first():
    s = dlora()
    running = [running_seq(0, "B"), running_seq(1, "A"), running_seq(2, None)]
    plan = s.schedule(view(running, [make_seq(i, "A") for i in range(3, 30)]), 0.0)
    assert [x.request_id for x in plan.preempted] == [2, 0] and not plan.scheduled


def test_below_the_share_stays_unmerged():
    s = dlora()
    q = [make_seq(i, "A") for i in range(8)] + [make_seq(8, "B"), make_seq(9, None)]  # 8/10 < 0.9
    plan = s.schedule(view(waiting=q), 0.0)
    assert s.merged is None and plan.merged is None and plan.extra_time_s == 0.0


def runs(policy: str, adapter):
    """Eight identical requests at t=0 on the real Llama-3.1-8B step-time model (LoRA enabled)."""
    sc = scenario(adapters={"names": ["A"], "ranks": 16}, workload={"streams": [single(0.0, adapter, 64, 8)
                                                                                for _ in range(8)]},
                  engine={"max_loras": 1, "enable_lora": True, **FREE_LINKS},
                  scheduler={"name": policy, **({"switch_s": 0.005} if policy == "dlora" else {})})
    return run(sc)


def test_merged_steps_cost_what_base_model_steps_cost():
    base = runs("vllm", None).steps["duration_s"].to_numpy()
    lora = runs("vllm", "A").steps["duration_s"].to_numpy()
    merged = runs("dlora", "A").steps["duration_s"].to_numpy()
    assert len(base) == len(lora) == len(merged) == 8
    assert (lora > base).all()  # LoRA kernels cost time
    assert merged[0] == pytest.approx(base[0] + 0.005)  # the merge, once
    assert merged[1:] == pytest.approx(base[1:])


def test_credit_ends_merged_mode():
    # 9 A requests (output 100) and one B (output 2) at 0; constant 10 ms steps, switch 10 ms, max_credit 45 ms.
    # t=0: merge A (step 0 lasts 20 ms). B's credit: 20 ms at 20, 30 at 30, 40 at 40, 50 >= 45 at 50 ms: unmerge;
    # step [50, 70] (switch) admits B: first token at 70 ms, done at 80 ms. No re-merge before 95 ms.
    reqs = [(f"A{i}", 0.0, "A", 4, 100) for i in range(9)] + [("B", 0.0, "B", 4, 2)]
    r, steps = timeline("dlora", reqs, params={"max_credit_s": 0.045, "switch_s": 0.01}, max_loras=2)
    assert r.loc["B", "first_scheduled_time_s"] == pytest.approx(0.05)
    assert r.loc["B", "first_token_time_s"] == pytest.approx(0.07)
    assert r.loc["B", "finish_time_s"] == pytest.approx(0.08)
    assert r.loc["B", "num_preemptions"] == 0
    assert steps["duration_s"].iloc[0] == pytest.approx(0.02)
