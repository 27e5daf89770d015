"""``BatchStats.batch_changed``: a step whose batch differs from the previous one (vLLM rebuilds its LoRA mapping)."""

from __future__ import annotations

import pytest

from lorasim.engine.simulation import Simulation
from lorasim.perf.base import BatchStats
from tests.helpers import scenario, single
from tests.policies.timeline import FREE_LINKS, STEP_S


class Recording:
    """10 ms steps; records each step's ``batch_changed``."""

    def __init__(self):
        self.flags: list[bool] = []

    def step_time_s(self, batch: BatchStats) -> float:
        self.flags.append(batch.batch_changed)
        return STEP_S


@pytest.mark.parametrize("fast_forward", [True, False])
def test_only_a_repeated_batch_is_unchanged(fast_forward):
    # R0, R1 at 0 (prompt 4, output 5); R2 at 25 ms (prompt 4, output 3). 10 ms steps:
    # 1 [0,10) both prefill: changed (first step) | 2 both decode: changed (prefill -> decode)
    # 3 [20,30) the same two decode: unchanged | 4 R2's prefill joins: changed
    # 5 R2 now decodes with them, R0 and R1 finish: changed | 6 R2 alone: changed
    sc = scenario(adapters={"names": ["A"], "ranks": 8},
                  workload={"streams": [single(0.0, "A", 4, 5), single(0.0, "A", 4, 5), single(0.025, "A", 4, 3)]},
                  engine={"max_loras": 1, "kv_cache_tokens": 4096, **FREE_LINKS})
    rec = Recording()
    res = Simulation(sc, step_time_model=rec, fast_forward=fast_forward).run()
    assert res.summary["num_completed"] == 3
    assert rec.flags == [True, True, False, True, True, True]


def test_long_steady_decode_is_unchanged_after_its_first_step():
    # one request, prompt 4, output 40: a prefill step, a first decode step (changed: prefill -> decode), then 38
    # repeats of the same one-sequence batch
    sc = scenario(adapters={"names": ["A"], "ranks": 8}, workload={"streams": [single(0.0, "A", 4, 40)]},
                  engine={"max_loras": 1, "kv_cache_tokens": 4096, **FREE_LINKS})
    rec = Recording()
    Simulation(sc, step_time_model=rec).run()
    assert rec.flags == [True, True] + [False] * 38
