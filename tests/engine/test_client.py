"""The benchmark client's connection limit (``client.max_connections``, ``client.time_wait_s``): hand-computed."""

from __future__ import annotations

import pytest

from lorasim.engine.client import ConnectionPool
from tests.helpers import run, scenario, single
from tests.policies.timeline import FREE_LINKS, STEP_S


def test_pool_counts_open_and_time_wait_ports():
    p = ConnectionPool(2, time_wait_s=60.0)
    assert p.try_open(0.0) and p.try_open(1.0)
    assert not p.try_open(2.0)  # both in flight
    p.close(10.0)
    assert not p.try_open(11.0)  # closed at 10 s: its port is in TIME_WAIT until 70 s
    assert p.in_use(69.9) == 2 and p.in_use(70.0) == 1
    assert p.try_open(70.0)


def test_requests_beyond_the_limit_fail_at_once_and_are_reported():
    # max_num_seqs 1, 10 ms steps: R0 runs 0-30 ms (output 3). Two connections: R1 (1 ms) waits, R2 (2 ms) finds no
    # port and is aborted at 2 ms. R0 closes at 30 ms; with TIME_WAIT 0 its port is free again: R3 (35 ms) is queued.
    sc = scenario(
        model={"profile": "llama-3.1-8b_h100-64gb", "step_time": {"kind": "constant", "step_time_s": STEP_S}},
        adapters={"names": ["A"], "ranks": 8},
        workload={"streams": [single(0.0, "A", 4, 3, "R0"), single(0.001, "A", 4, 1, "R1"),
                              single(0.002, "A", 4, 1, "R2"), single(0.035, "A", 4, 1, "R3")]},
        engine={"max_loras": 1, "max_num_seqs": 1, "kv_cache_tokens": 4096, **FREE_LINKS},
        client={"max_connections": 2},
    )
    res = run(sc)
    r = res.requests.set_index("request_id")
    assert res.summary["num_aborted"] == 1 and res.summary["num_completed"] == 3
    assert bool(r.loc[2, "aborted"]) and "client: no free connection (2 ports" in r.loc[2, "abort_reason"]
    assert r.loc[1, "first_scheduled_time_s"] == pytest.approx(0.03)
    assert r.loc[3, "first_scheduled_time_s"] == pytest.approx(0.04)
    # with TIME_WAIT 60 s, R0's and R1's ports stay taken: R3 fails too
    sc2 = sc.model_copy(update={"client": sc.client.model_copy(update={"time_wait_s": 60.0})})
    assert run(sc2).summary["num_aborted"] == 2


def test_unlimited_by_default():
    assert scenario().client.max_connections is None
