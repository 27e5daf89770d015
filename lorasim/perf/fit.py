"""Fit the shipped performance profiles from the shared data: ``python -m lorasim.perf.fit [--data-dir D] [--out O]``.

Writes ``llama-3.1-8b_h100-64gb.json`` and ``qwen-2.5-7b_h100-64gb.json`` (vLLM LoRA runs, see
:mod:`lorasim.perf._fit_vllm`; batch composition rebuilt by :mod:`lorasim.perf._replay`), and
``llama-2-7b_a100.json`` / ``llama-2-7b_h100.json`` (Vidur operator profiles, :mod:`lorasim.perf._vidur`, with
the LoRA, memory and link terms transferred from the Llama-3.1-8B fit). Deterministic: the same inputs give the same
files except for ``provenance.generated``. ``holdout_real_runs.csv`` and ``dt_archived_vs_real.csv`` are never read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lorasim.errors import DataFileError, LorasimError
from lorasim.paths import resolve_data_dir
from lorasim.perf import _vidur as vd
from lorasim.perf._fit_vllm import COEF_NAMES, adapter_bytes, fit_link, fit_memory, fit_step_time
from lorasim.perf._regress import held_out, sha256, sig_all
from lorasim.perf._replay import simulate
from lorasim.perf._vllm_runs import FEATURES, build_rows
from lorasim.perf.base import BatchStats
from lorasim.perf.profile import Profile
from lorasim.perf.shapes import ALL_TARGET_MODULES, MODEL_SHAPES, ModelShape

VLLM = "vllm-lora-runs/"
VIDUR = "profiles/vidur/"
FILES = {
    "runs": VLLM + "estimator_runs.csv", "steps": VLLM + "scheduler_steps.csv.gz",
    "loads": VLLM + "lora_load_events.csv", "kv": VLLM + "kv_capacity_vs_max_loras.csv",
    "mlp_a100": VIDUR + "compute/a100/meta-llama/Llama-2-7b-hf/mlp.csv",
    "mlp_h100": VIDUR + "compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv",
    "attention": VIDUR + "legacy-a100/attention.csv", "cpu": VIDUR + "legacy-a100/cpu_overheads.csv",
    "pcie": "profiles/pcie/host_device_bandwidth.csv",
}
VLLM_INPUTS = ("runs", "steps", "loads", "kv", "mlp_a100", "mlp_h100", "attention")
COMMAND = "python -m lorasim.perf.fit --out lorasim/perf/profiles"
GIB = 2**30
PCIE5_X16_BYTES_PER_S = 64e9
"""Upper bound of a CPU->GPU copy (PCIe 5.0 x16, theoretical)."""
ENGINE_V1 = ("vLLM 0.8.5 fork (V1 engine, chunked prefill, max_num_batched_tokens 2048, prefix caching off), "
             "1 GPU, Agullo et al. arXiv 2508.08343 estimator runs")
VLLM_MODELS = {"llama-3.1-8b": "llama-3.1-8b-instruct", "qwen-2.5-7b": "qwen-2.5-7b-instruct"}
VLLM_ASSUMPTIONS = [
    "GPU memory 64 GiB at gpu_memory_utilization 0.9: the card is inferred from memory figures, not logged; only "
    "gpu*util - reserve is identified, so non_kv_reserve_bytes absorbs any error in the 64 GiB.",
    "max_num_batched_tokens 2048 and max_num_seqs 256 where the launch script left them unset (vLLM 0.8.5 V1 "
    "defaults below 70 GiB); the replay reproduces the logged batched_tokens of every replayed step.",
    "The server's prompt length is the first step of a single-request segment (Qwen LoRA runs log 5 tokens where "
    "the client counts 4); output lengths are the launch script's synthetic_output_len (ignore_eos).",
    "LoRA per-token terms apply to ALL tokens of a step in which any sequence uses an adapter, nothing per token "
    "otherwise: vLLM V1's Triton shrink/expand kernels launch over every token of the batch x every slot and are "
    "skipped when no token has an adapter. The data cannot tell (every batched LoRA run has only LoRA tokens); "
    "base-model batch-1 steps on LoRA servers show no per-token rank cost (rank 8 and 16 identical).",
    "LoRA token cost is split into tokens x max_lora_rank and tokens x max_loras; the batched runs all use "
    "max_loras 300, rank 8, so the split rests on the max_loras-1 loading runs (ranks 8-32, 111-token prefills) and "
    "is extrapolation beyond rank 32.",
    "lora_prefill_token_slot_ms (an added term) is fitted on prefill-heavy LoRA steps, all at max_loras 300 "
    "(Qwen also 2,048-token steps); its max_loras scaling rests on max_loras-1 loading runs showing no such cost.",
    "prefill_attention_ms is not fitted (calibration prompts are <= 407 tokens, too short to see it): it is "
    "Vidur's A100 FlashAttention prefill cost per token pair per layer, scaled by query heads/32 and layers, "
    "divided by the H100/A100 GEMM speed-up measured in Vidur's Llama-2-7B profiles.",
    "Adapter bytes for the link fits assume all 7 target modules (q,k,v,o,gate,up,down), as the engine does when "
    "adapters name none; a simulation must use the same convention for the fitted bandwidths to hold.",
    "lora_batch_change_ms is a paired difference of residuals, not a regression term: within each LoRA decode "
    "benchmark (1-token prompts, max_loras 300, rank 8), steps whose batch changed minus steps that repeat the "
    "previous batch; per-run values scatter by about 2-3 ms around it and its dependence on max_loras, rank and "
    "batch size is not identified (a constant is assumed). Base-model servers show about none.",
    "scheduler_skip_ms is measured with queues of at most 49 waiting requests (loading benchmarks, max_loras 1) and "
    "assumed constant per request: an overloaded server skips tens of thousands per step, whose cost per request "
    "is not measured. The vllm-v0 scheduler is charged the same (V0 checks KV blocks before the adapter, so its "
    "per-skip cost is probably higher; no V0 scheduler timings exist).",
    "CPU->GPU bandwidth is capped at 64 GB/s (PCIe 5.0 x16): load times barely change from rank 8 to 32, so the "
    "unconstrained slope implies an impossible bandwidth; the overhead is then refitted.",
]


def _linear_params(shape: ModelShape) -> int:
    return shape.num_params - 2 * shape.vocab_size * shape.hidden_size


def _inputs(data_dir: Path, keys) -> list[dict]:
    return [{"path": FILES[k], "sha256": sha256(data_dir / FILES[k])} for k in keys]


def e2e_ms(profile: Profile, lora: bool, max_lora_rank: int, prompt=1024, output=128, n=96) -> float:
    """Makespan of case 05 (n requests at t=0, max_loras 1, one adapter): replay + the profile's step times."""
    model = profile.step_time_model(max_lora_rank, lora, max_loras=1)
    total = 0.0
    for c in simulate(prompt, output, n, 2048, 256):
        b = BatchStats(c.num_prefill_tokens, c.num_prefill_seqs, c.num_decode_seqs, c.num_decode_context_tokens,
                       c.prefill_attention_work, c.num_tokens if lora else 0, 1 if lora else 0)
        total += model.step_time_s(b)
    return total * 1000.0


def fit_request_overhead_s(runs: pd.DataFrame, run_model: str) -> float:
    """Per-request latency outside the engine steps, from the single-request estimator runs: with one request in
    flight, TTFT = overhead + one step of a short prefill (which costs a decode step), so the overhead is the median of
    ``mean_ttft_ms - step_interval_p50_ms`` (Llama-3.1-8B: 6.9 ms, Qwen-2.5-7B: 7.1 ms; spread +-0.5 ms)."""
    one = runs[(runs.model == run_model) & (runs.completed == 1)]
    diff = (one["mean_ttft_ms"] - one["step_interval_p50_ms"]).dropna()
    return round(float(diff.median()) / 1000.0, 6) if len(diff) else 0.0


MIN_PAIRED_STEPS = 10
"""Fewest changed and unchanged steps a run needs to give a paired batch-change difference."""


def fit_batch_change_ms(rows, coef: dict, runs: pd.DataFrame, test_runs: set[str]) -> tuple[float, dict]:
    """``lora_batch_change_ms``: extra time of a LoRA step whose batch differs from the previous step's.

    Measured on the replayed per-step rows of the decode benchmarks (1-token prompts: a join or a finish changes the
    batch by one sequence, so the compute barely moves), as a paired difference within each run of the fitted
    model's residuals (observed - predicted ms, which removes the batch-size effect): median residual of the steps
    whose sequence count changed or that hold a prefill, minus median residual of the steps that repeat the previous
    batch (steps with more than 20 sequences). The value is the median over the LoRA runs not in ``test_runs``; the
    same difference on base-model servers is reported as a control (~0: the cost is vLLM rebuilding its LoRA token
    mapping).

    Returns:
        (value in ms, named checks: run counts, spread, held-out error, the base-model control).
    """
    meta, x = rows.frame()
    f = {name: i for i, name in enumerate(FEATURES)}
    resid = meta.obs_ms.to_numpy() - x @ np.array([coef[k] for k in COEF_NAMES])
    n_seqs = x[:, f["decode_seqs"]] + x[:, f["prefill_seqs"]]
    has_prefill = x[:, f["prefill_tokens"]] > 0
    one_token = set(runs.run_dir[runs.synthetic_input_len == 1])
    lora, base = {}, {}
    per_step = meta.dataset.str.endswith("steps").to_numpy()
    for run, idx in meta[per_step & meta.run.isin(one_token).to_numpy()].groupby("run", sort=True).groups.items():
        i = np.asarray(idx)
        n, r = n_seqs[i], resid[i]
        changed = np.r_[True, n[1:] != n[:-1]] | has_prefill[i]
        ok = n > 20
        if (changed & ok).sum() >= MIN_PAIRED_STEPS and (~changed & ok).sum() >= MIN_PAIRED_STEPS:
            d = float(np.median(r[changed & ok]) - np.median(r[~changed & ok]))
            (lora if x[i[0], f["lora_steps"]] > 0 else base)[run] = d
    value, report = _median_of_runs(lora, test_runs, "batch_change")
    report |= {"batch_change_base_model_control_ms": float(np.median(list(base.values()))) if base else float("nan"),
               "batch_change_base_model_control_runs": float(len(base))}
    return value, report


def _median_of_runs(per_run: dict[str, float], test_runs: set[str], name: str) -> tuple[float, dict]:
    """A term measured once per run: the median (at least 0) over the runs not in ``test_runs``, with the checks
    ``{name}_train_runs``, ``_test_runs``, ``_train_spread_ms`` (std) and ``_test_median_abs_err_ms``."""
    train = [v for k, v in per_run.items() if k not in test_runs]
    test = [v for k, v in per_run.items() if k in test_runs]
    value = max(0.0, float(np.median(train))) if train else 0.0
    nan = float("nan")
    return value, {f"{name}_train_runs": float(len(train)), f"{name}_test_runs": float(len(test)),
                   f"{name}_train_spread_ms": float(np.std(train)) if train else nan,
                   f"{name}_test_median_abs_err_ms": float(np.median([abs(v - value) for v in test])) if test else nan}


SKIP_EXPERIMENT = "predictor_loading"


def fit_scheduler_skip_ms(runs: pd.DataFrame, steps: pd.DataFrame, run_model: str) -> tuple[float, dict]:
    """``scheduler_skip_ms``: scheduler CPU time per waiting request its admission loop skips (vLLM V1 pops and
    pushes back each request whose adapter would exceed ``max_loras``).

    Measured on the loading benchmarks (``predictor_loading``: ``num_prompts`` requests, each with its own adapter,
    all sent at once to a ``max_loras`` 1 server): requests run one at a time, so while request ``k`` decodes, the
    other ``num_prompts - 1 - k`` wait and are skipped at every step. From the first LoRA step on, step ``i`` serves
    request ``i // synthetic_output_len``. Per run: the median ``scheduler_time_s`` per number waiting (the first two
    steps of each request, its admission and adapter load, left out), then the least-squares slope; the value is the
    median slope of the runs not held out (every 5th run, as for the other terms).

    Returns:
        (value in ms, named checks: run counts, spread of the per-run slopes, held-out error, intercept).
    """
    exp = runs[(runs.model == run_model) & (runs.experiment == SKIP_EXPERIMENT) & (runs.max_loras == 1)]
    slopes, intercepts = {}, []
    for r in exp.itertuples():
        st = steps[steps.run_dir == r.run_dir].sort_values("ts")
        lora = np.flatnonzero(st.unique_adapters.to_numpy() > 0)
        n, out_len = int(r.num_prompts), int(r.synthetic_output_len)
        if not len(lora) or len(st) - lora[0] not in (n * out_len, n * out_len + 1):
            continue  # not the one-at-a-time layout: the waiting count cannot be rebuilt
        t_us = st.scheduler_time_s.to_numpy()[lora[0]:] * 1e6
        i = np.arange(len(t_us))
        waiting, keep = n - 1 - i // out_len, (i % out_len >= 2) & (i < n * out_len)
        med = pd.Series(t_us[keep]).groupby(waiting[keep]).median()
        slope, icpt = np.polyfit(med.index.to_numpy(dtype=float), med.to_numpy(), 1)
        slopes[r.run_dir] = float(slope) / 1000.0
        intercepts.append(float(icpt))
    value, report = _median_of_runs(slopes, held_out(list(slopes), [SKIP_EXPERIMENT] * len(slopes)), "scheduler_skip")
    report["scheduler_time_intercept_ms"] = float(np.median(intercepts)) / 1000.0 if intercepts else float("nan")
    return value, report


def fit_vllm_profiles(data_dir: Path, generated: str, vidur_ctx: dict) -> list[dict]:
    runs = pd.read_csv(data_dir / FILES["runs"])
    steps = pd.read_csv(data_dir / FILES["steps"])
    loads = pd.read_csv(data_dir / FILES["loads"])
    kv = pd.read_csv(data_dir / FILES["kv"])
    out, llama_prefill = [], None
    for model, run_model in VLLM_MODELS.items():
        shape = MODEL_SHAPES[model]
        rows, reports = build_rows(runs, steps, loads, run_model)
        fixed = {"prefill_attention_ms": vd.prefill_pair_ms(vidur_ctx["attn"], shape, vidur_ctx["speedup"])}
        notes = []
        if llama_prefill is not None:  # Qwen: every base run has 4-token prompts -> per-token vs per-seq collinear
            ratio = _linear_params(shape) / _linear_params(MODEL_SHAPES["llama-3.1-8b"])
            fixed["prefill_token_ms"] = llama_prefill * ratio
            notes.append("prefill_token_ms is NOT fitted: every Qwen base-model run has 4-token prompts (the 64-prompt "
                         "input runs have 4-6 steps), so per-token and per-sequence prefill costs are collinear; it is "
                         "Llama-3.1-8B's value x the ratio of per-token linear-layer FLOPs (6.53e9/6.98e9).")
        coef, stats, n_stalls = fit_step_time(rows, fixed)
        llama_prefill = llama_prefill or coef["prefill_token_ms"]
        coef["lora_batch_change_ms"], change_report = fit_batch_change_ms(
            rows, coef, runs, held_out(rows.run, rows.group))
        coef["scheduler_skip_ms"], skip_report = fit_scheduler_skip_ms(runs, steps, run_model)
        ev = loads[loads.model == run_model]
        links = {name: fit_link(ev[ev.source == src], shape, PCIE5_X16_BYTES_PER_S)
                 for name, src in (("disk_to_cpu", "disk"), ("cpu_to_gpu", "memory"))}
        for name, src in (("disk_to_cpu", "disk"), ("cpu_to_gpu", "memory")):
            links[name]["source"] = (f"{FILES['loads']}: source={src}, median per (rank, max_lora_rank, experiment, "
                                     f"phase) group, least squares in relative error")
        mem, mem_stats = fit_memory(runs, kv, shape, run_model, 64 * GIB, 0.9, 256)
        replayed = [r for r in reports if r.kind.startswith("replayed") and r.tpot_reported_ms == r.tpot_reported_ms]
        tpot_err = [abs(r.tpot_recon_ms / r.tpot_reported_ms - 1) * 100 for r in replayed]
        ttft_off = [r.ttft_reported_ms - r.ttft_recon_ms for r in replayed]
        checks = {"replayed_runs": len(replayed),
                  "tpot_replay_vs_reported_abs_err_pct_median": float(np.median(tpot_err)),
                  "ttft_reported_minus_replay_ms_median": float(np.median(ttft_off)), "stall_rows_dropped": n_stalls,
                  "decode_context_token_ms_vidur_estimate": vidur_ctx["attn"].decode_c * shape.num_kv_heads
                  / vd.ATTN_KV_HEADS_PER_GPU * shape.num_layers * vd.HBM_BANDWIDTH_GBPS["a100"]
                  / vd.HBM_BANDWIDTH_GBPS["h100"]}
        skipped = sorted({r.note.split(":")[0] for r in reports if r.kind == "skipped"})
        notes += [
            "Replay check: mean TPOT rebuilt from the replayed steps' timestamps matches the client's mean_tpot_ms "
            "(median abs error in checks); mean TTFT is lower by ~3 s, the time between the client's start and the "
            "first logged step.",
            "Qwen LoRA runs report ~3% more output tokens than the server generated (client re-tokenization); the "
            "server produced exactly synthetic_output_len tokens per request.",
            "Runs skipped: " + "; ".join(skipped) + ".",
            "On LoRA-enabled servers step time grows with max_loras even when no request uses an adapter (~0.02 "
            "ms/slot at batch 1); with one adapter and 220 decodes at max_loras 300 a step takes ~2x the base step.",
            "CPU->GPU loads are nearly rank-independent and fastest when adapter rank == max_lora_rank (padding).",
        ]
        profile = {
            "name": f"{model}_h100-64gb", "model": model, "tensor_parallel_size": 1,
            "request_overhead_s": fit_request_overhead_s(runs, run_model),
            "device": "H100 64GB (inferred from memory figures, not logged)",
            "provenance": {"inputs": _inputs(data_dir, VLLM_INPUTS), "command": COMMAND, "generated": generated,
                           "source_engine": ENGINE_V1,
                           "fitted_on": f"{FILES['runs']} + {FILES['steps']} (model {run_model}; every run except the "
                                        f"held-out ones), {FILES['loads']}, {FILES['kv']}",
                           "assumptions": VLLM_ASSUMPTIONS, "notes": notes},
            "step_time": coef,
            "adapter_load": {**links, "assumed_target_modules": list(ALL_TARGET_MODULES)},
            "memory": mem,
            "fit": {"method": "two-stage non-negative least squares on relative error, runs equally weighted; "
                              "every 5th run of each (model, experiment) group held out",
                    "datasets": stats | {"kv_capacity": mem_stats},
                    "checks": checks | change_report | skip_report},
        }
        if model == "qwen-2.5-7b":
            profile["fit"]["checks"] |= _max_loras_check(runs, rows, coef)
        out.append(profile)
    return out


def _max_loras_check(runs: pd.DataFrame, rows, coef: dict) -> dict:
    """Predicted vs observed step-time ratio for max_loras 400 vs 300 on the Qwen 50/50 max-batch benchmark."""
    meta, x = rows.frame()
    sel = meta.run.str.endswith("find_max_batch_small/_300_8__50_50").to_numpy()
    c = np.array([coef[k] for k in COEF_NAMES])  # the regression's terms (not the paired batch-change term)
    x400 = x[sel].copy()
    x400[:, [7, 8, 11, 13]] *= 400 / 300  # every feature proportional to max_loras
    r = runs.set_index(runs.run_dir.str.split("/").str[-3:].str.join("/")).mean_tpot_ms
    key = "qwen-2.5-7b-instruct/find_max_batch_small/_{}_8__50_50"
    return {"max_loras_400_vs_300_step_ratio_pred": float((x400 @ c).sum() / (x[sel] @ c).sum()),
            "max_loras_400_vs_300_tpot_ratio_obs": float(r[key.format(400)] / r[key.format(300)])}


def fit_vidur_profiles(data_dir: Path, generated: str, ctx: dict, llama31: dict) -> list[dict]:
    shape, ref = MODEL_SHAPES["llama-2-7b"], MODEL_SHAPES["llama-3.1-8b"]
    pcie = pd.read_csv(data_dir / FILES["pcie"])
    h2d = pcie[pcie.direction == "H2D"]
    bw = {"a100": float(h2d[h2d.gpu.str.contains("A100") & (h2d.buffer_bytes == 536870912)].bandwidth_GBps.iloc[0]),
          "h100": float(h2d[h2d.gpu.str.contains("H100")].bandwidth_GBps.iloc[0])}
    ls, lm = llama31["step_time"], llama31["memory"]
    adapter_ratio = adapter_bytes(shape, 1) / adapter_bytes(ref, 1)
    out = []
    for dev in ("a100", "h100"):
        ops = ctx[f"ops_{dev}"]
        comp = vd.Composer(ops, ctx["attn"], ctx["cpu"], shape,
                           compute_speedup=1.0 if dev == "a100" else ctx["speedup"],
                           bandwidth_speedup=vd.HBM_BANDWIDTH_GBPS[dev] / vd.HBM_BANDWIDTH_GBPS["a100"])
        base, st = vd.fit_linear(comp)
        names = ("base_ms", "prefill_token_ms", "prefill_seq_ms", "decode_seq_ms", "decode_context_token_ms",
                 "prefill_attention_ms")
        coef = dict(zip(names, (float(v) for v in base)))
        r_tok = coef["prefill_token_ms"] / ls["prefill_token_ms"] * adapter_ratio
        r_step = (coef["base_ms"] + coef["decode_seq_ms"]) / (ls["base_ms"] + ls["decode_seq_ms"])
        for k in ("lora_base_ms", "lora_slot_ms", "lora_slot_rank_ms", "lora_active_ms", "lora_adapter_ms",
                  "lora_batch_change_ms"):
            coef[k] = ls[k] * r_step
        for k in ("lora_token_rank_ms", "lora_token_slot_ms", "lora_prefill_token_slot_ms"):
            coef[k] = ls[k] * r_tok
        coef["scheduler_skip_ms"] = ls["scheduler_skip_ms"]  # vLLM's scheduler on the host CPU: carried over
        cpu_link = dict(llama31["adapter_load"]["cpu_to_gpu"], bandwidth_bytes_per_s=bw[dev] * 1e9, n_events=0,
                        mape=None,
                        source=f"{FILES['pcie']} H2D {bw[dev]} GB/s; overhead from llama-3.1-8b_h100-64gb")
        disk_link = dict(llama31["adapter_load"]["disk_to_cpu"], n_events=0, mape=None,
                         source="llama-3.1-8b_h100-64gb disk_to_cpu (storage-dependent; assumed the same)")
        weights = shape.weights_bytes
        mem = {"gpu_memory_bytes": 80 * GIB, "gpu_memory_utilization": 0.9,
               "non_kv_reserve_bytes": int(weights + lm["non_kv_reserve_bytes"] - ref.weights_bytes),
               "reserve_bytes_per_seq": lm["reserve_bytes_per_seq"] * shape.vocab_size / ref.vocab_size,
               "reference_max_num_seqs": 256, "lora_reserve_bytes": lm["lora_reserve_bytes"],
               "lora_slot_bytes_per_rank": lm["lora_slot_bytes_per_rank"] * adapter_ratio, "measured": []}
        gpu = {"a100": "A100-SXM4-80GB", "h100": "H100-SXM5-80GB"}[dev]
        profile = {
            "name": f"llama-2-7b_{dev}", "model": "llama-2-7b", "tensor_parallel_size": 1,
            "request_overhead_s": llama31["request_overhead_s"],  # vLLM's API path, not the GPU: carried over
            "device": f"{gpu} (Vidur profile; 80 GB variant assumed)",
            "provenance": {
                "inputs": _inputs(data_dir, ("mlp_a100", "mlp_h100", "attention", "cpu", "pcie", "runs", "steps",
                                             "loads", "kv")),
                "command": COMMAND, "generated": generated,
                "source_engine": "Vidur operator profiles (vLLM V0-era kernels, FlashAttention), TP1; composed "
                                 "per step, not measured end to end",
                "fitted_on": f"{FILES[f'mlp_{dev}']} (TP1 medians), {FILES['attention']}, {FILES['cpu']}; LoRA, "
                             "memory and disk terms transferred from llama-3.1-8b_h100-64gb",
                "assumptions": [
                    "Attention from the one profiled shape (32 query / 4 KV heads per GPU, head dim 128): prefill "
                    "cost per token pair x (32 query heads / 32); decode cost per KV token x (32 KV heads / 4) "
                    "(memory-bound, bytes scale with KV heads).",
                    "H100 attention: prefill / the H100-over-A100 speed-up of Vidur's Llama-2-7B GEMMs at >= 2048 "
                    f"tokens ({ctx['speedup']:.2f}x, compute-bound); decode x HBM bandwidth ratio 2039/3350 GB/s "
                    "(spec sheets). No H100 attention is measured.",
                    "CPU overhead (schedule+sampler+prepare inputs+process outputs) from CodeLlama-34B TP2 on A100 "
                    "(the only cpu_overheads profile), used as is for a 7B model on either GPU.",
                    "LM head = up-projection time at num_seqs tokens x vocab/(2*intermediate) (not in Vidur).",
                    "LoRA terms = llama-3.1-8b_h100-64gb's (vLLM V1 runs): token terms x prefill_token_ms ratio x "
                    f"adapter-size ratio ({adapter_ratio:.3f}); per-step, per-slot and per-adapter terms x the batch-1 "
                    "decode step ratio. There is no LoRA measurement for this model or GPU.",
                    "scheduler_skip_ms = llama-3.1-8b_h100-64gb's as is (CPU time of vLLM's scheduler loop, not GPU).",
                    "Memory: 80 GiB; reserve = Llama-2-7B weights + Llama-3.1-8B's non-weight reserve; per-seq "
                    "reserve scaled by vocabulary; LoRA slot bytes scaled by adapter size.",
                    f"CPU->GPU bandwidth = nominal H2D {bw[dev]} GB/s ({FILES['pcie']}), overhead = vLLM's fitted "
                    "per-load overhead on Llama-3.1-8B; disk link copied from Llama-3.1-8B.",
                ],
                "notes": ["Fit statistics compare the linear form with the composed operator model on sampled "
                          "batches, not with end-to-end measurements."]},
            "step_time": coef,
            "adapter_load": {"disk_to_cpu": disk_link, "cpu_to_gpu": cpu_link,
                             "assumed_target_modules": list(ALL_TARGET_MODULES)},
            "memory": mem,
            "fit": {"method": "least squares (non-negative, relative error) of the linear form on the composed "
                              "Vidur step time of 900 sampled batches; test = 300 other batches",
                    "datasets": {"vidur_composed": {
                        "n_train_rows": st["n_train"], "n_test_rows": st["n_test"], "n_train_runs": 0,
                        "n_test_runs": 0, "train_mape": st["train_mape"], "test_mape": st["test_mape"],
                        "test_r2": st["test_r2"], "description": "sampled batches (decode, prefill, mixed), "
                                                                 "composed Vidur step time"}},
                    "checks": {"attention_prefill_fit_mape_pct": ctx["attn"].prefill_mape,
                               "attention_decode_fit_mape_pct": ctx["attn"].decode_mape,
                               "gemm_speedup_h100_over_a100": ctx["speedup"]}},
        }
        out.append(profile)
    return out


def _case05(p: Profile) -> dict:
    base = e2e_ms(p, False, 16)
    return {f"case05_e2e_lora_over_base_rank{r}": e2e_ms(p, True, r) / base for r in (64, 16)}


def fit_all(data_dir: Path, generated: str) -> list[Profile]:
    """Fit every profile; returns validated profiles (floats rounded to 6 significant digits)."""
    for key, rel in FILES.items():
        if not (data_dir / rel).exists():
            raise DataFileError(data_dir / rel, "input of the fit not found (set --data-dir or LORASIM_DATA_DIR)")
    ctx = {"ops_a100": vd.load_linear_ops(data_dir / FILES["mlp_a100"]),
           "ops_h100": vd.load_linear_ops(data_dir / FILES["mlp_h100"]),
           "attn": vd.fit_attention(data_dir / FILES["attention"]), "cpu": vd.fit_cpu_overhead(data_dir / FILES["cpu"])}
    ctx["speedup"] = vd.gemm_speedup(ctx["ops_a100"], ctx["ops_h100"])
    dicts = fit_vllm_profiles(data_dir, generated, ctx)
    dicts += fit_vidur_profiles(data_dir, generated, ctx, sig_all(dicts[0]))
    profiles = []
    for d in dicts:
        p = Profile.model_validate(sig_all(d))
        checks = dict(p.fit.checks) | sig_all(_case05(p))
        profiles.append(p.model_copy(update={"fit": p.fit.model_copy(update={"checks": checks})}))
    return profiles


def report(p: Profile) -> str:
    lines = [f"{p.name}:"]
    for name, d in p.fit.datasets.items():
        def f(v, spec):
            return "-" if v is None else format(v, spec)
        lines.append(f"  {name:15s} train n={d.n_train_rows:7d} MAPE={f(d.train_mape, '6.2f')}%   held-out "
                     f"n={d.n_test_rows:6d} MAPE={f(d.test_mape, '6.2f')}% R2={f(d.test_r2, '.4f')}")
    c = p.step_time
    lines.append(f"  step ms: base {c.base_ms:.3f}, prefill/token {c.prefill_token_ms:.5f}, decode/seq "
                 f"{c.decode_seq_ms:.5f}, ctx/token {c.decode_context_token_ms:.3g}; "
                 f"LoRA: active {c.lora_active_ms:.3f}, "
                 f"slot {c.lora_slot_ms:.4f}, adapter {c.lora_adapter_ms:.3f}")
    lines.append("  checks: " + ", ".join(f"{k}={v:.4g}" for k, v in p.fit.checks.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lorasim.perf.fit", description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="shared data directory (default: lorasim.paths)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "profiles"), help="output directory")
    args = ap.parse_args(argv)
    try:
        profiles = fit_all(resolve_data_dir(args.data_dir), dt.date.today().isoformat())
    except LorasimError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for p in profiles:
        (out / f"{p.name}.json").write_text(json.dumps(p.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
        print(report(p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
