"""``lorasim plan``: binary search for the smallest setting meeting the SLOs, rate scaling for the goodput knee,
SLO and --also parsing; a real run on a small scenario."""

from __future__ import annotations

import json

import pytest

from lorasim.errors import ConfigError
from lorasim.plan import Planner, Slo, eval_also, max_rate, minimize, parse_slos, scale_rates
from tests.e2e.test_cli import lorasim_cli

KNOWN = ["ttft_ms_p99", "ttft_ms_mean", "tpot_ms_p50", "request_throughput_rps"]


def stub_planner(metric_of, slos=(Slo("ttft_ms_p99", "<=", 100.0),), seeds=1):
    """A planner whose 'simulation' returns ttft_ms_p99 = metric_of(scenario)."""
    calls = []

    def sim(sc):
        calls.append(sc)
        return {"ttft_ms_p99": metric_of(sc)}

    return Planner(None, list(slos), seeds=seeds, simulate=sim), calls


def test_minimize_finds_the_threshold_with_log_many_trials():
    # p99 = 1000 / max_loras: <= 100 from max_loras 10 on
    p, calls = stub_planner(lambda sc: 1000.0 / sc.engine.max_loras)
    value, best, runner = minimize(p, "engine.max_loras", 1, 64)
    assert value == 10 and best.meets and runner.label == {"engine.max_loras": 9}
    assert len(calls) <= 8  # 64, then bisection of [1, 64]


def test_minimize_reports_none_when_even_high_fails():
    p, _ = stub_planner(lambda sc: 1e9)
    assert minimize(p, "engine.max_loras", 1, 8)[0] is None


def test_every_seed_must_meet():
    # seed 0 meets from 4 on, seed 1 only from 6 on -> 6
    p, _ = stub_planner(lambda sc: 50.0 if sc.engine.max_loras >= 4 + 2 * sc.seed else 500.0, seeds=2)
    assert minimize(p, "engine.max_loras", 1, 16)[0] == 6


def test_also_follows_the_candidate():
    p, calls = stub_planner(lambda sc: 1000.0 / sc.engine.max_loras)
    minimize(p, "engine.max_loras", 1, 16, also=["engine.max_cpu_loras=max(32, 4*x)"])
    assert all(sc.engine.max_cpu_loras == max(32, 4 * sc.engine.max_loras) for sc in calls)
    assert eval_also("64", 3) == 64 and eval_also("x // 2", 9) == 4
    with pytest.raises(ConfigError, match="unknown name 'y'"):
        eval_also("y + 1", 1)
    with pytest.raises(ConfigError, match="only numbers"):
        eval_also("(1).real", 1)


def test_max_rate_bisects_the_rate_factor():
    # the default scenario's Gamma rate is 4 req/s; 'p99' = rate: meets while rate <= 10 -> factor 2.5
    p, _ = stub_planner(lambda sc: sc.workload.streams[0].arrivals.rate * 10.0)
    factor, trial = max_rate(p, [], rel_tol=0.01)
    assert factor == pytest.approx(2.5, rel=0.011) and factor <= 2.5 and trial.meets


def test_scale_rates_covers_rates_and_traces():
    d = {"workload": {"streams": [{"arrivals": {"kind": "poisson", "rate": 2.0}},
                                  {"arrivals": {"kind": "per_adapter_poisson", "rates": [0.1, 0.2]}},
                                  {"kind": "trace", "path": "x.csv"}]}}
    scale_rates(d, 3.0)
    s = d["workload"]["streams"]
    assert s[0]["arrivals"]["rate"] == 6.0 and s[1]["arrivals"]["rates"] == pytest.approx([0.3, 0.6])
    assert s[2]["rate_scale"] == 3.0
    with pytest.raises(ConfigError, match="'burst' arrivals"):
        scale_rates({"workload": {"arrivals": {"kind": "burst", "at_s": 0.0}}}, 2.0)


def test_slo_parsing():
    assert parse_slos(["ttft_ms_p99<=2000", "request_throughput_rps > 3"], KNOWN) == [
        Slo("ttft_ms_p99", "<=", 2000.0), Slo("request_throughput_rps", ">", 3.0)]
    with pytest.raises(ConfigError, match="expected metric<=value"):
        parse_slos(["ttft_ms_p99=2000"], KNOWN)
    with pytest.raises(ConfigError, match="'ttft_p99' is not a summary metric.*ttft_ms_p99"):
        parse_slos(["ttft_p99<=1"], KNOWN)


def test_cli_json(tmp_path):
    p = lorasim_cli("plan", "--slo", "ttft_ms_p99<=3000", "--minimize", "engine.max_loras", "--range", "1:32",
                    "--set", "workload.num_requests=300", "--plot", str(tmp_path / "p.png"), "--json")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["meets_slos"] is True and set(j["answer"]) == {"engine.max_loras"}
    x = j["answer"]["engine.max_loras"]
    by = {pt["engine.max_loras"]: pt for pt in j["points"]}
    assert by[x]["meets_slos"] and by[x]["ttft_ms_p99"] <= 3000
    if x > 1:
        assert not by[x - 1]["meets_slos"]  # binary search always tries the value just below the answer
    assert (tmp_path / "p.png").stat().st_size > 0
    bad = lorasim_cli("plan", "--slo", "ttft<=1", "--minimize", "engine.max_loras")
    assert bad.returncode == 2 and "not a summary metric" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_minimize_then_max_rate(tmp_path):
    p = lorasim_cli("plan", "--slo", "ttft_ms_p99<=3000", "--minimize", "engine.max_loras", "--range", "1:32",
                    "--max-rate", "--set", "workload.num_requests=200", "--plot", str(tmp_path / "p.png"), "--json")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert set(j["answer"]) == {"engine.max_loras", "rate_factor"} and (tmp_path / "p.png").exists()
    bad = lorasim_cli("plan", "--slo", "ttft_ms_p99<=3000", "--minimize", "engine.max_loras", "--range", "1:4",
                      "--also", "engine.max_cpu_loras=x/0", "--set", "workload.num_requests=20")
    assert bad.returncode == 2 and "division by zero" in bad.stderr and "Traceback" not in bad.stderr
