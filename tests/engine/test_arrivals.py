"""The arrival feed hands requests out in order, each with its own due time, however late it is asked."""

from __future__ import annotations

import math

import pytest

from lorasim.engine.arrivals import ArrivalFeed
from tests.engine.test_waiting import _seq


def test_pop_due_in_order_with_own_times():
    s = [_seq(i) for i in range(4)]
    feed = ArrivalFeed(s, [0.0, 0.5, 0.5, 2.0])
    assert feed.next_due_s == 0.0 and not feed.exhausted
    assert feed.pop_due(0.0) == [(s[0], 0.0)]
    assert feed.pop_due(0.4) == []
    # asked late (a step ended at 1.7): both requests due at 0.5 come out, stamped with 0.5, not 1.7
    assert feed.pop_due(1.7) == [(s[1], 0.5), (s[2], 0.5)]
    assert feed.next_due_s == 2.0
    assert feed.pop_due(5.0) == [(s[3], 2.0)]
    assert feed.exhausted and feed.next_due_s == math.inf and feed.pop_due(9.0) == []


def test_bad_feed_raises():
    s = [_seq(0), _seq(1)]
    with pytest.raises(ValueError, match="non-decreasing"):
        ArrivalFeed(s, [1.0, 0.5])
    with pytest.raises(ValueError, match="2 sequences but 1"):
        ArrivalFeed(s, [1.0])
