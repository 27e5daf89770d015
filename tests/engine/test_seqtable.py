"""Lazily created sequences and bulk client refusals give exactly the per-request results."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from lorasim.engine.client import ConnectionPool
from lorasim.engine.seqtable import SeqTable
from lorasim.engine.sequence import SeqStatus
from lorasim.engine.simulation import Simulation
from lorasim.metrics.recorder import Recorder
from tests.helpers import scenario


def _table(n: int) -> SeqTable:
    return SeqTable(np.arange(n, dtype=float), np.full(n, 4), np.full(n, 2), np.array([0, -1] * (n // 2)),
                    ("A",))


def test_sequences_are_created_on_first_access_only():
    t = _table(6)
    assert len(t) == 6 and t.created()[1] == []
    s = t[3]
    assert t[3] is s and s.request_id == 3 and s.arrival_time_s == 3.0 and s.adapter is None
    assert t[2].adapter == "A" and (s.num_prompt_tokens, s.max_output_tokens) == (4, 2)
    idx, made = t.created()
    assert idx.tolist() == [2, 3] and made == [t[2], t[3]]


def test_reject_skips_created_sequences_and_lost_counts_the_rest():
    t = _table(8)
    t[2].status = SeqStatus.FINISHED
    t[5].status = SeqStatus.WAITING
    assert t.reject(1, 7, "no port") == [2, 5]  # created ones are handed back, not recorded
    assert t.rejected == [(1, 2, "no port"), (3, 5, "no port"), (6, 7, "no port")]
    assert t.num_rejected() == 4
    assert t.lost() == [0, 5, 7]  # 0 and 7 never created, 5 still waiting; 2 finished


def _pool(open_: int, closes: list[float], cap: int, tw: float) -> ConnectionPool:
    p = ConnectionPool(cap, tw)
    p.open = open_
    for c in sorted(closes):
        p._closed.append(c)
    return p


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(1, 6), st.integers(0, 6), st.lists(st.floats(0, 50), max_size=6),
       st.lists(st.floats(0, 100), min_size=1, max_size=20), st.sampled_from([0.0, 7.5, 30.0]))
def test_refused_until_agrees_with_one_try_open_per_request(cap, open_, closes, times, tw):
    times = sorted(times)
    bulk, single = _pool(open_, closes, cap, tw), _pool(open_, closes, cap, tw)
    k = bulk.refused_until(times, 0, len(times))
    first_ok = next((i for i, t in enumerate(times) if single.in_use(t) < cap), len(times))
    assert k == first_ok


class _PerAbortRecorder(Recorder):
    """Overrides on_abort, so the replica refuses requests one at a time (the reference path)."""

    def on_abort(self, seq, now_s):
        super().on_abort(seq, now_s)


def _overloaded():
    # 40 req/s offered to a replica serving ~10 req/s, 30 ports held 2 s after closing: most requests are refused,
    # in runs, between the ports' TIME_WAIT ends; a 20 s horizon leaves some queued
    return scenario(
        adapters={"count": 4, "ranks": 8},
        workload={"arrivals": {"kind": "poisson", "rate": 40.0}, "duration_s": 30.0,
                  "lengths": {"prompt": 64, "output": 32}},
        engine={"max_loras": 2, "max_num_seqs": 4},
        client={"max_connections": 30, "time_wait_s": 2.0},
        horizon_s=20.0,
    )


def test_bulk_refusals_match_per_request_refusals():
    sc = _overloaded()
    bulk_sim = Simulation(sc)
    bulk = bulk_sim.run()
    ref = Simulation(sc, recorder=_PerAbortRecorder()).run()
    pd.testing.assert_frame_equal(bulk.requests, ref.requests, check_exact=True)
    assert bulk.summary == ref.summary
    refused = bulk.requests["abort_reason"].str.startswith("client:").fillna(False)
    assert refused.sum() > 300 and bulk_sim.seqs.num_rejected() > 0.9 * refused.sum()
    assert len(bulk_sim.seqs.created()[1]) < len(bulk.requests) - 300  # the refused were never created
    assert bulk.requests["unfinished"].sum() > 0  # the horizon left some queued or running
