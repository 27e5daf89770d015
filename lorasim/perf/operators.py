"""A step-time model composed from measured operator tables, inspectable term by term.

Each operator is a small table of medians in **milliseconds** over a 1-, 2- or 3-D grid, measured by
``lorasim calibrate run`` (:mod:`lorasim.calibrate.bench`) or written by hand. One engine step is composed as
Vidur's predictor composes it (``vidur/execution_time_predictor/base_execution_time_predictor.py``
``get_execution_time`` and ``vidur/entities/execution_time.py``: per-layer operators times layers, the
tensor-parallel all-reduce once after attention and once after the MLP, plus the per-step CPU parts)::

    step_ms = cpu(num_seqs) + embedding(num_tokens) + lm_head(num_seqs)
            + num_layers * ( sum_op linear_op(num_tokens)                      # qkv, o, gate_up, down, norms, ...
                           + sum_chunks attention_prefill(chunk, context_before)
                           + attention_decode(num_decode_seqs, decode_context_tokens / num_decode_seqs)
                           + [LoRA-active step] lora(num_tokens, num_distinct_adapters, max_lora_rank)
                           + [TP > 1] 2 * all_reduce(num_tokens * hidden_size * dtype_bytes) )

LoRA follows punica / S-LoRA's segmented kernels (SGMV, arXiv 2310.18547 and 2311.03285) as vLLM V1's Triton
``lora_shrink``/``lora_expand`` do: the kernels run over **every** token of a step in which any token uses an adapter
(grid ``cdiv(num_tokens, BLOCK_M)`` x slots), each slot padded to ``max_lora_rank``, and read each distinct adapter's
weights once, so the table's axes are (all tokens of the step, distinct adapters, ``max_lora_rank``).

**Interpolation** (every table, every axis): linear between grid points (multilinear on 2-D/3-D grids); below the
first grid point the value is clamped to the edge (the smallest measured size is the launch-bound floor); above the
last point it is extrapolated linearly along the last grid segment, but never below the value at the edge (a noisy
last segment must not predict less time for more work). An axis with a single point is constant. Lookups are pure
Python (``bisect``): a step costs ~50 us to compose, fine for inspection and small simulations; for large ones fit
the linear form (``lorasim calibrate fit``).

Batch aggregates (:class:`~lorasim.perf.base.BatchStats`) hide per-sequence lengths; the model assumes equal prefill
chunks (``chunk = prefill_tokens / prefill_seqs``, ``context_before = attention_work / prefill_tokens - chunk``) and
equal decode contexts (``kv per seq = context_tokens / decode_seqs``). Pass exact ``chunks`` to
:meth:`OperatorStepTimeModel.breakdown_ms` when you know them.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from itertools import pairwise, product
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from lorasim._model import InputModel
from lorasim.errors import ConfigError
from lorasim.perf.base import BatchStats
from lorasim.perf.linear import MIN_STEP_S
from lorasim.perf.shapes import ModelShape

PARTS = ("cpu", "embedding", "linear", "attention_prefill", "attention_decode", "lora", "all_reduce", "lm_head")
"""Keys of :meth:`OperatorStepTimeModel.breakdown_ms`, in composition order."""


def _axis_weights(xs: list[float], v: float) -> tuple[int, int, float]:
    """``(i0, i1, t)`` with ``value = (1 - t) * f[i0] + t * f[i1]`` (``t > 1``: extrapolation past the last point)."""
    n = len(xs)
    if n == 1:
        return 0, 0, 0.0
    if v <= xs[0]:
        return 0, 1, 0.0
    if v >= xs[-1]:
        return n - 2, n - 1, (v - xs[-2]) / (xs[-1] - xs[-2])
    j = bisect_right(xs, v) - 1
    return j, j + 1, (v - xs[j]) / (xs[j + 1] - xs[j])


def interpolate(axes: list[list[float]], values, coords: tuple[float, ...]) -> float:
    """Multilinear interpolation of ``values`` (nested lists, one level per axis) at ``coords``.

    Edge rule as in the module docstring: clamp below, linear extrapolation above, floored at the edge value.
    """
    ws = [_axis_weights(xs, float(c)) for xs, c in zip(axes, coords)]
    if len(ws) == 1:
        i0, i1, t = ws[0]
        raw = (1 - t) * values[i0] + t * values[i1]
        return max(raw, values[i1]) if t > 1 else raw
    raw = _corners(values, ws)
    if any(t > 1 for _, _, t in ws):
        return max(raw, _corners(values, [(i0, i1, min(t, 1.0)) for i0, i1, t in ws]))
    return raw


def _corners(values, ws) -> float:
    total = 0.0
    for corner in product((0, 1), repeat=len(ws)):
        w, v = 1.0, values
        for (i0, i1, t), side in zip(ws, corner):
            w *= t if side else 1 - t
            v = v[i1 if side else i0]
        if w:
            total += w * v
    return total


def _shape_of(values, depth: int) -> list[int] | None:
    """Lengths of a rectangular nested list of ``depth`` levels, or None if ragged."""
    if depth == 1:
        return [len(values)]
    inner = [_shape_of(v, depth - 1) for v in values]
    if not inner or any(s is None or s != inner[0] for s in inner):
        return None if inner else [0]
    return [len(values), *inner[0]]


def _flat(values, depth: int) -> list[float]:
    return list(values) if depth == 1 else [x for v in values for x in _flat(v, depth - 1)]


class GridTable(InputModel):
    """A measured table on a rectangular grid; subclasses name the axes (``AXES``) as fields, values in ``ms``."""

    AXES: ClassVar[tuple[str, ...]] = ()

    def axes(self) -> list[list[float]]:
        """The grid, one strictly increasing list per axis."""
        return [getattr(self, a) for a in self.AXES]

    def value_fields(self) -> tuple[str, ...]:
        """Fields holding values on the grid (``ms``, or several such as ``pinned_ms``)."""
        return ("ms",)

    @model_validator(mode="after")
    def _check_grid(self) -> GridTable:
        axes = self.axes()
        for name, xs in zip(self.AXES, axes):
            if not xs:
                raise ValueError(f"{name}: empty grid")
            if xs[0] < 0 or any(b <= a for a, b in pairwise(xs)):
                raise ValueError(f"{name}: grid must be >= 0 and strictly increasing, got {xs}")
        want = [len(xs) for xs in axes]
        for field in self.value_fields():
            vals = getattr(self, field)
            if vals is None:
                continue
            got = _shape_of(vals, len(axes))
            if got != want:
                raise ValueError(f"{field}: shape {got or 'ragged'} does not match the grid "
                                 f"({' x '.join(f'{a} {n}' for a, n in zip(self.AXES, want))})")
            if any(v < 0 for v in _flat(vals, len(axes))):
                raise ValueError(f"{field}: times must be >= 0 ms")
        return self

    def at(self, *coords: float, field: str = "ms") -> float:
        """Interpolated value (ms) at ``coords`` (one per axis, in ``AXES`` order)."""
        return interpolate(self.axes(), getattr(self, field), coords)


class TokensTable(GridTable):
    """Time (ms) vs ``num_tokens`` (rows of the operator's input)."""

    AXES: ClassVar[tuple[str, ...]] = ("num_tokens",)
    num_tokens: list[float]
    ms: list[float]


class LinearOpsTable(GridTable):
    """Per-decoder-layer operators that scale with tokens only, ms each: ``ops_ms[op][i]`` at ``num_tokens[i]``.

    The usual ops are ``qkv_proj``, ``o_proj``, ``gate_up_proj``, ``down_proj`` (GEMMs) and ``norms``, ``rope``,
    ``act``, ``residual`` (element-wise); any names are accepted and all are summed.
    """

    AXES: ClassVar[tuple[str, ...]] = ("num_tokens",)
    num_tokens: list[float]
    ops_ms: dict[str, list[float]] = Field(min_length=1)
    """op name -> ms per layer at each ``num_tokens``."""

    def value_fields(self) -> tuple[str, ...]:
        return ()

    @model_validator(mode="after")
    def _check_ops(self) -> LinearOpsTable:
        for op, vals in self.ops_ms.items():
            if len(vals) != len(self.num_tokens):
                raise ValueError(f"ops_ms.{op}: {len(vals)} values for {len(self.num_tokens)} num_tokens points")
            if any(v < 0 for v in vals):
                raise ValueError(f"ops_ms.{op}: times must be >= 0 ms")
        return self

    def op_at(self, op: str, num_tokens: float) -> float:
        return interpolate([self.num_tokens], self.ops_ms[op], (num_tokens,))

    def at(self, num_tokens: float, field: str = "ms") -> float:  # type: ignore[override]
        """Sum of every op at ``num_tokens`` (ms per layer)."""
        return sum(interpolate([self.num_tokens], v, (num_tokens,)) for v in self.ops_ms.values())


class BatchTable(GridTable):
    """Per-step CPU overhead (ms) vs ``batch_size`` (sequences in the step)."""

    AXES: ClassVar[tuple[str, ...]] = ("batch_size",)
    batch_size: list[float]
    ms: list[float]


class BytesTable(GridTable):
    """A collective (ms per call) vs message ``bytes``."""

    AXES: ClassVar[tuple[str, ...]] = ("bytes",)
    bytes: list[float]
    ms: list[float]


class PrefillAttentionTable(GridTable):
    """Attention of one prompt chunk, ms per layer: ``chunk_tokens`` queries over ``context_tokens`` already cached
    plus the chunk itself (causal, bottom-right aligned)."""

    AXES: ClassVar[tuple[str, ...]] = ("chunk_tokens", "context_tokens")
    chunk_tokens: list[float]
    context_tokens: list[float]
    """KV tokens before the chunk (0 for a fresh prompt)."""
    ms: list[list[float]]


class DecodeAttentionTable(GridTable):
    """Decode attention of a batch, ms per layer: ``batch_size`` sequences, one query each, over
    ``kv_tokens_per_seq`` cached tokens each."""

    AXES: ClassVar[tuple[str, ...]] = ("batch_size", "kv_tokens_per_seq")
    batch_size: list[float]
    kv_tokens_per_seq: list[float]
    ms: list[list[float]]


class LoraTable(GridTable):
    """LoRA shrink + expand over every target module of one decoder layer, ms: all ``num_tokens`` of the step split
    over ``num_adapters`` distinct adapters, weights padded to ``rank`` (vLLM ``max_lora_rank``)."""

    AXES: ClassVar[tuple[str, ...]] = ("num_tokens", "num_adapters", "rank")
    num_tokens: list[float]
    num_adapters: list[float]
    rank: list[float]
    ms: list[list[list[float]]]
    kernel: str = "sgmv"
    """How the kernels were emulated: ``sgmv`` (per-adapter segments) or ``bgmv`` (per-token gather)."""
    target_modules: list[str] = Field(default_factory=list)
    """Modules measured (shrink + expand each)."""


class CopyTable(GridTable):
    """Host -> device copies, ms vs ``bytes``, from pinned and from pageable host memory (either may be missing)."""

    AXES: ClassVar[tuple[str, ...]] = ("bytes",)
    bytes: list[float]
    pinned_ms: list[float] | None = None
    pageable_ms: list[float] | None = None
    kind: Literal["h2d", "cpu_memcpy"] = "h2d"
    """``cpu_memcpy``: measured without a GPU (host memcpy), not a PCIe link."""

    def value_fields(self) -> tuple[str, ...]:
        return ("pinned_ms", "pageable_ms")

    @model_validator(mode="after")
    def _check_some(self) -> CopyTable:
        if self.pinned_ms is None and self.pageable_ms is None:
            raise ValueError("set pinned_ms or pageable_ms")
        return self

    @property
    def best_field(self) -> str:
        """``pinned_ms`` if measured (vLLM pins its CPU LoRA cache), else ``pageable_ms``."""
        return "pinned_ms" if self.pinned_ms is not None else "pageable_ms"


class OperatorTables(InputModel):
    """Every measured table of one (model shape, device, dtype, tensor-parallel shard).

    ``linear``, ``attention_*``, ``lora`` and ``all_reduce`` are per decoder layer; ``embedding``, ``lm_head``
    and ``cpu`` per step. Optional tables contribute nothing when missing (``all_reduce`` is required for TP > 1,
    ``lora`` for a LoRA-enabled server).
    """

    linear: LinearOpsTable
    attention_prefill: PrefillAttentionTable
    attention_decode: DecodeAttentionTable
    lm_head: TokensTable
    """Logits of the sampled rows (one per sequence) and greedy sampling, ms vs rows."""
    embedding: TokensTable | None = None
    cpu: BatchTable | None = None
    all_reduce: BytesTable | None = None
    lora: LoraTable | None = None
    h2d_copy: CopyTable | None = None


class OperatorStepTimeModel:
    """Step time composed from :class:`OperatorTables` (see the module docstring for the formula and edge rules).

    Implements :class:`~lorasim.perf.base.StepTimeModel`.

    Args:
        tables: the measured tables (ms).
        shape: the model (``num_layers``; ``hidden_size`` and ``dtype_bytes`` size the all-reduce messages).
        tp: tensor-parallel size the tables were measured at (> 1 adds two all-reduces per layer).
        max_lora_rank: the server's ``max_lora_rank`` (every slot is padded to it).
        lora_enabled: whether the server runs with LoRA; if not, the LoRA term is always zero.
        min_step_s: floor of :meth:`step_time_s`.

    Raises:
        ConfigError: ``tp > 1`` without an ``all_reduce`` table, or LoRA enabled without a ``lora`` table.
    """

    __slots__ = ("tables", "shape", "tp", "max_lora_rank", "lora_enabled", "min_step_s")

    def __init__(self, tables: OperatorTables, shape: ModelShape, tp: int = 1, max_lora_rank: int = 16,
                 lora_enabled: bool = True, min_step_s: float = MIN_STEP_S):
        if tp < 1:
            raise ConfigError(f"tensor_parallel_size: must be >= 1, got {tp}")
        if tp > 1 and tables.all_reduce is None:
            raise ConfigError(f"tables.all_reduce: required for tensor_parallel_size {tp} (two all-reduces per layer)")
        if lora_enabled and tables.lora is None:
            raise ConfigError("tables.lora: missing, so LoRA steps cannot be costed; measure it or use "
                              "lora_enabled=False")
        self.tables, self.shape, self.tp = tables, shape, tp
        self.max_lora_rank, self.lora_enabled, self.min_step_s = max_lora_rank, lora_enabled, min_step_s

    def breakdown_ms(self, batch: BatchStats, chunks: list[tuple[int, int]] | None = None) -> dict[str, float]:
        """Milliseconds of each part of the step (keys :data:`PARTS`); their sum is :meth:`step_time_ms`.

        Args:
            batch: the step's aggregates.
            chunks: optional exact prefill chunks as ``(chunk_tokens, context_before)``; None derives equal chunks
                from ``batch`` (module docstring).
        """
        t, L = self.tables, self.shape.num_layers
        tokens = batch.num_tokens
        seqs = batch.num_prefill_seqs + batch.num_decode_seqs
        out = dict.fromkeys(PARTS, 0.0)
        if t.cpu is not None:
            out["cpu"] = t.cpu.at(seqs)
        if tokens <= 0:
            return out
        if t.embedding is not None:
            out["embedding"] = t.embedding.at(tokens)
        out["linear"] = L * t.linear.at(tokens)
        if chunks is None and batch.num_prefill_tokens > 0:
            n = max(batch.num_prefill_seqs, 1)
            c = batch.num_prefill_tokens / n
            k = max(batch.prefill_attention_work / batch.num_prefill_tokens - c, 0.0)
            out["attention_prefill"] = L * n * t.attention_prefill.at(c, k)
        elif chunks:
            out["attention_prefill"] = L * sum(t.attention_prefill.at(c, k) for c, k in chunks if c > 0)
        b = batch.num_decode_seqs
        if b > 0:
            out["attention_decode"] = L * t.attention_decode.at(b, batch.num_decode_context_tokens / b)
        if self.lora_enabled and (batch.num_lora_tokens > 0 or batch.num_distinct_adapters > 0):
            adapters = max(batch.num_distinct_adapters, 1)
            out["lora"] = L * t.lora.at(tokens, adapters, self.max_lora_rank)  # type: ignore[union-attr]
        if self.tp > 1:
            nbytes = tokens * self.shape.hidden_size * self.shape.dtype_bytes
            out["all_reduce"] = L * 2 * t.all_reduce.at(nbytes)  # type: ignore[union-attr]
        out["lm_head"] = t.lm_head.at(max(seqs, 1))
        return out

    def step_time_ms(self, batch: BatchStats, chunks: list[tuple[int, int]] | None = None) -> float:
        """The composed step in milliseconds, without the floor."""
        return math.fsum(self.breakdown_ms(batch, chunks).values())

    def step_time_s(self, batch: BatchStats) -> float:
        """Seconds the step takes (always >= ``min_step_s`` > 0)."""
        return max(self.step_time_ms(batch) / 1000.0, self.min_step_s)
