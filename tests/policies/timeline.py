"""Hand-computable engine runs for the scheduler tests: constant 10 ms steps, free adapter loads, no request
overhead, ample KV, every plan re-checked against the engine invariants (``tests.helpers.run``)."""

from __future__ import annotations

import json

import pandas as pd

from lorasim.cli import main
from tests.helpers import run, scenario, single

STEP_S = 0.01
FREE_LINKS = {"disk_to_cpu": {"overhead_s": 0.0, "bandwidth_bytes_per_s": float("inf")},
              "cpu_to_gpu": {"overhead_s": 0.0, "bandwidth_bytes_per_s": float("inf")}}


def timeline(policy: str, requests: list[tuple], params: dict | None = None, adapters=("A", "B"),
             **engine) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run ``requests`` under ``policy``.

    Args:
        policy: scheduler name.
        requests: ``(name, arrival_s, adapter or None, prompt_tokens, output_tokens)`` each.
        params: the scheduler's parameters.
        adapters: adapter names of the scenario.
        **engine: ``engine`` section overrides (default: ``max_loras`` 1, 4096 KV tokens, free loads).

    Returns:
        ``(requests indexed by name, steps)``.
    """
    streams = [single(at, a, p, o, name) for name, at, a, p, o in requests]
    sc = scenario(
        model={"profile": "llama-3.1-8b_h100-64gb", "step_time": {"kind": "constant", "step_time_s": STEP_S}},
        adapters={"names": list(adapters), "ranks": 8},
        workload={"streams": streams},
        engine={"max_loras": 1, "kv_cache_tokens": 4096, **FREE_LINKS, **engine},
        scheduler={"name": policy, **(params or {})},
    )
    res = run(sc)
    # request ids follow arrival order, stream order among simultaneous arrivals
    names = [requests[i][0] for i in sorted(range(len(requests)), key=lambda i: (requests[i][1], i))]
    r = res.requests.set_index("request_id").sort_index()
    r.index = names
    assert res.summary["num_completed"] == len(requests) and not r["aborted"].any()
    return r, res.steps


def listed_schedulers(capsys) -> list[str]:
    """The scheduler names ``lorasim policies --json`` prints."""
    try:
        main(["policies", "--json"])
    except SystemExit as e:
        assert e.code == 0
    return json.loads(capsys.readouterr().out)["scheduler"]
