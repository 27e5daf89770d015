"""Every committed scenario runs; the default scenario's summary is pinned as a golden file.

Regenerate the golden file after an intended behaviour change with ``pytest tests/golden --update-golden`` and
explain the change in the commit message.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import lorasim
from tests.conftest import DATA_DIR, REPO, needs_data

GOLDEN = Path(__file__).with_name("default.summary.json")


def _clean(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def test_default_scenario_golden(update_golden):
    res = lorasim.simulate(lorasim.load_scenario(REPO / "scenarios" / "default.yaml"), data_dir="/nonexistent")
    got = _clean(res.summary)
    if update_golden:
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert set(got) == set(want)
    for k, v in want.items():
        if isinstance(v, float):
            assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
        else:
            assert got[k] == v, k
    assert got["num_completed"] == got["num_requests"] == 3000


def test_embedded_default_is_the_committed_default():
    from lorasim.scenarios import default_scenario_path

    assert default_scenario_path().read_text() == (REPO / "scenarios" / "default.yaml").read_text()
    assert lorasim.load_scenario(None) == lorasim.load_scenario(REPO / "scenarios" / "default.yaml")


@needs_data
def test_azure_conv_whole_trace():
    res = lorasim.simulate(lorasim.load_scenario(REPO / "scenarios" / "azure-conv.yaml"), data_dir=DATA_DIR)
    s = res.summary
    assert s["num_requests"] == 19_366 == s["num_completed"]
    assert s["num_aborted"] == 0
    r = res.requests
    assert r["adapter"].nunique() <= 100 and r["adapter"].notna().all()
    # Zipf(1) over 100 adapters: the most popular adapter carries 1/H_100 = 19.3% of requests
    top = r["adapter"].value_counts(normalize=True).iloc[0]
    assert top == pytest.approx(1 / sum(1 / k for k in range(1, 101)), abs=0.01)
    assert (res.steps["num_distinct_adapters"] <= 8).all()
    assert r["arrival_time_s"].max() == pytest.approx(3501.7, abs=0.5)


@needs_data
def test_sharegpt_per_adapter_first_ten_minutes():
    sc = lorasim.load_scenario(REPO / "scenarios" / "sharegpt-per-adapter.yaml", overrides=["workload.duration_s=600"])
    res = lorasim.simulate(sc, data_dir=DATA_DIR)
    s = res.summary
    assert s["num_completed"] == s["num_requests"]
    # 128 adapters with rates 0.1/0.05/0.025 cycled: 43*0.1 + 43*0.05 + 42*0.025 = 7.5 req/s
    assert s["num_requests"] / 600 == pytest.approx(7.5, rel=0.05)
    r = res.requests
    assert r["prompt_tokens"].max() <= 1024 and (r["prompt_tokens"] + r["output_tokens"]).max() <= 2048
    assert (res.steps["num_distinct_adapters"] <= 32).all()
