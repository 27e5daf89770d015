"""``lorasim sweep``: the grid x seeds table is the same serially, with worker processes and on a Dask cluster; an
interrupted sweep resumes; bad grids are refused before anything runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lorasim.errors import ConfigError
from lorasim.sweep import Sweep, parse_grid, split_values
from tests.e2e.test_cli import lorasim_cli

GRID = parse_grid(["engine.max_loras=2,8", "scheduler.name=vllm,fcfs-break"])
SET = ["workload.num_requests=120"]


def sweep(**kw) -> Sweep:
    return Sweep(None, GRID, seeds=2, overrides=SET, **kw)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    return out, sweep().run(out, workers=1)


def test_table_shape_and_order(serial):
    _, t = serial
    assert list(t.columns[:3]) == ["engine.max_loras", "scheduler.name", "seed"]
    assert t[["engine.max_loras", "scheduler.name", "seed"]].values.tolist() == [
        [2, "vllm", 0], [2, "vllm", 1], [2, "fcfs-break", 0], [2, "fcfs-break", 1],
        [8, "vllm", 0], [8, "vllm", 1], [8, "fcfs-break", 0], [8, "fcfs-break", 1]]
    assert (t["num_completed"] == 120).all()
    assert t.loc[0, "ttft_ms_mean"] != t.loc[1, "ttft_ms_mean"]  # seeds differ


def test_each_point_equals_a_single_run(serial):
    import lorasim

    _, t = serial
    res = lorasim.simulate(lorasim.load_scenario(None, overrides=[*SET, "engine.max_loras=8",
                                                                  "scheduler.name=fcfs-break", "seed=1"]))
    assert t.iloc[7]["ttft_ms_p99"] == res.summary["ttft_ms_p99"]


def test_workers_give_the_serial_table(serial, tmp_path):
    _, t = serial
    pd.testing.assert_frame_equal(sweep().run(tmp_path, workers=2), t)


def test_dask_gives_the_serial_table(serial, tmp_path):
    distributed = pytest.importorskip("distributed")
    _, t = serial
    with distributed.LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        pd.testing.assert_frame_equal(sweep().run(tmp_path, dask_address=client), t)


def test_resume_runs_only_the_missing_points(serial, tmp_path):
    out, t = serial
    sw = sweep()
    import shutil

    shutil.copytree(out, tmp_path / "s")
    missing = sorted((tmp_path / "s" / "points").iterdir())[:3]
    for f in missing:
        f.unlink()
    progress = []
    again = sw.run(tmp_path / "s", on_point=lambda d, n: progress.append((d, n)))
    assert progress[0] == (5, 8) and progress[-1] == (8, 8)
    pd.testing.assert_frame_equal(again, t)
    assert pd.read_parquet(tmp_path / "s" / "sweep.parquet").equals(t)


def test_another_sweep_in_the_same_directory_is_refused(serial):
    out, _ = serial
    with pytest.raises(ConfigError, match="holds a different sweep"):
        Sweep(None, GRID, seeds=3, overrides=SET).run(out)


def test_grid_parsing():
    assert split_values("1, [8, 16], {a: 1, b: 2}, 'x,y'") == ["1", "[8, 16]", "{a: 1, b: 2}", "'x,y'"]
    assert parse_grid(["adapters.ranks=[8, 16],[32]"]) == {"adapters.ranks": [[8, 16], [32]]}
    for bad, msg in ((["engine.max_loras"], "expected key.path=v1,v2"), (["seed=1,2"], "--seeds"),
                     (["a=1", "a=2"], "given twice"), (["a=1,,2"], "an empty value"),
                     (["a=4,8,4.0"], "value '4.0' given twice")):
        with pytest.raises(ConfigError, match=msg):
            parse_grid(bad)


def test_an_invalid_grid_value_is_named_before_anything_runs():
    with pytest.raises(ConfigError, match=r"grid point engine.max_loras=0: .*max_loras"):
        Sweep(None, parse_grid(["engine.max_loras=4,0"]), overrides=SET)


def test_cli(tmp_path):
    p = lorasim_cli("sweep", "--grid", "engine.max_loras=2,4", "--set", "workload.num_requests=60", "--out",
                    str(tmp_path), "--workers", "1")
    assert p.returncode == 0, p.stderr
    t = pd.read_csv(tmp_path / "sweep.csv")
    assert t["engine.max_loras"].tolist() == [2, 4] and (t["num_completed"] == 60).all()
    assert json.loads((tmp_path / "sweep.json").read_text())["grid"] == {"engine.max_loras": [2, 4]}
    bad = lorasim_cli("sweep", "--grid", "engine.max_lora=2,4", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "max_lora" in bad.stderr and "Traceback" not in bad.stderr


def test_grid_order_does_not_change_any_point(serial, tmp_path):
    _, t = serial
    rev = Sweep(None, parse_grid(["scheduler.name=fcfs-break,vllm", "engine.max_loras=8,2"]), seeds=2,
                overrides=SET).run(tmp_path)
    key = ["engine.max_loras", "scheduler.name", "seed"]
    a = t.sort_values(key).reset_index(drop=True)
    b = rev[t.columns].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_an_edited_scenario_file_is_a_different_sweep(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("workload: {num_requests: 30, arrivals: {kind: poisson, rate: 5}}\n")
    Sweep(f, parse_grid(["engine.max_loras=1,2"])).run(tmp_path / "o")
    f.write_text("workload: {num_requests: 30, arrivals: {kind: poisson, rate: 50}}\n")
    with pytest.raises(ConfigError, match="holds a different sweep"):
        Sweep(f, parse_grid(["engine.max_loras=1,2"])).run(tmp_path / "o")


def test_summary_records_are_kept_for_the_points(tmp_path):
    """A sweep runs its points with ``records: requests`` unless the user asked for ``summary`` (bounded memory)."""
    import lorasim
    from lorasim.sweep import run_point

    over = ["workload.num_requests=1200", "adapters.count=3", "engine.max_loras=2", "engine.max_cpu_loras=3"]
    lean = run_point(None, [*over, "output.records=summary"], None)
    full = run_point(None, over, None)
    assert lean["percentile_relative_accuracy"] == 0.01 and "percentile_relative_accuracy" not in full
    assert lean["num_completed"] == full["num_completed"] == 1200
    # more TTFT samples than are kept exactly: the p99 comes from the sketch and differs from the exact one
    assert lean["ttft_ms_p99"] != full["ttft_ms_p99"]
    assert lean["ttft_ms_p99"] == pytest.approx(full["ttft_ms_p99"], rel=0.05)
    single = lorasim.simulate(lorasim.load_scenario(None, overrides=[*over, "output.records=summary"]))
    assert single.summary["ttft_ms_p99"] == lean["ttft_ms_p99"]
