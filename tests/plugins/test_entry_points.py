"""Policy plug-ins: a distribution declaring entry points in the group ``lorasim.policies`` adds its classes to the
registries, under the entry points' names, without any ``module:Class`` in the scenario.

The tests "install" a tiny distribution by writing a module and its ``<name>.dist-info`` (``METADATA`` and
``entry_points.txt``, what pip writes) into a temporary directory on ``sys.path`` (in-process) or ``PYTHONPATH``
(subprocess).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lorasim.errors import PolicyError
from lorasim.policies import EVICTIONS, SCHEDULERS
from tests.helpers import run, scenario

PLUGIN_MODULE = '''
"""An example lorasim plug-in: a LIFO scheduler and an MRU eviction policy."""

from lorasim.policies import EvictionPolicy, Scheduler
from lorasim.policies.base import Admit


class Lifo(Scheduler):
    rule = "newest waiting request first; skip rule"

    def admit_waiting(self, view, b, now_s):
        for seq in reversed(list(view.waiting)):
            r = b.try_admit(seq)
            if r is not Admit.OK and r is not Admit.ADAPTER_CAP:
                break


class Mru(EvictionPolicy):
    rule = "evict the most recently used adapter"

    def __init__(self, params=None):
        super().__init__(params)
        self.clock = 0
        self.last = {}

    def on_insert(self, adapter, now_s):
        self.clock += 1
        self.last[adapter] = self.clock

    def on_use(self, adapter, now_s):
        self.clock += 1
        self.last[adapter] = self.clock

    def on_remove(self, adapter):
        self.last.pop(adapter, None)

    def victim(self, candidates):
        return max(candidates, key=lambda a: (self.last.get(a, 0), a))


class NotAPolicy:
    pass
'''


def install(root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """Write ``modules`` and a ``<dist>-0.1.dist-info`` declaring ``entry_points`` in ``lorasim.policies``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(text))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"  # as pip names it: '-' separates name and version
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    eps = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[lorasim.policies]\n{eps}")
    return root


GOOD = {"lifo": "lorasim_example_plugin:Lifo", "mru": "lorasim_example_plugin:Mru"}


@pytest.fixture
def fresh_registries(monkeypatch):
    """Registries that scan the entry points again on next lookup; restored (plug-ins forgotten) afterwards."""
    for reg in (SCHEDULERS, EVICTIONS):
        reg._forget_plugins()
    yield monkeypatch
    for reg in (SCHEDULERS, EVICTIONS):
        reg._forget_plugins()
    for mod in ("lorasim_example_plugin", "lorasim_broken_plugin"):
        sys.modules.pop(mod, None)


def lorasim_cli(path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return subprocess.run([sys.executable, "-m", "lorasim.cli", *args], capture_output=True, text=True, env=env)


def small(**kw):
    return scenario(
        seed=1,
        adapters={"count": 4, "ranks": 8},
        workload={"arrivals": {"kind": "poisson", "rate": 20.0}, "num_requests": 40,
                  "lengths": {"prompt": 32, "output": 8}, "popularity": {"kind": "uniform", "base_share": 0.2}},
        engine={"max_loras": 2, "max_cpu_loras": 3, "kv_cache_tokens": 4096},
        **kw,
    )


def test_plugin_registers_in_the_matching_registry_and_runs(tmp_path, fresh_registries):
    fresh_registries.syspath_prepend(str(install(tmp_path, "lorasim-example-plugin", GOOD,
                                                 {"lorasim_example_plugin": PLUGIN_MODULE})))
    assert "lifo" in SCHEDULERS.names() and "lifo" not in EVICTIONS.names()
    assert "mru" in EVICTIONS.names() and "mru" not in SCHEDULERS.names()
    assert SCHEDULERS.plugin_names() == ["lifo"] and EVICTIONS.plugin_names() == ["mru"]
    cls = SCHEDULERS.get("lifo")
    assert cls.__name__ == "Lifo" and cls.name == "lifo"
    res = run(small(scheduler={"name": "lifo"}, eviction={"name": "mru"}))
    assert res.summary["num_completed"] == 40 and res.summary["scheduler"] == "lifo"


def test_forgotten_plugins_leave_the_builtins(fresh_registries):
    assert SCHEDULERS.plugin_names() == [] and "vllm" in SCHEDULERS.names()


def test_cli_lists_and_runs_an_installed_plugin(tmp_path):
    path = install(tmp_path, "lorasim-example-plugin", GOOD, {"lorasim_example_plugin": PLUGIN_MODULE})
    p = lorasim_cli(path, "policies", "--json")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert "lifo" in j["scheduler"] and j["scheduler"] == sorted(j["scheduler"])
    assert "mru" in j["eviction"] and "vllm" in j["scheduler"] and "lru" in j["eviction"]
    p = lorasim_cli(path, "policies")
    assert p.returncode == 0 and "newest waiting request first" in p.stdout
    p = lorasim_cli(path, "run", "--json", "--set", "workload.num_requests=60", "--set", "scheduler.name=lifo",
                    "--set", "eviction.name=mru")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["num_completed"] + summary["num_aborted"] == 60 and summary["scheduler"] == "lifo"


@pytest.mark.parametrize("value,modules,expected,cli", [
    ("lorasim_broken_plugin:Thing", {"lorasim_broken_plugin": "raise RuntimeError('plug-in boom')\n"},
     "RuntimeError: plug-in boom", True),
    ("lorasim_example_plugin:NotAPolicy", {"lorasim_example_plugin": PLUGIN_MODULE},
     "is not a subclass of Scheduler or EvictionPolicy", True),
    ("lorasim_example_plugin:Missing", {"lorasim_example_plugin": PLUGIN_MODULE}, "AttributeError", False),
    ("no_such_module_xyz:Thing", {}, "ModuleNotFoundError", False),
])
def test_broken_plugin_is_one_line_naming_it(tmp_path, fresh_registries, value, modules, expected, cli):
    path = install(tmp_path, "lorasim-bad-plugin", {"badpol": value}, modules)
    if cli:  # the command line: exit status 2 and one line, for the listing and for a run using only built-ins
        p = lorasim_cli(path, "policies", "--json")
        err = p.stderr.strip()
        assert p.returncode == 2 and "\n" not in err and "Traceback" not in err, err
        assert "'badpol'" in err and value in err and "lorasim-bad-plugin" in err and expected in err, err
        p = lorasim_cli(path, "run", "--set", "workload.num_requests=5")
        err = p.stderr.strip()
        assert p.returncode == 2 and "\n" not in err and "'badpol'" in err, err
    # in-process: every lookup raises the same one-line PolicyError
    fresh_registries.syspath_prepend(str(path))
    for _ in range(2):
        with pytest.raises(PolicyError, match="badpol") as e:
            SCHEDULERS.names()
        msg = str(e.value)
        assert "\n" not in msg and value in msg and "lorasim-bad-plugin" in msg and expected in msg, msg
        with pytest.raises(PolicyError, match="badpol"):
            EVICTIONS.get("lru")


def test_plugin_name_taken_by_a_builtin(tmp_path, fresh_registries):
    path = install(tmp_path, "lorasim-clash", {"vllm": "lorasim_example_plugin:Lifo"},
                   {"lorasim_example_plugin": PLUGIN_MODULE})
    p = lorasim_cli(path, "policies", "--json")
    err = p.stderr.strip()
    assert p.returncode == 2 and "\n" not in err and "'vllm'" in err and "name is taken" in err, err


def test_two_plugins_with_one_name(tmp_path, fresh_registries):
    install(tmp_path, "lorasim-one", {"twin": "lorasim_example_plugin:Lifo"}, {"lorasim_example_plugin": PLUGIN_MODULE})
    install(tmp_path, "lorasim-two", {"twin": "lorasim_twin_plugin:Lifo"}, {"lorasim_twin_plugin": PLUGIN_MODULE})
    fresh_registries.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(PolicyError, match="'twin' is declared twice"):
            SCHEDULERS.names()
    finally:
        sys.modules.pop("lorasim_twin_plugin", None)
