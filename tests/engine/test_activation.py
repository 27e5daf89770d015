"""``engine.adapter_activation``: vLLM's worker activates a step's adapters one at a time (``_apply_adapters``), so a
load can evict an adapter the same step still needs, which is then loaded again; ``step`` loads the missing ones
together, protecting the whole step. Timelines computed by hand: every CPU->GPU copy takes 0.05 s. Each store test
runs with one SimPy event per transfer and with the transfers done inline (``AdapterStore.load_inline``)."""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pytest
import simpy

from lorasim.engine.adapters import READY, AdapterStore, SetOrder
from lorasim.engine.link import Link
from lorasim.metrics.recorder import Recorder
from lorasim.perf.base import LinkCost
from lorasim.policies.eviction.lru import LruEviction
from lorasim.rng import RngStreams
from lorasim.workload.adapters import AdapterSpec
from tests.helpers import FIXED_LINKS, run, scenario, single

STEP = {"kind": "constant", "step_time_s": 0.01}

NAMES = ["b", "c", "d", "x", "y", "p1", "p2"]


# a store test runs with one SimPy event per transfer and with the transfers done inline
BOTH_PATHS = pytest.mark.parametrize("inline", [None, math.inf], ids=["event-per-transfer", "inline"])


def store_with(resident: list[str], pinned=(), inline: float | None = None) -> tuple[simpy.Environment, AdapterStore]:
    """Three GPU slots holding ``resident`` (used in this order: the first is the least recent), all in the CPU
    cache; CPU->GPU copies take 0.05 s; ``inline``: the horizon of :meth:`AdapterStore.load_inline`."""
    env = simpy.Environment()
    specs = {a: AdapterSpec(a, 8, ("q_proj",), 1000) for a in NAMES}
    links = {k: Link(env, k, LinkCost(0.05 if k == "cpu_to_gpu" else 0.1, float("inf")), exclusive=True)
             for k in ("disk_to_cpu", "cpu_to_gpu")}
    store = AdapterStore(env, specs, 3, len(NAMES), links["disk_to_cpu"], links["cpu_to_gpu"], LruEviction(),
                         LruEviction(), Recorder(), pinned=pinned)
    store.load_inline(inline)
    for a in NAMES:
        store.cpu[a] = READY
        store.cpu_policy.on_insert(a, 0.0)
    for a in resident:
        store._reserve_gpu(a, None)
        store.gpu[a] = READY
        store._gpu_loading -= 1
        store.gpu_policy.on_insert(a, 0.0)
    return env, store


def activate(order: list[str], resident=("b", "c", "d"), pinned=(), inline=None) -> tuple[int, float, set[str]]:
    env, store = store_with(list(resident), pinned, inline)
    out = {}

    def proc():
        out["loads"] = yield from store.activate(order)

    env.process(proc())
    env.run()
    return out["loads"], env.now, set(store.gpu)


@BOTH_PATHS
def test_a_new_adapter_first_in_the_order_sets_off_a_cascade(inline):
    # x evicts b (least recent); b, next, evicts c; c evicts d, which the step does not use: three copies
    loads, t, gpu = activate(["x", "b", "c"], inline=inline)
    assert (loads, round(t, 9), gpu) == (3, 0.15, {"x", "b", "c"})


@BOTH_PATHS
def test_a_new_adapter_after_the_others_evicts_the_idle_one(inline):
    # b and c are used first, so d is the least recent when x needs a slot: one copy
    loads, t, gpu = activate(["b", "c", "x"], inline=inline)
    assert (loads, round(t, 9), gpu) == (1, 0.05, {"x", "b", "c"})


@BOTH_PATHS
def test_a_pinned_adapter_the_step_uses_is_never_the_last_resort_victim(inline):
    # x takes b's slot; y finds only pinned adapters: the fallback evicts p2, not p1, which the step uses
    loads, t, gpu = activate(["x", "y", "p1"], resident=("p1", "p2", "b"), pinned=("p1", "p2"), inline=inline)
    assert (loads, round(t, 9), gpu) == (2, 0.1, {"x", "y", "p1"})


@BOTH_PATHS
def test_step_activation_never_evicts_an_adapter_the_step_uses(inline):
    env, store = store_with(["b", "c", "d"], inline=inline)
    env.process(store.ensure(["x"], {"x", "b", "c"}))
    env.run()
    assert (round(env.now, 9), set(store.gpu)) == (0.05, {"x", "b", "c"})


def test_set_order_is_the_iteration_order_of_a_set_of_the_drawn_hashes():
    names = [f"lora-{i}" for i in range(300)]
    order = SetOrder(names, np.random.default_rng(7))
    step = names[5:200:3]
    got = order(step)
    hashes = order._hash
    assert sorted(got) == sorted(step)
    assert got == [n for h in set(hashes[a] for a in step) for n in names if hashes[n] == h]
    assert got != step  # not the batch's own order
    assert SetOrder(names, np.random.default_rng(7))(step) == got  # the same stream draws the same hashes


def test_set_order_repeats_its_answer_for_the_same_list_and_shares_no_list():
    """The last call is remembered (steps of an unchanged batch): repeats, lists that differ in one place or in
    order, and callers that mutate the lists they passed or got back all still get the order of a fresh set; other
    sequence types (a numpy array) are computed afresh."""
    names = [f"lora-{i}" for i in range(300)]
    order = SetOrder(names, np.random.default_rng(3))
    rng = np.random.default_rng(0)
    step = names[:120]
    for _ in range(200):
        pick = rng.integers(4)
        if pick == 1:
            step = step[:-1] + [names[int(rng.integers(120, 300))]]  # one adapter swapped
        elif pick == 2:
            step = step[::-1]
        got = order(step)
        assert got == SetOrder(names, np.random.default_rng(3))(step)  # the same hashes, a set built afresh
        got.append("mutated")  # the caller's copy, not the remembered one
        if pick == 3:
            step.append("lora-299") if "lora-299" not in step else step.remove("lora-299")  # input mutated after
    assert order(np.array(step)) == order(step)  # an array after a cached list: not compared element-wise


def cascade_seed() -> int:
    """A root seed whose adapter hashes walk {a, b, c} as a, b, c and put d first in {a, b, d}, whatever the
    insertion order (colliding hashes make a set's order depend on it)."""
    for seed in range(1000):
        order = SetOrder(["a", "b", "c", "d"], RngStreams(seed).get("adapter_hash/0"))
        if (all(order(list(p)) == ["a", "b", "c"] for p in permutations("abc"))
                and all(order(list(p))[0] == "d" for p in permutations("abd"))):
            return seed
    raise AssertionError("no such seed below 1000")


def test_engine_reloads_what_its_own_loads_evicted():
    """a, b, c arrive at 0 (c has 5 output tokens, a and b 50), d at 0.495 s; three slots, 10 ms steps, disk reads
    0.1 s, CPU->GPU copies 0.05 s. The first step loads a, b, c (0.45 s), so c's last token ends the step at 0.50 s,
    and the next step runs a, b, d with c, used by the step before, the most recent adapter.

    ``vllm`` (d first in the set's order): d's copy evicts a (the least recent), a's evicts b, b's evicts c; three
    copies and a disk read, 0.25 s. ``step``: d evicts c; one copy and a disk read, 0.15 s."""
    seed = cascade_seed()
    streams = [single(0.0, a, 4, n, f"r-{a}") for a, n in (("a", 50), ("b", 50), ("c", 5))]
    streams.append(single(0.495, "d", 4, 5, "r-d"))
    out = {}
    for mode in ("step", "vllm"):
        sc = scenario(seed=seed, model={"profile": "llama-3.1-8b_h100-64gb", "step_time": STEP},
                      adapters={"names": ["a", "b", "c", "d"], "ranks": 8}, workload={"streams": streams},
                      engine={"max_loras": 3, "max_cpu_loras": 4, "kv_cache_tokens": 4096, **FIXED_LINKS,
                              "adapter_activation": mode})
        res = run(sc)
        steps = res.steps.round(9)
        first = steps.iloc[0]
        assert (first["start_time_s"], first["num_adapter_loads"], first["load_wait_s"]) == (0.0, 3, 0.45)
        step = steps[steps["start_time_s"] == 0.5].iloc[0]
        out[mode] = (int(step["num_adapter_loads"]), float(step["load_wait_s"]),
                     int(res.summary["gpu_adapter_loads"]))
    assert out == {"step": (1, 0.15, 4), "vllm": (3, 0.25, 6)}
