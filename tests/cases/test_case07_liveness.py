"""Case 07 (../shared/cases/07-liveness-one-slot.yaml, vLLM issue 11077): one GPU slot, alternating adapters.

max_loras 1, max_cpu_loras 4096, max_lora_rank 32; 64 requests of 64+64 tokens alternating over 2 or 8 adapters.
Every request must complete under every scheduler, with per-step invariants re-checked.
"""

from __future__ import annotations

import pytest

from lorasim.policies import SCHEDULERS
from tests.helpers import run, scenario


@pytest.mark.parametrize("num_adapters", [2, 8])
@pytest.mark.parametrize("policy", SCHEDULERS.names())
def test_every_request_completes(tmp_path, policy, num_adapters):
    trace = tmp_path / "alternating.csv"
    rows = ["arrival_time_s,prompt_tokens,output_tokens,adapter"]
    rows += [f"{i * 0.01:.2f},64,64,lora-{i % num_adapters}" for i in range(64)]
    trace.write_text("\n".join(rows) + "\n")
    sc = scenario(
        adapters={"count": num_adapters, "ranks": 32},
        workload={"kind": "trace", "path": str(trace)},
        engine={"max_loras": 1, "max_cpu_loras": 4096, "max_lora_rank": 32},
        scheduler={"name": policy},
    )
    res = run(sc)
    r = res.requests
    assert len(r) == 64 and res.summary["num_completed"] == 64 and not r["aborted"].any()
    assert (res.steps["num_distinct_adapters"] <= 1).all()
    # with one slot, every switch of adapter is a GPU load: at least one load per adapter
    assert res.summary["gpu_adapter_loads"] >= num_adapters
