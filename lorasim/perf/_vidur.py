"""Step time of Llama-2-7B (TP1) composed from Vidur's operator profiles, then fitted to the linear form.

Vidur (MIT) measured each decoder-layer operator in ms per layer against ``num_tokens`` (``compute/<gpu>/.../
mlp.csv``), FlashAttention prefill and decode once on A100 for one shape (``legacy-a100/attention.csv``), and vLLM's
per-step CPU work by batch size (``legacy-a100/cpu_overheads.csv``). One step is composed as Vidur's predictor does::

    cpu(num_seqs) + emb(tokens) + layers * [linear_ops(tokens) + attention] + lm_head(num_seqs)

and the linear coefficients are least-squares fitted on a deterministic sample of batches (decode-only,
prefill-only, mixed). The fit statistics therefore measure how well the linear form reproduces the composed
operator model, not end-to-end accuracy (there is no end-to-end measurement of these configurations in the data).

The batch sample and the linear fit (:func:`sample_batches`, :func:`features`, :func:`fit_linear`) are shared with
``lorasim calibrate fit``, which composes steps from measured tables (:mod:`lorasim.perf.operators`). The
:class:`Composer` here is not expressed through those tables: Vidur measured attention for one foreign shape only, so
its attention is a parametric fit scaled by heads (a ``chunk * (context + chunk)`` term that bilinear table
interpolation would not reproduce exactly, and the shipped profiles must stay as they are).

For other models and tensor-parallel shards, :func:`operator_tables` expresses the same terms as
:class:`~lorasim.perf.operators.OperatorTables` (linear ops at a given TP by :func:`load_linear_ops`, attention
evaluated on grids by :meth:`Attention.prefill_layer_ms` / :meth:`Attention.decode_layer_ms`, the NCCL all-reduce of
Vidur's ``network/*/all_reduce.csv`` by :func:`load_all_reduce`); :mod:`lorasim.perf.splitwise_check` sets them
against Splitwise's measured Llama-2-70B iterations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lorasim.perf._regress import fit_relative, mape, r2
from lorasim.perf.operators import (
    BatchTable,
    BytesTable,
    DecodeAttentionTable,
    LinearOpsTable,
    OperatorTables,
    PrefillAttentionTable,
    TokensTable,
)
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


def load_linear_ops(path: Path, tp: int = 1) -> LinearOps:
    """Rows of a Vidur ``mlp.csv`` at ``tp`` tensor-parallel workers (per-GPU shard; default TP1), medians,
    duplicates of a token count averaged.

    Raises:
        ValueError: the file has no row at ``tp``.
    """
    d = pd.read_csv(path)
    d = d[d.num_tensor_parallel_workers == tp].copy()
    if d.empty:
        raise ValueError(f"no rows with num_tensor_parallel_workers == {tp}")
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

    def prefill_layer_ms(self, chunk: float, context: float, heads: float, compute_speedup: float = 1.0) -> float:
        """One prompt chunk, ms per layer: ``heads`` = query heads per GPU / :data:`ATTN_Q_HEADS_PER_GPU` (the
        pair term scales with heads; intercept and per-token term as profiled), divided by the compute speed-up."""
        return self.prefill_a + (self.prefill_b * chunk + self.prefill_c * heads * chunk * (context + chunk)) \
            / compute_speedup

    def decode_layer_ms(self, ctx_sum: float, kv_scale: float, bandwidth_speedup: float = 1.0) -> float:
        """A decode batch reading ``ctx_sum`` KV tokens, ms per layer: ``kv_scale`` = KV heads per GPU /
        :data:`ATTN_KV_HEADS_PER_GPU` (bytes read scale with KV heads), divided by the bandwidth speed-up."""
        return self.decode_a + self.decode_c * kv_scale * ctx_sum / bandwidth_speedup


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
            ms += L * a.prefill_layer_ms(c, k, heads, self.compute_speedup)
        if num_decode:
            ms += L * a.decode_layer_ms(ctx_sum, kv_scale, self.bandwidth_speedup)
        return ms


def load_all_reduce(path: Path, num_workers: int, devices_per_node: int | None = None) -> BytesTable:
    """NCCL all-reduce latency (ms per call) vs message bytes from a Vidur ``network/<cluster>/all_reduce.csv``.

    Rows of ``num_workers`` GPUs with ``devices_per_node`` of them on one node (default: all on one node), medians,
    duplicates of a size averaged, then resampled to one point per octave of size: the rows with size in
    ``[2**k / sqrt(2), 2**k * sqrt(2))`` give one point (median size, median time). The raw grid is 8 KiB-128 KiB
    apart with ~10 us noise, so its last segment's slope (used above the largest size, 64 MiB) is noise; the octave
    grid's last segment is the bandwidth slope.

    Raises:
        ValueError: no row for that ``(num_workers, devices_per_node)``.
    """
    d = pd.read_csv(path)
    dpn = num_workers if devices_per_node is None else devices_per_node
    d = d[(d.num_workers == num_workers) & (d.devices_per_node == dpn)]
    if d.empty:
        raise ValueError(f"no all_reduce rows with num_workers == {num_workers} and devices_per_node == {dpn}")
    g = d.groupby("size", sort=True)["time_stats.all_reduce.median"].mean()
    octave = np.floor(np.log2(g.index.to_numpy(float)) + 0.5)
    ms = g.groupby(octave).median()
    sizes = pd.Series(g.index.to_numpy(float), index=g.index).groupby(octave).median()
    return BytesTable(bytes=sizes.to_numpy().tolist(), ms=ms.to_numpy().tolist())


def _pow2_grid(top: int) -> list[float]:
    """1, 2, 3, 4, 6, 8, 12, ... (powers of two and 1.5 x them) up to the first power of two >= ``top``."""
    out, p = [1.0, 2.0], 2
    while p < top:
        out += [1.5 * p, 2.0 * p]
        p *= 2
    return out


def _extend_top_octave(tokens: np.ndarray, values: np.ndarray, top: float) -> tuple[list[float], list[float]]:
    """The table plus one point at ``top`` on the least-squares line of its top octave (``tokens >= max / 2``).

    Vidur's token grid is 16 tokens apart at the top, so the last segment's slope (which
    :func:`~lorasim.perf.operators.interpolate` follows above the grid) is noise; GEMMs are compute-bound there and
    the top octave's line is their per-token cost. Nothing is added if ``top`` is inside the grid.
    """
    xs, ys = tokens.tolist(), values.tolist()
    if top <= xs[-1]:
        return xs, ys
    sel = tokens >= tokens[-1] / 2
    sel[-2:] = True  # at least a segment
    slope, icpt = np.polyfit(tokens[sel], values[sel], 1)
    return xs + [float(top)], ys + [max(float(icpt + slope * top), ys[-1])]


def operator_tables(ops: LinearOps, attn: Attention, cpu: tuple[float, float], shape: ModelShape, tp: int = 1,
                    compute_speedup: float = 1.0, bandwidth_speedup: float = 1.0,
                    all_reduce: BytesTable | None = None, max_chunk: int = 16384,
                    max_context: int = 4096, max_batch: int = 256, max_tokens: int = 65536) -> OperatorTables:
    """Vidur's operators of one model at one tensor-parallel shard as :class:`~lorasim.perf.operators.OperatorTables`.

    The terms are :class:`Composer`'s, per GPU shard: ``ops`` loaded at ``tp`` (:func:`load_linear_ops`); LM head =
    up-projection time at num_seqs rows x vocab / (2 * intermediate) (both sharded by ``tp``); CPU ``a + b * seqs``;
    attention from the profiled shape with query heads per GPU ``num_attention_heads / tp`` and KV heads per GPU
    ``max(num_kv_heads / tp, 1)`` (KV heads are replicated when ``tp`` exceeds them), evaluated on grids. Decode
    attention is bilinear in (batch, kv per seq) and prefill attention linear in context, so the 2-point axes are
    exact; prefill is quadratic in the chunk, exact on the chunk grid (1, 2, 3, 4, 6, 8, 12, ... up to
    ``max_chunk``), interpolated linearly between. The token tables (linear ops, embedding, LM head) get one more
    point at ``max_tokens`` on their top octave's least-squares line (:func:`_extend_top_octave`), so they extrapolate
    along it. ``all_reduce`` (:func:`load_all_reduce`) is required for ``tp`` > 1 by
    :class:`~lorasim.perf.operators.OperatorStepTimeModel`, which adds two per layer.
    """
    heads = shape.num_attention_heads / tp / ATTN_Q_HEADS_PER_GPU
    kv_scale = max(shape.num_kv_heads / tp, 1.0) / ATTN_KV_HEADS_PER_GPU
    chunk_grid, ctx_grid = _pow2_grid(max_chunk), [0.0, float(max_context)]
    batch_grid, kv_grid = [1.0, float(max_batch)], [0.0, float(max_context)]
    prefill = [[attn.prefill_layer_ms(c, k, heads, compute_speedup) for k in ctx_grid] for c in chunk_grid]
    decode = [[attn.decode_layer_ms(b * kv, kv_scale, bandwidth_speedup) for kv in kv_grid] for b in batch_grid]

    def tokens_table(values: np.ndarray) -> TokensTable:
        xs, ys = _extend_top_octave(ops.tokens, values, max_tokens)
        return TokensTable(num_tokens=xs, ms=ys)

    layer = tokens_table(ops.layer_ms)
    return OperatorTables(
        linear=LinearOpsTable(num_tokens=layer.num_tokens, ops_ms={"vidur_layer_ops": layer.ms}),
        attention_prefill=PrefillAttentionTable(chunk_tokens=chunk_grid, context_tokens=ctx_grid, ms=prefill),
        attention_decode=DecodeAttentionTable(batch_size=batch_grid, kv_tokens_per_seq=kv_grid, ms=decode),
        lm_head=tokens_table(ops.up_proj_ms * shape.vocab_size / (2 * shape.intermediate_size)),
        embedding=tokens_table(ops.emb_ms),
        cpu=BatchTable(batch_size=[0.0, 1.0], ms=[cpu[0], cpu[0] + cpu[1]]),
        all_reduce=all_reduce,
    )


TRAIN_SEED, TEST_SEED = 20240501, 20240502
"""Seeds of the sampled batches a composed model is fitted on and tested on."""


def sample_batches(seed: int, n: int, max_tokens: int = 4096, max_context: int = 4096,
                   max_batch: int = 256) -> list[tuple[int, float, list[tuple[int, int]]]]:
    """Deterministic batches ``(num_decode, decode_context_sum, [(chunk, context_before)])``: decode-only,
    prefill-only and mixed in turn, within a ``max_tokens`` step, ``max_context`` context and ``max_batch`` decodes.

    The defaults (4,096 / 4,096 / 256) are the shipped Vidur profiles' sample."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 3
        b = int(rng.integers(1, max_batch + 1)) if kind != 1 else 0
        avg_ctx = float(rng.uniform(16, max_context))
        chunks = []
        if kind != 0:
            budget = max_tokens - b
            c = int(rng.integers(16, max(budget, 17)))
            k = int(rng.integers(0, max(max_context - c, 1)))
            chunks.append((c, k))
        out.append((b, b * avg_ctx, chunks))
    return out


def features(b: int, ctx: float, chunks: list[tuple[int, int]]) -> list[float]:
    """The 6 base features of :class:`~lorasim.perf.linear.LinearStepTimeModel` (``base_ms`` ..
    ``prefill_attention_ms`` order)."""
    return [1.0, float(sum(c for c, _ in chunks)), float(len(chunks)), float(b), ctx,
            float(sum(c * (k + c) for c, k in chunks))]


def fit_linear(comp, n_train: int = 900, n_test: int = 300, **limits) -> tuple[np.ndarray, dict]:
    """Fit the 6 base coefficients to a composed model on sampled batches; statistics on a separately drawn set.

    Args:
        comp: a :class:`Composer`, or any callable ``(num_decode, decode_context_sum, chunks) -> ms``.
        n_train, n_test: batches fitted on and tested on (:data:`TRAIN_SEED`, :data:`TEST_SEED`).
        limits: ``max_tokens``, ``max_context``, ``max_batch`` of :func:`sample_batches`.
    """
    step_ms = comp if callable(comp) else comp.step_ms
    stats = {}
    coef = None
    for name, seed, n in (("train", TRAIN_SEED, n_train), ("test", TEST_SEED, n_test)):
        batches = sample_batches(seed, n, **limits)
        x = np.array([features(*bt) for bt in batches])
        y = np.array([step_ms(*bt) for bt in batches])
        if coef is None:
            coef = fit_relative(x, y, y, np.ones_like(y))
        stats[f"{name}_mape"] = mape(x @ coef, y)
        stats[f"{name}_r2"] = r2(x @ coef, y)
        stats[f"n_{name}"] = n
    return coef, stats
