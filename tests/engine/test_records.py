"""``output.records``: ``requests`` keeps no per-step table but the same requests and the same summary (step-derived
metrics from running totals)."""

from __future__ import annotations

import pandas as pd
import pytest

import lorasim
from lorasim.errors import ConfigError


@pytest.mark.parametrize("overrides", [["workload.num_requests=500"],
                                       ["workload.num_requests=300", "workload.arrivals.rate=0.5"],  # steady runs
                                       ["workload.num_requests=300", "engine.kv_cache_tokens=6000"]])  # preemption
def test_requests_records_keep_the_summary(overrides, tmp_path):
    full = lorasim.simulate(lorasim.load_scenario(None, overrides=overrides))
    lean = lorasim.simulate(lorasim.load_scenario(None, overrides=[*overrides, "output.records=requests"]))
    assert len(lean.steps) == 0 and len(full.steps) > 0
    pd.testing.assert_frame_equal(full.requests, lean.requests)
    a, b = full.summary, lean.summary
    assert set(a) == set(b)
    for k, v in a.items():
        if k == "mean_num_running":  # a running sum instead of pandas' pairwise sum
            assert b[k] == pytest.approx(v, rel=1e-12)
        else:
            assert b[k] == v or (v != v and b[k] != b[k]), k
    assert b["num_steps"] == len(full.steps)
    lean.write(tmp_path)
    assert not (tmp_path / "steps.parquet").exists() and (tmp_path / "requests.parquet").exists()


def test_unknown_records_value_is_refused():
    with pytest.raises(ConfigError, match="output.records"):
        lorasim.load_scenario(None, overrides=["output.records=everything"])


def test_slo_attainment_and_goodput_by_hand():
    from tests.helpers import run, scenario, single
    from tests.policies.timeline import FREE_LINKS

    # constant 10 ms steps, max_num_seqs 1: R0 (prompt 4, output 3) ttft 10 ms, done 30 ms; R1 arrives at 0, waits:
    # ttft 40 ms, done 50 ms (output 2); R2 (output 1) ttft 60 ms. TTFT SLO 45 ms: R0 and R1 meet it.
    sc = scenario(model={"profile": "llama-3.1-8b_h100-64gb", "step_time": {"kind": "constant", "step_time_s": 0.01}},
                  adapters={"names": ["A"], "ranks": 8},
                  workload={"streams": [single(0.0, "A", 4, 3), single(0.0, "A", 4, 2), single(0.0, "A", 4, 1)]},
                  engine={"max_loras": 1, "max_num_seqs": 1, "kv_cache_tokens": 4096, **FREE_LINKS},
                  metrics={"ttft_slo_s": 0.045})
    s = run(sc).summary
    assert s["slo_attainment"] == pytest.approx(2 / 3)
    assert s["goodput_rps"] == pytest.approx(2 / s["duration_s"])
    # a TPOT SLO of 5 ms: R0 (3 tokens in 30 ms: 10 ms per token after the first) and R1 miss; R2 has one token
    s2 = run(sc.model_copy(update={"metrics": sc.metrics.model_copy(update={"ttft_slo_s": None,
                                                                            "tpot_slo_s": 0.005})})).summary
    assert s2["slo_attainment"] == pytest.approx(1 / 3)
    assert "slo_attainment" not in lorasim.simulate(lorasim.load_scenario(None, overrides=[
        "workload.num_requests=20"])).summary
