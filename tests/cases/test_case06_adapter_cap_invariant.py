"""Case 06 (../shared/cases/06-adapter-cap-invariant.yaml; SGLang issue 23141, PRs 25078 and 25567): the
distinct-adapter cap must count every request in the step (steady decodes, continuing chunked-prefill chunks and new
admissions), also while preemption and client cancellations reshuffle the running set.

max_loras 8, max_cpu_loras 16, chunked prefill with a 512-token budget, a KV cache of 14,336 tokens (12 of the 20
requests of 1,024 + 128 tokens fit at full length, 14 by their prompts: decoders outgrow it and are preempted), 20
requests at t=0 over 16 adapters (uniform: 11 distinct ones are drawn), 30% of them cancelled by their client
uniformly 0-6 s after arrival (the run lasts about 6 s, so cancellations hit queued, running and finished
requests). Every scheduler runs with the engine's invariant checker on: each step's plan is re-derived from scratch
(the DecodeGroup members, the continuing prefills and the admissions together) and refused if it holds more than
``max_loras`` adapters.
"""

from __future__ import annotations

import pytest

from lorasim.policies import SCHEDULERS
from tests.helpers import run, scenario

MAX_LORAS = 8
NUM_REQUESTS = 20


def case06(policy: str):
    return scenario(
        adapters={"count": 16, "ranks": 16},
        workload={"arrivals": {"kind": "burst", "at_s": 0.0}, "num_requests": NUM_REQUESTS,
                  "lengths": {"prompt": 1024, "output": 128},
                  "cancel_probability": 0.3, "cancel_after_s": [0.0, 6.0]},
        engine={"max_loras": MAX_LORAS, "max_cpu_loras": 16, "enable_chunked_prefill": True,
                "max_num_batched_tokens": 512, "kv_cache_tokens": 14336},
        scheduler={"name": policy},
    )


@pytest.fixture(scope="module", params=SCHEDULERS.names())
def result(request):
    return run(case06(request.param))  # raises if any step's plan breaks an invariant (max_loras included)


# batch-completion admits only the running adapters while any run: here one adapter at a time, so its steps never
# reach the cap and its running set never outgrows the KV cache
BINDING = [p for p in SCHEDULERS.names() if p != "batch-completion"]
# slora admits only what its worst-case future-memory check lets finish without preemption (S-LoRA's design)
PREEMPTING = [p for p in BINDING if p != "slora"]


def test_distinct_adapters_per_step_within_the_cap(result):
    steps = result.steps
    assert (steps["num_distinct_adapters"] <= MAX_LORAS).all()
    if result.summary["scheduler"] in BINDING:
        assert steps["num_distinct_adapters"].max() == MAX_LORAS  # the cap binds: the case exercises it
    # more adapters were wanted than the cap allows (the workload really covers more than 8 adapters)
    assert result.requests["adapter"].nunique() > MAX_LORAS


def test_no_request_lost(result):
    m, r = result.summary, result.requests
    assert m["num_requests"] == NUM_REQUESTS
    assert m["num_aborted"] == 0 and m["num_unfinished"] == 0
    assert m["num_completed"] + m["num_cancelled"] == NUM_REQUESTS
    assert m["num_completed"] + m["num_aborted"] + m["num_cancelled"] + m["num_unfinished"] == m["num_requests"]
    finished = r["finish_time_s"].notna()
    assert (finished ^ r["cancelled"]).all()  # each request either completed or was cancelled, never both
    assert m["num_cancelled"] > 0


def test_preemption_happened(result):
    if result.summary["scheduler"] not in PREEMPTING:
        pytest.skip("one adapter at a time never outgrows the KV cache (batch-completion); admission reserves the "
                    "final KV of every request (slora)")
    assert result.summary["num_preemptions"] > 0
    assert (result.steps["num_preempted"] > 0).any()
    if result.summary["scheduler"] == "vllm":
        assert run(case06("slora")).summary["num_preemptions"] == 0


def test_cancellations_hit_requests_in_flight():
    # with vllm: some cancelled requests had been scheduled (cancelled while running, or while waiting after a
    # preemption), not only requests still in the queue
    r = run(case06("vllm")).requests
    c = r[r["cancelled"]]
    assert c["first_scheduled_time_s"].notna().any()
