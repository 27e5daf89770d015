"""``output.records: summary``: no tables, each request folded in when it ends and then dropped. Against a
``records: full`` run of the same scenario: counts, totals, maxima, hit rates and SLO attainment equal; means equal
up to float summation order; a percentile over few samples equal, over many within DDSketch's 1% of the order
statistic at rank ``floor(q * (n - 1))`` of the full run's samples (which ``records: full`` interpolates from)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import lorasim
from lorasim.analysis.plots import latency_cdfs, plot_dir
from lorasim.engine.seqtable import _RELEASED
from lorasim.engine.simulation import Simulation
from lorasim.errors import LorasimError
from lorasim.metrics.digest import EXACT_UP_TO, EXACT_UP_TO_GROUP, RELATIVE_ACCURACY
from lorasim.metrics.summary import PERCENTILES

BASE = ["workload.num_requests=600"]
CASES = {
    "plain": [],
    "cluster-slo": ["cluster.replicas=3", "metrics.ttft_slo_s=2.0", "metrics.tpot_slo_s=0.03"],
    # client cancellations, a horizon (unfinished and never-arrived requests), the client's refusals in bulk,
    # requests longer than max_model_len (aborted on arrival)
    "ends": ["workload.cancel_probability=0.3", "workload.cancel_after_s=[0.5, 5]", "horizon_s=60",
             "client.max_connections=40", "engine.max_model_len=700", "workload.arrivals.rate=8"],
    "preemption": ["engine.kv_cache_tokens=6000"],
    "few-adapters": ["adapters.count=3", "engine.max_loras=2", "engine.max_cpu_loras=3"],  # groups past the cap
}
EXACT = ("num_requests", "num_completed", "num_aborted", "num_unfinished", "num_cancelled", "duration_s",
         "total_input_tokens", "total_output_tokens", "request_throughput_rps", "output_throughput_tok_s",
         "total_throughput_tok_s", "gpu_adapter_loads", "disk_adapter_loads", "gpu_adapter_hit_rate",
         "adapter_load_wait_s", "max_queue_wait_s", "num_starved_requests", "num_preemptions", "num_steps",
         "max_num_waiting", "slo_attainment", "goodput_rps", "replica_imbalance")


def both(overrides):
    full = lorasim.simulate(lorasim.load_scenario(None, overrides=[*BASE, *overrides]))
    sim = Simulation(lorasim.load_scenario(None, overrides=[*BASE, *overrides, "output.records=summary"]))
    return full, sim, sim.run()


def within_sketch(value: float, samples: np.ndarray, q: float) -> bool:
    """``value`` is within the relative accuracy of the order statistic DDSketch estimates for quantile ``q``."""
    v = np.sort(samples)
    x = v[math.floor(q * (len(v) - 1))]
    return abs(value - x) <= RELATIVE_ACCURACY * abs(x) + 1e-12


def check_percentile(value: float, samples: np.ndarray, q: float, exact_up_to: int) -> bool:
    """Few samples: numpy's percentile; many: within the sketch's accuracy."""
    if len(samples) <= exact_up_to:
        return value == pytest.approx(float(np.percentile(samples, 100 * q)), rel=1e-12)
    return within_sketch(value, samples, q)


@pytest.fixture(scope="module", params=sorted(CASES))
def runs(request):
    return (request.param, *both(CASES[request.param]))


def test_summary_matches_the_full_tables(runs):
    name, full, _, lean = runs
    a, b = full.summary, lean.summary
    assert set(b) == set(a) | {"percentile_relative_accuracy"}
    for k in EXACT:
        if k in a:
            assert b[k] == a[k] or (a[k] != a[k] and b[k] != b[k]), k
    for k in ("ttft", "tpot", "itl", "e2el", "queue_wait"):
        assert b[f"{k}_ms_mean"] == pytest.approx(a[f"{k}_ms_mean"], rel=1e-9), k
    assert b["mean_num_running"] == pytest.approx(a["mean_num_running"], rel=1e-12)
    r = full.requests
    done = r[~r["aborted"] & ~r["unfinished"] & ~r["cancelled"]]
    multi = done[done["output_tokens"] > 1]
    samples = {"ttft": done["ttft_s"], "e2el": done["e2el_s"], "queue_wait": done["queue_wait_s"],
               "tpot": (multi["e2el_s"] - multi["ttft_s"]) / (multi["output_tokens"] - 1),
               "itl": np.repeat(full.itl_values_s, full.itl_counts)}
    sketched = 0
    for k, s in samples.items():
        sketched += len(s) > EXACT_UP_TO
        for p in PERCENTILES:
            assert check_percentile(b[f"{k}_ms_p{p}"] / 1000.0, np.asarray(s, dtype=float), p / 100.0,
                                    EXACT_UP_TO), (k, p)
    assert sketched  # ITL at least has more samples than are kept
    if name == "ends":  # the case exercises every way a request can end
        assert min(a["num_cancelled"], a["num_aborted"], a["num_unfinished"], a["num_completed"]) > 0
    if name == "preemption":
        assert a["num_preemptions"] > 0


def test_per_adapter_and_per_replica_match(runs):
    name, full, _, lean = runs
    pa, pb = full.per_adapter, lean.per_adapter
    assert list(pb.index) == list(pa.index) and list(pb.columns) == list(pa.columns)
    for c in pa.columns:
        if c == "ttft_ms_p99":
            continue
        x, y = pa[c].to_numpy(float), pb[c].to_numpy(float)
        np.testing.assert_allclose(y, x, rtol=1e-9 if c == "ttft_ms_mean" else 0, err_msg=c)
    r = full.requests
    for adapter, group in r.assign(key=r["adapter"].fillna("(base)")).groupby("key"):
        ttft = group["ttft_s"].dropna().to_numpy()
        if len(ttft):
            assert check_percentile(pb.loc[adapter, "ttft_ms_p99"] / 1000.0, ttft, 0.99, EXACT_UP_TO_GROUP), adapter
    if name == "few-adapters":
        assert (pa["num_completed"] > EXACT_UP_TO_GROUP).any()  # a p99 from the sketch, others exact
    # one replica too: its requests the client refused or a horizon left unsent count on it, as in the table
    qa, qb = full.per_replica, lean.per_replica
    for c in ("num_requests", "num_completed", "gpu_adapter_loads", "num_steps"):
        assert list(qb[c]) == list(qa[c]), c
    np.testing.assert_allclose(qb["ttft_ms_mean"], qa["ttft_ms_mean"], rtol=1e-9)


def test_ended_requests_are_dropped(runs):
    _, _, sim, lean = runs
    assert len(lean.requests) == 0 and len(lean.steps) == 0 and len(lean.adapter_events) == 0
    assert len(lean.itl_values_s) == 0  # in the sketch
    # every request that ended was released; only those still in flight when a horizon stopped the run remain
    live = [s for s in sim.seqs._seqs if s is not None and s is not _RELEASED]
    assert len(live) <= lean.summary["num_unfinished"] + lean.summary["num_aborted"]
    if sim.scenario.horizon_s is None:
        assert live == []


def test_same_seed_same_summary():
    sc = lorasim.load_scenario(None, overrides=[*BASE, "output.records=summary"])
    assert json.dumps(lorasim.simulate(sc).summary) == json.dumps(lorasim.simulate(sc).summary)


def test_writes_summary_and_per_adapter_only(tmp_path):
    full = lorasim.simulate(lorasim.load_scenario(None, overrides=BASE))
    full.write(tmp_path)
    assert (tmp_path / "requests.parquet").exists()
    lean = lorasim.simulate(lorasim.load_scenario(None, overrides=[*BASE, "output.records=summary"]))
    lean.write(tmp_path)  # an earlier run's tables must not stay beside this summary
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"summary.json", "per_adapter.csv", "scenario.resolved.yaml"}
    assert json.loads((tmp_path / "summary.json").read_text())["num_completed"] == 600
    made = plot_dir(tmp_path)
    assert [p.name for p in made] == ["adapter_waits.png"]
    with pytest.raises(LorasimError, match="records: summary"):
        latency_cdfs(lean.requests, tmp_path / "cdf.png")


def test_quantiles_exact_then_sketched():
    from lorasim.metrics.digest import Quantiles

    rng = np.random.default_rng(0)
    values = rng.exponential(0.05, 250)
    q = Quantiles(exact_up_to=100)
    add = q.add  # held across the switch to the sketch alone, as the recorder's steady-step loop does
    for v in values[:100]:
        add(float(v))
    assert q.percentile(99) == pytest.approx(float(np.percentile(values[:100], 99)), rel=1e-12)
    for v in values[100:]:
        add(float(v))
    q.add(0.07, 3)  # weighted: three samples
    allv = np.concatenate([values, [0.07] * 3])
    assert q.count == 253 and q.mean() == pytest.approx(float(allv.mean()), rel=1e-12)
    for p in PERCENTILES:
        assert within_sketch(q.percentile(p), allv, p / 100.0)
    assert math.isnan(Quantiles().percentile(50)) and math.isnan(Quantiles().mean())
