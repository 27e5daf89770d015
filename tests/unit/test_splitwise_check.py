"""The Splitwise check (:mod:`lorasim.perf.splitwise_check`): TP composition by hand, and the check on the real data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lorasim.paths import resolve_data_dir
from lorasim.perf import _vidur as vd
from lorasim.perf import splitwise_check as sc
from lorasim.perf.base import BatchStats
from lorasim.perf.operators import BytesTable, OperatorStepTimeModel
from lorasim.perf.shapes import ModelShape

# 2 layers, 64 query / 8 KV heads (Llama-2-70B's head counts) so that TP 2 gives the profiled 32 query heads per GPU.
SHAPE = ModelShape(name="toy", num_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=64,
                   num_kv_heads=8, vocab_size=256)
OPS = vd.LinearOps(tokens=np.array([1.0, 501.0, 1001.0]), layer_ms=np.array([0.1, 0.6, 1.1]),  # 0.1 + 0.001 (t-1)
                   emb_ms=np.array([0.01, 0.01, 0.01]), up_proj_ms=np.array([0.02, 0.02, 0.02]))
ATTN = vd.Attention(prefill_a=0.01, prefill_b=0.0, prefill_c=1e-6, decode_a=0.005, decode_c=1e-5,
                    prefill_mape=0.0, decode_mape=0.0)
CPU = (1.0, 0.1)
ALL_REDUCE = BytesTable(bytes=[0, 1e6], ms=[0.01, 0.11])  # 0.01 ms + 0.1 ms per MB


def toy_model(tp: int) -> OperatorStepTimeModel:
    tables = vd.operator_tables(OPS, ATTN, CPU, SHAPE, tp, all_reduce=ALL_REDUCE)
    return OperatorStepTimeModel(tables, SHAPE, tp, lora_enabled=False)


def test_tp_composition_by_hand():
    """Decode step, 10 sequences of 100 KV tokens each, at TP 2 and TP 8."""
    b = BatchStats(num_decode_seqs=10, num_decode_context_tokens=1000)
    parts = toy_model(2).breakdown_ms(b)
    assert parts["cpu"] == pytest.approx(1.0 + 0.1 * 10)
    assert parts["embedding"] == pytest.approx(0.01)
    assert parts["linear"] == pytest.approx(2 * (0.1 + 0.001 * 9))
    # KV heads per GPU 8 / 2 = 4 = the profiled 4: no scaling.
    assert parts["attention_decode"] == pytest.approx(2 * (0.005 + 1e-5 * 1000))
    # 2 all-reduces per layer x 2 layers of 10 tokens x 64 hidden x 2 bytes = 1,280 bytes each.
    assert parts["all_reduce"] == pytest.approx(2 * 2 * (0.01 + 0.1 * 1280 / 1e6))
    assert parts["lm_head"] == pytest.approx(0.02 * 256 / (2 * 128))
    assert sum(parts.values()) == pytest.approx(2.0 + 0.01 + 0.218 + 0.03 + 0.040512 + 0.02)
    # TP 8: one KV head per GPU (a quarter of the profiled 4); the all-reduce term is the same per call.
    parts8 = toy_model(8).breakdown_ms(b)
    assert parts8["attention_decode"] == pytest.approx(2 * (0.005 + 1e-5 * 0.25 * 1000))
    assert parts8["all_reduce"] == pytest.approx(parts["all_reduce"])
    # TP 1 has no all-reduce even with a table.
    assert toy_model(1).breakdown_ms(b)["all_reduce"] == 0.0


def test_prefill_heads_scale_with_tp_and_splitwise_rows():
    """Prompt row = one step of `batch` fresh chunks; token row = one decode step at the mean context."""
    one = BatchStats(num_prefill_tokens=16, num_prefill_seqs=1, prefill_attention_work=256)
    for tp, heads in ((2, 1.0), (4, 0.5), (8, 0.25)):  # 64 / tp query heads per GPU over the profiled 32
        assert toy_model(tp).breakdown_ms(one, [(16, 0)])["attention_prefill"] == pytest.approx(
            2 * (0.01 + 1e-6 * heads * 16 * 16))
    m = toy_model(2)
    prompt = sc.predict_ms(m, "prompt", 3, 16, 128)
    assert prompt == pytest.approx(m.step_time_ms(BatchStats(48, 3, prefill_attention_work=3 * 256), [(16, 0)] * 3))
    assert m.breakdown_ms(BatchStats(48, 3, prefill_attention_work=3 * 256), [(16, 0)] * 3)[
        "attention_prefill"] == pytest.approx(3 * 2 * (0.01 + 1e-6 * 256))
    # 10 sequences, prompt 90, 20 output tokens: mean KV per decode step 90 + 20 / 2 = 100 (the case above).
    assert sc.predict_ms(m, "token", 10, 90, 20) == pytest.approx(2.318512)


def test_token_tables_extrapolate_along_top_octave():
    # above the grid the linear ops continue 0.1 + 0.001 (t - 1), not the last segment alone
    assert toy_model(2).tables.linear.at(3001) == pytest.approx(0.1 + 0.001 * 3000)
    xs, ys = vd._extend_top_octave(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 1.0, 2.0, 2.5]), 8)
    # top octave = tokens >= 2: least-squares line through (2, 1), (3, 2), (4, 2.5) = -5/12 + 0.75 t
    assert xs[-1] == 8 and ys[-1] == pytest.approx(6 - 5 / 12)


def test_load_all_reduce_octaves(tmp_path):
    rows = [(2, 2, 2048, 0.01), (2, 2, 2048, 0.03), (2, 2, 2500, 0.05), (2, 2, 4096, 0.04), (2, 2, 5000, 0.06),
            (2, 2, 6000, 0.08), (4, 4, 4096, 9.0), (2, 1, 4096, 9.0)]
    p = tmp_path / "all_reduce.csv"
    pd.DataFrame(rows, columns=["num_workers", "devices_per_node", "size", "time_stats.all_reduce.median"]).to_csv(
        p, index=False)
    t = vd.load_all_reduce(p, 2)
    # octave of 2048 (1448..2896): sizes 2048 (mean 0.02) and 2500 -> median size 2274, median time 0.035;
    # octave of 4096 (2896..5793): 4096, 5000 -> 4548, 0.05; 6000 alone in the octave of 8192.
    assert t.bytes == [2274.0, 4548.0, 6000.0]
    assert t.ms == pytest.approx([0.035, 0.05, 0.08])
    with pytest.raises(ValueError, match="num_workers == 8"):
        vd.load_all_reduce(p, 8)


def test_missing_file_is_one_line_error(tmp_path, capsys):
    assert sc.main(["--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "perf_model.csv" in err and "not found" in err


DATA = resolve_data_dir()
NEEDED = [sc.SPLITWISE, sc.ATTENTION, sc.CPU] + [sc.mlp_path(hw, "llama2-70b") for hw in sc.HARDWARE] + [
    sc.all_reduce_path(hw) for hw in sc.HARDWARE]

# Bounds = the MAPE (%) of this run (lorasim at issue 3) + 3 points. Everything is deterministic, so the margin only
# absorbs library-level numerical differences (pandas medians, numpy polyfit); a change in the composition or the
# importers that worsens a group by more than 3 points fails. The large values are the check's finding, not a target:
# the composed decode step misses a per-layer fixed cost at TP 4/8 (Splitwise's decode step hardly shrinks from
# TP 4 to 8), and batched prefills at TP >= 4 take longer than one composed step.
MAPE_BOUND = {
    ("a100-80gb", 2, "prompt"): 6.1 + 3, ("a100-80gb", 2, "token"): 5.7 + 3,
    ("a100-80gb", 4, "prompt"): 17.4 + 3, ("a100-80gb", 4, "token"): 32.0 + 3,
    ("a100-80gb", 8, "prompt"): 21.7 + 3, ("a100-80gb", 8, "token"): 54.0 + 3,
    ("h100-80gb", 2, "prompt"): 18.0 + 3, ("h100-80gb", 2, "token"): 20.8 + 3,
    ("h100-80gb", 4, "prompt"): 30.8 + 3, ("h100-80gb", 4, "token"): 25.1 + 3,
    ("h100-80gb", 8, "prompt"): 41.0 + 3, ("h100-80gb", 8, "token"): 52.1 + 3,
}


@pytest.fixture(scope="module")
def checked():
    missing = [rel for rel in NEEDED if not (DATA / rel).is_file()]
    if missing:
        pytest.skip(f"shared data not available ({missing[0]} missing in {DATA})")
    rows, notes = sc.compare(DATA)
    return rows, sc.summarize(rows), notes


def test_splitwise_groups_within_bounds(checked):
    rows, summary, notes = checked
    got = {(s.hardware, s.tp, s.phase): s for s in summary.itertuples(index=False)}
    assert set(got) == set(MAPE_BOUND)
    for key, bound in MAPE_BOUND.items():
        s = got[key]
        assert math.isfinite(s.mape_pct) and math.isfinite(s.bias_pct), key
        assert s.mape_pct < bound, (key, s.mape_pct)
        # 21 configurations x 5 repeats (the 512/1/128 one three times); TP2 loses batch 64 (excluded)
        assert s.n == (100 if key[1] == 2 else 105), key
    assert rows.excluded.sum() == 2 * 2 * 5  # TP2 batch 64: two GPUs, two phases, five repeats
    assert not rows.hardware.eq("h100-80gb-pcap").any()
    assert any(n.startswith("bloom-176b") for n in notes)


def test_cli_writes_per_row_csv(checked, tmp_path, capsys):
    out = tmp_path / "rows.csv"
    assert sc.main(["--data-dir", str(DATA), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "overall" in text and "a100-80gb" in text
    d = pd.read_csv(out)
    assert list(d.columns) == sc.OUT_COLUMNS and len(d) == 2 * 620 + 20
    assert np.allclose(d.error_pct, (d.predicted_ms / d.measured_ms - 1) * 100, atol=1e-3)  # 6 digits written
