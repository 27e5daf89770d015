"""The ``lorasim`` command: outputs, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lorasim.cli import main
from lorasim.policies import EVICTIONS, SCHEDULERS

REQUEST_FIELDS = ["request_id", "adapter", "arrival_time_s", "prompt_tokens", "output_tokens",
                  "first_scheduled_time_s", "first_token_time_s", "finish_time_s", "ttft_s", "e2el_s",
                  "num_preemptions", "aborted"]
STEP_FIELDS = ["start_time_s", "duration_s", "num_seqs", "num_prefill_tokens", "num_decode_seqs",
               "num_distinct_adapters", "num_adapter_loads"]
SUMMARY_FIELDS = ["num_requests", "num_completed", "num_aborted", "duration_s", "request_throughput_rps",
                  "output_throughput_tok_s", "total_throughput_tok_s", "gpu_adapter_loads", "disk_adapter_loads",
                  "gpu_adapter_hit_rate", "max_queue_wait_s", "num_preemptions"] + [
    f"{m}_ms_{s}" for m in ("ttft", "tpot", "itl", "e2el") for s in ("mean", "p50", "p90", "p99")]


def lorasim_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lorasim.cli", *args], capture_output=True, text=True)


def test_run_writes_every_file(tmp_path):
    out = tmp_path / "out"
    p = lorasim_cli("run", "--out", str(out), "--set", "workload.num_requests=200", "--seed", "3")
    assert p.returncode == 0, p.stderr
    assert "ttft_ms_p99" in p.stdout
    summary = json.loads((out / "summary.json").read_text())
    for k in SUMMARY_FIELDS:
        assert k in summary, k
    assert summary["num_requests"] == 200 == summary["num_completed"] + summary["num_aborted"]
    req = pd.read_parquet(out / "requests.parquet")
    assert set(REQUEST_FIELDS) <= set(req.columns) and len(req) == 200
    steps = pd.read_parquet(out / "steps.parquet")
    assert set(STEP_FIELDS) <= set(steps.columns) and len(steps) == summary["num_steps"]
    resolved = yaml.safe_load((out / "scenario.resolved.yaml").read_text())
    assert resolved["seed"] == 3 and resolved["workload"]["streams"][0]["num_requests"] == 200
    assert resolved["engine"]["max_cpu_loras"] == 64 and resolved["scheduler"]["name"] == "vllm"
    assert not list(out.glob(".*.tmp"))  # no temporary files left behind


def test_resolved_scenario_reruns_identically(tmp_path):
    out1, out2 = tmp_path / "a", tmp_path / "b"
    assert lorasim_cli("run", "--out", str(out1), "--set", "workload.num_requests=100").returncode == 0
    p = lorasim_cli("run", str(out1 / "scenario.resolved.yaml"), "--out", str(out2))
    assert p.returncode == 0, p.stderr
    assert (out1 / "summary.json").read_text() == (out2 / "summary.json").read_text()


def test_json_summary(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--json", "--set", "workload.num_requests=50"])
    assert e.value.code == 0
    s = json.loads(capsys.readouterr().out)
    assert s["num_requests"] == 50


BAD = [
    ("engine:\n  max_lora: 3\n", "scn.yaml:2: engine.max_lora: unknown key 'max_lora'"),
    ("engine:\n  max_loras: 8\n  max_cpu_loras: 2\n", "max_cpu_loras (2) must be >= max_loras (8)"),
    ("engine: {max_loras: [8\n", "scn.yaml:2:1: invalid YAML"),
    ("seed: -1\n", "seed: Input should be greater than or equal to 0"),
    ("engine:\n  max_loras: many\n", "engine.max_loras: Input should be a valid integer"),
    ("workload:\n  arrivals: {kind: poisson, rate: -2}\n  num_requests: 3\n",
     "scn.yaml:2: workload.arrivals.rate: Input should be greater than or equal to 0.000000001"),
    ("scheduler: {name: nope}\n", "unknown scheduler policy 'nope'; valid names: affinity"),
    ("scheduler: {name: vllm, knob: 3}\n", "vllm parameter 'knob'"),
    ("eviction: {name: mru}\n", "unknown eviction policy 'mru'"),
    ("workload: {kind: trace, path: no/such/trace.csv}\n", "no/such/trace.csv: file not found"),
    ("engine: {max_lora_rank: 12}\n", "max_lora_rank 12 is not one vLLM supports"),
    ("- 1\n- 2\n", "a scenario must be a mapping"),
    ("bogus: 1\n", "bogus: unknown key 'bogus'"),
    ("engine: {max_loras: 2}\nengine: {max_loras: 3}\n", "scn.yaml:2:1: invalid YAML: duplicate key 'engine'"),
    ("", "scn.yaml: the scenario is empty"),
    ("# only a comment\n", "scn.yaml: the scenario is empty"),
    ("model: {step_time: {kind: constant, step_time_s: .inf}}\n", "step_time.step_time_s: Input should be a finite"),
    ("engine: {cpu_to_gpu: {overhead_s: .nan}}\n", "engine.cpu_to_gpu.overhead_s: Input should be a finite"),
    ("workload: {lengths: {prompt: 100000000000000000000}, num_requests: 5}\n", "less than or equal to 10000000"),
    ("workload: {num_requests: 100000000000000}\n", "workload.num_requests: Input should be less than or equal"),
    ("adapters: {count: 100000000000}\n", "adapters.count: Input should be less than or equal to 1000000"),
    ("workload: {arrivals: {kind: gamma, rate: 1, cv: 1.0e+200}, num_requests: 5}\n", "cv: Input should be less"),
    ("scheduler: {name: 'no_such_module_xyz:Cls'}\n", "cannot load scheduler policy 'no_such_module_xyz:Cls'"),
    ("workload: {arrivals: {kind: poisson, rate: 100000}, duration_s: 1000000}\n",
     "means about 1e+11 requests, more than the limit of 100,000,000"),
]


@pytest.mark.parametrize("text,expected", BAD)
def test_bad_scenarios_exit_2_with_one_line(tmp_path, monkeypatch, capsys, text, expected):
    monkeypatch.chdir(tmp_path)
    Path("scn.yaml").write_text(text)
    with pytest.raises(SystemExit) as e:
        main(["run", "scn.yaml"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert expected in err, err


def test_malformed_trace_row_names_file_and_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("t.csv").write_text("arrival_time_s,prompt_tokens,output_tokens\n0.0,10,5\n0.5,abc,5\n")
    Path("scn.yaml").write_text("adapters: {count: 0}\nworkload: {kind: trace, path: t.csv}\n")
    p = lorasim_cli("run", "scn.yaml")
    assert p.returncode == 2 and "t.csv:3" in p.stderr and "Traceback" not in p.stderr


def test_missing_scenario_file():
    p = lorasim_cli("run", "does-not-exist.yaml")
    assert p.returncode == 2 and "does-not-exist.yaml: scenario file not found" in p.stderr


def test_bad_override():
    p = lorasim_cli("run", "--set", "engine.max_cpu_loras=1", "--set", "engine.max_loras=4")
    assert p.returncode == 2
    assert "--set engine" in p.stderr and "max_cpu_loras (1) must be >= max_loras (4)" in p.stderr


def test_policies_lists_rules():
    p = lorasim_cli("policies")
    assert p.returncode == 0
    for name in ("vllm", "fcfs-break", "fcfs-grouped", "affinity", "batch-completion", "score", "lru"):
        assert name in p.stdout
    j = json.loads(lorasim_cli("policies", "--json").stdout)
    assert list(j) == ["scheduler", "eviction", "adapter_memory", "router"]
    # every built-in, sorted (and nothing else: no plug-in is installed in the test environment)
    assert {"affinity", "batch-completion", "dlora", "drain", "edf", "fcfs-break", "fcfs-grouped", "multi-queue",
            "score", "sjf", "slora", "vllm", "vllm-v0", "vtc"} <= set(j["scheduler"])
    assert j["scheduler"] == sorted(j["scheduler"]) == SCHEDULERS.names()
    assert j["eviction"] == ["cost-aware", "fifo", "lfu", "lru"] == EVICTIONS.names()
    assert j["adapter_memory"] == ["flat", "rank-paged", "unified"]
    assert j["router"] == ["adapter-affinity", "consistent-hash", "dlora", "least-kv", "least-outstanding",
                           "power-of-two", "random", "round-robin"]


def test_help_mentions_commands():
    p = lorasim_cli("--help")
    assert p.returncode == 0
    for cmd in ("run", "policies", "profiles", "show"):
        assert cmd in p.stdout


def test_non_utf8_scenario(tmp_path, capsys):
    p = tmp_path / "x.yaml"
    p.write_bytes(b"\xff\xfe engine: 1")
    with pytest.raises(SystemExit) as e:
        main(["run", str(p)])
    assert e.value.code == 2 and "not a UTF-8 text file" in capsys.readouterr().err


def test_user_module_failing_on_import(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("brokenpolicy.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(SystemExit) as e:
        main(["run", "--set", "scheduler.name=brokenpolicy:X"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err
    assert "importing brokenpolicy raised RuntimeError: boom" in err and "brokenpolicy.py:1" in err


@pytest.mark.parametrize("args,expected", [
    (["run", "--seed", "abc"], "Invalid value for '--seed'"),
    (["run", "--bogus"], "No such option: --bogus"),
    (["run", "--seed", "-1"], "--seed -1: the root seed must be an integer in [0, 2**63 - 1]"),
    (["nosuchcmd"], "No such command 'nosuchcmd'"),
    (["run", "--out", "README.md", "--set", "workload.num_requests=5"], "--out README.md: exists and is not a directory"),
    # model-level checks name the override the user wrote, not a union tag or the embedded default file
    (["run", "--set", "workload.cancel_probability=0.3"], "--set workload.cancel_probability: cancel_probability > 0 "
                                                          "needs cancel_after_s"),
    (["run", "--set", "workload.cancel_after_s=2"], "--set workload.cancel_after_s: cancel_after_s is set but "
                                                    "cancel_probability is 0"),
    (["run", "--set", "scheduler.name=edf", "--set", "scheduler.ttft_slo_s=-1"],
     "--set scheduler.ttft_slo_s: edf parameter 'ttft_slo_s'"),
])
def test_command_line_mistakes_are_one_line(monkeypatch, capsys, args, expected):
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and expected in err, err
