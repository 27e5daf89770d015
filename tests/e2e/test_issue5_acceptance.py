"""Issue 5's acceptance runs on the shipped data scenarios (skipped without the data directory): a sweep over
``max_loras`` x two policies x 3 seeds on the Azure trace gives the same table with two worker processes and on a
local Dask cluster; ``lorasim plan`` answers the smallest ``max_loras`` of the ShareGPT per-adapter scenario under a
TTFT p99 SLO. Both at reduced size (the first 1,500 trace requests; a 300 s window) to keep CI short."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lorasim.sweep import Sweep, parse_grid
from tests.conftest import DATA_DIR, REPO, needs_data
from tests.e2e.test_cli import lorasim_cli

pytestmark = needs_data


def test_azure_sweep_workers_and_dask_agree(tmp_path):
    distributed = pytest.importorskip("distributed")
    sw = Sweep(REPO / "scenarios" / "azure-conv.yaml",
               parse_grid(["engine.max_loras=4,8", "scheduler.name=vllm,drain"]), seeds=3,
               overrides=["workload.max_requests=1500"], data_dir=DATA_DIR)
    local = sw.run(tmp_path / "w", workers=2)
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        remote = sw.run(tmp_path / "d", dask_address=client)
    assert len(local) == 12 and (local["num_requests"] == 1500).all()
    pd.testing.assert_frame_equal(local, remote)


def test_plan_answers_max_loras_for_sharegpt(tmp_path):
    p = lorasim_cli("plan", str(REPO / "scenarios" / "sharegpt-per-adapter.yaml"), "--slo", "ttft_ms_p99<=1000",
                    "--minimize", "engine.max_loras", "--range", "1:128", "--set", "workload.duration_s=300",
                    "--data-dir", str(DATA_DIR), "--plot", str(tmp_path / "plan.png"), "--json")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    x = j["answer"]["engine.max_loras"]
    assert j["meets_slos"] and 1 < x <= 128
    by = {pt["engine.max_loras"]: pt for pt in j["points"]}
    assert by[x]["meets_slos"] and not by[x - 1]["meets_slos"]
