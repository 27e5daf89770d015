"""vllm-v0: vLLM V0's admission (``vllm/core/scheduler.py``), timelines computed by hand (10 ms steps, free loads)."""

from __future__ import annotations

import pytest

from lorasim.errors import ConfigError
from lorasim.policies import SCHEDULERS
from tests.helpers import scenario
from tests.policies.helpers import make_seq, running_seq, view
from tests.policies.timeline import listed_schedulers, timeline


def admitted_ids(plan):
    return [s.request_id for s, _ in plan.scheduled]


def v0(**params):
    cls = SCHEDULERS.get("vllm-v0")
    return cls(cls.Params(**params))


def test_listed(capsys):
    assert "vllm-v0" in listed_schedulers(capsys)
    assert SCHEDULERS.get("vllm-v0").rule


def test_chunked_skip_keeps_place_like_v1():
    # max_loras 1. Step 1 (0-10 ms): R0 (A) in, R1 (B) set aside, R2 (A) and R3 (base) in; R2, R3 finish at 10 ms.
    # Step 2: R0 decodes (A still running: R1 waits) and finishes at 20 ms. Step 3: R1.
    reqs = [("R0", 0.0, "A", 4, 2), ("R1", 0.0, "B", 4, 1), ("R2", 0.0, "A", 4, 1), ("R3", 0.0, None, 4, 1)]
    for policy in ("vllm-v0", "vllm"):
        r, _ = timeline(policy, reqs)
        assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"R0": 0.0, "R1": 0.02, "R2": 0.0, "R3": 0.0})
        assert r["finish_time_s"].to_dict() == pytest.approx({"R0": 0.02, "R1": 0.03, "R2": 0.01, "R3": 0.01})


def test_unchunked_prefill_step_holds_the_decodes():
    # No chunked prefill. R0 prefills in step 1 and decodes in step 2; R1 arrives at 15 ms. Step 3 (20-30 ms) is a
    # prefill-only step under V0 (R0 skips it), so R0's last token comes in step 4 (40 ms) with R1's second;
    # V1 mixes R1's prefill with R0's decode in step 3, and R0 finishes at 30 ms.
    reqs = [("R0", 0.0, "A", 4, 3), ("R1", 0.015, "A", 4, 2)]
    r, s = timeline("vllm-v0", reqs, enable_chunked_prefill=False)
    assert r.loc["R1", "first_scheduled_time_s"] == pytest.approx(0.02)
    assert r["finish_time_s"].to_dict() == pytest.approx({"R0": 0.04, "R1": 0.04})
    assert list(s["num_prefill_tokens"]) == [4, 0, 4, 0]
    assert list(s["num_decode_seqs"]) == [0, 1, 0, 2]
    r, s = timeline("vllm", reqs, enable_chunked_prefill=False)
    assert r["finish_time_s"].to_dict() == pytest.approx({"R0": 0.03, "R1": 0.04})
    assert list(s["num_decode_seqs"]) == [0, 1, 1, 1]


def test_unchunked_curr_loras_counts_running_adapters_in_prefill_steps():
    # max_loras 1, no chunked prefill. R0 (A) runs from step 1; R1 (B) and R2 (base) arrive at 5 ms. Step 2 is a
    # prefill-only step holding only R2 (no adapter), yet R1 is set aside: curr_loras = {A} from the running R0.
    # Steps 3-4 decode R0 (finishes 40 ms); R1 is admitted in step 5. V1 admits R1 as soon as R0 finishes (30 ms).
    reqs = [("R0", 0.0, "A", 4, 3), ("R1", 0.005, "B", 4, 1), ("R2", 0.005, None, 4, 1)]
    r, s = timeline("vllm-v0", reqs, enable_chunked_prefill=False)
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"R0": 0.0, "R1": 0.04, "R2": 0.01})
    assert r["finish_time_s"].to_dict() == pytest.approx({"R0": 0.04, "R1": 0.05, "R2": 0.02})
    assert list(s["num_distinct_adapters"]) == [1, 0, 1, 1, 1]
    r, _ = timeline("vllm", reqs, enable_chunked_prefill=False)
    assert r["first_scheduled_time_s"].to_dict() == pytest.approx({"R0": 0.0, "R1": 0.03, "R2": 0.01})


def test_kv_check_comes_before_the_adapter_check():
    # running X holds 1 block and takes 1 more; 7 of 9 blocks are left. R1 (B, 128 tokens = 8 blocks) is both
    # adapter-blocked and too big: V0 stops at it (AllocStatus.LATER), V1 skips it and admits R2 (base).
    q = [make_seq(1, "B", prompt=128), make_seq(2, None, prompt=16)]
    v = view([running_seq(0, "X")], q, max_loras=1, free_blocks=8)
    assert admitted_ids(v0().schedule(v, 0.0)) == [0]
    assert admitted_ids(SCHEDULERS.get("vllm")().schedule(v, 0.0)) == [0, 2]


def test_watermark_keeps_one_percent_of_the_blocks_free():
    # 200 blocks (watermark 2); the running request holds 50 and takes 1 more: 149 free. A 148-block prompt would
    # leave 1 < 2 free, so V0 waits; without the watermark (or under V1) it is admitted.
    run = [running_seq(0, None, prompt=16 * 50)]
    q = [make_seq(1, None, prompt=16 * 148)]
    v = view(run, q, free_blocks=150)
    assert admitted_ids(v0().schedule(v, 0.0)) == [0]
    assert admitted_ids(v0(watermark=0.0).schedule(v, 0.0)) == [0, 1]
    assert admitted_ids(SCHEDULERS.get("vllm")().schedule(v, 0.0)) == [0, 1]


def test_prompt_that_never_fits_with_the_watermark_is_still_served():
    # 199 of 200 blocks: V0 would ignore it (AllocStatus.NEVER); lorasim cannot drop it, so it goes in without the
    # watermark once the cache is empty
    v = view([], [make_seq(1, None, prompt=16 * 199)], free_blocks=200)
    assert admitted_ids(v0().schedule(v, 0.0)) == [1]


def test_chunked_admits_in_a_step_that_preempted():
    # R0 needs a block, none is free: the last running R1 (4 blocks) is preempted; R0 takes 1, 3 are left and V0
    # admits R9 (1 block) in the same step. V1 admits nothing in a step that preempted.
    run = [running_seq(0, None, prompt=16), running_seq(1, None, prompt=64)]
    v = view(run, [make_seq(9, None, prompt=16)], free_blocks=0)
    plan = v0().schedule(v, 0.0)
    assert [s.request_id for s in plan.preempted] == [1]
    assert admitted_ids(plan) == [0, 9]
    plan = SCHEDULERS.get("vllm")().schedule(v, 0.0)
    assert [s.request_id for s in plan.preempted] == [1] and admitted_ids(plan) == [0]


def test_params_are_validated():
    assert v0().params.watermark == 0.01
    with pytest.raises(ConfigError, match="watermark"):
        scenario(scheduler={"name": "vllm-v0", "watermark": 1.0})
    with pytest.raises(ConfigError, match="Extra inputs"):
        scenario(scheduler={"name": "vllm-v0", "max_loras": 2})


def test_counts_the_requests_it_sets_aside():
    """V0's ``leftover_waiting_sequences``: each request popped and pushed back for the adapter cap is counted
    (``num_skipped_waiting``, the scheduler's CPU time). V0 checks the budget after the adapter, so after A1 used
    the budget C1 is still set aside; without chunked prefill a step that admits nothing keeps the count."""
    waiting = [make_seq(101, "B"), make_seq(102, "A"), make_seq(103, "C")]
    plan = v0().schedule(view([running_seq(1, "A")], waiting, max_loras=1, max_num_batched_tokens=17), 0.0)
    assert admitted_ids(plan) == [1, 102] and plan.stats.num_skipped_waiting == 2
    waiting = [make_seq(101, "B"), make_seq(103, "C")]
    plan = v0().schedule(view([running_seq(1, "A")], waiting, max_loras=1, chunked=False), 0.0)
    assert admitted_ids(plan) == [1] and plan.stats.num_skipped_waiting == 2
