"""Synthetic workloads, adapters and workload config (lorasim.workload)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from lorasim.errors import ConfigError
from lorasim.paths import resolve_data_dir
from lorasim.perf.shapes import MODEL_SHAPES
from lorasim.rng import RngStreams
from lorasim.workload import (
    AdaptersConfig,
    PerAdapterPoissonArrivals,
    WorkloadConfig,
    build_adapters,
    build_request_arrays,
    build_requests,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "traces"
LLAMA3 = MODEL_SHAPES["llama-3.1-8b"]
SHAREGPT = "traces/sharegpt/sharegpt_v3_first_turn_lengths.csv"


def adapters(n: int = 16, ranks=16):
    return build_adapters(AdaptersConfig(count=n, ranks=ranks), LLAMA3, RngStreams(0))


def arrays(workload: dict, n_adapters: int = 16, seed: int = 0):
    return build_request_arrays(WorkloadConfig.model_validate(workload), adapters(n_adapters), RngStreams(seed))


def gap_stats(t: np.ndarray) -> tuple[float, float]:
    gaps = np.diff(np.concatenate([[0.0], t]))
    return gaps.mean(), gaps.std() / gaps.mean()


# ---------------------------------------------------------------- config


def test_defaults_validate_and_are_s_lora_like():
    w = WorkloadConfig()
    (s,) = w.streams
    assert s.kind == "synthetic" and s.num_requests == 1000 and s.arrivals.kind == "poisson"
    assert (s.lengths.prompt.low, s.lengths.prompt.high) == (8, 512)
    a = AdaptersConfig()
    assert a.count == 16 and a.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                  "down_proj")
    reqs = build_requests(w, build_adapters(a, LLAMA3, RngStreams(0)), RngStreams(0))
    assert len(reqs) == 1000
    assert all(8 <= r.prompt_tokens < 512 and 8 <= r.output_tokens < 512 for r in reqs)


def test_single_stream_shorthand_equals_streams_list():
    body = {"arrivals": {"kind": "poisson", "rate": 3.0}, "num_requests": 10}
    assert WorkloadConfig.model_validate(body) == WorkloadConfig.model_validate({"streams": [body]})


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"arrivals": {"kind": "poisson", "rate": 1.0}}, "num_requests and/or duration_s"),
        ({"arrivals": {"kind": "burst"}}, "needs num_requests"),
        ({"arrivals": {"kind": "single"}, "num_requests": 3}, "one request"),
        ({"arrivals": {"kind": "single", "at_s": 1.0}, "duration_s": 5}, "at_s"),
        ({"arrivals": {"kind": "per_adapter_poisson", "rates": [1.0]}, "duration_s": 1,
          "popularity": {"kind": "zipf"}}, "leave popularity unset"),
        ({"arrivals": {"kind": "per_adapter_poisson"}, "duration_s": 1}, "exactly one of"),
        ({"arrivals": {"kind": "poisson", "rate": 0}, "num_requests": 1}, "greater than or equal to 0.000000001"),
        ({"arrivals": {"kind": "gamma", "rate": 1, "cv": -1}, "num_requests": 1}, "greater than 0"),
        ({"num_requests": 1, "lengths": {"prompt": {"kind": "uniform", "low": 9, "high": 9}}}, "must be > low"),
        ({"num_requests": 1, "lengths": {"prompt": 0}}, "greater than or equal to 1"),
        ({"num_requests": 1, "popularity": {"kind": "uniform", "base_share": 1.5}}, "less than or equal to 1"),
        ({"num_requests": 1, "rate": 3}, "Extra inputs"),
        ({"streams": [{"name": "x", "num_requests": 1}, {"name": "x", "num_requests": 1}]}, "unique"),
        ({"kind": "trace", "path": "x.csv", "window_start_s": 5, "window_end_s": 5}, "window_end_s"),
    ],
)
def test_invalid_workload_configs_are_rejected(body, fragment):
    with pytest.raises(ValidationError, match=fragment):
        WorkloadConfig.model_validate(body)


def test_configs_are_frozen():
    w = WorkloadConfig()
    with pytest.raises(ValidationError):
        w.streams[0].num_requests = 5  # type: ignore[misc]


def test_int_is_shorthand_for_fixed_length():
    a = arrays({"num_requests": 50, "lengths": {"prompt": 128, "output": {"kind": "fixed", "value": 3}}})
    assert set(a.prompt_tokens.tolist()) == {128} and set(a.output_tokens.tolist()) == {3}


def test_lognormal_lengths_have_the_configured_mean_and_cv():
    a = arrays({"num_requests": 200_000, "lengths": {"prompt": {"kind": "lognormal", "mean": 500, "cv": 1.5},
                                                     "output": {"kind": "lognormal", "mean": 50, "cv": 0.5,
                                                                "max": 60}}})
    p = a.prompt_tokens
    assert p.min() >= 1
    assert p.mean() == pytest.approx(500.5, rel=0.02)  # ceil adds ~0.5 token
    assert p.std() / p.mean() == pytest.approx(1.5, rel=0.05)
    assert a.output_tokens.max() == 60 and (a.output_tokens == 60).mean() > 0.1


# ---------------------------------------------------------------- arrivals


def test_poisson_rate_and_cv():
    a = arrays({"arrivals": {"kind": "poisson", "rate": 10.0}, "num_requests": 200_000})
    mean_gap, cv = gap_stats(a.arrival_s)
    assert 1 / mean_gap == pytest.approx(10.0, rel=0.015)
    assert cv == pytest.approx(1.0, abs=0.02)
    assert np.all(np.diff(a.arrival_s) >= 0)


@pytest.mark.parametrize("cv", [0.5, 3.0])
def test_gamma_rate_and_cv(cv):
    a = arrays({"arrivals": {"kind": "gamma", "rate": 4.0, "cv": cv}, "num_requests": 200_000})
    mean_gap, got_cv = gap_stats(a.arrival_s)
    assert 1 / mean_gap == pytest.approx(4.0, rel=0.03)
    assert got_cv == pytest.approx(cv, rel=0.05)


def test_constant_arrivals_are_evenly_spaced():
    a = arrays({"arrivals": {"kind": "constant", "rate": 4.0}, "duration_s": 2.0, "start_s": 1.0})
    assert a.arrival_s.tolist() == pytest.approx([1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75])


def test_duration_bounds_the_stream_and_start_shifts_it():
    a = arrays({"arrivals": {"kind": "poisson", "rate": 5.0}, "duration_s": 300.0, "start_s": 100.0})
    assert a.arrival_s.min() > 100.0 and a.arrival_s.max() < 400.0
    assert abs(len(a) - 1500) < 4 * np.sqrt(1500)


def test_count_and_duration_stop_at_whichever_comes_first():
    by_count = arrays({"arrivals": {"kind": "poisson", "rate": 5.0}, "num_requests": 10, "duration_s": 1000.0})
    by_time = arrays({"arrivals": {"kind": "poisson", "rate": 5.0}, "num_requests": 10_000, "duration_s": 10.0})
    assert len(by_count) == 10
    assert 20 < len(by_time) < 90 and by_time.arrival_s.max() < 10.0


def test_burst_and_single():
    a = arrays({"streams": [{"arrivals": {"kind": "burst", "at_s": 0.0}, "num_requests": 5},
                            {"arrivals": {"kind": "single", "at_s": 2.5}}]})
    assert a.arrival_s.tolist() == [0.0] * 5 + [2.5]


def test_per_adapter_rates_are_recovered():
    rates = {"lora-0": 2.0, "lora-1": 1.0, "lora-2": 0.25}
    a = arrays({"arrivals": {"kind": "per_adapter_poisson", "rate_by_adapter": rates}, "duration_s": 20_000.0},
               n_adapters=4)
    counts = np.bincount(a.adapter_index, minlength=4)
    assert counts[3] == 0 and (a.adapter_index >= 0).all()
    for k, r in enumerate(rates.values()):
        assert counts[k] / 20_000.0 == pytest.approx(r, rel=0.03)
    # each adapter's own stream is Poisson: its gaps have CV ~1
    _, cv = gap_stats(a.arrival_s[a.adapter_index == 2])
    assert cv == pytest.approx(1.0, abs=0.05)


def test_per_adapter_rates_cycle_then_shuffle_like_the_real_runs():
    cfg = PerAdapterPoissonArrivals(rates=[0.1, 0.05, 0.025])
    names = [f"lora-{i}" for i in range(128)]
    cycled = PerAdapterPoissonArrivals(rates=[0.1, 0.05, 0.025], assignment="cycled").adapter_rates(
        names, np.random.default_rng(0), "w")
    assert cycled[:4].tolist() == [0.1, 0.05, 0.025, 0.1]
    shuffled = cfg.adapter_rates(names, np.random.default_rng(0), "w")
    assert sorted(shuffled) == sorted(cycled) and shuffled.tolist() != cycled.tolist()
    values, counts = np.unique(shuffled, return_counts=True)  # real_runs.csv: "0.025 0.05 0.1" / "42 43 43"
    assert values.tolist() == [0.025, 0.05, 0.1] and counts.tolist() == [42, 43, 43]
    # the generator uses the same assignment: the stream's requests follow it
    w = {"arrivals": {"kind": "per_adapter_poisson", "rates": [0.1, 0.05, 0.025]}, "duration_s": 36_000.0}
    a = arrays(w, n_adapters=128, seed=7)
    assigned = cfg.adapter_rates(names, RngStreams(7).get("popularity:0"), "w")
    per_adapter = np.bincount(a.adapter_index, minlength=128) / 36_000.0
    for r in (0.1, 0.05, 0.025):
        assert per_adapter[assigned == r].mean() == pytest.approx(r, rel=0.05)


# ---------------------------------------------------------------- popularity


def test_zipf_is_skewed_in_adapter_order():
    a = arrays({"num_requests": 100_000, "popularity": {"kind": "zipf", "s": 1.0}}, n_adapters=8)
    c = np.bincount(a.adapter_index, minlength=8)
    assert all(c[i] > c[i + 1] for i in range(4))
    assert c[0] / c[1] == pytest.approx(2.0, rel=0.05)


def test_power_law_skew_and_alpha_one_is_uniform():
    n = 20
    skewed = np.bincount(arrays({"num_requests": 100_000, "popularity": {"kind": "power_law", "alpha": 0.1}},
                                n_adapters=n).adapter_index, minlength=n) / 100_000
    assert skewed[0] == pytest.approx((1 / n) ** 0.1, rel=0.02)  # P(X < 1/n), X ~ power(0.1)
    assert all(skewed[i] > skewed[i + 1] for i in range(5))
    flat = np.bincount(arrays({"num_requests": 100_000, "popularity": {"kind": "power_law", "alpha": 1.0}},
                              n_adapters=n).adapter_index, minlength=n)
    expected = 100_000 / n
    chi2 = ((flat - expected) ** 2 / expected).sum()
    assert chi2 < 43.8  # chi-square, 19 dof, p = 0.001


def test_weights_by_list_and_by_name():
    by_list = arrays({"num_requests": 40_000, "popularity": {"kind": "weights", "weights": [3, 1, 0, 0]}}, 4)
    assert np.bincount(by_list.adapter_index, minlength=4)[2:].sum() == 0
    assert (by_list.adapter_index == 0).mean() == pytest.approx(0.75, abs=0.01)
    by_name = arrays({"num_requests": 1000, "popularity": {"kind": "weights", "weights": {"lora-3": 1.0}}}, 4)
    assert set(by_name.adapter_index.tolist()) == {3}


def test_base_share_fraction():
    a = arrays({"num_requests": 100_000, "popularity": {"kind": "zipf", "s": 1.2, "base_share": 0.3}})
    assert (a.adapter_index == -1).mean() == pytest.approx(0.3, abs=0.01)
    reqs = build_requests(WorkloadConfig.model_validate({"num_requests": 50, "popularity": {
        "kind": "uniform", "base_share": 1.0}}), adapters(), RngStreams(0))
    assert {r.adapter for r in reqs} == {None}


def test_stream_pinned_to_a_subset_of_adapters():
    a = arrays({"num_requests": 2000, "adapters": ["lora-3", 5]})
    assert set(a.adapter_index.tolist()) == {3, 5}


def test_unknown_or_missing_adapters_are_config_errors():
    with pytest.raises(ConfigError, match=r"workload.streams\[0\].adapters: unknown adapter 'lora-77'"):
        arrays({"num_requests": 5, "adapters": ["lora-77"]})
    with pytest.raises(ConfigError, match="needs adapters"):
        arrays({"num_requests": 5}, n_adapters=0)
    with pytest.raises(ConfigError, match="unknown adapters"):
        arrays({"num_requests": 5, "popularity": {"kind": "weights", "weights": {"nope": 1}}})
    with pytest.raises(ConfigError, match="3 weights for 16 adapters"):
        arrays({"num_requests": 5, "popularity": {"kind": "weights", "weights": [1, 2, 3]}})
    base_only = arrays({"num_requests": 5, "popularity": {"kind": "uniform", "base_share": 1.0}}, n_adapters=0)
    assert (base_only.adapter_index == -1).all()


# ---------------------------------------------------------------- lengths


def test_empirical_lengths_are_paired_rows_of_the_filtered_table():
    a = arrays({"num_requests": 3000, "lengths": {"kind": "empirical", "path": str(FIXTURES / "lengths_small.csv"),
                                                  "prompt_column": "p", "output_column": "o",
                                                  "filter_column": "keep"}})
    pairs = set(zip(a.prompt_tokens.tolist(), a.output_tokens.tolist()))
    assert pairs == {(11, 101), (13, 103), (15, 105)}


@pytest.mark.skipif(not (resolve_data_dir() / SHAREGPT).exists(), reason="data directory not available")
def test_empirical_sharegpt_llama3_lengths_match_the_real_runs_pool():
    import pandas as pd

    a = arrays({"num_requests": 50_000, "lengths": {"kind": "empirical", "path": SHAREGPT,
                                                    "prompt_column": "prompt_len_llama3",
                                                    "output_column": "output_len_llama3",
                                                    "filter_column": "vllm_keep_llama3"}})
    table = pd.read_csv(resolve_data_dir() / SHAREGPT)
    kept = table[table.vllm_keep_llama3 == 1]
    assert set(zip(a.prompt_tokens.tolist(), a.output_tokens.tolist())) <= set(
        zip(kept.prompt_len_llama3, kept.output_len_llama3))
    assert a.prompt_tokens.max() <= 1024 and (a.prompt_tokens + a.output_tokens).max() <= 2048
    assert a.prompt_tokens.mean() == pytest.approx(221, rel=0.03)  # README: 221 / 199
    assert a.output_tokens.mean() == pytest.approx(199, rel=0.03)


# ---------------------------------------------------------------- mixes, ordering, determinism


def test_mix_poisson_stream_plus_one_request_at_one_second():
    w = {"streams": [
        {"arrivals": {"kind": "poisson", "rate": 5.0}, "duration_s": 300.0, "adapters": ["lora-0"]},
        {"arrivals": {"kind": "single", "at_s": 1.0}, "adapters": ["lora-1"], "lengths": {"prompt": 7,
                                                                                         "output": 9}},
    ]}
    reqs = build_requests(WorkloadConfig.model_validate(w), adapters(2), RngStreams(0))
    (b,) = [r for r in reqs if r.adapter == "lora-1"]
    assert (b.arrival_time_s, b.prompt_tokens, b.output_tokens) == (1.0, 7, 9)
    assert [r.request_id for r in reqs] == list(range(len(reqs)))
    assert all(x.arrival_time_s <= y.arrival_time_s for x, y in zip(reqs, reqs[1:]))
    assert reqs[b.request_id - 1].arrival_time_s <= 1.0 <= reqs[b.request_id + 1].arrival_time_s


def test_mix_half_base_half_adapters():
    w = {"streams": [{"name": "base", "num_requests": 5000, "popularity": {"kind": "uniform", "base_share": 1.0}},
                     {"name": "lora", "num_requests": 5000}]}
    a = arrays(w, n_adapters=16)
    assert (a.adapter_index == -1).sum() == 5000
    assert set(a.adapter_index[a.adapter_index >= 0].tolist()) == set(range(16))


def test_ties_keep_stream_order_then_in_stream_order():
    w = {"streams": [{"arrivals": {"kind": "burst"}, "num_requests": 3, "lengths": {"prompt": 1, "output": 1}},
                     {"arrivals": {"kind": "burst"}, "num_requests": 3, "lengths": {"prompt": 2, "output": 2}}]}
    reqs = build_requests(WorkloadConfig.model_validate(w), adapters(), RngStreams(0))
    assert [r.prompt_tokens for r in reqs] == [1, 1, 1, 2, 2, 2]
    assert [r.request_id for r in reqs] == list(range(6))


def test_same_seed_same_requests_and_different_seed_differs():
    w = WorkloadConfig.model_validate({"arrivals": {"kind": "gamma", "rate": 2.0, "cv": 2.0}, "num_requests": 500,
                                       "popularity": {"kind": "power_law", "alpha": 0.3, "base_share": 0.1}})
    ad = adapters()
    first = build_requests(w, ad, RngStreams(42))
    assert first == build_requests(w, ad, RngStreams(42))
    assert first != build_requests(w, ad, RngStreams(43))


def test_adding_a_stream_does_not_change_another_streams_draws():
    s1 = {"name": "main", "arrivals": {"kind": "poisson", "rate": 3.0}, "num_requests": 300,
          "popularity": {"kind": "zipf", "s": 1.0}}
    s2 = {"name": "extra", "arrivals": {"kind": "gamma", "rate": 1.0, "cv": 4.0}, "duration_s": 50.0}
    alone = arrays({"streams": [s1]})
    mixed = arrays({"streams": [s2, s1]})
    mine = mixed.stream_index == 1
    assert np.array_equal(alone.arrival_s, mixed.arrival_s[mine])
    assert np.array_equal(alone.prompt_tokens, mixed.prompt_tokens[mine])
    assert np.array_equal(alone.adapter_index, mixed.adapter_index[mine])


def test_a_million_requests_are_vectorised():
    a = arrays({"arrivals": {"kind": "poisson", "rate": 1000.0}, "num_requests": 1_000_000,
                "popularity": {"kind": "power_law", "alpha": 0.5}}, n_adapters=100)
    assert len(a) == 1_000_000 and a.arrival_s[-1] == pytest.approx(1000.0, rel=0.01)


# ---------------------------------------------------------------- adapters


def test_adapter_names_ranks_cycle_and_sizes():
    ad = build_adapters(AdaptersConfig(count=128, ranks=[8, 8, 16]), LLAMA3, RngStreams(0))
    assert [a.name for a in ad[:3]] == ["lora-0", "lora-1", "lora-2"]
    assert [a.rank for a in ad[:4]] == [8, 8, 16, 8]
    assert sum(a.rank == 8 for a in ad) == 86 and sum(a.rank == 16 for a in ad) == 42  # real_runs: 8x86 16x42
    # Llama-3.1-8B, all 7 modules: r * (2*4096 + 2*(4096+1024) + 3*(4096+14336)) * 32 layers * 2 bytes
    assert ad[2].size_bytes == 16 * 81_920 * 32 * 2 == 83_886_080
    assert ad[0].size_bytes * 2 == ad[2].size_bytes


def test_adapter_rank_counts_choice_and_names():
    counts = build_adapters(AdaptersConfig(count=5, ranks={"kind": "counts", "counts": {32: 2, 8: 3}}), LLAMA3,
                            RngStreams(0))
    assert [a.rank for a in counts] == [32, 32, 8, 8, 8]
    choice = AdaptersConfig(count=1000, ranks={"kind": "choice", "values": [8, 64], "weights": [3, 1]})
    ranks = [a.rank for a in build_adapters(choice, LLAMA3, RngStreams(1))]
    assert ranks == [a.rank for a in build_adapters(choice, LLAMA3, RngStreams(1))]
    assert ranks.count(8) / 1000 == pytest.approx(0.75, abs=0.05)
    named = build_adapters(AdaptersConfig(names=["fin", "med"], ranks=4, target_modules=["q_proj", "v_proj"]),
                           LLAMA3, RngStreams(0))
    assert [(a.name, a.rank, a.target_modules) for a in named] == [("fin", 4, ("q_proj", "v_proj")),
                                                                   ("med", 4, ("q_proj", "v_proj"))]
    assert named[0].size_bytes == 4 * (8192 + 5120) * 32 * 2


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"count": 3, "names": ["a", "b"]}, "names has 2 entries but count is 3"),
        ({"names": ["a", "a"]}, "unique"),
        ({"count": 4, "ranks": {"kind": "counts", "counts": {8: 3}}}, "sum to 3 but count is 4"),
        ({"ranks": 0}, "greater than or equal to 1"),
        ({"ranks": [8, -1]}, "greater than or equal to 1"),
        ({"count": -1}, "greater than or equal to 0"),
        ({"target_modules": ["q_proj", "lm_head"]}, "target_modules"),
        ({"target_modules": []}, "at least 1"),
    ],
)
def test_invalid_adapter_configs_are_rejected(body, fragment):
    with pytest.raises(ValidationError, match=fragment):
        AdaptersConfig.model_validate(body)


def test_yaml_round_trip_of_resolved_configs():
    import yaml

    w = WorkloadConfig.model_validate({"streams": [
        {"name": "hot", "arrivals": {"kind": "per_adapter_poisson", "rates": [0.1, 0.05]}, "duration_s": 60,
         "lengths": {"prompt": {"kind": "lognormal", "mean": 200, "cv": 1.0}, "output": 64}},
        {"kind": "trace", "path": "t.csv", "window_end_s": 100, "popularity": {"kind": "weights", "weights": [1, 2]},
         "adapters": ["lora-0", 1]}]})
    a = AdaptersConfig.model_validate({"count": 5, "ranks": {"kind": "counts", "counts": {8: 3, 16: 2}}})
    for cfg in (w, a):
        text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
        assert type(cfg).model_validate(yaml.safe_load(text)) == cfg
