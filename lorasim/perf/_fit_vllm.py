"""Fits on the vLLM LoRA runs (Agullo et al., arXiv 2508.08343): step time, adapter-load links, KV memory.

Step time is fitted in two stages, both non-negative least squares on *relative* error with every run weighted
equally (a run's rows share weight 1; warm-up and pre-loading segments share 0.25):

1. base terms on the servers started without ``--enable-lora`` (no LoRA term can leak in);
2. LoRA terms on the LoRA-enabled servers, against what stage 1 leaves unexplained.

Steps slower than twice (or faster than half) the prediction are treated as stalls (JIT compiles and first-batch
effects: e.g. a 2.1 s step at the start of one benchmark) and dropped before a refit; their count is reported.
Every 5th run (sorted by name) of each (model, experiment) group with >= 5 runs is held out; the shipped
coefficients never saw those runs, and the reported ``test_*`` numbers are on them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lorasim.perf._regress import fit_relative, held_out, mape, r2
from lorasim.perf._vllm_runs import FEATURES, N_BASE, Rows
from lorasim.perf.shapes import ALL_TARGET_MODULES, ModelShape

STALL_RATIO = 2.0
"""A step is a stall when observed/predicted is above this or below its inverse."""
MIN_R2_SPREAD = 0.05
"""R^2 is reported only when held-out observations vary (std/mean >= 5%); on near-constant rows it is noise."""
COEF_NAMES = ("base_ms", "prefill_token_ms", "prefill_seq_ms", "decode_seq_ms", "decode_context_token_ms",
              "prefill_attention_ms", "lora_base_ms", "lora_slot_ms", "lora_slot_rank_ms", "lora_active_ms",
              "lora_token_rank_ms", "lora_token_slot_ms", "lora_adapter_ms", "lora_prefill_token_slot_ms")
"""Profile coefficient for each of :data:`lorasim.perf._vllm_runs.FEATURES`, in order."""
DATASET_TEXT = {
    "base_steps": "per-step rows, servers without LoRA (replayed from batched_tokens, or one request at a time)",
    "base_runs": "one row per base-model benchmark without batched_tokens: total time over all its steps",
    "lora_steps": "per-step rows, LoRA-enabled servers (memory, loading, overhead and max-batch experiments)",
}


def _spread(v: np.ndarray) -> float:
    return float(np.std(v) / np.mean(v)) if len(v) > 1 else 0.0


def _stage(x: np.ndarray, y: np.ndarray, obs: np.ndarray, w: np.ndarray, fixed: dict[int, float]) -> np.ndarray:
    free = [j for j in range(x.shape[1]) if j not in fixed]
    y_free = y - sum((x[:, j] * v for j, v in fixed.items()), np.zeros(len(y)))
    coef = np.zeros(x.shape[1])
    coef[free] = fit_relative(x[:, free], y_free, obs, w)
    for j, v in fixed.items():
        coef[j] = v
    return coef


def fit_step_time(rows: Rows, fixed: dict[str, float]) -> tuple[dict[str, float], dict[str, dict], int]:
    """Fit the step-time coefficients (:data:`COEF_NAMES`).

    Args:
        rows: regression rows of one model.
        fixed: coefficients imposed instead of fitted (name -> ms), for terms the data cannot identify.

    Returns:
        (coefficients by profile name, per-dataset statistics, number of stall rows dropped).
    """
    meta, x = rows.frame()
    obs, w = meta.obs_ms.to_numpy(), meta.weight.to_numpy()
    test = meta.run.isin(held_out(meta.run.tolist(), meta.group.tolist())).to_numpy()
    is_base = ~meta.dataset.str.startswith("lora").to_numpy()
    is_agg = meta.dataset.str.endswith("runs").to_numpy()
    fix = {COEF_NAMES.index(k): v for k, v in fixed.items()}
    keep = np.ones(len(meta), dtype=bool)
    for _ in range(3):
        tr = is_base & ~test & keep
        cb = _stage(x[tr, :N_BASE], obs[tr], obs[tr], w[tr], {j: v for j, v in fix.items() if j < N_BASE})
        pred_base = x[:, :N_BASE] @ cb
        tr = ~is_base & ~test & keep
        cl = _stage(x[tr, N_BASE:], obs[tr] - pred_base[tr], obs[tr], w[tr],
                    {j - N_BASE: v for j, v in fix.items() if j >= N_BASE})
        pred = pred_base + x[:, N_BASE:] @ cl
        ratio = obs / pred
        keep = is_agg | ((ratio < STALL_RATIO) & (ratio > 1.0 / STALL_RATIO))
    coef = dict(zip(COEF_NAMES, (float(v) for v in np.r_[cb, cl])))
    stats = {}
    for ds in sorted(meta.dataset.unique()):
        d = (meta.dataset == ds).to_numpy() & keep
        tr_m, te_m = d & ~test, d & test
        stats[ds] = dict(
            n_train_rows=int(tr_m.sum()), n_test_rows=int(te_m.sum()),
            n_train_runs=int(meta.run[tr_m].nunique()), n_test_runs=int(meta.run[te_m].nunique()),
            train_mape=mape(pred[tr_m], obs[tr_m]), test_mape=mape(pred[te_m], obs[te_m]),
            test_r2=r2(pred[te_m], obs[te_m]) if _spread(obs[te_m]) >= MIN_R2_SPREAD else None,
            description=DATASET_TEXT[ds])
    return coef, stats, int((~keep).sum())


def adapter_bytes(shape: ModelShape, rank: int) -> int:
    """Adapter size assumed by the link fits: every target module (see ``AdapterLoad.assumed_target_modules``)."""
    return shape.adapter_size_bytes(rank, ALL_TARGET_MODULES)


def fit_link(events: pd.DataFrame, shape: ModelShape, max_bandwidth: float) -> dict:
    """``overhead_s + bytes / bandwidth`` fitted on the median time of each (rank, max rank, experiment, phase) group.

    Bandwidth is capped at ``max_bandwidth`` (the link's physical limit): when the times barely depend on the
    bytes, the unconstrained slope implies an impossible bandwidth, and the cap binds; the overhead is then refitted.
    """
    exp = events.run_dir.str.split("/").str[2]
    g = events.assign(exp=exp).groupby(["adapter_rank", "max_lora_rank", "exp", "phase"], sort=True)
    med = g.delta_time_s.median()
    size = np.array([adapter_bytes(shape, int(k[0])) for k in med.index], dtype=float)
    t = med.to_numpy()
    coef = fit_relative(np.c_[np.ones_like(size), size], t, t, np.ones_like(t))
    if coef[1] <= 1.0 / max_bandwidth:
        coef[1] = 1.0 / max_bandwidth
        coef[0] = max(float(np.mean(t - size * coef[1])), 0.0)
    pred = coef[0] + size * coef[1]
    return dict(overhead_s=float(coef[0]), bandwidth_bytes_per_s=float(1.0 / coef[1]), n_events=len(events),
                mape=mape(pred, t))


def fit_memory(runs: pd.DataFrame, kv_file: pd.DataFrame, shape: ModelShape, model: str,
               gpu_memory_bytes: int, utilization: float, ref_max_num_seqs: int) -> tuple[dict, dict]:
    """KV capacity ``= gpu*util - reserve - per_seq*(seqs - ref) - [lora_reserve + slots*rank*per_rank]``.

    Fitted by least squares in bytes on every run that logged its KV capacity: the base-model runs (varying
    ``max_num_seqs``), the KV-vs-``max_loras`` sweep and the other LoRA runs. vLLM sizes its sampler buffers for
    ``max_num_seqs`` sequences during the memory profile, so capacity falls with ``max_num_seqs``.
    """
    r = runs[(runs.model == model) & runs.kv_cache_tokens.notna()]
    r = r[~r.run_dir.isin(kv_file.run_dir)]  # the sweep's runs come from kv_file below (same numbers)
    k = kv_file[(kv_file.model == model) & (kv_file.status == "ok") & kv_file.kv_cache_tokens.notna()]
    k = k.merge(runs[["run_dir", "max_num_seqs"]], on="run_dir", how="left").assign(enable_lora=True)
    cols = ["run_dir", "enable_lora", "max_loras", "max_lora_rank", "max_num_seqs", "kv_cache_tokens"]
    d = pd.concat([r[cols], k[cols]], ignore_index=True)
    lora = d.enable_lora.astype(bool).to_numpy()
    seqs = d.max_num_seqs.fillna(256).to_numpy(float)
    slots = np.where(lora, d.max_loras.fillna(0) * d.max_lora_rank.fillna(0), 0.0)
    y = d.kv_cache_tokens.to_numpy(float) * shape.kv_bytes_per_token
    x = np.c_[np.ones(len(d)), -(seqs - ref_max_num_seqs), -lora.astype(float), -slots]
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    pred_tokens = (x @ coef) / shape.kv_bytes_per_token
    mem = dict(gpu_memory_bytes=gpu_memory_bytes, gpu_memory_utilization=utilization,
               non_kv_reserve_bytes=int(round(gpu_memory_bytes * utilization - coef[0])),
               reserve_bytes_per_seq=float(coef[1]), reference_max_num_seqs=ref_max_num_seqs,
               lora_reserve_bytes=int(round(max(coef[2], 0.0))), lora_slot_bytes_per_rank=float(coef[3]))
    obs = d.kv_cache_tokens.to_numpy(float)
    stats = dict(n_train_rows=len(d), n_test_rows=0, n_train_runs=len(d), n_test_runs=0,
                 train_mape=mape(pred_tokens, obs), test_mape=None, test_r2=None,
                 description="KV-cache tokens of every run that logged them (in-sample: 4 parameters)")
    points = [dict(max_loras=int(a) if lo else 0, max_lora_rank=int(b) if lo else 0, lora_enabled=bool(lo),
                   max_num_seqs=int(s), kv_cache_tokens=int(t))
              for a, b, lo, s, t in zip(d.max_loras.fillna(0), d.max_lora_rank.fillna(0), lora, seqs, obs)]
    points = sorted({tuple(p.items()): p for p in points}.values(),
                    key=lambda p: (p["lora_enabled"], p["max_num_seqs"], p["max_loras"], p["max_lora_rank"]))
    return mem | {"measured": points}, stats


__all__ = ["COEF_NAMES", "FEATURES", "adapter_bytes", "fit_link", "fit_memory", "fit_step_time"]
