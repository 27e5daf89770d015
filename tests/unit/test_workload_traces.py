"""Trace readers and trace replay (lorasim.workload.traces, kind: trace streams)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from lorasim._model import MAX_TOKENS
from lorasim.errors import ConfigError, DataFileError
from lorasim.paths import resolve_data_dir
from lorasim.perf.shapes import MODEL_SHAPES
from lorasim.rng import RngStreams
from lorasim.workload import AdaptersConfig, WorkloadConfig, build_adapters, build_request_arrays, build_requests
from lorasim.workload.generate import _lengths
from lorasim.workload.lengths import LognormalLength, SeparateLengths
from lorasim.workload.traces import read_trace

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "traces"
AZURE_CONV = "traces/azure-llm-2023/AzureLLMInferenceTrace_conv.csv"
MOONCAKE = "traces/mooncake/conversation_trace.jsonl"
needs_data = pytest.mark.skipif(not (resolve_data_dir() / AZURE_CONV).exists(), reason="data directory not available")


def replay(stream: dict, n_adapters: int = 4, seed: int = 0):
    ad = build_adapters(AdaptersConfig(count=n_adapters), MODEL_SHAPES["llama-3.1-8b"], RngStreams(0))
    return build_request_arrays(WorkloadConfig.model_validate({"kind": "trace", **stream}), ad, RngStreams(seed))


# ---------------------------------------------------------------- readers on fixtures


def test_azure_reader_keeps_100ns_resolution_relative_to_first_row():
    tr = read_trace(FIXTURES / "azure_small.csv")
    assert tr.format == "azure"
    assert tr.arrival_s.tolist() == pytest.approx([0.0, 0.5000001, 1.0, 2.0, 2.0, 4.0], abs=1e-12)
    assert tr.prompt_tokens.tolist() == [100, 200, 300, 400, 500, 600]
    assert tr.output_tokens.tolist() == [10, 20, 30, 40, 50, 60]
    assert tr.adapter is None and tr.lines.tolist() == [2, 3, 4, 5, 6, 7]


def test_mooncake_reader_ms_to_s_and_skips_blank_lines():
    tr = read_trace(FIXTURES / "mooncake_small.jsonl")
    assert tr.format == "mooncake"
    assert tr.arrival_s.tolist() == [0.0, 0.0, 3.0, 6.5]
    assert tr.prompt_tokens.tolist() == [1000, 1100, 1200, 1300]
    assert tr.output_tokens.tolist() == [100, 110, 120, 130]
    assert tr.lines.tolist() == [1, 2, 4, 5]


def test_generic_csv_and_jsonl_with_adapters():
    csv = read_trace(FIXTURES / "generic_small.csv")
    assert csv.format == "csv" and csv.arrival_s.tolist() == [0.5, 1.0, 1.0, 2.5]
    assert csv.adapter.tolist() == ["lora-1", None, "lora-0", "lora-1"]
    jsonl = read_trace(FIXTURES / "generic_small.jsonl")
    assert jsonl.format == "jsonl" and jsonl.arrival_s.tolist() == [0.0, 1.25, 2.0]
    assert jsonl.adapter.tolist() == ["lora-0", None, None]  # null and absent are the base model
    assert read_trace(FIXTURES / "generic_no_adapter.csv").adapter is None


def test_generic_trace_adapters_are_used_and_times_kept_as_given():
    reqs = build_requests(WorkloadConfig.model_validate({"kind": "trace", "path": str(FIXTURES / "generic_small.csv")}),
                          build_adapters(AdaptersConfig(count=2), MODEL_SHAPES["llama-3.1-8b"], RngStreams(0)),
                          RngStreams(0))
    assert [(r.request_id, r.arrival_time_s, r.prompt_tokens, r.output_tokens, r.adapter) for r in reqs] == [
        (0, 0.5, 10, 1, "lora-1"), (1, 1.0, 20, 2, None), (2, 1.0, 30, 3, "lora-0"), (3, 2.5, 40, 4, "lora-1")]


@pytest.mark.parametrize(
    "name, fmt, line, fragment",
    [
        ("bad_azure_unsorted.csv", "auto", 4, "non-decreasing"),
        ("bad_azure_timestamp.csv", "auto", 3, "cannot parse 'yesterday'"),
        ("bad_azure_text_tokens.csv", "auto", 5, "ContextTokens: not a number"),  # blank line 4 still counts
        ("bad_azure_zero_output.csv", "auto", 3, "GeneratedTokens: 0 tokens (2 such rows"),
        ("bad_generic_nan.csv", "auto", 3, "prompt_tokens: NaN"),
        ("bad_generic_negative.csv", "auto", 4, "output_tokens: negative value"),
        ("bad_generic_missing_value.csv", "auto", 3, "expected 3 fields, got 2"),  # too few fields
        ("bad_generic_empty_value.csv", "auto", 3, "output_tokens: missing value"),
        ("bad_generic_empty_row.csv", "auto", 3, "arrival_time_s: missing value"),  # ",," is not a blank line
        # fault 1: timestamps with and without a UTC offset; other unparseable timestamps
        ("bad_azure_mixed_tz.csv", "auto", 5, ("'2023-11-16 18:15:50.9951690+00:00' has a UTC offset but the "
                                               "first row ('2023-11-16 18:15:46.6805900', line 2) has none")),
        ("bad_azure_mixed_tz_first_aware.csv", "auto", 3, "has no UTC offset but the first row"),
        ("bad_azure_bad_time_and_mixed_tz.csv", "auto", 3, "cannot parse '2023-11-16 25:61:00.0000000'"),
        ("bad_azure_span.csv", "auto", 4, "more than the limit of 1000000000 s after the first row"),
        # fault 2: token counts above MAX_TOKENS, times above MAX_TIME_S
        ("bad_azure_huge_tokens.csv", "auto", 3, ("ContextTokens: value above the limit of 10000000 tokens "
                                                  "(value '1e22')")),
        ("bad_generic_huge_prompt.csv", "auto", 3, "prompt_tokens: value above the limit of 10000000 tokens"),
        ("bad_generic_huge_output.csv", "auto", 4, ("output_tokens: value above the limit of 10000000 tokens "
                                                    "(value '99999999999999999999')")),
        ("bad_generic_huge.jsonl", "auto", 2, "prompt_tokens: value above the limit of 10000000 tokens"),
        ("bad_mooncake_huge_float.jsonl", "auto", 2, "input_length: value above the limit of 10000000 tokens"),
        ("bad_mooncake_huge_int.jsonl", "auto", 3, "output_length: value above the limit"),  # a 401-digit int
        ("bad_generic_late.csv", "auto", 3, "arrival_time_s: value above the limit of 1000000000 s"),
        ("bad_mooncake_late.jsonl", "auto", 2, "timestamp: 2e+09 s after the first row, beyond the limit"),
        # fault 3: a row with more (or fewer) fields than the header
        ("bad_generic_extra_field.csv", "auto", 3, "expected 3 fields, got 4"),
        ("bad_azure_extra_field.csv", "auto", 4, "expected 3 fields, got 4"),  # blank line 3 still counts
        ("bad_generic_few_fields_adapter.csv", "auto", 3, "expected 4 fields, got 3"),
        ("bad_generic_missing_column.csv", "auto", 1, "unrecognised trace header"),
        ("bad_generic_missing_column.csv", "csv", 1, "missing column(s) ['output_tokens']"),
        ("bad_empty.csv", "auto", 1, "empty file"),
        ("bad_empty.csv", "csv", 1, "empty file"),
        ("bad_header_only.csv", "auto", 2, "no data rows"),
        ("bad_mooncake_missing_field.jsonl", "auto", 3, "missing field 'output_length'"),
        ("bad_mooncake_json.jsonl", "auto", 3, "invalid JSON"),
        ("bad_mooncake_string.jsonl", "auto", 2, "input_length: expected a JSON number"),
    ],
)
def test_malformed_traces_name_file_and_line(name, fmt, line, fragment):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning (int64 overflow) or pandas warning on the way
        with pytest.raises(DataFileError) as err:
            read_trace(FIXTURES / name, fmt)
    assert err.value.line == line
    assert str(err.value).startswith(f"{FIXTURES / name}:{line}: ")
    assert fragment in str(err.value)


def test_missing_trace_file_is_named():
    with pytest.raises(DataFileError, match="no_such_trace.csv"):
        replay({"path": "no_such_trace.csv"})


def test_unknown_trace_adapter_reports_its_line():
    with pytest.raises(DataFileError, match="'lora-99' is not one of the scenario's adapters") as err:
        replay({"path": str(FIXTURES / "bad_generic_unknown_adapter.csv")})
    assert err.value.line == 3


def test_zero_tokens_one_counts_in_the_notes_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = replay({"path": str(FIXTURES / "bad_azure_zero_output.csv"), "zero_tokens": "one"})
    assert a.output_tokens.tolist() == [10, 1, 1]
    assert "0 prompt and 2 output lengths of 0 in the whole trace were set to 1 (zero_tokens: one)" in a.notes[0]


def test_azure_utc_offsets_are_compared_in_utc():
    # 18:15:46+00:00, 18:15:47Z, 19:15:47.5+01:00, 13:15:48-05:00
    assert read_trace(FIXTURES / "azure_utc_offsets.csv").arrival_s.tolist() == [0.0, 1.0, 1.5, 2.0]


def test_huge_length_in_a_length_table_reports_its_line():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataFileError, match="o: value above the limit of 10000000 tokens") as err:
            build_request_arrays(
                WorkloadConfig.model_validate({"num_requests": 3, "lengths": {
                    "kind": "empirical", "path": str(FIXTURES / "bad_lengths_huge.csv"), "prompt_column": "p",
                    "output_column": "o"}}),
                build_adapters(AdaptersConfig(count=1), MODEL_SHAPES["llama-3.1-8b"], RngStreams(0)), RngStreams(0))
    assert err.value.line == 3


def test_huge_trace_tokens_never_reach_the_lengths_check():
    # used to surface as "workload.streams[0].lengths.prompt: produced a length of -9223372036854775808"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataFileError) as err:
            replay({"path": str(FIXTURES / "bad_azure_huge_tokens.csv")})
    assert err.value.line == 3 and "ContextTokens" in str(err.value)


def test_bad_length_table_reports_its_line():
    with pytest.raises(DataFileError, match="value below 1") as err:
        build_request_arrays(
            WorkloadConfig.model_validate({"num_requests": 3, "lengths": {
                "kind": "empirical", "path": str(FIXTURES / "bad_lengths_zero.csv"), "prompt_column": "p",
                "output_column": "o", "filter_column": "keep"}}),
            build_adapters(AdaptersConfig(count=1), MODEL_SHAPES["llama-3.1-8b"], RngStreams(0)), RngStreams(0))
    assert err.value.line == 3


# ---------------------------------------------------------------- window, scale, limit


def test_window_scale_limit_and_start_by_hand():
    # generic_no_adapter.csv: row k at t = k s with prompt 10 + k, k = 0..9
    a = replay({"path": str(FIXTURES / "generic_no_adapter.csv"), "window_start_s": 2.0, "window_end_s": 7.0,
                "rate_scale": 2.0, "max_requests": 3, "start_s": 10.0})
    # window keeps t = 2..6; shift -> 0..4; halve -> 0, 0.5, ...; first 3; + 10 s
    assert a.arrival_s.tolist() == [10.0, 10.5, 11.0]
    assert a.prompt_tokens.tolist() == [12, 13, 14]
    assert "10 requests read, 5 in window [2, 7) s, 3 kept" in a.notes[0]


def test_window_end_is_exclusive_and_equal_times_stay_together():
    a = replay({"path": str(FIXTURES / "azure_small.csv"), "window_start_s": 1.0, "window_end_s": 4.0})
    assert a.arrival_s.tolist() == [0.0, 1.0, 1.0]
    assert a.prompt_tokens.tolist() == [300, 400, 500]


def test_trace_without_adapters_gets_seeded_popularity_and_base_share():
    stream = {"path": str(FIXTURES / "generic_no_adapter.csv"), "popularity": {"kind": "zipf", "s": 1.0,
                                                                                "base_share": 0.5}}
    a, b = replay(stream, seed=3), replay(stream, seed=3)
    assert np.array_equal(a.adapter_index, b.adapter_index)
    assert (a.adapter_index == -1).any() and (a.adapter_index >= 0).any()
    assert not np.array_equal(a.adapter_index, replay(stream, seed=4).adapter_index)


@pytest.mark.parametrize(
    "stream, field, window",
    [
        ({"window_start_s": 20.0}, "window_start_s", "[20, end)"),
        ({"window_start_s": 20.0, "window_end_s": 30.0}, "window_start_s", "[20, 30)"),
        ({"window_start_s": 2.5, "window_end_s": 2.9}, "window_end_s", "[2.5, 2.9)"),
        ({"window_start_s": 2.5, "window_end_s": 2.9, "max_requests": 5}, "window_end_s", "[2.5, 2.9)"),
    ],
)
def test_empty_trace_window_is_a_config_error(stream, field, window):
    path = FIXTURES / "generic_no_adapter.csv"  # t = 0..9 s
    w = {"streams": [{"arrivals": {"kind": "single"}}, {"kind": "trace", "path": str(path), **stream}]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConfigError) as err:
            build_request_arrays(WorkloadConfig.model_validate(w),
                                 build_adapters(AdaptersConfig(count=1), MODEL_SHAPES["llama-3.1-8b"], RngStreams(0)),
                                 RngStreams(0))
    assert str(err.value) == (f"workload.streams[1].{field}: the window {window} of {path} holds no requests "
                              f"(the trace spans 0..9 s)")


def test_replayed_times_beyond_max_time_are_a_config_error():
    with pytest.raises(ConfigError, match=r"workload\.streams\[0\]\.rate_scale: the replayed trace ends at"):
        replay({"path": str(FIXTURES / "generic_no_adapter.csv"), "start_s": 1e9})


def test_lognormal_lengths_with_the_largest_mean_stay_within_max_tokens():
    w = {"num_requests": 20_000, "lengths": {"prompt": {"kind": "lognormal", "mean": MAX_TOKENS, "cv": 100.0},
                                              "output": {"kind": "lognormal", "mean": 10, "cv": 1.0}}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = build_request_arrays(WorkloadConfig.model_validate(w),
                                 build_adapters(AdaptersConfig(count=1), MODEL_SHAPES["llama-3.1-8b"], RngStreams(0)),
                                 RngStreams(0))
    assert a.prompt_tokens.min() >= 1 and a.prompt_tokens.max() == MAX_TOKENS
    capped = int((a.prompt_tokens == MAX_TOKENS).sum())
    assert capped > 0
    note = f"workload.streams[0].lengths: {capped} prompt lengths drawn above {MAX_TOKENS} tokens were set to "
    assert a.notes == (f"{note}{MAX_TOKENS} (MAX_TOKENS)",)


def test_lognormal_draw_beyond_int64_is_capped_not_wrapped():
    class HugeDraws:  # stands in for a Generator whose lognormal tail goes past 2**63
        def lognormal(self, mu, sigma, n):
            return np.array([1e22, 4.2, 2e7, 1e300])[:n]

    cfg = SeparateLengths(prompt=LognormalLength(mean=100.0), output=LognormalLength(mean=100.0, max=50))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prompt, output, note = _lengths(cfg, HugeDraws(), 4, "workload.streams[2]", None, {})
    assert prompt.tolist() == [MAX_TOKENS, 5, MAX_TOKENS, MAX_TOKENS]
    assert output.tolist() == [50, 5, 50, 50]  # its own max applies first
    assert note == (f"workload.streams[2].lengths: 3 prompt lengths drawn above {MAX_TOKENS} tokens were set to "
                    f"{MAX_TOKENS} (MAX_TOKENS)")


def test_trace_times_with_sampled_lengths():
    a = replay({"path": str(FIXTURES / "azure_small.csv"), "lengths": {"prompt": 5, "output": 6}})
    assert a.arrival_s.tolist() == pytest.approx([0.0, 0.5000001, 1.0, 2.0, 2.0, 4.0])
    assert set(a.prompt_tokens.tolist()) == {5} and set(a.output_tokens.tolist()) == {6}


def test_trace_mixed_with_a_synthetic_stream():
    w = {"streams": [{"kind": "trace", "path": str(FIXTURES / "generic_no_adapter.csv"), "max_requests": 4},
                     {"arrivals": {"kind": "single", "at_s": 1.5}, "adapters": ["lora-3"]}]}
    reqs = build_requests(WorkloadConfig.model_validate(w),
                          build_adapters(AdaptersConfig(count=4), MODEL_SHAPES["llama-3.1-8b"], RngStreams(0)),
                          RngStreams(0))
    assert [r.arrival_time_s for r in reqs] == [0.0, 1.0, 1.5, 2.0, 3.0]
    assert reqs[2].adapter == "lora-3" and [r.request_id for r in reqs] == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- the real traces


@needs_data
def test_real_azure_conv_trace():
    a = replay({"path": AZURE_CONV, "popularity": {"kind": "zipf", "s": 1.0}}, n_adapters=100)
    assert len(a) == 19_366
    assert a.arrival_s[0] == 0.0 and a.arrival_s[-1] == pytest.approx(3501.72, abs=0.01)
    assert np.median(a.prompt_tokens) == 1020 and a.prompt_tokens.max() == 14_050
    assert np.median(a.output_tokens) == 129 and a.output_tokens.max() == 1000
    mean_gap = np.diff(a.arrival_s).mean()
    assert 1 / mean_gap == pytest.approx(5.5, abs=0.1)
    counts = np.bincount(a.adapter_index, minlength=100)
    assert counts[0] > counts[1] > counts[10] > 0


@needs_data
def test_real_mooncake_trace():
    tr = read_trace(resolve_data_dir() / MOONCAKE)
    assert len(tr) == 12_031 and tr.arrival_s[-1] == pytest.approx(3537.0)
    assert tr.num_zero_output == 0 and tr.prompt_tokens.max() > 100_000
