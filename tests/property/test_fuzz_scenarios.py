"""Fuzzing (issue 7): hypothesis draws small valid scenarios across workload (streams, cancellation, lengths),
engine, scheduler, eviction, adapter memory, client limit, horizon and cluster settings. Every one must run without
an exception, keep every replica's invariants after every step (``InvariantRecorder`` and the engine's plan
re-derivation), account for every request exactly once, and give the same tables when run again."""

from __future__ import annotations

from collections import Counter

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorasim.policies import ADAPTER_MEMORIES, EVICTIONS, ROUTERS, SCHEDULERS
from tests.helpers import InvariantRecorder, run, scenario

scenarios = st.fixed_dictionaries({
    "scheduler": st.sampled_from(SCHEDULERS.names()),
    "eviction": st.sampled_from(EVICTIONS.names()),
    "memory": st.sampled_from(ADAPTER_MEMORIES.names()),
    "router": st.sampled_from(ROUTERS.names()),
    "replicas": st.integers(1, 3),
    "num_requests": st.integers(1, 50),
    "arrivals": st.sampled_from(["poisson", "gamma", "burst"]),
    "rate": st.floats(1.0, 100.0),
    "num_adapters": st.integers(0, 8),
    "base_share": st.sampled_from([0.0, 0.3]),
    "max_loras": st.integers(1, 3),
    "extra_cpu": st.integers(0, 4),
    "max_num_seqs": st.integers(1, 12),
    "budget": st.integers(32, 512),
    "chunked": st.booleans(),
    "kv_blocks": st.integers(8, 200),
    "prompt_high": st.integers(2, 200),
    "output_high": st.integers(2, 60),
    "load": st.sampled_from(["blocking", "overlapped"]),
    "cancel": st.sampled_from([0.0, 0.3]),
    "max_connections": st.sampled_from([None, 5, 40]),
    "horizon_s": st.sampled_from([None, 2.0]),
    "seed": st.integers(0, 2**16),
})


SEEN: Counter = Counter()  # what the examples exercised


def activation(w) -> str:
    """``engine.adapter_activation``, from the drawn seed's parity (a new drawn key would change every example)."""
    return "vllm" if w["seed"] % 2 else "step"


def pinned(w) -> list[str]:
    """``eviction.pinned``: lora-0 in a third of the examples that allow it (fewer pinned than ``max_loras``), from
    the drawn seed like :func:`activation`."""
    return ["lora-0"] if w["seed"] % 3 == 0 and w["num_adapters"] and w["max_loras"] >= 2 else []


def build(w):
    n_ad = w["num_adapters"]
    SEEN["pinned"] += bool(pinned(w))
    SEEN["vllm_activation_evicting"] += activation(w) == "vllm" and n_ad > w["max_loras"]
    base = 1.0 if n_ad == 0 else w["base_share"]
    arrivals = ({"kind": "burst", "at_s": 0.0} if w["arrivals"] == "burst"
                else {"kind": w["arrivals"], "rate": w["rate"]})
    kv_tokens = w["kv_blocks"] * 16
    if w["memory"] == "unified":  # room for a step's adapters (40 blocks each at rank 16) beside the requests
        kv_tokens += w["max_loras"] * 48 * 16
    workload = {"arrivals": arrivals, "num_requests": w["num_requests"],
                "lengths": {"prompt": {"kind": "uniform", "low": 1, "high": w["prompt_high"]},
                            "output": {"kind": "uniform", "low": 1, "high": w["output_high"]}},
                "popularity": {"kind": "zipf", "s": 1.0, "base_share": base}}
    if w["cancel"]:
        workload.update(cancel_probability=w["cancel"], cancel_after_s=[0.0, 3.0])
    extra = {} if w["horizon_s"] is None else {"horizon_s": w["horizon_s"]}
    return scenario(
        seed=w["seed"], adapters={"count": n_ad, "ranks": [8, 16]}, workload=workload,
        engine={"max_loras": w["max_loras"], "max_cpu_loras": w["max_loras"] + w["extra_cpu"],
                "max_lora_rank": 16, "max_num_seqs": w["max_num_seqs"], "max_num_batched_tokens": w["budget"],
                "enable_chunked_prefill": w["chunked"], "kv_cache_tokens": kv_tokens, "adapter_load": w["load"],
                "adapter_activation": activation(w)},
        scheduler={"name": w["scheduler"]}, eviction={"name": w["eviction"], "pinned": pinned(w)},
        adapter_memory={"name": w["memory"]}, client={"max_connections": w["max_connections"]},
        cluster={"replicas": w["replicas"], "router": {"name": w["router"]}}, **extra)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(w=scenarios)
def test_random_valid_scenarios_run_and_account_for_every_request(w):
    sc = build(w)
    rec = InvariantRecorder()
    res = run(sc, recorder=rec)
    s, r = res.summary, res.requests
    n = w["num_requests"]
    assert len(r) == n == r["request_id"].nunique()
    assert s["num_completed"] + s["num_aborted"] + s["num_cancelled"] + s["num_unfinished"] == n
    if w["horizon_s"] is None:
        assert s["num_unfinished"] == 0
    assert (r.loc[r["aborted"], "abort_reason"].str.len() > 0).all()
    assert set(r["replica"]) <= set(range(w["replicas"])) | {-1}
    assert r.loc[r["replica"] == -1, "unfinished"].all()  # -1: cut off by horizon_s before the router saw it
    again = run(sc)
    pd.testing.assert_frame_equal(r, again.requests)
    pd.testing.assert_frame_equal(res.steps, again.steps)
    SEEN["runs"] += 1
    SEEN["clusters"] += w["replicas"] > 1
    SEEN["unified"] += w["memory"] == "unified"
    SEEN["cancelled"] += s["num_cancelled"] > 0
    SEEN["client_aborts"] += r["abort_reason"].str.startswith("client").any()
    SEEN["unfinished"] += s["num_unfinished"] > 0
    SEEN["preempted"] += s["num_preemptions"] > 0


def test_the_examples_covered_the_settings():
    assert SEEN["runs"] == 60
    for k in ("clusters", "unified", "cancelled", "client_aborts", "unfinished", "preempted",
              "vllm_activation_evicting", "pinned"):
        assert SEEN[k] > 0, (k, SEEN)
