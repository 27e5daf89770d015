"""The waiting queue keeps vLLM's order (arrivals at the tail, preempted requests at the head) with O(1) removal."""

from __future__ import annotations

import pytest

from lorasim.engine.sequence import Seq
from lorasim.engine.waiting import WaitingQueue
from lorasim.workload.request import Request


def _seq(i: int) -> Seq:
    return Seq(req=Request(request_id=i, arrival_time_s=float(i), adapter=None, prompt_tokens=4, output_tokens=2),
               adapter=None, num_prompt_tokens=4, max_output_tokens=2)


def test_order_removal_and_prepend():
    q = WaitingQueue()
    s = [_seq(i) for i in range(5)]
    for x in s[:4]:
        q.append(x)
    q.remove(s[1])
    q.remove(s[3])
    assert [x.request_id for x in q] == [0, 2] and len(q) == 2
    # two preemptions chosen from the back of the running list (s4 first, then s3): prepending each in turn
    # leaves them in their original relative order at the head
    q.appendleft(s[4])
    q.appendleft(s[3])
    assert [x.request_id for x in q] == [3, 4, 0, 2]
    assert [x.request_id for x in reversed(q)] == [2, 0, 4, 3]
    assert q[0] is s[3] and q[-1] is s[2]
    assert [x._qpos for x in q] == sorted(x._qpos for x in q)  # queue order is ascending _qpos
    q.append(s[1])
    assert [x.request_id for x in q] == [3, 4, 0, 2, 1]


def test_remove_of_a_request_not_waiting_raises():
    q = WaitingQueue()
    a, b = _seq(0), _seq(1)
    q.append(a)
    with pytest.raises(KeyError):
        q.remove(b)
    q.remove(a)
    assert not q and len(q) == 0
    with pytest.raises(IndexError):
        q[0]


def test_count_before_matches_a_walk_of_the_queue():
    """``count_before`` (per-block counts built on first use, then kept up to date) against counting by hand, through
    arrivals, removals anywhere, preemptions to the head and many blocks of 512 keys."""
    import random

    rnd = random.Random(7)
    q, waiting, n = WaitingQueue(), [], 0
    for step in range(3000):
        op = rnd.random()
        if op < 0.55 or not waiting:
            s = _seq(n)
            n += 1
            q.append(s)
            waiting.append(s)
        elif op < 0.6:
            s = _seq(n)
            n += 1
            q.appendleft(s)
            waiting.append(s)
        else:
            s = waiting.pop(rnd.randrange(len(waiting)))
            q.remove(s)
        if step % 7 == 0 and waiting:
            probe = rnd.choice(waiting)
            assert q.count_before(probe._qpos) == sum(1 for x in q if x._qpos < probe._qpos)
            assert q.count_before(probe._qpos) == [x for x in q].index(probe)
    assert q.count_before(10**9) == len(q)  # past the tail: everything waits ahead
