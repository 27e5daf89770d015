"""`lorasim validate`: replaying real-run rows, the window rule, determinism and errors (synthetic fixture)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lorasim.calibrate.validate import build_scenario, select_runs, validate_runs, window_metrics
from lorasim.cli import main
from lorasim.errors import DataFileError
from tests.conftest import DATA_DIR, needs_data

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "validate" / "runs_tiny.csv"


def test_window_rule_hand_check():
    # 4 requests: two finish inside the 10 s window, one after it, one aborted inside it
    q = pd.DataFrame({"finish_time_s": [2.0, 10.0, 10.5, 3.0], "aborted": [False, False, False, True],
                      "prompt_tokens": [100, 50, 1000, 1000], "output_tokens": [20, 30, 1000, 1000],
                      "ttft_s": [0.1, 0.3, 5.0, 9.0]})
    m = window_metrics(q, 10.0)
    assert m["total_tok_s"] == pytest.approx((100 + 20 + 50 + 30) / 10.0)
    assert m["req_throughput_rps"] == pytest.approx(0.2)
    assert m["ttft_ms_mean"] == pytest.approx(200.0)
    assert 100.0 < m["ttft_ms_p99"] <= 300.0


def test_select_and_scenario():
    runs, skips = select_runs(pd.read_csv(FIXTURE))
    assert [r["run_dir"] for r in runs] == ["synthetic/tiny/run_a", "synthetic/tiny/run_b"]
    assert skips == {"arrival_process not per-adapter Poisson": 1}
    sc = build_scenario(runs[0])
    assert sc["model"]["profile"] == "llama-3.1-8b_h100-64gb"
    assert sc["adapters"] == {"count": 8, "ranks": [8, 16]}
    assert sc["engine"]["max_num_seqs"] == 256 and sc["engine"]["max_num_batched_tokens"] == 2048  # NaN defaults
    assert sc["workload"]["arrivals"]["assignment"] == "shuffled" and sc["seed"] == 0
    assert sc["horizon_s"] == sc["workload"]["duration_s"] == runs[0]["total_time_arg_s"]  # stop at the window end
    assert sc["engine"]["adapter_activation"] == "vllm"  # the runs' worker activates adapters one at a time
    assert build_scenario(runs[1])["engine"]["max_num_seqs"] == 64


def test_max_rate_leaves_out_heavier_runs():
    df = pd.read_csv(FIXTURE)
    rates = dict(zip(df["run_dir"], df["aggregate_rate_rps"]))
    cut = min(rates["synthetic/tiny/run_a"], rates["synthetic/tiny/run_b"])
    runs, skips = select_runs(df, max_rate=cut)
    kept = [r["run_dir"] for r in runs]
    assert all(rates[k] <= cut for k in kept) and len(kept) == 1
    assert skips[f"aggregate_rate_rps above --max-rate {cut:g}"] == 1


def test_missing_runs_file(tmp_path):
    with pytest.raises(DataFileError, match="not found"):
        validate_runs(tmp_path / "nope.csv", DATA_DIR)


def test_missing_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.read_csv(FIXTURE).drop(columns=["adapter_rate_values"]).to_csv(bad, index=False)
    with pytest.raises(DataFileError, match="adapter_rate_values"):
        validate_runs(bad, DATA_DIR)


def test_cli_missing_file_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--runs", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "runs file not found" in capsys.readouterr().err


@needs_data
def test_cli_outputs_and_determinism(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--runs", str(FIXTURE), "--data-dir", str(DATA_DIR), "--out", str(tmp_path / "s")])
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    assert "skipped 1" in printed and "MAPE" in printed
    df = pd.read_csv(tmp_path / "s" / "validation.csv")
    assert len(df) == 2 and list(df.run_dir) == sorted(df.run_dir)
    for m in ("total_tok_s", "req_throughput_rps", "ttft_ms_mean", "ttft_ms_p99", "itl_ms_mean"):
        assert f"measured_{m}" in df and f"predicted_{m}" in df
    assert {"run_dir", "model", "group", "max_loras", "n_adapters", "aggregate_rate_rps", "wall_s"} <= set(df)
    assert (df.predicted_total_tok_s > 0).all()
    # every counted request arrived inside the 20 s window: throughput cannot exceed the offered load much
    assert (df.predicted_req_throughput_rps <= df.aggregate_rate_rps * 1.6).all()
    assert (tmp_path / "s" / "predicted_vs_measured.png").stat().st_size > 0
    summ = pd.read_csv(tmp_path / "s" / "summary.csv")
    assert summ.load.iloc[0] == "all" and summ.n.iloc[0] == 2 and set(summ.load) <= {"all", "underloaded", "overloaded"}

    seen = []
    par, skips = validate_runs(FIXTURE, DATA_DIR, workers=2, on_run=lambda done, total, row: seen.append((done, total)))
    assert skips == {"arrival_process not per-adapter Poisson": 1} and seen == [(1, 2), (2, 2)]
    pd.testing.assert_frame_equal(df.drop(columns="wall_s"), par.drop(columns="wall_s"), check_dtype=False)
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        on_dask, _ = validate_runs(FIXTURE, DATA_DIR, dask_address=client)
    pd.testing.assert_frame_equal(par.drop(columns="wall_s"), on_dask.drop(columns="wall_s"))


def _cli(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["validate", *args])
    return exc.value.code, capsys.readouterr().err


def test_cli_bad_row_value_names_file_line_and_run(tmp_path, capsys):
    df = pd.read_csv(FIXTURE).astype({"max_loras": object})
    df.loc[1, "max_loras"] = "abc"  # run_b, the second data row: line 3
    bad = tmp_path / "runs.csv"
    df.to_csv(bad, index=False)
    code, err = _cli(["--runs", str(bad), "--data-dir", str(DATA_DIR), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and f"{bad}" in err and "line 3 (synthetic/tiny/run_b)" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # refused before anything ran or was created
    df.loc[1, "max_loras"] = -5
    df.to_csv(bad, index=False)
    code, err = _cli(["--runs", str(bad), "--data-dir", str(DATA_DIR), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "line 3" in err and "max_loras" in err


def test_cli_refuses_empty_selection_zero_limit_and_an_earlier_validation(tmp_path, capsys):
    base = ["--runs", str(FIXTURE), "--data-dir", str(DATA_DIR)]
    code, err = _cli([*base, "--group", "nosuch", "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "no run to replay" in err and not (tmp_path / "a").exists()
    code, err = _cli([*base, "--max-rate", "0", "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "aggregate_rate_rps above --max-rate 0" in err
    code, err = _cli([*base, "--limit", "0", "--out", str(tmp_path / "a")], capsys)
    assert code == 2
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "validation.csv").write_text("x\n")
    code, err = _cli([*base, "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and "--force" in err and (tmp_path / "b" / "validation.csv").read_text() == "x\n"


def test_dask_without_distributed_is_one_line(monkeypatch):
    import sys

    from lorasim.errors import ConfigError
    from lorasim.parallel import run_tasks

    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if the extra were not installed
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[dask\]'"):
        list(run_tasks(abs, [(1,)], dask_address="tcp://127.0.0.1:9"))


def test_summary_by_load_by_hand():
    """Three runs of one model: two underloaded (served >= 95% of the offered rate), one overloaded; errors by
    hand: tok/s +10%, -10%, +40%; ITL -20%, 0%, -50%; TTFT +20%, +50%, -10%."""
    from lorasim.calibrate.validate import summarize

    df = pd.DataFrame({
        "model": "m", "group": "g", "aggregate_rate_rps": [1.0, 2.0, 10.0],
        "measured_req_throughput_rps": [1.0, 1.9, 5.0],
        "measured_total_tok_s": [100.0, 100.0, 100.0], "predicted_total_tok_s": [110.0, 90.0, 140.0],
        "measured_itl_ms_mean": [10.0, 10.0, 10.0], "predicted_itl_ms_mean": [8.0, 10.0, 5.0],
        "measured_ttft_ms_mean": [100.0, 100.0, 100.0], "predicted_ttft_ms_mean": [120.0, 150.0, 90.0],
    })
    s = summarize(df).set_index("load")
    assert list(s.index) == ["all", "underloaded", "overloaded"]
    assert list(s.n) == [3, 2, 1]
    assert s.tok_mape_pct.to_list() == pytest.approx([20.0, 10.0, 40.0])
    assert s.itl_mape_pct.to_list() == pytest.approx([70 / 3, 10.0, 50.0])
    assert s.itl_bias_pct.to_list() == pytest.approx([-70 / 3, -10.0, -50.0])
    assert s.ttft_within_30pct.to_list() == pytest.approx([2 / 3, 0.5, 1.0])
    assert "twin_tok_mape_pct" not in s
    assert list(summarize(df.iloc[:2]).load) == ["all", "underloaded"]  # no overloaded run: no such row
