"""Same scenario and seed -> identical outputs, in this process and in another one; a different seed differs."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

import lorasim

SMALL = ["workload.num_requests=300"]


def test_same_seed_identical_tables():
    a = lorasim.simulate(lorasim.load_scenario(None, overrides=SMALL))
    b = lorasim.simulate(lorasim.load_scenario(None, overrides=SMALL))
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.steps, b.steps)
    pd.testing.assert_frame_equal(a.adapter_events, b.adapter_events)
    assert a.summary == b.summary or json.dumps(a.summary, default=str) == json.dumps(b.summary, default=str)


def test_different_seed_differs():
    a = lorasim.simulate(lorasim.load_scenario(None, overrides=SMALL, seed=1))
    b = lorasim.simulate(lorasim.load_scenario(None, overrides=SMALL, seed=2))
    assert not a.requests["arrival_time_s"].equals(b.requests["arrival_time_s"])


def test_identical_across_processes(tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        subprocess.run([sys.executable, "-m", "lorasim.cli", "run", "--out", str(out), "--json",
                        *[x for kv in SMALL for x in ("--set", kv)]], check=True, capture_output=True)
        outs.append(out)
    for name in ("summary.json", "requests.parquet", "steps.parquet", "per_adapter.csv", "scenario.resolved.yaml"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name  # byte-identical
    pd.testing.assert_frame_equal(pd.read_parquet(outs[0] / "requests.parquet"),
                                  pd.read_parquet(outs[1] / "requests.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(outs[0] / "steps.parquet"),
                                  pd.read_parquet(outs[1] / "steps.parquet"))


def test_what_if_from_a_scenario_is_revalidated():
    base = lorasim.load_scenario(None)
    w = lorasim.load_scenario(base, overrides=["engine.max_cpu_loras=128"], seed=7)
    assert (w.seed, w.engine.max_cpu_loras, w.engine.max_loras) == (7, 128, base.engine.max_loras)
    assert base.engine.max_cpu_loras == 64  # the original is untouched
    with pytest.raises(lorasim.ConfigError, match=r"max_cpu_loras \(2\) must be >= max_loras \(16\)"):
        lorasim.load_scenario(base, overrides=["engine.max_cpu_loras=2"])
