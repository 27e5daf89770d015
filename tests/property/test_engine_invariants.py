"""Hypothesis: small random workloads under every scheduler and both load modes keep every engine invariant
(checked after each step by tests.helpers.InvariantRecorder and the engine's own plan re-derivation) and account
for every request exactly once."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorasim.policies import SCHEDULERS
from tests.helpers import run, scenario

workloads = st.fixed_dictionaries({
    "policy": st.sampled_from(SCHEDULERS.names()),
    "num_requests": st.integers(1, 60),
    "rate": st.floats(0.5, 200.0),
    "num_adapters": st.integers(0, 12),
    "base_share": st.sampled_from([0.0, 0.3, 1.0]),
    "max_loras": st.integers(1, 4),
    "extra_cpu": st.integers(0, 6),
    "max_num_seqs": st.integers(1, 16),
    "budget": st.integers(16, 512),
    "chunked": st.booleans(),
    "kv_tokens": st.integers(64, 4096),
    "prompt_high": st.integers(2, 300),
    "output_high": st.integers(2, 120),
    "load": st.sampled_from(["blocking", "overlapped"]),
    "seed": st.integers(0, 2**16),
})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=workloads)
def test_random_workloads_keep_invariants(w):
    base_share = 1.0 if w["num_adapters"] == 0 else w["base_share"]
    sc = scenario(
        seed=w["seed"],
        adapters={"count": w["num_adapters"], "ranks": [8, 16]},
        workload={"arrivals": {"kind": "poisson", "rate": w["rate"]}, "num_requests": w["num_requests"],
                  "lengths": {"prompt": {"kind": "uniform", "low": 1, "high": w["prompt_high"]},
                              "output": {"kind": "uniform", "low": 1, "high": w["output_high"]}},
                  "popularity": {"kind": "zipf", "s": 1.0, "base_share": base_share}},
        engine={"max_loras": w["max_loras"], "max_cpu_loras": w["max_loras"] + w["extra_cpu"],
                "max_num_seqs": w["max_num_seqs"], "max_num_batched_tokens": w["budget"],
                "enable_chunked_prefill": w["chunked"], "kv_cache_tokens": w["kv_tokens"],
                "adapter_load": w["load"]},
        scheduler={"name": w["policy"]},
    )
    res = run(sc)
    r = res.requests
    assert len(r) == w["num_requests"] == r["request_id"].nunique()
    done, aborted = r[~r["aborted"]], r[r["aborted"]]
    assert len(done) + len(aborted) == len(r)
    assert (aborted["abort_reason"].str.len() > 0).all()
    # a request is aborted only if it can never be served: too long for the KV cache or an unchunkable budget
    total = aborted["prompt_tokens"] + aborted["output_tokens"]
    assert ((total > w["kv_tokens"] // 16 * 16) | (~w["chunked"] & (total > w["budget"]))).all()
    assert (done["finish_time_s"] >= done["first_token_time_s"]).all()
    assert (done["first_token_time_s"] >= done["first_scheduled_time_s"]).all()
    assert (done["first_scheduled_time_s"] >= done["arrival_time_s"]).all()
    # every output token was produced once: ITL samples = output tokens - one first token per request
    assert res.itl_counts.sum() == (done["output_tokens"] - 1).sum()
    # tokens computed = prompts + recomputation; at least every prompt once
    assert res.steps["num_prefill_tokens"].sum() >= done["prompt_tokens"].sum()
    if not r["num_preemptions"].any():
        assert res.steps["num_prefill_tokens"].sum() == done["prompt_tokens"].sum()
        assert res.steps["num_decode_seqs"].sum() == (done["output_tokens"] - 1).sum()
