"""Nothing lost, nothing crashes: bad trace rows (stop, or --skip-bad-rows), --force for existing results, Ctrl-C
writes what the run has, marked incomplete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lorasim.cli import main

GOOD = "arrival_time_s,prompt_tokens,output_tokens\n"
TRACES = [  # (rows after the header, expected message of the first bad row)
    ("0.0,10,5\n0.5,abc,5\n", "t.csv:3: prompt_tokens"),
    ("0.0,10,5\n0.5,10\n", "t.csv:3"),
    ("0.0,10,5\nnan,10,5\n", "t.csv:3: arrival_time_s"),
    ("0.0,10,5\n0.5,-3,5\n", "t.csv:3: prompt_tokens"),
    ("1.0,10,5\n0.5,10,5\n", "t.csv:3: arrival_time_s: timestamps must be non-decreasing"),
    ("0.0,10,5\n0.5,10,99999999999\n", "t.csv:3: output_tokens"),
    ("0.0,10,5\n0.5,10.5,5\n", "t.csv:3: prompt_tokens"),
    ("0.0,10,0\n", "t.csv:2: output_tokens: 0 tokens"),
    ("1e300,10,5\n", "t.csv:2: arrival_time_s"),
]


def write(tmp_path, rows, header=GOOD):
    (tmp_path / "t.csv").write_text(header + rows)
    (tmp_path / "scn.yaml").write_text("adapters: {count: 0}\nworkload: {kind: trace, path: t.csv, popularity: {kind: uniform, base_share: 1.0}}\n")


def run_cli(tmp_path, monkeypatch, capsys, *args):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["run", "scn.yaml", *args])
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


@pytest.mark.parametrize("rows,expected", TRACES)
def test_bad_trace_rows_stop_the_run_naming_the_line(tmp_path, monkeypatch, capsys, rows, expected):
    write(tmp_path, rows)
    code, _, err = run_cli(tmp_path, monkeypatch, capsys)
    assert code == 2 and expected in err and "Traceback" not in err and err.count("\n") == 1, err


@pytest.mark.parametrize("header,expected", [("", "t.csv:1: empty file"),
                                             ("arrival_time_s,prompt_tokens\n", "t.csv:1: unrecognised trace header"),
                                             ("when,in,out\n", "t.csv:1: unrecognised trace header")])
def test_whole_file_errors(tmp_path, monkeypatch, capsys, header, expected):
    write(tmp_path, "" if not header else "0.0,10,5\n", header=header)
    code, _, err = run_cli(tmp_path, monkeypatch, capsys, "--skip-bad-rows")
    assert code == 2 and expected in err, err  # --skip-bad-rows does not hide a file-level problem


def test_skip_bad_rows_reports_how_many_and_which(tmp_path, monkeypatch, capsys):
    write(tmp_path, "0.0,10,5\n0.5,abc,5\n1.0,10,5\n1.5,10\n2.0,-1,5\n3.0,10,5\n")
    code, out, err = run_cli(tmp_path, monkeypatch, capsys, "--skip-bad-rows", "--json")
    assert code == 0, err
    assert "skipped 3 bad rows (lines 3, 5, 6;" in err
    assert json.loads(out)["num_requests"] == 3


def test_existing_results_need_force(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["run", "--set", "workload.num_requests=20", "--out", "o", "--json"]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and "use --force" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([*args, "--force"])
    assert e.value.code == 0


def _default_sigint() -> None:
    # a child inherits an ignored SIGINT, and Python then never raises KeyboardInterrupt; the suite's process has
    # been seen with SIGINT ignored (set by some library during an earlier test), so the child starts from the default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_writes_what_the_run_has_marked_incomplete(tmp_path):
    out = tmp_path / "o"
    p = subprocess.Popen([sys.executable, "-m", "lorasim.cli", "run", "--set", "workload.num_requests=300000",
                          "--set", "workload.arrivals.rate=40", "--set", "output.records=requests", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_default_sigint)
    # wait until the simulation is running (the header line is printed once the workload is built)
    assert "lorasim" in p.stdout.readline()
    time.sleep(2.0)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "interrupted at t=" in err and "Traceback" not in err
    s = json.loads((out / "summary.json").read_text())
    assert s["incomplete"] is True and s["num_requests"] == 300000
    r = pd.read_parquet(out / "requests.parquet")
    assert len(r) == 300000 and r["unfinished"].any() and (r["finish_time_s"].notna()).any()
    assert s["num_completed"] + s["num_aborted"] + s["num_cancelled"] + s["num_unfinished"] == 300000
    assert not list(Path(out).glob(".*.tmp"))  # no half-written file left behind


def test_data_file_errors_survive_worker_processes():
    import pickle

    from lorasim.errors import DataFileError

    e = pickle.loads(pickle.dumps(DataFileError("t.csv", "bad row", line=3)))
    assert str(e) == "t.csv:3: bad row" and e.line == 3


def test_interrupted_recorder_columns_are_cut_to_one_length():
    from lorasim.metrics.recorder import Recorder

    r = Recorder()
    for c in list(r.steps)[:5]:
        r.steps[c].extend([1, 2])
    for c in list(r.steps)[5:]:
        r.steps[c].append(1)  # the interrupt hit between two appends
    r.itl_values_s.extend([0.1, 0.2])
    r.itl_counts.append(3)
    r.make_consistent()
    assert {len(v) for v in r.steps.values()} == {1} and len(r.itl_values_s) == len(r.itl_counts) == 1


def test_force_leaves_no_earlier_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["run", "--set", "workload.num_requests=40", "--set", "cluster.replicas=2", "--out", "o", "--json"])
    assert (tmp_path / "o" / "per_replica.csv").exists()
    with pytest.raises(SystemExit) as e:
        main(["run", "--set", "workload.num_requests=30", "--out", "o", "--json", "--force"])
    assert e.value.code == 0
    assert not (tmp_path / "o" / "per_replica.csv").exists()
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["num_requests"] == 30


def test_cluster_requests_cut_off_by_the_horizon_have_no_replica():
    import lorasim

    res = lorasim.simulate(lorasim.load_scenario(None, overrides=["cluster.replicas=4", "horizon_s=20",
                                                                  "workload.num_requests=300"]))
    r = res.requests
    late = r[r["arrival_time_s"] > 20.5]
    assert len(late) > 0 and (late["replica"] == -1).all()
    assert res.per_replica["num_requests"].sum() == (r["replica"] >= 0).sum()
