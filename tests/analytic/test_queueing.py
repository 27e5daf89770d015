"""Closed-form queueing results the engine must reproduce.

With ``max_num_seqs`` 1, one-token prompts and outputs and a constant step time D, every request is one step of
service D and the replica is an M/D/1 queue: mean wait W_q = rho * D / (2 (1 - rho)) (Pollaczek-Khinchine).
"""

from __future__ import annotations

import numpy as np
import pytest

from lorasim.metrics.summary import weighted_percentile
from tests.helpers import run, scenario


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_mean_wait(rho):
    step_s, n = 0.01, 40_000
    sc = scenario(
        seed=11,
        model={"profile": "llama-3.1-8b_h100-64gb", "step_time": {"kind": "constant", "step_time_s": step_s}},
        adapters={"count": 0},
        workload={"arrivals": {"kind": "poisson", "rate": rho / step_s}, "num_requests": n,
                  "lengths": {"prompt": 1, "output": 1}, "popularity": {"kind": "uniform", "base_share": 1.0}},
        engine={"max_num_seqs": 1, "kv_cache_tokens": 1024},
    )
    res = run(sc, check_invariants=False)
    wq = res.requests["queue_wait_s"].to_numpy()
    expected = rho * step_s / (2 * (1 - rho))
    # standard error of the mean of a correlated queue: generous 8% band at these sample sizes
    assert wq.mean() == pytest.approx(expected, rel=0.08)
    assert res.requests["ttft_s"].mean() == pytest.approx(expected + step_s, rel=0.05)
    # P(wait = 0) = 1 - rho for M/D/1 (an arrival to an idle server starts at once)
    assert (wq == 0).mean() == pytest.approx(1 - rho, abs=0.02)
    # utilisation: busy time / makespan = rho
    assert res.steps["duration_s"].sum() / res.summary["duration_s"] == pytest.approx(rho, abs=0.02)


def test_weighted_percentile_matches_numpy_on_repeated_samples():
    rng = np.random.default_rng(0)
    v = rng.exponential(size=200)
    c = rng.integers(1, 30, size=200)
    full = np.repeat(v, c)
    for q in (0, 1, 37.5, 50, 90, 99, 100):
        assert weighted_percentile(v, c, q) == pytest.approx(np.percentile(full, q), rel=1e-12)
