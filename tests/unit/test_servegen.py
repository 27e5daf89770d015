"""ServeGen client-pool streams (``workload: {kind: servegen}``): rates, scaling, time compression, errors."""

from __future__ import annotations

import pytest

import lorasim
from lorasim.errors import DataFileError
from tests.conftest import DATA_DIR, needs_data


def pool(tmp_path, rows_by_client):
    d = tmp_path / "pool"
    d.mkdir()
    for k, rows in enumerate(rows_by_client):
        (d / f"chunk-{k}-trace.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in rows))
    return d


def sim(path, **stream):
    sc = lorasim.load_scenario({"adapters": {"count": 3, "ranks": 8},
                                "workload": {"kind": "servegen", "path": str(path), **stream}})
    return lorasim.simulate(sc)


ROWS = [
    # client 0: 2 req/s Gamma(shape 1) in the first window, silent in the second
    [(0, 2.0, 1.0, "Gamma", 1.0, 0.5), (600, 0, 0, "", 0, 0)],
    # client 1: 1 req/s without a fitted pattern (Poisson) in both windows
    [(0, 1.0, 1.0, "", 0, 0), (600, 1.0, 1.0, "", 0, 0)],
]


def test_rates_follow_the_windows(tmp_path):
    r = sim(pool(tmp_path, ROWS), clients=2, duration_s=1200).requests
    n0 = (r["adapter"] == "lora-0").sum()
    n1 = (r["adapter"] == "lora-1").sum()
    assert n0 == pytest.approx(1200, rel=0.12)  # 2 req/s x 600 s, nothing after 600 s
    assert r.loc[r["adapter"] == "lora-0", "arrival_time_s"].max() < 600
    assert n1 == pytest.approx(1200, rel=0.12)  # 1 req/s x 1200 s
    assert (r["adapter"] != "lora-2").all()


def test_total_rate_and_time_compression(tmp_path):
    # recorded mean over [0, 1200): 1 + 1 = 2 req/s; compressed 10x into 120 s at a target of 5 req/s: 600 requests
    r = sim(pool(tmp_path, ROWS), clients=2, duration_s=1200, total_rate=5.0, time_scale=10.0).requests
    assert len(r) == pytest.approx(600, rel=0.12)
    assert r["arrival_time_s"].max() < 120.0


def test_malformed_rows_name_the_line(tmp_path):
    with pytest.raises(DataFileError, match=r"chunk-1-trace.csv:2: a non-numeric"):
        sim(pool(tmp_path, [ROWS[0], [(0, 1.0, 1, "", 0, 0), (600, "x", 1, "", 0, 0)]]), clients=2)
    (tmp_path / "b").mkdir()
    with pytest.raises(DataFileError, match="no such client file"):
        sim(pool(tmp_path / "b", [ROWS[0]]), clients=2)


@needs_data
def test_production_pool_gives_skewed_popularity():
    sc = lorasim.load_scenario({"adapters": {"count": 50, "ranks": 8},
                                "workload": {"kind": "servegen", "duration_s": 3600, "total_rate": 4.0}})
    r = lorasim.simulate(sc, data_dir=DATA_DIR).requests
    assert len(r) == pytest.approx(4.0 * 3600, rel=0.1)
    share = r["adapter"].value_counts(normalize=True)
    assert share.iloc[0] > 0.2 and share.iloc[:10].sum() > 0.6  # a few clients carry most of the traffic
