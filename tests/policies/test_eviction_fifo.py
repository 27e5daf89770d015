"""FIFO eviction: hand-computed timelines (see eviction_scenarios)."""

from __future__ import annotations

from lorasim.policies import EVICTIONS
from tests.policies.eviction_scenarios import evictions, finish_times, loads, uses
from tests.policies.test_eviction_lfu import SEQ


def test_fifo_evicts_the_oldest_insertion_however_used():
    # a loaded first (0.15), b second (2.15). t=4: a goes although it was used at t=3 (LRU and LFU evict b);
    # c loads by 4.15. t=5: b is still resident (finishes 5.01). t=6: slots {b, c}: b, inserted earlier, goes and a
    # is copied back from the CPU cache (6.0-6.05).
    res = uses(SEQ, {"name": "fifo"})
    assert evictions(res) == [(4.0, "a"), (6.0, "b")]
    assert loads(res) == [(0.15, "a"), (2.15, "b"), (4.15, "c"), (6.05, "a")]
    assert finish_times(res) == [0.16, 1.01, 2.16, 3.01, 4.16, 5.01, 6.06]
    assert evictions(res, "cpu") == []


def test_fifo_cpu_tier():
    # one GPU slot, two CPU entries. a read at 0.1, b at 1.1; t=2: a comes back from the CPU cache (copy 2.0-2.05).
    # t=3: c must be read and the CPU cache {a, b} is full: FIFO drops a (read first) although a was used last
    # (LRU drops b, used at 1.15 < 2.05). t=4: a must be read again from disk (4.0-4.1, copy -4.15); FIFO now drops b.
    seq = [(0.0, "a"), (1.0, "b"), (2.0, "a"), (3.0, "c"), (4.0, "a")]
    res = uses(seq, {"name": "fifo"}, max_loras=1, max_cpu_loras=2)
    assert evictions(res, "cpu") == [(3.0, "a"), (4.0, "b")]
    assert evictions(res) == [(1.0, "a"), (2.0, "b"), (3.0, "a"), (4.0, "c")]
    assert loads(res, "cpu") == [(0.1, "a"), (1.1, "b"), (3.1, "c"), (4.1, "a")]
    assert finish_times(res) == [0.16, 1.16, 2.06, 3.16, 4.16]
    lru = uses(seq, {"name": "lru"}, max_loras=1, max_cpu_loras=2)
    assert evictions(lru, "cpu") == [(3.0, "b")]
    assert finish_times(lru)[-1] == 4.06  # a was still in the CPU cache: a copy only


def test_policy_alone_ignores_uses():
    p = EVICTIONS.get("fifo")()
    for a in ("a", "b", "c"):
        p.on_insert(a, 0.0)
    p.on_use_many(["a", "a", "a"], 1.0)
    assert p.victim({"a", "b", "c"}) == "a"
    p.on_remove("a")
    p.on_insert("a", 2.0)  # back of the line
    assert p.victim({"a", "b", "c"}) == "b"
    assert p.victim({"a", "c"}) == "c"
