"""Case 08 (../shared/cases/08-cache-smaller-than-slots.yaml): tiers that cannot hold what they promise are refused
before the run, with an error naming both values (or the tier and the adapter size)."""

from __future__ import annotations

import pytest

import lorasim
from lorasim.errors import ConfigError
from tests.helpers import scenario


def test_cpu_cache_smaller_than_slots():
    with pytest.raises(ConfigError) as e:
        scenario(engine={"max_loras": 8, "max_cpu_loras": 1})
    msg = str(e.value)
    assert "max_cpu_loras (1)" in msg and "max_loras (8)" in msg
    assert msg.startswith("engine:")


def test_gpu_adapter_memory_too_small_for_slots():
    sc = scenario(adapters={"count": 4, "ranks": 8},
                  engine={"max_loras": 4, "max_lora_rank": 128, "gpu_memory_for_adapters_bytes": 10_000_000})
    with pytest.raises(ConfigError) as e:
        lorasim.simulate(sc)
    msg = str(e.value)
    # a rank-128 slot of Llama-3.1-8B (all 7 modules): 128 * 21,504... bytes; the tier holds none of them
    slot = lorasim.perf.shapes.MODEL_SHAPES["llama-3.1-8b"].adapter_size_bytes(
        128, lorasim.perf.shapes.ALL_TARGET_MODULES)
    assert "engine.gpu_memory_for_adapters_bytes (10000000)" in msg
    assert f"holds 0 slot(s) of max_lora_rank 128 ({slot} bytes each)" in msg
    assert "max_loras is 4" in msg


def test_adapter_rank_above_max_lora_rank():
    sc = scenario(adapters={"count": 2, "ranks": [8, 64]}, engine={"max_loras": 2, "max_lora_rank": 32})
    with pytest.raises(ConfigError, match=r"'lora-1' has rank 64 > engine.max_lora_rank 32"):
        lorasim.simulate(sc)


def test_cpu_memory_budget():
    sc = scenario(adapters={"count": 4, "ranks": 16},
                  engine={"max_loras": 2, "max_cpu_loras": 4, "cpu_memory_for_adapters_bytes": 100_000_000})
    with pytest.raises(ConfigError, match=r"holds 1 adapter\(s\).*max_cpu_loras is 4"):
        lorasim.simulate(sc)
