"""Conformance: every registered scheduler (with LRU eviction, flat memory), every eviction policy (with the vllm
scheduler) and every adapter-memory layout (with vllm and LRU; ``slora`` also on ``unified``) must keep the engine's contract on small random workloads that stress it (one to three GPU slots, tiny KV caches
that force recompute preemption, chunked prefill on and off, blocking and overlapped loads).

Contract, checked for each generated workload:

- per step: the distinct adapters of *every* sequence the step computes (running decodes, continuing prefill
  chunks and admissions alike) are at most ``max_loras``; KV use within capacity and exactly the running
  requests' blocks; GPU slots and CPU cache within capacity, GPU-resident adapters also in the CPU cache; at most
  ``max_num_seqs`` running and ``max_num_batched_tokens`` computed; with ``unified`` memory the KV blocks in use
  are exactly the running requests' plus the resident adapters'. Three layers: :func:`watch_plans` counts the
  adapters of every plan itself; ``check_invariants=True`` makes the engine re-derive each step's batch summary
  from the plan's sequences (so a policy cannot under-report a step's adapters) and refuse a plan that breaks a
  limit; :class:`tests.helpers.InvariantRecorder` checks the state after every step;
- accounting: every request reaches exactly one terminal event (completed or aborted with a reason), none is left
  unfinished without a ``horizon_s``;
- determinism: the same scenario and seed give identical ``requests`` and ``steps`` tables.

The policy list is the registry's at collection time, so a new policy (or an installed plug-in) is covered
without editing this file. Examples are derandomized (the same ones on every run) and few per policy, to keep the
suite under a minute.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorasim.engine.sequence import SeqStatus
from lorasim.engine.simulation import Simulation
from lorasim.policies import ADAPTER_MEMORIES, EVICTIONS, SCHEDULERS
from tests.helpers import InvariantRecorder, scenario

EXAMPLES = 20  # per (scheduler, eviction) pair: ~2 s each


class ConformanceRecorder(InvariantRecorder):
    """:class:`InvariantRecorder` (state checked after every step) that also counts each request's terminal
    events."""

    def __init__(self):
        super().__init__()
        self.terminal: Counter = Counter()  # request_id -> completions + aborts + cancellations

    def on_abort(self, seq, now_s):
        super().on_abort(seq, now_s)
        self.terminal[seq.request_id] += 1

    def on_cancel(self, seq, now_s):
        super().on_cancel(seq, now_s)
        self.terminal[seq.request_id] += 1

    def on_complete(self, seq, now_s):
        super().on_complete(seq, now_s)
        self.terminal[seq.request_id] += 1



def watch_plans(sim: Simulation, max_loras: int, seen: Counter) -> None:
    """Wrap the replica's scheduler so that every plan is checked independently of the engine's own check: the
    distinct adapters of every sequence the step computes -- listed running sequences (continuing prefill chunks
    among them), admissions, and the bulk-decoding group minus the step's preemptions -- are at most ``max_loras``."""
    replica = sim.replica
    inner = replica.scheduler.schedule

    def schedule(view, now_s):
        plan = inner(view, now_s)
        seqs = [s for s, _ in plan.scheduled]
        if plan.bulk_decode:
            gone = {id(s) for s in plan.preempted}
            seqs += [m for m in replica.decodes.members() if id(m) not in gone]
        adapters = {s.adapter for s in seqs if s.adapter is not None}
        assert len(adapters) <= max_loras, f"step at t={now_s} computes {len(adapters)} adapters > {max_loras}"
        seen["steps"] += bool(seqs)
        seen["continuing_chunks"] += sum(1 for s, _ in plan.scheduled if s.status is SeqStatus.RUNNING
                                         and s.num_computed_tokens < s.num_prompt_tokens)
        return plan

    replica.scheduler.schedule = schedule


def simulate(sc, seen: Counter | None = None):
    rec = ConformanceRecorder()
    sim = Simulation(sc, recorder=rec, check_invariants=True)
    watch_plans(sim, sc.engine.max_loras, seen if seen is not None else Counter())
    res = sim.run()
    assert rec.counters["checked_steps"] == len(res.steps)
    return res, rec


workloads = st.fixed_dictionaries({
    "num_requests": st.integers(1, 30),
    "rate": st.floats(1.0, 100.0),
    "num_adapters": st.integers(1, 5),
    "base_share": st.sampled_from([0.0, 0.25]),
    "max_loras": st.integers(1, 3),
    "extra_cpu": st.integers(0, 2),
    "max_num_seqs": st.integers(1, 8),
    "budget": st.integers(16, 256),
    "chunked": st.booleans(),
    "kv_tokens": st.integers(64, 1024),  # 4-64 blocks of 16: long requests preempt each other
    "prompt_high": st.integers(2, 200),
    "output_high": st.integers(2, 60),
    "load": st.sampled_from(["blocking", "overlapped"]),
    "seed": st.integers(0, 2**16),
})


UNIFIED_EXTRA_BLOCKS = 48  # per GPU slot: the largest test adapter (rank 16) takes 40 KV blocks of the pool


def build(w: dict, scheduler: str, eviction: str, memory: str = "flat"):
    kv_tokens = w["kv_tokens"]
    if ADAPTER_MEMORIES.get(memory).shares_kv:  # the pool must hold max_loras adapters besides the requests
        kv_tokens += w["max_loras"] * UNIFIED_EXTRA_BLOCKS * 16
    return scenario(
        seed=w["seed"],
        adapters={"count": w["num_adapters"], "ranks": [8, 16]},
        workload={"arrivals": {"kind": "poisson", "rate": w["rate"]}, "num_requests": w["num_requests"],
                  "lengths": {"prompt": {"kind": "uniform", "low": 1, "high": w["prompt_high"]},
                              "output": {"kind": "uniform", "low": 1, "high": w["output_high"]}},
                  "popularity": {"kind": "zipf", "s": 1.0, "base_share": w["base_share"]}},
        engine={"max_loras": w["max_loras"], "max_cpu_loras": w["max_loras"] + w["extra_cpu"],
                "max_num_seqs": w["max_num_seqs"], "max_num_batched_tokens": w["budget"],
                "enable_chunked_prefill": w["chunked"], "kv_cache_tokens": kv_tokens,
                "adapter_load": w["load"]},
        scheduler={"name": scheduler},
        eviction={"name": eviction},
        adapter_memory={"name": memory},
    )


def check_conformance(w: dict, scheduler: str, eviction: str, memory: str = "flat") -> None:
    sc = build(w, scheduler, eviction, memory)
    res, rec = simulate(sc, SEEN.setdefault((scheduler, eviction, memory), Counter()))
    r, steps = res.requests, res.steps
    n = w["num_requests"]
    # per step (also asserted step by step by the recorder and the engine's plan check)
    assert (steps["num_distinct_adapters"] <= w["max_loras"]).all()
    assert (steps["kv_used_blocks"] <= sc.engine.kv_cache_tokens // 16).all()
    # every request accounted for exactly once
    assert len(r) == n == r["request_id"].nunique()
    assert set(rec.terminal) == set(r["request_id"]) and set(rec.terminal.values()) == {1}, rec.terminal
    assert not r["unfinished"].any(), "requests left unfinished without horizon_s"
    aborted = r[r["aborted"]]
    assert (aborted["abort_reason"].str.len() > 0).all()
    assert r.loc[~r["aborted"], "finish_time_s"].notna().all()
    assert res.summary["num_completed"] + res.summary["num_aborted"] == n
    # determinism: the same scenario and seed again
    again, _ = simulate(build(w, scheduler, eviction, memory))
    pd.testing.assert_frame_equal(r, again.requests)
    pd.testing.assert_frame_equal(steps, again.steps)


PAIRS = ([(s, "lru", "flat") for s in SCHEDULERS.names()]
         + [("vllm", e, "flat") for e in EVICTIONS.names() if e != "lru"]
         + [("vllm", "lru", m) for m in ADAPTER_MEMORIES.names() if m != "flat"]
         + [("slora", "lru", "unified")])
SEEN: dict[tuple[str, str, str], Counter] = {p: Counter() for p in PAIRS}  # what the examples exercised, per case


@pytest.mark.parametrize("scheduler,eviction,memory", PAIRS)
def test_policy_conformance(scheduler, eviction, memory):
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(w=workloads)
    def conforms(w):
        check_conformance(w, scheduler, eviction, memory)

    conforms()
    # the generated workloads exercised what the contract is about: steps that continue a chunked prompt
    assert SEEN[scheduler, eviction, memory]["continuing_chunks"] > 0


def test_every_registered_policy_is_covered():
    assert {s for s, _, _ in PAIRS} == set(SCHEDULERS.names())
    assert {e for _, e, _ in PAIRS} == set(EVICTIONS.names())
    assert {m for _, _, m in PAIRS} == set(ADAPTER_MEMORIES.names())


def test_the_check_catches_a_policy_that_ignores_the_cap():
    """Not vacuous: a scheduler that admits past max_loras fails the plan watcher before the engine applies it."""
    w = {"num_requests": 12, "rate": 100.0, "num_adapters": 4, "base_share": 0.0, "max_loras": 1, "extra_cpu": 3,
         "max_num_seqs": 8, "budget": 256, "chunked": True, "kv_tokens": 4096, "prompt_high": 20,
         "output_high": 10, "load": "blocking", "seed": 0}
    with pytest.raises(AssertionError, match="adapters > 1"):
        check_conformance(w, "tests.policies.user_policy:IgnoresAdapterCap", "lru")
