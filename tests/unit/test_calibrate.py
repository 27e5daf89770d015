"""lorasim calibrate: the held-out interpolation check, the linear fit of a composed model, the CLI (tiny CPU run)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from lorasim.calibrate.fit import build_profile, fit_h2d_link, fit_step_time, heldout_mape, interpolation_report
from lorasim.cli import main
from lorasim.perf.base import BatchStats
from lorasim.perf.operator_profile import load_operator_profile, parse_operator_profile, write_operator_profile
from lorasim.perf.profile import load_profile
from lorasim.perf.shapes import ModelShape

SHAPE = ModelShape(name="toy", num_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                   num_kv_heads=2, vocab_size=100)
L = SHAPE.num_layers
# Known per-operator constants (ms) ...
CPU0, CPU1, LIN, HEAD, BETA, GAMMA, LORA0, LORA1, LORA2 = 2.0, 0.01, 0.002, 0.003, 1e-5, 1e-7, 0.05, 1e-5, 0.02
# ... and the linear coefficients they compose to.
EXPECTED = {"base_ms": CPU0, "prefill_token_ms": L * LIN, "prefill_seq_ms": CPU1 + HEAD,
            "decode_seq_ms": CPU1 + L * LIN + HEAD, "decode_context_token_ms": L * BETA,
            "prefill_attention_ms": L * GAMMA, "lora_active_ms": L * LORA0, "lora_token_rank_ms": L * LORA1,
            "lora_adapter_ms": L * LORA2}


COPY_BYTES = [4096, 1 << 20, 1 << 24]


def synthetic_profile(tmp_path=None):
    chunks = list(range(16, 4097, 16))
    ctx, b, kv, tok, ad, rk = [0, 4096], [1, 256], [16, 4096], [1, 4096], [1, 64], [8, 64]
    tables = {
        "cpu": {"batch_size": [1, 2], "ms": [CPU0 + CPU1, CPU0 + 2 * CPU1]},
        "linear": {"num_tokens": tok, "ops_ms": {"gemm": [LIN * t for t in tok]}},
        "lm_head": {"num_tokens": [1, 256], "ms": [HEAD, 256 * HEAD]},
        "attention_decode": {"batch_size": b, "kv_tokens_per_seq": kv, "ms": [[BETA * x * y for y in kv] for x in b]},
        "attention_prefill": {"chunk_tokens": chunks, "context_tokens": ctx,
                              "ms": [[GAMMA * c * (k + c) for k in ctx] for c in chunks]},
        "lora": {"num_tokens": tok, "num_adapters": ad, "rank": rk,
                 "ms": [[[LORA0 + LORA1 * t * r + LORA2 * a for r in rk] for a in ad] for t in tok]},
        "h2d_copy": {"bytes": COPY_BYTES, "pinned_ms": [0.01 + n / 25e6 for n in COPY_BYTES]},
    }
    doc = {"name": "synthetic", "model_shape": SHAPE.model_dump(), "tables": tables,
           "provenance": {"source": "test", "device": {"name": "none", "kind": "cuda", "memory_bytes": 80 * 2**30},
                          "date": "2025-01-01", "dtype": "bfloat16", "command": "test"}}
    prof = parse_operator_profile(doc)
    if tmp_path is not None:
        write_operator_profile(prof, tmp_path / "ops.json")
    return prof


def test_heldout_mape_hand_computed():
    xs = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert heldout_mape([xs], [1 + 2 * x for x in xs]) == (pytest.approx(0.0), 2)
    # x^2 from points 0, 2, 4: 2 at x=1 (true 1, 100%) and 10 at x=3 (true 9, 11.1%).
    mape, n = heldout_mape([xs], [x * x for x in xs])
    assert n == 2 and mape == pytest.approx((100 + 100 / 9) / 2)
    assert heldout_mape([[1.0, 2.0]], [1.0, 2.0]) == (None, 0)  # nothing to hold out


def test_fit_recovers_the_coefficients_of_a_linear_composition():
    coef, stats = fit_step_time(synthetic_profile(), n_train=300, n_test=100)
    for k, v in EXPECTED.items():
        assert coef[k] == pytest.approx(v, rel=2e-3), k
    assert stats["base"]["test_mape"] < 0.1 and stats["lora"]["test_mape"] < 0.1


def test_interpolation_report_on_exact_tables():
    rep = interpolation_report(synthetic_profile().tables)
    assert rep["linear.gemm"][0] is None  # two points: nothing held out
    assert rep["attention_prefill"][0] < 0.5 and rep["attention_prefill"][1] > 100


def test_h2d_link_from_the_copy_table():
    link = fit_h2d_link(synthetic_profile())
    assert link["bandwidth_bytes_per_s"] == pytest.approx(25e9, rel=1e-6)
    assert link["overhead_s"] == pytest.approx(2 * 7 * L * 0.01e-3, rel=1e-6)  # A and B x 7 modules x layers


def test_build_profile_is_loadable_and_agrees_with_the_composed_model(tmp_path):
    op = synthetic_profile(tmp_path)
    prof, _ = build_profile(op, tmp_path / "ops.json", "test")
    out = tmp_path / "profile.json"
    out.write_text(json.dumps(prof.model_dump(mode="json")))
    loaded = load_profile(out)
    assert loaded.shape == SHAPE and loaded.provenance.inputs[0].path.endswith("ops.json")
    assert loaded.adapter_load.cpu_to_gpu.bandwidth_bytes_per_s == pytest.approx(25e9, rel=1e-5)
    assert loaded.kv_cache_tokens(1, 16, True) > 0
    b = BatchStats(num_prefill_tokens=500, num_prefill_seqs=1, num_decode_seqs=30, num_decode_context_tokens=30_000,
                   prefill_attention_work=500 * 1500, num_lora_tokens=530, num_distinct_adapters=3)
    composed = op.step_time_model(max_lora_rank=16).step_time_s(b)
    assert loaded.step_time_model(16, True).step_time_s(b) == pytest.approx(composed, rel=1e-3)


def test_missing_torch_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "run", "--model", "tiny", "--quick", "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "pip install -e '.[calibrate]'" in err and len(err.strip().splitlines()) == 1


def test_fit_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "fit", str(tmp_path / "none.json"), "--out", str(tmp_path / "p.json")])
    assert e.value.code == 2 and "operator profile not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "run", "--model", "gpt-9", "--out", str(tmp_path / "x.json")])
    assert e.value.code == 2 and "llama-3.1-8b" in capsys.readouterr().err


def test_cpu_tiny_run_and_fit(tmp_path, capsys):
    pytest.importorskip("torch")
    ops = tmp_path / "ops.json"
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "run", "--model", "tiny", "--device", "cpu", "--quick", "--threads", "1",
              "--no-progress", "--out", str(ops)])
    assert e.value.code == 0 and "wrote" in capsys.readouterr().out
    op = load_operator_profile(ops)
    t, p = op.tables, op.provenance
    assert p.device.kind == "cpu" and p.dtype == "float32" and p.torch_version and p.settings["grid"] == "quick"
    assert t.h2d_copy.kind == "cpu_memcpy" and t.h2d_copy.pinned_ms is None
    for vals in [*t.linear.ops_ms.values(), t.lm_head.ms, t.embedding.ms, t.h2d_copy.pageable_ms,
                 *t.attention_prefill.ms, *t.attention_decode.ms, *np.reshape(t.lora.ms, (-1, 1))]:
        assert all(v > 0 for v in vals)
    # Physics: more work takes longer (large ratios, so scheduling noise cannot flip them).
    assert t.linear.at(256) > t.linear.at(1)
    assert t.attention_decode.at(32, 1024) > t.attention_decode.at(1, 64)
    assert t.attention_prefill.at(256, 512) > t.attention_prefill.at(16, 0)
    assert t.lora.at(256, 4, 32) > t.lora.at(1, 1, 8)
    assert t.h2d_copy.at(1 << 22, field="pageable_ms") > t.h2d_copy.at(4096, field="pageable_ms")
    prof = tmp_path / "profile.json"
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "fit", str(ops), "--out", str(prof), "--n-train", "90", "--n-test", "30", "--json"])
    assert e.value.code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["step_fit"]["base"]["test_mape"] is not None and "lora" in rep["interpolation_heldout_mape_pct"]
    loaded = load_profile(prof)
    assert loaded.shape.name == "tiny" and loaded.step_time.prefill_token_ms > 0
    assert loaded.step_time_model(16, True).step_time_s(BatchStats(num_decode_seqs=8,
                                                                    num_decode_context_tokens=800)) > 0
