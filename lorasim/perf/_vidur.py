"""Step time of Llama-2-7B (TP1) composed from Vidur's operator profiles, then fitted to the linear form.

Vidur (MIT) measured each decoder-layer operator in ms per layer against ``num_tokens`` (``compute/<gpu>/.../
mlp.csv``), FlashAttention prefill and decode once on A100 for one shape (``legacy-a100/attention.csv``), and vLLM's
per-step CPU work by batch size (``legacy-a100/cpu_overheads.csv``). One step is composed as Vidur's predictor does::

    cpu(num_seqs) + emb(tokens) + layers * [linear_ops(tokens) + attention] + lm_head(num_seqs)

and the linear coefficients are least-squares fitted on a deterministic sample of batches (decode-only,
prefill-only, mixed). The fit statistics therefore measure how well the linear form reproduces the composed
operator model, not end-to-end accuracy (there is no end-to-end measurement of these configurations in the data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lorasim.perf._regress import fit_relative, mape, r2
from lorasim.perf.shapes import ModelShape

LAYER_OPS = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
             "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
"""Per-layer operators summed as Vidur's ``ExecutionTime`` does (``add`` once per block)."""
CPU_COLUMNS = ("schedule_median", "sampler_e2e_median", "prepare_inputs_e2e_median", "process_model_outputs_median")
ATTN_Q_HEADS_PER_GPU = 32
"""legacy-a100/attention.csv shape: n_embd 8192, 64 query / 8 KV heads, TP2 -> 32 query, 4 KV heads per GPU."""
ATTN_KV_HEADS_PER_GPU = 4
HBM_BANDWIDTH_GBPS = {"a100": 2039.0, "h100": 3350.0}
"""Public spec-sheet HBM bandwidth (A100-SXM4-80GB, H100-SXM5-80GB); only their ratio is used (decode attention)."""


@dataclass(frozen=True)
class LinearOps:
    """Vidur's per-layer linear operators of one model on one GPU (TP1), ms vs tokens."""

    tokens: np.ndarray
    layer_ms: np.ndarray
    emb_ms: np.ndarray
    up_proj_ms: np.ndarray

    def at(self, arr: np.ndarray, n: float) -> float:
        return float(np.interp(n, self.tokens, arr))


def load_linear_ops(path: Path) -> LinearOps:
    """TP1 rows of a Vidur ``mlp.csv``, medians, duplicates of a token count averaged."""
    d = pd.read_csv(path)
    d = d[d.num_tensor_parallel_workers == 1].copy()
    d["layer"] = d[[f"time_stats.{o}.median" for o in LAYER_OPS]].sum(axis=1)
    g = d.groupby("num_tokens", sort=True)[["layer", "time_stats.emb.median", "time_stats.mlp_up_proj.median"]].mean()
    return LinearOps(g.index.to_numpy(float), g.layer.to_numpy(), g["time_stats.emb.median"].to_numpy(),
                     g["time_stats.mlp_up_proj.median"].to_numpy())


@dataclass(frozen=True)
class Attention:
    """Per-layer FlashAttention cost (ms) at the profiled A100 shape.

    ``prefill = a + b * chunk + c * chunk * (context_before + chunk)`` per prompt chunk;
    ``decode = a + c * sum(kv_tokens)`` per decode batch.
    """

    prefill_a: float
    prefill_b: float
    prefill_c: float
    decode_a: float
    decode_c: float
    prefill_mape: float
    decode_mape: float


def fit_attention(path: Path) -> Attention:
    """Relative-error least squares on Vidur's attention rows (medians)."""
    d = pd.read_csv(path)
    p, q = d[d.is_prefill.astype(bool)], d[~d.is_prefill.astype(bool)]
    y = p["time_stats.attn_prefill.median"].to_numpy()
    c, k = p.prefill_chunk_size.to_numpy(float), p.kv_cache_size.to_numpy(float)
    xp = np.c_[np.ones_like(c), c, c * (k + c)]
    cp = fit_relative(xp, y, y, np.ones_like(y))
    yd = q["time_stats.attn_decode.median"].to_numpy()
    xd = np.c_[np.ones_like(yd), q.batch_size.to_numpy(float) * q.kv_cache_size.to_numpy(float)]
    cd = fit_relative(xd, yd, yd, np.ones_like(yd))
    return Attention(*cp, *cd, prefill_mape=mape(xp @ cp, y), decode_mape=mape(xd @ cd, yd))


def fit_cpu_overhead(path: Path) -> tuple[float, float]:
    """``a + b * batch_size`` (ms) of vLLM's per-step CPU work (schedule, sampler, prepare inputs, outputs)."""
    d = pd.read_csv(path)
    y = d[list(CPU_COLUMNS)].sum(axis=1).to_numpy()
    x = np.c_[np.ones(len(d)), d.batch_size.to_numpy(float)]
    coef = fit_relative(x, y, y, np.ones_like(y))
    return float(coef[0]), float(coef[1])


def gemm_speedup(slow: LinearOps, fast: LinearOps, min_tokens: int = 2048) -> float:
    """Median ratio of per-layer linear-op time, ``slow / fast``, where GEMMs are compute-bound."""
    t = slow.tokens[slow.tokens >= min_tokens]
    return float(np.median([slow.at(slow.layer_ms, n) / fast.at(fast.layer_ms, n) for n in t]))


def prefill_pair_ms(attn: Attention, shape: ModelShape, compute_speedup: float, tp: int = 1) -> float:
    """Whole-model prefill attention ms per token pair, scaled from the profiled shape by query heads per GPU."""
    heads = shape.num_attention_heads / tp / ATTN_Q_HEADS_PER_GPU
    return attn.prefill_c * heads * shape.num_layers / compute_speedup


@dataclass(frozen=True)
class Composer:
    """Vidur-style step time of one model on one GPU (TP1)."""

    ops: LinearOps
    attn: Attention
    cpu: tuple[float, float]
    shape: ModelShape
    compute_speedup: float = 1.0
    """Attention prefill speed-up over the A100 profile (compute-bound)."""
    bandwidth_speedup: float = 1.0
    """Attention decode speed-up over the A100 profile (memory-bound)."""

    def step_ms(self, num_decode: int, ctx_sum: float, chunks: list[tuple[int, int]]) -> float:
        s, a, L = self.shape, self.attn, self.shape.num_layers
        tokens = num_decode + sum(c for c, _ in chunks)
        seqs = num_decode + len(chunks)
        heads = s.num_attention_heads / ATTN_Q_HEADS_PER_GPU
        kv_scale = s.num_kv_heads / ATTN_KV_HEADS_PER_GPU
        ms = self.cpu[0] + self.cpu[1] * seqs + self.ops.at(self.ops.emb_ms, tokens)
        ms += L * self.ops.at(self.ops.layer_ms, tokens)
        # LM head: only sampled rows; vocab x d against the gated up-projection's d x 2*ff.
        ms += self.ops.at(self.ops.up_proj_ms, seqs) * s.vocab_size / (2 * s.intermediate_size)
        for c, k in chunks:
            ms += L * (a.prefill_a + (a.prefill_b * c + a.prefill_c * heads * c * (k + c)) / self.compute_speedup)
        if num_decode:
            ms += L * (a.decode_a + a.decode_c * kv_scale * ctx_sum / self.bandwidth_speedup)
        return ms


def sample_batches(seed: int, n: int) -> list[tuple[int, float, list[tuple[int, int]]]]:
    """Deterministic batches: decode-only, prefill-only and mixed, within a 4,096-token step and 4,096 context."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 3
        b = int(rng.integers(1, 257)) if kind != 1 else 0
        avg_ctx = float(rng.uniform(16, 4096))
        chunks = []
        if kind != 0:
            budget = 4096 - b
            c = int(rng.integers(16, max(budget, 17)))
            k = int(rng.integers(0, max(4096 - c, 1)))
            chunks.append((c, k))
        out.append((b, b * avg_ctx, chunks))
    return out


def features(b: int, ctx: float, chunks: list[tuple[int, int]]) -> list[float]:
    return [1.0, float(sum(c for c, _ in chunks)), float(len(chunks)), float(b), ctx,
            float(sum(c * (k + c) for c, k in chunks))]


def fit_linear(comp: Composer, n_train: int = 900, n_test: int = 300) -> tuple[np.ndarray, dict]:
    """Fit the 6 base coefficients to ``comp`` on sampled batches; statistics on a separately drawn set."""
    stats = {}
    coef = None
    for name, seed, n in (("train", 20240501, n_train), ("test", 20240502, n_test)):
        batches = sample_batches(seed, n)
        x = np.array([features(*bt) for bt in batches])
        y = np.array([comp.step_ms(*bt) for bt in batches])
        if coef is None:
            coef = fit_relative(x, y, y, np.ones_like(y))
        stats[f"{name}_mape"] = mape(x @ coef, y)
        stats[f"{name}_r2"] = r2(x @ coef, y)
        stats[f"n_{name}"] = n
    return coef, stats
