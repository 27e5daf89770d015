"""Small scenario builders shared by the engine, case and e2e tests."""

from __future__ import annotations

import copy

import lorasim
from lorasim.engine.simulation import Simulation
from lorasim.metrics.recorder import Recorder

INF = float("inf")

# Transfers that cost a fixed, round amount of time, so timelines can be computed by hand.
FIXED_LINKS = {
    "disk_to_cpu": {"overhead_s": 0.1, "bandwidth_bytes_per_s": INF},
    "cpu_to_gpu": {"overhead_s": 0.05, "bandwidth_bytes_per_s": INF},
}


def single(at_s: float, adapter: str | None, prompt: int, output: int, name: str | None = None) -> dict:
    """A workload stream holding one request."""
    s = {"arrivals": {"kind": "single", "at_s": at_s}, "lengths": {"prompt": prompt, "output": output}}
    if adapter is None:
        s["popularity"] = {"kind": "uniform", "base_share": 1.0}
    else:
        s["adapters"] = [adapter]
    if name:
        s["name"] = name
    return s


def scenario(**sections) -> lorasim.Scenario:
    """A scenario from keyword sections, on the Llama-3.1-8B profile unless ``model`` is given, with no request
    overhead unless ``engine.request_overhead_s`` is given."""
    d = {"model": {"profile": "llama-3.1-8b_h100-64gb"}}
    d.update(copy.deepcopy(sections))
    d.setdefault("engine", {}).setdefault("request_overhead_s", 0.0)  # hand-computed timings start at the arrival
    return lorasim.load_scenario(d)


class InvariantRecorder(Recorder):
    """Checks the replica's state after every step: tiers within capacity, KV accounting exact."""

    def on_step_end(self, replica, start_s, end_s, load_wait_s, stats, num_loads, num_preempted):
        super().on_step_end(replica, start_s, end_s, load_wait_s, stats, num_loads, num_preempted)
        store, kv = replica.store, replica.kv
        assert store.gpu_used == sum(store.units[a] for a in store.gpu), "GPU adapter units miscounted"
        if store.gpu_capacity is not None:
            assert store.gpu_used <= store.gpu_capacity, "resident adapters exceed the GPU adapter memory"
        assert len(store.cpu) <= store.max_cpu_loras, "CPU cache over capacity"
        assert set(store.gpu) <= set(store.cpu), "a GPU-resident adapter is not in the CPU cache"
        assert 0 <= kv.used_blocks <= kv.total_blocks, "KV use outside [0, capacity]"
        adapter_blocks = store.gpu_used if store.shares_kv else 0  # unified memory: adapters hold KV blocks too
        assert kv.used_blocks == sum(s.num_blocks for s in replica.running) + adapter_blocks, \
            "KV blocks not accounted to requests (and resident adapters)"
        assert stats.num_distinct_adapters <= replica.limits.max_loras
        assert len(replica.running) <= replica.limits.max_num_seqs
        assert stats.num_tokens <= replica.limits.max_num_batched_tokens
        assert all(s.num_blocks == 0 for s in replica.waiting), "a waiting request holds KV blocks"
        self.counters["checked_steps"] += 1


def run(sc: lorasim.Scenario, check_invariants: bool = True, **kw) -> lorasim.Results:
    """Simulate; with ``check_invariants`` every plan is re-derived and the state checked after every step."""
    if check_invariants:
        kw.setdefault("recorder", InvariantRecorder())
    sim = Simulation(sc, check_invariants=check_invariants, **kw)
    res = sim.run()
    if check_invariants:
        assert sim.recorder.counters["checked_steps"] == len(res.steps)
    return res
