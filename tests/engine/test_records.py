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
