"""LFU eviction: hand-computed timelines (see eviction_scenarios: a first use costs 0.15 s of loads, a reload from the
CPU cache 0.05 s, a step 0.01 s)."""

from __future__ import annotations

import math

import pytest

from lorasim.policies import EVICTIONS
from lorasim.policies.eviction.lfu import add_use
from tests.policies.eviction_scenarios import evictions, finish_times, loads, uses

# a three times, then b once, a, c, b, a; two GPU slots, all three adapters fit the CPU cache
SEQ = [(0.0, "a"), (1.0, "a"), (2.0, "b"), (3.0, "a"), (4.0, "c"), (5.0, "b"), (6.0, "a")]


def test_lfu_keeps_the_frequent_adapter():
    # t=4: slots {a, b}; a was used 3 times (0.15, 1, 3), b once (2.15): b goes, c loads (disk 4.0-4.1, copy -4.15).
    # t=5: slots {a, c}; c used once, a 3 times: c goes, b is copied back from the CPU cache (5.0-5.05).
    # t=6: a is resident (LRU would have evicted it at t=5 and reloaded it here).
    res = uses(SEQ, {"name": "lfu"})
    assert evictions(res) == [(4.0, "b"), (5.0, "c")]
    assert loads(res) == [(0.15, "a"), (2.15, "b"), (4.15, "c"), (5.05, "b")]
    assert loads(res, "cpu") == [(0.1, "a"), (2.1, "b"), (4.1, "c")]
    assert evictions(res, "cpu") == []
    assert finish_times(res) == [0.16, 1.01, 2.16, 3.01, 4.16, 5.06, 6.01]
    assert res.summary["gpu_adapter_loads"] == 4 and res.summary["disk_adapter_loads"] == 3


def test_lru_on_the_same_sequence_for_contrast():
    # LRU: t=4 evicts b (used 2.15 < 3), t=5 evicts a (3 < 4.15), t=6 evicts c (4.15 < 5.05) and reloads a.
    res = uses(SEQ, {"name": "lru"})
    assert evictions(res) == [(4.0, "b"), (5.0, "a"), (6.0, "c")]
    assert finish_times(res)[-2:] == [5.06, 6.06]


def test_tie_goes_to_the_least_recently_used():
    # a and b were both used once; a longer ago: a goes when c arrives
    res = uses([(0.0, "a"), (1.0, "b"), (2.0, "c")], {"name": "lfu"})
    assert evictions(res) == [(2.0, "a")]


@pytest.mark.parametrize("half_life_s,victim", [(None, "b"), (10.0, "b"), (0.5, "a")])
def test_decay_lets_recent_use_outweigh_old_popularity(half_life_s, victim):
    # a used at 0.15, 1 and 2; b at 3.15; at t=4 (c arrives):
    #   plain counts: a 3 > b 1                                     -> b goes
    #   half-life 10 s: a 2^-.385 + 2^-.3 + 2^-.2 = 2.45 > b 2^-.085 = 0.94   -> b goes
    #   half-life 0.5 s: a 2^-7.7 + 2^-6 + 2^-4 = 0.083 < b 2^-1.7 = 0.31     -> a goes
    seq = [(0.0, "a"), (1.0, "a"), (2.0, "a"), (3.0, "b"), (4.0, "c")]
    eviction = {"name": "lfu"} if half_life_s is None else {"name": "lfu", "decay_half_life_s": half_life_s}
    res = uses(seq, eviction)
    assert evictions(res) == [(4.0, victim)]


def test_add_use_is_the_log_of_the_decayed_sum():
    x = add_use(add_use(add_use(-math.inf, 0.0, 1.0), 1.0, 1.0), 3.0, 1.0)
    assert x == pytest.approx(math.log2(2**0 + 2**1 + 2**3))
    # ranking is independent of when it is made: 2^(x - t) for every adapter shifts by the same factor
    y = add_use(-math.inf, 2.5, 1.0)
    assert (x > y) == (2 ** (x - 10) > 2 ** (y - 10))


def test_policy_alone():
    p = EVICTIONS.get("lfu")()
    for a in ("a", "b", "c"):
        p.on_insert(a, 0.0)
    p.on_use_many(["a", "b", "a", "c"], 1.0)  # counts a 2, b 1, c 1; b used before c
    assert p.victim({"a", "b", "c"}) == "b"
    assert p.victim({"a", "c"}) == "c"
    p.on_remove("b")
    p.on_insert("b", 2.0)  # counts restart at insertion
    assert p.victim({"a", "b", "c"}) == "b"
    with pytest.raises(ValueError):
        p.victim({"zzz"})


def test_bad_half_life_is_refused():
    from lorasim.errors import ConfigError
    from tests.helpers import scenario

    with pytest.raises(ConfigError, match="lfu parameter 'decay_half_life_s'"):
        scenario(eviction={"name": "lfu", "decay_half_life_s": 0})
