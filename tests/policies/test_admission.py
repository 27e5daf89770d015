"""Admission decisions of every scheduler, checked on hand-built queues (no engine, no time)."""

from __future__ import annotations

import pytest

from lorasim.errors import PolicyError
from lorasim.policies import SCHEDULERS
from lorasim.policies.base import Admit, PlanBuilder, can_admit
from tests.policies.helpers import make_seq, running_seq, view

# Case 01 (vLLM PR 15422): 16 requests of 16+16 tokens, max_loras 4, ample KV.
CASE01 = [None, None, None, "L1", "L3", "L2", "L4", "L5", "L5", "L5", "L5", None, None, "L1", "L2", "L3"]


def case01_queue():
    return [make_seq(i + 1, a) for i, a in enumerate(CASE01)]  # ids R1..R16


def admitted_ids(plan):
    return [s.request_id for s, _ in plan.scheduled]


def test_can_admit_rule():
    assert can_admit(set(), None, 1)
    assert can_admit({"a"}, None, 1)  # base model never counts
    assert can_admit({"a"}, "a", 1)
    assert not can_admit({"a"}, "b", 1)
    assert can_admit({"a"}, "b", 2)


def test_case01_vllm_skip_admits_all_but_l5():
    plan = SCHEDULERS.get("vllm")().schedule(view(waiting=case01_queue()), 0.0)
    assert admitted_ids(plan) == [1, 2, 3, 4, 5, 6, 7, 12, 13, 14, 15, 16]
    assert len(plan.scheduled) == 12
    assert plan.adapters == {"L1", "L2", "L3", "L4"}
    assert all(n == 16 for _, n in plan.scheduled)


def test_case01_break_stops_at_first_blocked():
    plan = SCHEDULERS.get("fcfs-break")().schedule(view(waiting=case01_queue()), 0.0)
    assert admitted_ids(plan) == [1, 2, 3, 4, 5, 6, 7]


def test_fcfs_grouped_admits_whole_groups_in_oldest_first_order():
    plan = SCHEDULERS.get("fcfs-grouped")().schedule(view(waiting=case01_queue()), 0.0)
    # groups by first appearance: base (R1,R2,R3,R12,R13), L1 (R4,R14), L3 (R5,R16), L2 (R6,R15), L4 (R7); L5 blocked
    assert admitted_ids(plan) == [1, 2, 3, 12, 13, 4, 14, 5, 16, 6, 15, 7]


def test_affinity_prefers_resident_adapters():
    q = [make_seq(1, "A"), make_seq(2, "B"), make_seq(3, "B")]
    plan = SCHEDULERS.get("affinity")().schedule(view(waiting=q, max_loras=1, gpu={"B"}), 0.0)
    assert admitted_ids(plan) == [2, 3]
    plan = SCHEDULERS.get("vllm")().schedule(view(waiting=q, max_loras=1, gpu={"B"}), 0.0)
    assert admitted_ids(plan) == [1]


def test_batch_completion_admits_only_running_adapters():
    run = [running_seq(0, "A")]
    q = [make_seq(1, "B"), make_seq(2, None), make_seq(3, "A")]
    plan = SCHEDULERS.get("batch-completion")().schedule(view(run, q, max_loras=4), 0.0)
    assert admitted_ids(plan) == [0, 2, 3]  # B waits although a slot is free
    plan = SCHEDULERS.get("batch-completion")().schedule(view([], q, max_loras=4), 0.0)
    assert admitted_ids(plan) == [1, 2, 3]  # nothing running: FCFS forms the next set


def test_score_orders_running_adapters_first_then_arrival():
    run = [running_seq(0, "C")]
    q = [make_seq(1, "A"), make_seq(2, "B"), make_seq(3, "C")]
    sched = SCHEDULERS.get("score")()
    v = view(run, q, max_loras=2)
    plan = sched.schedule(v, 0.0)
    assert admitted_ids(plan) == [0, 3, 1]  # C scores 0; A (older) beats B for the last slot
    assert sched.prefetch_order(v)[0] == "B"  # the blocked request's adapter is first on the load list


@pytest.mark.parametrize("name", SCHEDULERS.names())
def test_max_num_seqs_and_token_budget_stop_admission(name):
    q = [make_seq(i, None, prompt=100) for i in range(10)]
    plan = SCHEDULERS.get(name)().schedule(view(waiting=q, max_num_seqs=3), 0.0)
    assert len(plan.scheduled) == 3
    plan = SCHEDULERS.get(name)().schedule(view(waiting=q, max_num_batched_tokens=250), 0.0)
    assert [n for _, n in plan.scheduled] == [100, 100, 50]  # chunked prefill splits the third prompt
    plan = SCHEDULERS.get(name)().schedule(view(waiting=q, max_num_batched_tokens=250, chunked=False), 0.0)
    assert [n for _, n in plan.scheduled] == [100, 100]


@pytest.mark.parametrize("name", SCHEDULERS.names())
def test_kv_shortage_preempts_last_running_and_admits_nothing(name):
    # three running seqs each exactly filling their blocks: the next decode token needs a new block each
    run = [running_seq(i, None, prompt=16, generated=1) for i in range(3)]
    for s in run:
        assert s.num_computed_tokens == 16 and s.num_blocks == 1
    q = [make_seq(9, None)]
    plan = SCHEDULERS.get(name)().schedule(view(run, q, free_blocks=1), 0.0)
    # seq 0 takes the free block; seq 1 needs one: preempt seq 2 (last), which frees 1 block
    assert [s.request_id for s in plan.preempted] == [2]
    assert admitted_ids(plan) == [0, 1]  # no admission in a step that preempted


def test_running_seq_preempts_itself_when_alone():
    run = [running_seq(0, None, prompt=16, generated=1)]
    b = PlanBuilder(view(run, [], free_blocks=0))
    b.schedule_running()
    assert b.plan.preempted == run and b.plan.scheduled == []


def test_try_admit_reports_reason():
    b = PlanBuilder(view(waiting=[], max_loras=1))
    assert b.try_admit(make_seq(1, "A")) is Admit.OK
    assert b.try_admit(make_seq(2, "B")) is Admit.ADAPTER_CAP
    assert b.try_admit(make_seq(3, None)) is Admit.OK


def test_unknown_policy_lists_valid_names():
    with pytest.raises(PolicyError, match="valid names: .*vllm"):
        SCHEDULERS.get("nope")


def test_module_class_escape_hatch():
    cls = SCHEDULERS.get("lorasim.policies.scheduling.vllm:VllmScheduler")
    assert cls is SCHEDULERS.get("vllm")
    with pytest.raises(PolicyError, match="cannot load"):
        SCHEDULERS.get("no.such.module:X")
    with pytest.raises(PolicyError, match="not a subclass"):
        SCHEDULERS.get("lorasim.errors:PolicyError")


def test_duplicate_registration_is_loud():
    from lorasim.policies.base import Scheduler

    with pytest.raises(ValueError, match="registered twice"):
        @SCHEDULERS.register("vllm")
        class Dup(Scheduler):
            def admit_waiting(self, view, b, now_s):
                pass


# ---- how many waiting requests vLLM's scan skips (the scheduler's CPU time, BatchStats.num_skipped_waiting) ----

def _engine_view(running, waiting, **kw):
    """``view`` with the engine's waiting queue and its per-adapter index (the scan's fast path)."""
    import dataclasses
    from collections import deque

    from lorasim.engine.waiting import WaitingQueue

    q, index = WaitingQueue(), {}
    for s in waiting:
        q.append(s)
        index.setdefault(s.adapter, deque()).append(s)
    return dataclasses.replace(view(running, [], **kw), waiting=q, waiting_by_adapter=index)


def _scan(running, waiting, **kw):
    """Plan the step both ways (hand-built list: the scan counts as it walks; engine queue: admit_eligible and
    count_before); both must agree. Returns (admitted ids, skipped)."""
    out = []
    for make in (view, _engine_view):
        for s in (*running, *waiting):
            s._qpos = 0  # each view numbers its own queue
        plan = SCHEDULERS.get("vllm")().schedule(make(running, waiting, **kw), 0.0)
        out.append(([s.request_id for s, _ in plan.scheduled if s.request_id >= 100], plan.stats.num_skipped_waiting))
    assert out[0] == out[1]
    return out[0]


def test_skips_counted_when_the_scan_walks_the_whole_queue():
    # max_loras 1 held by A's running request: B1, B2 and C1 are popped and pushed back, A1 is admitted
    waiting = [make_seq(101, "B"), make_seq(102, "B"), make_seq(103, "A"), make_seq(104, "C")]
    assert _scan([running_seq(1, "A")], waiting, max_loras=1) == ([103], 3)


def test_skips_counted_up_to_a_kv_failure():
    # the decode takes the one free block it needs; A1's 64-token prompt needs 4 more: the scan stops there, after
    # skipping B1 only (C1 and A2 are never looked at)
    waiting = [make_seq(101, "B"), make_seq(102, "A", prompt=64), make_seq(103, "C"), make_seq(104, "A")]
    assert _scan([running_seq(1, "A")], waiting, max_loras=1, free_blocks=2) == ([], 1)


def test_skips_counted_up_to_the_request_that_used_the_budget():
    # budget 17 tokens: the decode takes 1, A1's 16-token prompt the rest; vLLM's loop then stops at its top, so
    # C1 and A2 are not skipped (B1 was)
    waiting = [make_seq(101, "B"), make_seq(102, "A"), make_seq(103, "C"), make_seq(104, "A")]
    assert _scan([running_seq(1, "A")], waiting, max_loras=1, max_num_batched_tokens=17) == ([102], 1)


def test_skips_counted_up_to_max_num_seqs():
    waiting = [make_seq(101, "B"), make_seq(102, "A"), make_seq(103, "C")]
    assert _scan([running_seq(1, "A")], waiting, max_loras=1, max_num_seqs=2) == ([102], 1)


def test_no_skip_before_the_adapter_set_fills():
    # max_loras 2: B1 joins (the set is now full), then C1 and D1 are skipped, A1 admitted
    waiting = [make_seq(101, "B"), make_seq(102, "C"), make_seq(103, "A"), make_seq(104, "D")]
    assert _scan([running_seq(1, "A")], waiting, max_loras=2) == ([101, 103], 2)
    assert _scan([running_seq(1, "A")], waiting, max_loras=4) == ([101, 102, 103, 104], 0)


def test_skip_counts_agree_on_random_queues():
    """The walk's count and the fast path's (queue positions) agree on random queues, budgets and KV."""
    import random

    rnd = random.Random(3)
    for _ in range(300):
        adapters = ["A", "B", "C", "D", "E", None]
        running = [running_seq(i, rnd.choice(adapters[:3])) for i in range(rnd.randint(0, 3))]
        waiting = [make_seq(100 + i, rnd.choice(adapters), prompt=rnd.choice((4, 16, 40, 100)))
                   for i in range(rnd.randint(0, 30))]
        _scan(running, waiting, max_loras=rnd.randint(1, 4), max_num_batched_tokens=rnd.choice((20, 64, 300, 8192)),
              free_blocks=rnd.choice((3, 10, 40, 10_000)), max_num_seqs=rnd.choice((3, 8, 256)))
