"""The fitting machinery without data: the batch replay, the NNLS solver, run splits."""

from __future__ import annotations

import numpy as np
import pytest

from lorasim.perf._regress import fit_relative, held_out, mape, nnls_gram, r2, sig
from lorasim.perf._replay import Replay, ReplayError, simulate


@pytest.mark.parametrize(("p", "l_out", "n", "seqs"), [(5, 100, 4096, 220), (111, 50, 50, 1), (407, 1, 300, 100),
                                                       (3000, 3, 4, 256)])
def test_simulated_totals_are_exact(p, l_out, n, seqs):
    steps = simulate(p, l_out, n, 2048, seqs)
    assert sum(s.num_prefill_tokens for s in steps) == n * p
    assert sum(s.num_decode_seqs for s in steps) == n * (l_out - 1)
    assert sum(s.num_decode_context_tokens for s in steps) == n * sum(p + g for g in range(1, l_out))
    assert all(s.num_tokens <= 2048 for s in steps)
    assert all(s.num_decode_seqs + s.num_prefill_seqs <= seqs + 1 for s in steps)  # + one partial chunk


def test_chunked_prompt_attention_work():
    # One 3,000-token prompt, budget 2,048: chunks 2,048 then 952.
    steps = simulate(3000, 2, 1, 2048, 1)
    assert [s.num_prefill_tokens for s in steps] == [2048, 952, 0]
    assert steps[0].prefill_attention_work == 2048 * 2048
    assert steps[1].prefill_attention_work == 952 * 3000
    assert steps[2].num_decode_seqs == 1 and steps[2].num_decode_context_tokens == 3001


def test_replay_from_logged_tokens_reproduces_the_arrival_stagger():
    # 5-token prompts, 3 outputs; requests trickle in: 2 first, then 3.
    r = Replay(5, 3, 5)
    logged = [10, 2 + 15, 5, 3]
    comps = [r.advance(b - r.num_decoding) for b in logged]
    assert [c.num_decode_seqs for c in comps] == [0, 2, 5, 3]
    assert [c.num_prefill_seqs for c in comps] == [2, 3, 0, 0]
    assert r.done and sorted(r.finished) == [(2, 0, 2), (3, 1, 3)]


def test_replay_rejects_impossible_steps():
    r = Replay(5, 3, 2)
    r.advance(10)
    with pytest.raises(ReplayError):
        r.advance(-1)
    with pytest.raises(ReplayError):
        Replay(5, 3, 1).advance(10)  # two prompts' worth but one request


def test_nnls_recovers_non_negative_coefficients():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(200, 3))
    y = x @ np.array([2.0, 0.0, 0.5]) + 1.0
    obs = y.copy()
    coef = fit_relative(np.c_[np.ones(200), x], y, obs, np.ones(200))
    assert coef == pytest.approx([1.0, 2.0, 0.0, 0.5], abs=1e-9)
    # A truly negative effect is clamped at zero, not fitted negative.
    g = np.array([[1.0, 0.9], [0.9, 1.0]])
    assert (nnls_gram(g, np.array([1.0, -0.5])) >= 0).all()


def test_metrics_split_and_rounding():
    assert mape(np.array([110.0]), np.array([100.0])) == pytest.approx(10.0)
    assert r2(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])) == 1.0
    assert mape(np.array([]), np.array([])) is None
    names = [f"run{i}" for i in range(10)] + ["solo"]
    groups = ["a"] * 10 + ["b"]
    assert held_out(names, groups) == {"run2", "run7"}
    assert sig(0.123456789) == 0.123457 and sig(0.0) == 0.0


def test_scheduler_skip_fit_recovers_a_known_slope():
    """Loading-benchmark layout (N requests with their own adapters, max_loras 1, L steps each): while request k
    decodes, N-1-k wait and are skipped every step. Logged scheduler times of 23 us + 0.2 us per waiting request
    (plus outliers at each request's first two steps) give back 0.2 us = 0.0002 ms."""
    import pandas as pd

    from lorasim.perf.fit import SKIP_EXPERIMENT, fit_scheduler_skip_ms

    rng = np.random.default_rng(0)
    n, out_len, runs, steps = 20, 10, [], []
    for r in range(6):
        name = f"run{r}"
        runs.append({"run_dir": name, "model": "m", "experiment": SKIP_EXPERIMENT, "max_loras": 1,
                     "num_prompts": n, "synthetic_output_len": out_len})
        i = np.arange(n * out_len + 1)
        waiting = np.clip(n - 1 - i // out_len, 0, None)
        t_us = 23.0 + 0.2 * waiting + rng.normal(0, 0.3, len(i))
        t_us[i % out_len < 2] += 500.0  # admission and adapter load: left out by the fit
        warm = pd.DataFrame({"run_dir": name, "ts": np.arange(5.0), "unique_adapters": 0, "scheduler_time_s": 1e-5})
        lora = pd.DataFrame({"run_dir": name, "ts": 10.0 + i, "unique_adapters": 1, "scheduler_time_s": t_us / 1e6})
        steps += [warm, lora]
    runs.append({"run_dir": "other", "model": "m", "experiment": "predictor_default_latency", "max_loras": 1,
                 "num_prompts": n, "synthetic_output_len": out_len})
    value, report = fit_scheduler_skip_ms(pd.DataFrame(runs), pd.concat(steps), "m")
    assert value == pytest.approx(0.0002, rel=0.03)
    assert report["scheduler_skip_train_runs"] == 5 and report["scheduler_skip_test_runs"] == 1
    assert report["scheduler_time_intercept_ms"] == pytest.approx(0.023, rel=0.03)
