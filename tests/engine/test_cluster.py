"""Clusters: N replicas behind a router. Routers decided by hand on replica states; whole runs account for every
request, keep every replica's invariants, share host links, and are deterministic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lorasim
from lorasim.engine.simulation import Simulation
from lorasim.policies import ROUTERS
from lorasim.policies.base import ReplicaState
from tests.helpers import InvariantRecorder, run, scenario, single
from tests.policies.helpers import make_seq
from tests.policies.timeline import FREE_LINKS


def st(i, waiting=0, running=0, kv=0, total=100, gpu=(), active=(), room=True):
    return ReplicaState(i, waiting, running, kv, total, frozenset(gpu), frozenset(active), lambda a: room)


def router(name, n=3, seed=0, **params):
    cls = ROUTERS.get(name)
    r = cls(cls.Params(**params))
    r.bind(n, np.random.default_rng(seed))
    return r


def test_round_robin_cycles():
    r = router("round-robin")
    states = [st(i) for i in range(3)]
    assert [r.route(make_seq(k, "A"), states, 0.0) for k in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_least_outstanding_and_least_kv_by_hand():
    states = [st(0, waiting=2, running=3, kv=10), st(1, waiting=0, running=4, kv=90), st(2, waiting=1, running=3,
                                                                                         kv=50)]
    # outstanding 5, 4, 4: replicas 1 and 2 tie; KV use 0.9 vs 0.5 -> 2
    assert router("least-outstanding").route(make_seq(0, "A"), states, 0.0) == 2
    assert router("least-kv").route(make_seq(0, "A"), states, 0.0) == 0


def test_least_outstanding_ties_go_to_lower_kv_then_index():
    states = [st(0, running=2, kv=30), st(1, running=2, kv=20), st(2, running=2, kv=20)]
    assert router("least-outstanding").route(make_seq(0, "A"), states, 0.0) == 1


def test_power_of_two_picks_the_lighter_of_its_draw():
    states = [st(0, running=9), st(1, running=1), st(2, running=5)]
    rng = np.random.default_rng(7)
    a, b = rng.choice(3, size=2, replace=False)
    want = b if states[b].outstanding < states[a].outstanding else a
    assert router("power-of-two", seed=7).route(make_seq(0, "A"), states, 0.0) == want


def test_adapter_affinity_prefers_warm_then_room():
    r = router("adapter-affinity")
    warm = [st(0, running=1), st(1, running=9, active={"A"}), st(2, running=5, gpu={"A"})]
    assert r.route(make_seq(0, "A"), warm, 0.0) == 2  # both warm: the lighter one
    cold = [st(0, running=1, room=False), st(1, running=3), st(2, running=2)]
    assert r.route(make_seq(0, "A"), cold, 0.0) == 2  # replica 0 has no room for A
    assert r.route(make_seq(0, None), cold, 0.0) == 0  # base model: least loaded


def test_dlora_router_prefers_holders():
    r = router("dlora")
    states = [st(0, running=0), st(1, running=7, gpu={"A"}), st(2, running=3, active={"A"})]
    assert r.route(make_seq(0, "A"), states, 0.0) == 1  # only replica 1 holds A in GPU memory


def test_consistent_hash_is_stable_and_moves_few_adapters():
    names = [f"lora-{i}" for i in range(400)]
    r4, r5 = router("consistent-hash", n=4), router("consistent-hash", n=5)
    s4, s5 = [st(i) for i in range(4)], [st(i) for i in range(5)]
    a4 = [r4.route(make_seq(0, a), s4, 0.0) for a in names]
    assert a4 == [r4.route(make_seq(1, a), s4, 9.0) for a in names]  # same adapter, same replica
    moved = sum(x != r5.route(make_seq(0, a), s5, 0.0) for a, x in zip(names, a4))
    assert moved < 0.35 * len(names)  # ~1/5 expected; a modulo hash would move ~4/5
    assert set(a4) == {0, 1, 2, 3}


def cluster(router_name: str, n: int = 3, **over):
    return scenario(adapters={"count": 12, "ranks": [8, 16]},
                    workload={"arrivals": {"kind": "poisson", "rate": 20.0}, "num_requests": 240,
                              "lengths": {"prompt": {"kind": "uniform", "low": 8, "high": 300},
                                          "output": {"kind": "uniform", "low": 2, "high": 80}},
                              "popularity": {"kind": "zipf", "s": 1.0, "base_share": 0.1},
                              "cancel_probability": 0.1, "cancel_after_s": [0.0, 5.0]},
                    engine={"max_loras": 2, "max_cpu_loras": 4, "kv_cache_tokens": 4096},
                    cluster={"replicas": n, "router": {"name": router_name}}, **over)


@pytest.mark.parametrize("name", ROUTERS.names())
def test_every_router_keeps_every_replica_correct(name):
    sc = cluster(name)
    rec = InvariantRecorder()
    res = run(sc, recorder=rec)  # every step of every replica re-checked
    s, r = res.summary, res.requests
    assert s["num_requests"] == 240 == s["num_completed"] + s["num_aborted"] + s["num_cancelled"]
    assert set(r["replica"]) <= {0, 1, 2} and s["num_replicas"] == 3
    assert res.per_replica["num_requests"].sum() == 240
    again = run(sc)
    pd.testing.assert_frame_equal(r, again.requests)
    pd.testing.assert_frame_equal(res.steps, again.steps)


def test_round_robin_splits_evenly_and_reports_balance(tmp_path):
    res = run(cluster("round-robin", n=4, ), check_invariants=False)
    assert res.requests["replica"].value_counts().sort_index().tolist() == [60, 60, 60, 60]
    assert res.summary["replica_imbalance"] >= 1.0
    assert set(res.steps["replica"]) == {0, 1, 2, 3} and set(res.adapter_events["replica"]) == {0, 1, 2, 3}
    res.write(tmp_path)
    assert pd.read_csv(tmp_path / "per_replica.csv")["num_requests"].tolist() == [60, 60, 60, 60]


def test_replicas_of_one_host_share_its_pcie_link():
    # two replicas each need adapter A at t=0; disk free, PCIe 0.1 s per load. On one host the second load queues
    # behind the first (0.2 s from its start); on separate hosts both take 0.1 s.
    links = {"disk_to_cpu": {"overhead_s": 0.0, "bandwidth_bytes_per_s": float("inf")},
             "cpu_to_gpu": {"overhead_s": 0.1, "bandwidth_bytes_per_s": float("inf")}}
    def loads(gpus_per_host):
        sc = scenario(adapters={"names": ["A"], "ranks": 8},
                      workload={"streams": [single(0.0, "A", 8, 2), single(0.0, "A", 8, 2)]},
                      engine={"max_loras": 1, **links}, cluster={"replicas": 2, "gpus_per_host": gpus_per_host})
        ev = run(sc).adapter_events
        return sorted(ev[(ev["kind"] == "load") & (ev["tier"] == "gpu")]["duration_s"].round(6).tolist())
    assert loads(gpus_per_host=8) == [0.1, 0.2]
    assert loads(gpus_per_host=1) == [0.1, 0.1]


def test_one_replica_is_the_plain_engine():
    a = lorasim.simulate(lorasim.load_scenario(None, overrides=["workload.num_requests=200"]))
    b = lorasim.simulate(lorasim.load_scenario(None, overrides=["workload.num_requests=200",
                                                                "cluster.router.name=random"]))
    pd.testing.assert_frame_equal(a.requests, b.requests)
    assert "replica_imbalance" not in a.summary


def test_a_router_returning_a_bad_index_is_a_policy_error():
    from lorasim.errors import PolicyError

    sim = Simulation(cluster("round-robin"))
    sim.router.route = lambda seq, states, now: 7
    with pytest.raises(PolicyError, match="returned 7"):
        sim.run()
