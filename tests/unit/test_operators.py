"""The operator step-time model: table interpolation, composition, validation of operator-profile files."""

from __future__ import annotations

import json

import pytest

from lorasim.errors import ConfigError, DataFileError
from lorasim.perf.base import BatchStats, StepTimeModel
from lorasim.perf.operator_profile import (
    OperatorProfile,
    load_operator_profile,
    parse_operator_profile,
    write_operator_profile,
)
from lorasim.perf.operators import PARTS, OperatorStepTimeModel, OperatorTables, TokensTable, interpolate
from lorasim.perf.shapes import MODEL_SHAPES, ModelShape

SHAPE = ModelShape(name="toy", num_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                   num_kv_heads=2, vocab_size=100)


def tables_dict(**over) -> dict:
    """Hand-built tables, each linear in its axes (so interpolation is exact inside the grid)."""
    d = {
        "linear": {"num_tokens": [1, 1001], "ops_ms": {"gemm": [0.1, 1.1], "norm": [0.01, 0.01]}},
        "attention_prefill": {"chunk_tokens": [16, 1016], "context_tokens": [0, 1000],
                              "ms": [[0.016, 0.032], [1.016, 2.032]]},  # 0.001*c + 0.000001*c*k
        "attention_decode": {"batch_size": [1, 101], "kv_tokens_per_seq": [0, 1000],
                             "ms": [[0.005, 0.015], [0.005, 1.005]]},  # 0.005 + 1e-5 * b * kv
        "lm_head": {"num_tokens": [1, 101], "ms": [0.2, 1.2]},
        "cpu": {"batch_size": [1, 2], "ms": [1.0, 1.001]},
        "lora": {"num_tokens": [1, 1001], "num_adapters": [1, 11], "rank": [8, 16],
                 "ms": [[[0.05, 0.05], [0.15, 0.15]], [[0.05 + 8 * 0.1, 0.05 + 16 * 0.1],
                                                       [0.15 + 8 * 0.1, 0.15 + 16 * 0.1]]]},
        # lora = 0.04 + 0.01 * adapters + 0.0001 * (tokens - 1) * rank
    }
    d.update(over)
    return d


def make_model(tp: int = 1, rank: int = 16, lora: bool = True, **over) -> OperatorStepTimeModel:
    return OperatorStepTimeModel(OperatorTables.model_validate(tables_dict(**over)), SHAPE, tp, max_lora_rank=rank,
                                 lora_enabled=lora)


def profile_dict(**tables_over) -> dict:
    return {"name": "toy", "model_shape": SHAPE.model_dump(),
            "provenance": {"source": "hand-built", "device": {"name": "none", "kind": "cpu"}, "date": "2025-01-01",
                           "dtype": "float32", "command": "test"},
            "tables": tables_dict(**tables_over)}


def test_1d_interpolation_edges():
    axes, vals = [[1.0, 3.0, 5.0]], [1.0, 2.0, 6.0]
    assert interpolate(axes, vals, (2.0,)) == pytest.approx(1.5)
    assert interpolate(axes, vals, (4.0,)) == pytest.approx(4.0)
    assert interpolate(axes, vals, (0.0,)) == 1.0          # clamped below the grid
    assert interpolate(axes, vals, (7.0,)) == pytest.approx(10.0)  # extrapolated along the last segment
    # A falling last segment never predicts less than the edge value.
    assert interpolate(axes, [1.0, 5.0, 4.0], (9.0,)) == 4.0
    assert interpolate([[3.0]], [2.5], (100.0,)) == 2.5    # single point: constant


def test_2d_and_3d_interpolation_are_exact_for_multilinear_functions():
    def f(x, y):
        return 1 + 2 * x + 3 * y + 4 * x * y

    xs, ys = [0.0, 2.0, 4.0], [0.0, 10.0]
    vals = [[f(x, y) for y in ys] for x in xs]
    assert interpolate([xs, ys], vals, (1.0, 5.0)) == pytest.approx(38.0)
    assert interpolate([xs, ys], vals, (6.0, 20.0)) == pytest.approx(f(6, 20))  # bilinear extrapolation
    assert interpolate([xs, ys], vals, (-1.0, 5.0)) == pytest.approx(f(0, 5))   # clamped in x

    def g(a, b, c):
        return a * b + 2 * c + a * b * c

    zs = [1.0, 3.0]
    v3 = [[[g(a, b, c) for c in zs] for b in ys] for a in xs]
    assert interpolate([xs, ys, zs], v3, (3.0, 2.5, 2.0)) == pytest.approx(g(3, 2.5, 2))


def test_breakdown_is_hand_computable_and_sums_to_the_step():
    m = make_model()
    # 1 decode (kv 500) + one 101-token chunk after 400 cached tokens; one adapter.
    b = BatchStats(num_prefill_tokens=101, num_prefill_seqs=1, num_decode_seqs=1, num_decode_context_tokens=500,
                   prefill_attention_work=101 * (400 + 101), num_lora_tokens=102, num_distinct_adapters=1)
    parts = m.breakdown_ms(b)
    assert set(parts) == set(PARTS)
    assert parts["cpu"] == pytest.approx(1.001)                      # 2 sequences
    assert parts["linear"] == pytest.approx(2 * (0.1 + 0.001 * 101 + 0.01))
    assert parts["attention_prefill"] == pytest.approx(2 * (0.001 * 101 + 1e-6 * 101 * 400))
    assert parts["attention_decode"] == pytest.approx(2 * (0.005 + 1e-5 * 500))
    assert parts["lora"] == pytest.approx(2 * (0.05 + 0.0001 * 101 * 16))
    assert parts["lm_head"] == pytest.approx(0.21)
    assert parts["all_reduce"] == 0.0 and parts["embedding"] == 0.0  # TP 1; no embedding table
    assert m.step_time_ms(b) == pytest.approx(sum(parts.values()))
    assert m.step_time_s(b) == pytest.approx(sum(parts.values()) / 1000)
    assert isinstance(m, StepTimeModel)


def test_exact_chunks_override_the_equal_chunk_assumption():
    m = make_model()
    chunks = [(16, 0), (216, 800)]
    b = BatchStats(num_prefill_tokens=232, num_prefill_seqs=2, prefill_attention_work=16 * 16 + 216 * 1016)
    exact = m.breakdown_ms(b, chunks)["attention_prefill"]
    assert exact == pytest.approx(2 * sum(0.001 * c + 1e-6 * c * k for c, k in chunks))
    assert m.breakdown_ms(b)["attention_prefill"] != pytest.approx(exact)


def test_all_reduce_only_under_tensor_parallelism():
    ar = {"bytes": [0, 1e6], "ms": [0.01, 0.11]}
    b = BatchStats(num_decode_seqs=10, num_decode_context_tokens=1000)
    assert make_model(tp=1, all_reduce=ar).breakdown_ms(b)["all_reduce"] == 0.0
    nbytes = 10 * SHAPE.hidden_size * SHAPE.dtype_bytes
    assert make_model(tp=2, all_reduce=ar).breakdown_ms(b)["all_reduce"] == pytest.approx(
        2 * 2 * (0.01 + 0.1 * nbytes / 1e6))
    with pytest.raises(ConfigError, match="all_reduce"):
        make_model(tp=2)


def test_lora_term_zero_without_adapters_and_grows_with_rank_and_adapters():
    base = BatchStats(num_decode_seqs=64, num_decode_context_tokens=64 * 300)
    assert make_model().breakdown_ms(base)["lora"] == 0.0

    def lora(rank, adapters):
        b = BatchStats(num_decode_seqs=64, num_decode_context_tokens=64 * 300, num_lora_tokens=64,
                       num_distinct_adapters=adapters)
        return make_model(rank=rank).breakdown_ms(b)["lora"]

    assert 0 < lora(8, 1) < lora(16, 1) < lora(16, 4) < lora(16, 8)
    assert make_model(lora=False).breakdown_ms(
        BatchStats(num_decode_seqs=4, num_lora_tokens=4, num_distinct_adapters=1))["lora"] == 0.0
    tables = {k: v for k, v in tables_dict().items() if k != "lora"}
    with pytest.raises(ConfigError, match="tables.lora"):
        OperatorStepTimeModel(OperatorTables.model_validate(tables), SHAPE)


def test_profile_round_trip(tmp_path):
    prof = parse_operator_profile(profile_dict())
    path = tmp_path / "ops.json"
    write_operator_profile(prof, path)
    again = load_operator_profile(path)
    assert again == prof
    assert again.step_time_model().step_time_s(BatchStats(num_decode_seqs=1, num_decode_context_tokens=10)) > 0
    assert json.loads(path.read_text())["format"] == "lorasim-operator-profile/1"


@pytest.mark.parametrize(("tables_over", "where", "what"), [
    ({"attention_decode": {"batch_size": [1, 2], "kv_tokens_per_seq": [0, 10], "ms": [[1.0, 2.0], [3.0]]}},
     "tables.attention_decode", "ms: shape"),
    ({"lm_head": {"num_tokens": [4, 2], "ms": [1.0, 2.0]}}, "tables.lm_head", "num_tokens: grid must be"),
    ({"lm_head": {"num_tokens": [1, 2], "ms": [1.0, -2.0]}}, "tables.lm_head", ">= 0 ms"),
    ({"linear": {"num_tokens": [1, 2], "ops_ms": {"qkv_proj": [1.0]}}}, "tables.linear", "ops_ms.qkv_proj"),
    ({"lm_head": {"num_tokens": [1, 2], "ms": [1.0, 2.0], "unit": "s"}}, "tables.lm_head.unit", "Extra inputs"),
    ({"h2d_copy": {"bytes": [1, 2]}}, "tables.h2d_copy", "pinned_ms or pageable_ms"),
])
def test_validation_errors_name_the_field(tmp_path, tables_over, where, what):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(profile_dict(**tables_over)))
    with pytest.raises(DataFileError) as e:
        load_operator_profile(path)
    msg = str(e.value)
    assert str(path) in msg and where in msg and what in msg


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(DataFileError, match="not found"):
        load_operator_profile(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DataFileError, match="invalid JSON"):
        load_operator_profile(tmp_path / "x.json")
    (tmp_path / "p.json").write_text(json.dumps({"name": "p", "step_time": {}}))
    with pytest.raises(DataFileError, match="step-time profile"):
        load_operator_profile(tmp_path / "p.json")
    d = profile_dict()
    d["format"] = "something-else/2"
    with pytest.raises(DataFileError, match="format"):
        parse_operator_profile(d)


def test_known_shape_and_tokens_table():
    assert OperatorProfile.model_validate(profile_dict() | {"model_shape": MODEL_SHAPES["llama-2-7b"].model_dump()})
    t = TokensTable(num_tokens=[1, 3], ms=[1.0, 3.0])
    assert t.at(2) == pytest.approx(2.0)
