"""Fitted performance profiles: loading, errors, the linear step-time model, links and KV capacity."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorasim.errors import ConfigError, DataFileError
from lorasim.paths import resolve_data_dir
from lorasim.perf.base import BatchStats, StepTimeModel
from lorasim.perf.linear import LinearStepTimeModel
from lorasim.perf.profile import PROFILES_DIR, Profile, list_profiles, load_profile
from lorasim.perf.shapes import ALL_TARGET_MODULES, MODEL_SHAPES

SHIPPED = ["llama-2-7b_a100", "llama-2-7b_h100", "llama-3.1-8b_h100-64gb", "qwen-2.5-7b_h100-64gb"]
DATA_DIR = resolve_data_dir()
needs_data = pytest.mark.skipif(not (DATA_DIR / "vllm-lora-runs").exists(), reason=f"no data in {DATA_DIR}")

DECODE = BatchStats(num_decode_seqs=64, num_decode_context_tokens=64 * 500)
MIXED = BatchStats(num_prefill_tokens=1000, num_prefill_seqs=2, num_decode_seqs=100,
                   num_decode_context_tokens=100 * 300, prefill_attention_work=500 * 500 * 2,
                   num_lora_tokens=1100, num_distinct_adapters=5)


def shipped_json(name: str) -> dict:
    return json.loads(Path(str(PROFILES_DIR / f"{name}.json")).read_text())


def test_shipped_profiles_are_listed_and_load():
    assert list_profiles() == SHIPPED
    for name in SHIPPED:
        p = load_profile(name)
        assert isinstance(p, Profile) and p.name == name
        assert p.shape == MODEL_SHAPES[p.model]
        assert len(p.provenance.inputs) >= 4 and all(len(f.sha256) == 64 for f in p.provenance.inputs)
        assert "python -m lorasim.perf.fit" in p.provenance.command
        assert p.provenance.assumptions
        assert p.fit.datasets and all(d.test_mape is None or d.test_mape < 10 for d in p.fit.datasets.values())
        assert isinstance(p.step_time_model(16, True), StepTimeModel)


def test_load_by_path_equals_load_by_name():
    path = Path(str(PROFILES_DIR / "qwen-2.5-7b_h100-64gb.json"))
    assert load_profile(str(path)) == load_profile("qwen-2.5-7b_h100-64gb")


def test_unknown_profile_name_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        load_profile("llama-9b_tpu")
    for name in SHIPPED:
        assert name in str(e.value)


def test_missing_file_is_a_data_file_error(tmp_path):
    with pytest.raises(DataFileError, match="not found"):
        load_profile(str(tmp_path / "nope.json"))


def test_invalid_json_names_the_line(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('{\n  "name": "x",\n  oops\n}')
    with pytest.raises(DataFileError, match=r"bad.json:3: invalid JSON"):
        load_profile(str(f))


def test_invalid_field_gives_one_line_naming_the_field(tmp_path):
    d = shipped_json("llama-3.1-8b_h100-64gb")
    d["step_time"]["decode_seq_ms"] = -1.0
    d["memory"]["surprise"] = 1
    f = tmp_path / "p.json"
    f.write_text(json.dumps(d))
    with pytest.raises(DataFileError) as e:
        load_profile(str(f))
    msg = str(e.value)
    assert "\n" not in msg and "step_time.decode_seq_ms" in msg and "1 more error" in msg


def test_unknown_model_is_rejected(tmp_path):
    d = shipped_json("llama-3.1-8b_h100-64gb") | {"model": "gpt-5"}
    f = tmp_path / "p.json"
    f.write_text(json.dumps(d))
    with pytest.raises(DataFileError, match="unknown"):
        load_profile(str(f))


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("lora", [False, True])
def test_step_time_grows_with_prefill_decode_and_context(name, lora):
    m = load_profile(name).step_time_model(16, lora, max_loras=4)
    base = replace(MIXED, num_lora_tokens=MIXED.num_lora_tokens if lora else 0)
    t0 = m.step_time_s(base)
    assert 0.001 < t0 < 1.0
    more_prefill = replace(base, num_prefill_tokens=base.num_prefill_tokens + 500,
                           prefill_attention_work=base.prefill_attention_work + 500 * 1500)
    assert m.step_time_s(more_prefill) > t0
    assert m.step_time_s(replace(base, num_decode_seqs=base.num_decode_seqs + 50)) > t0
    assert m.step_time_s(replace(base, num_decode_context_tokens=base.num_decode_context_tokens * 4)) > t0
    longer_prompt = replace(base, prefill_attention_work=base.prefill_attention_work * 20)
    assert m.step_time_s(longer_prompt) > t0


@pytest.mark.parametrize("name", SHIPPED)
def test_lora_cost_grows_with_rank_adapters_and_slots(name):
    p = load_profile(name)
    t = {r: p.step_time_model(r, True, max_loras=8).step_time_s(MIXED) for r in (8, 16, 32, 64)}
    assert t[8] < t[16] < t[32] < t[64]
    m = p.step_time_model(16, True, max_loras=8)
    assert m.step_time_s(replace(MIXED, num_distinct_adapters=8)) > m.step_time_s(MIXED)
    assert (p.step_time_model(16, True, max_loras=64).step_time_s(MIXED)
            > p.step_time_model(16, True, max_loras=8).step_time_s(MIXED))
    # LoRA off: no LoRA term, whatever the batch says.
    off = p.step_time_model(64, False, max_loras=64)
    assert off.step_time_s(MIXED) == off.step_time_s(replace(MIXED, num_lora_tokens=0, num_distinct_adapters=0))
    assert off.step_time_s(MIXED) < m.step_time_s(MIXED)


def test_lora_enabled_server_costs_more_even_without_adapters():
    p = load_profile("llama-3.1-8b_h100-64gb")
    base_only = replace(DECODE, num_lora_tokens=0, num_distinct_adapters=0)
    assert p.step_time_model(8, True, max_loras=300).step_time_s(base_only) > p.step_time_model(
        8, False).step_time_s(base_only)


def test_hand_computed_step_time_matches_json_coefficients():
    c = shipped_json("llama-3.1-8b_h100-64gb")["step_time"]
    rank, slots = 16, 8
    b = MIXED
    tokens = b.num_prefill_tokens + b.num_decode_seqs
    ms = (c["base_ms"] + c["prefill_token_ms"] * 1000 + c["prefill_seq_ms"] * 2 + c["decode_seq_ms"] * 100
          + c["decode_context_token_ms"] * 30_000 + c["prefill_attention_ms"] * 500_000
          + c["lora_base_ms"] + slots * (c["lora_slot_ms"] + c["lora_slot_rank_ms"] * rank)
          + c["lora_active_ms"] + tokens * (c["lora_token_rank_ms"] * rank + c["lora_token_slot_ms"] * slots)
          + c["lora_adapter_ms"] * 5 + c["lora_prefill_token_slot_ms"] * 1000 * slots)
    got = load_profile("llama-3.1-8b_h100-64gb").step_time_model(rank, True, max_loras=slots).step_time_s(b)
    assert got == pytest.approx(ms / 1000, rel=1e-12)
    plain = load_profile("llama-3.1-8b_h100-64gb").step_time_model(rank, False).step_time_s(b)
    assert plain == pytest.approx((c["base_ms"] + c["prefill_token_ms"] * 1000 + c["prefill_seq_ms"] * 2
                                   + c["decode_seq_ms"] * 100 + c["decode_context_token_ms"] * 30_000
                                   + c["prefill_attention_ms"] * 500_000) / 1000, rel=1e-12)


def test_batch_change_costs_only_lora_steps_whose_batch_changed():
    c = shipped_json("llama-3.1-8b_h100-64gb")["step_time"]
    assert 1.0 < c["lora_batch_change_ms"] < 4.0  # measured: ~2.7 ms per changed step at max_loras 300
    m = load_profile("llama-3.1-8b_h100-64gb").step_time_model(16, True, max_loras=8)
    changed = replace(MIXED, batch_changed=True)
    assert m.step_time_s(changed) - m.step_time_s(MIXED) == pytest.approx(c["lora_batch_change_ms"] / 1000)
    base_only = replace(MIXED, num_lora_tokens=0, num_distinct_adapters=0)
    assert m.step_time_s(replace(base_only, batch_changed=True)) == m.step_time_s(base_only)  # no LoRA mapping
    plain = load_profile("llama-3.1-8b_h100-64gb").step_time_model(16, False)
    assert plain.step_time_s(changed) == plain.step_time_s(MIXED)


def test_step_time_is_always_positive():
    m = LinearStepTimeModel(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert m.step_time_s(BatchStats()) > 0
    assert load_profile("llama-2-7b_a100").step_time_model(8, True).step_time_s(BatchStats()) > 0


def test_measured_regime_step_times_are_plausible():
    """Llama-3.1-8B on the calibration card: batch-1 decode ~12 ms, a 2,048-token prefill step ~55 ms."""
    m = load_profile("llama-3.1-8b_h100-64gb").step_time_model(16, False)
    assert 0.010 < m.step_time_s(BatchStats(num_decode_seqs=1, num_decode_context_tokens=100)) < 0.015
    prefill = BatchStats(num_prefill_tokens=2048, num_prefill_seqs=10, prefill_attention_work=10 * 205 * 205)
    assert 0.045 < m.step_time_s(prefill) < 0.065


def test_cpu_to_gpu_load_of_rank16_llama31_adapter_is_4_to_10_ms():
    p = load_profile("llama-3.1-8b_h100-64gb")
    size = p.shape.adapter_size_bytes(16, ALL_TARGET_MODULES)
    assert 0.004 <= p.link_cost("cpu_to_gpu").transfer_time_s(size) <= 0.010
    assert p.link_cost("disk_to_cpu").transfer_time_s(size) > p.link_cost("cpu_to_gpu").transfer_time_s(size)
    with pytest.raises(ConfigError, match="unknown link"):
        p.link_cost("gpu_to_nvme")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", SHIPPED)
def test_link_costs_are_positive_and_grow_with_size(name):
    for link in ("disk_to_cpu", "cpu_to_gpu"):
        c = load_profile(name).link_cost(link)
        assert c.overhead_s >= 0 and math.isfinite(c.bandwidth_bytes_per_s) and c.bandwidth_bytes_per_s > 0
        assert c.transfer_time_s(10**9) > c.transfer_time_s(10**6) > 0


def test_kv_capacity_matches_measurement_and_falls_with_slots():
    p = load_profile("llama-3.1-8b_h100-64gb")
    # Measured 305,104 tokens at max_loras 8, rank 8 with the sweep's max_num_seqs 2048.
    assert p.kv_cache_tokens(8, 8, True, max_num_seqs=2048) == pytest.approx(305_104, rel=0.03)
    caps = [p.kv_cache_tokens(n, 8, True) for n in (1, 8, 64, 256)]
    assert caps == sorted(caps, reverse=True) and len(set(caps)) == 4
    assert p.kv_cache_tokens(8, 32, True) < p.kv_cache_tokens(8, 8, True)
    assert p.kv_cache_tokens(8, 8, False) > p.kv_cache_tokens(8, 8, True)
    assert p.kv_cache_tokens(8, 8, True, max_num_seqs=2048) < p.kv_cache_tokens(8, 8, True)  # sampler buffers
    assert p.kv_cache_tokens(8, 8, True, gpu_memory_utilization=0.8) < p.kv_cache_tokens(8, 8, True)
    assert all(p.kv_cache_tokens(n, 8, True) % p.memory.block_size == 0 for n in (1, 3, 77))


@pytest.mark.parametrize("name", ["llama-3.1-8b_h100-64gb", "qwen-2.5-7b_h100-64gb"])
def test_kv_capacity_reproduces_every_measured_point(name):
    p = load_profile(name)
    assert len(p.memory.measured) > 30
    for pt in p.memory.measured:
        got = p.kv_cache_tokens(pt.max_loras, pt.max_lora_rank, pt.lora_enabled, max_num_seqs=pt.max_num_seqs)
        assert got == pytest.approx(pt.kv_cache_tokens, rel=0.05, abs=16_000), pt


def test_kv_capacity_exhausted_is_a_config_error():
    with pytest.raises(ConfigError, match="no memory left for the KV cache"):
        load_profile("llama-3.1-8b_h100-64gb").kv_cache_tokens(4096, 256, True)


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-12), path
    else:
        assert a == b, path


@needs_data
def test_refit_reproduces_committed_profiles():
    from lorasim.perf.fit import fit_all

    for p in fit_all(DATA_DIR, generated="(test)"):
        fresh = p.model_dump(mode="json")
        committed = shipped_json(p.name)
        for d in (fresh, committed):
            d["provenance"].pop("generated")
        _close(fresh, committed, p.name)


coef = st.floats(min_value=-5.0, max_value=50.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(c=st.lists(coef, min_size=13, max_size=13), num=st.integers(1, 1024), ctx=st.integers(0, 10**7),
       lora_share=st.floats(0.0, 1.0), adapters=st.integers(0, 64), changed=st.booleans(),
       min_step_s=st.sampled_from([1e-4, 0.02]), skipped=st.sampled_from([0, 1, 37, 25_000]))
def test_decode_step_shortcut_gives_the_same_float(c, num, ctx, lora_share, adapters, changed, min_step_s, skipped):
    """The engine's steady steps use ``decode_step_s`` (a changed batch) and ``decode_steps_s`` (the same batch
    again); both must equal ``step_time_s`` bit for bit."""
    m = LinearStepTimeModel(*c, min_step_s=min_step_s)
    lora = int(num * lora_share)
    adapters = min(adapters, lora)
    batch = BatchStats(num_decode_seqs=num, num_decode_context_tokens=ctx, num_lora_tokens=lora,
                       num_distinct_adapters=adapters, batch_changed=changed, num_skipped_waiting=skipped)
    same = BatchStats(num_decode_seqs=num, num_decode_context_tokens=ctx, num_lora_tokens=lora,
                      num_distinct_adapters=adapters, batch_changed=False, num_skipped_waiting=skipped)
    models = [m]
    for name in list_profiles():  # and with every shipped profile's fitted coefficients
        shipped = load_profile(name).step_time_model(16, True, 8)
        if isinstance(shipped, LinearStepTimeModel):
            models.append(shipped)
    for model in models:
        assert model.decode_step_s(num, ctx, lora, adapters, changed, skipped) == model.step_time_s(batch)
        assert model.decode_steps_s(num, lora, adapters, skipped)(ctx) == model.step_time_s(same)


def test_scheduler_skip_term_by_hand():
    """Each waiting request the scan skips adds ``scheduler_skip_ms``, whatever the batch (LoRA-active or not)."""
    m = LinearStepTimeModel(base_ms=10.0, prefill_token_ms=0.0, prefill_seq_ms=0.0, decode_seq_ms=0.1,
                            decode_context_token_ms=0.0, prefill_attention_ms=0.0, lora_active_ms=2.0,
                            scheduler_skip_ms=0.0002)
    assert m.step_time_s(BatchStats(num_decode_seqs=10)) == pytest.approx(0.011)
    assert m.step_time_s(BatchStats(num_decode_seqs=10, num_skipped_waiting=25_000)) == pytest.approx(0.016)
    assert m.step_time_s(BatchStats(num_decode_seqs=10, num_lora_tokens=10, num_distinct_adapters=1,
                                    num_skipped_waiting=5_000)) == pytest.approx(0.014)
    # the shipped vLLM profiles carry the measured ~0.2 us per skipped request
    p = load_profile("llama-3.1-8b_h100-64gb")
    assert 1e-4 < p.step_time.scheduler_skip_ms < 4e-4
    assert p.step_time_model(16, True, 8).scheduler_skip_ms == p.step_time.scheduler_skip_ms
