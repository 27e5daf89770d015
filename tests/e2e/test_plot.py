"""``lorasim plot``: pictures from run and sweep directories; a clear error for anything else."""

from __future__ import annotations

import pytest

import lorasim
from lorasim.analysis import plot_dir
from lorasim.errors import LorasimError
from lorasim.sweep import Sweep, parse_grid
from tests.e2e.test_cli import lorasim_cli


def test_run_directory_gives_cdfs_timeline_and_waits(tmp_path):
    res = lorasim.simulate(lorasim.load_scenario(None, overrides=["workload.num_requests=150", "cluster.replicas=2"]))
    res.write(tmp_path)
    made = plot_dir(tmp_path)
    assert [p.name for p in made] == ["latency_cdf.png", "timeline.png", "adapter_waits.png"]
    assert all(p.stat().st_size > 10_000 for p in made)


def test_sweep_directory_gives_metrics_against_the_grid(tmp_path):
    Sweep(None, parse_grid(["engine.max_loras=2,8", "scheduler.name=vllm,fcfs-break"]), seeds=2,
          overrides=["workload.num_requests=60"]).run(tmp_path)
    p = lorasim_cli("plot", str(tmp_path), "--metric", "ttft_ms_p50", "--out", str(tmp_path / "png"))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "png" / "sweep.png").stat().st_size > 10_000


def test_other_directories_are_refused(tmp_path):
    with pytest.raises(LorasimError, match="neither a run"):
        plot_dir(tmp_path)
    p = lorasim_cli("plot", str(tmp_path / "nope"))
    assert p.returncode == 2 and "not a directory" in p.stderr
