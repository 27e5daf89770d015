"""The operators that :mod:`lorasim.calibrate.bench` times, one builder per table.

``torch`` arrives through :class:`Ctx` (imported lazily by the caller). Every builder allocates its inputs once per
grid point, outside the timed call, and returns the table as plain lists in the operator-profile format of
:mod:`lorasim.perf.operators` (times in ms, 5 significant digits).

The kernels stand in for vLLM's: cuBLAS GEMMs via ``F.linear`` for the projections (as vLLM's unquantized
``LinearMethod``); ``F.rms_norm``, rotary embedding and SiLU-and-mul in eager PyTorch (vLLM fuses each into one
kernel, so small-token times here are upper bounds); attention via SDPA (FlashAttention on CUDA, as vLLM's
``FLASH_ATTN`` backend; decode over padded equal-length sequences rather than paged blocks); LoRA as batched matmuls:
``sgmv`` groups tokens into one segment per adapter and runs one ``bmm`` per module for shrink and one ``baddbmm``
for expand (punica SGMV / vLLM V1 Triton kernels read each adapter's weights once), ``bgmv`` gathers each token's
weights (punica BGMV).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from lorasim.perf._regress import sig
from lorasim.perf.shapes import ALL_TARGET_MODULES, ModelShape

LINEAR_OPS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "norms", "rope", "act", "residual")
"""Per-layer operators of the ``linear`` table (``norms``: both RMSNorms; ``residual``: both residual adds)."""
BGMV_GATHER_BYTES = 256 << 20
"""Most bytes of gathered LoRA weights per ``bgmv`` call (tokens are processed in chunks below it)."""


@dataclass
class Ctx:
    """Device, dtype and per-shard dimensions of one benchmark run."""

    torch: object
    device: str
    dtype: object
    shape: ModelShape
    tp: int
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        s = self.shape
        self.d, self.hd = s.hidden_size, s.head_dim
        self.heads = s.num_attention_heads // self.tp
        self.kv_heads = max(s.num_kv_heads // self.tp, 1)
        self.ff = s.intermediate_size // self.tp
        self.vocab = math.ceil(s.vocab_size / self.tp)

    def rand(self, *size: int, dtype=None):
        """A tensor of uniform(-1, 1) values (no NaN or denormals to slow a CPU down)."""
        t = self.torch  # type: ignore[assignment]
        out = t.empty(size, dtype=dtype or self.dtype, device=self.device)  # type: ignore[attr-defined]
        return out.uniform_(-1.0, 1.0)

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


def count_points(grid, cuda: bool) -> int:
    """Timed calls of a run (progress bar total and time-budget share)."""
    return (len(grid.linear_tokens) * (len(LINEAR_OPS) + 1) + len(grid.lm_head_rows)
            + len(grid.prefill_chunks) * len(grid.prefill_contexts) + len(grid.decode_batches) * len(grid.decode_kv)
            + len(grid.lora_tokens) * len(grid.lora_adapters) * len(grid.lora_ranks)
            + len(grid.copy_bytes) * (2 if cuda else 1))


def _ms(v: float) -> float:
    return sig(v, 5)


def measure_all(c: Ctx, grid, timer: Callable, lora_kernel: str) -> dict:
    """Every table, as a dict ready for :class:`~lorasim.perf.operators.OperatorTables`."""
    out = linear_tables(c, grid, timer)
    out["lm_head"] = lm_head_table(c, grid, timer)
    out["attention_prefill"] = prefill_table(c, grid, timer)
    out["attention_decode"] = decode_table(c, grid, timer)
    out["lora"] = lora_table(c, grid, timer, lora_kernel)
    out["h2d_copy"] = copy_table(c, grid, timer)
    return out


def linear_tables(c: Ctx, grid, timer) -> dict:
    """``linear`` (each op of :data:`LINEAR_OPS`) and ``embedding`` vs tokens."""
    torch = c.torch
    F = torch.nn.functional  # type: ignore[attr-defined]
    n_max, d, hd, h, kvh, ff = max(grid.linear_tokens), c.d, c.hd, c.heads, c.kv_heads, c.ff
    x, x2, xo, xf, gu = c.rand(n_max, d), c.rand(n_max, d), c.rand(n_max, h * hd), c.rand(n_max, ff), \
        c.rand(n_max, 2 * ff)
    w_qkv, w_o, w_gu, w_d = c.rand((h + 2 * kvh) * hd, d), c.rand(d, h * hd), c.rand(2 * ff, d), c.rand(d, ff)
    w_norm = c.rand(d)
    q, k = c.rand(n_max, h, hd), c.rand(n_max, kvh, hd)
    cos, sin = c.rand(n_max, 1, hd // 2), c.rand(n_max, 1, hd // 2)
    emb = c.rand(c.vocab, d)
    ids = torch.randint(0, c.vocab, (n_max,), device=c.device)  # type: ignore[attr-defined]

    def rope(n):
        for z in (q[:n], k[:n]):
            z1, z2 = z[..., : hd // 2], z[..., hd // 2:]
            torch.cat((z1 * cos[:n] - z2 * sin[:n], z2 * cos[:n] + z1 * sin[:n]), dim=-1)  # type: ignore[attr-defined]

    def norms(n):
        F.rms_norm(x[:n], (d,), w_norm, 1e-5)
        F.rms_norm(x2[:n], (d,), w_norm, 1e-5)

    ops = {"qkv_proj": lambda n: F.linear(x[:n], w_qkv), "o_proj": lambda n: F.linear(xo[:n], w_o),
           "gate_up_proj": lambda n: F.linear(x[:n], w_gu), "down_proj": lambda n: F.linear(xf[:n], w_d),
           "norms": norms, "rope": rope, "act": lambda n: F.silu(gu[:n, :ff]) * gu[:n, ff:],
           "residual": lambda n: (x[:n] + x2[:n], x2[:n] + x[:n])}
    table: dict[str, list[float]] = {op: [] for op in LINEAR_OPS}
    emb_ms = []
    for n in grid.linear_tokens:
        for op in LINEAR_OPS:
            table[op].append(_ms(timer(lambda op=op, n=n: ops[op](n), desc=f"linear {op} {n}")))
        emb_ms.append(_ms(timer(lambda n=n: F.embedding(ids[:n], emb), desc=f"embedding {n}")))
    tokens = [float(n) for n in grid.linear_tokens]
    return {"linear": {"num_tokens": tokens, "ops_ms": table}, "embedding": {"num_tokens": tokens, "ms": emb_ms}}


def lm_head_table(c: Ctx, grid, timer) -> dict:
    """Logits of ``rows`` sampled rows over the (shard's) vocabulary, in float32, and a greedy sample."""
    F = c.torch.nn.functional  # type: ignore[attr-defined]
    x, w = c.rand(max(grid.lm_head_rows), c.d), c.rand(c.vocab, c.d)
    ms = [_ms(timer(lambda n=n: F.linear(x[:n], w).float().argmax(-1), desc=f"lm_head {n}"))
          for n in grid.lm_head_rows]
    return {"num_tokens": [float(n) for n in grid.lm_head_rows], "ms": ms}


def _sdpa(c: Ctx):
    """SDPA with grouped-query heads (``enable_gqa``), falling back to repeated KV heads where unsupported."""
    torch = c.torch
    F = torch.nn.functional  # type: ignore[attr-defined]
    groups = c.heads // c.kv_heads
    state = {"gqa": groups > 1}

    def make(q, k, v, mask, causal):
        def native():
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
        if state["gqa"]:
            try:
                native()
                return native
            except (RuntimeError, TypeError, NotImplementedError) as e:
                state["gqa"] = False
                c.notes.append(f"SDPA enable_gqa unsupported here ({type(e).__name__}): KV heads repeated "
                               f"{groups}x before attention (decode times overstate memory traffic)")
        if groups > 1:
            k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    return make


def prefill_table(c: Ctx, grid, timer) -> dict:
    """One chunk of ``chunk`` queries over ``context + chunk`` keys, causal bottom-right (chunked prefill)."""
    from torch.nn.attention.bias import causal_lower_right

    make = _sdpa(c)
    ms = []
    for n in grid.prefill_chunks:
        row = []
        for ctx in grid.prefill_contexts:
            q = c.rand(1, c.heads, n, c.hd)
            k, v = c.rand(1, c.kv_heads, ctx + n, c.hd), c.rand(1, c.kv_heads, ctx + n, c.hd)
            fn = make(q, k, v, causal_lower_right(n, ctx + n) if ctx else None, ctx == 0)
            row.append(_ms(timer(fn, desc=f"prefill chunk {n} ctx {ctx}")))
        ms.append(row)
        _free(c)
    return {"chunk_tokens": [float(n) for n in grid.prefill_chunks],
            "context_tokens": [float(x) for x in grid.prefill_contexts], "ms": ms}


def decode_table(c: Ctx, grid, timer) -> dict:
    """``batch`` single-token queries, each over ``kv`` cached tokens (equal lengths, no padding mask)."""
    make = _sdpa(c)
    ms = []
    for b in grid.decode_batches:
        row = []
        for kv in grid.decode_kv:
            q = c.rand(b, c.heads, 1, c.hd)
            k, v = c.rand(b, c.kv_heads, kv, c.hd), c.rand(b, c.kv_heads, kv, c.hd)
            row.append(_ms(timer(make(q, k, v, None, False), desc=f"decode batch {b} kv {kv}")))
            del q, k, v
        ms.append(row)
        _free(c)
    return {"batch_size": [float(b) for b in grid.decode_batches],
            "kv_tokens_per_seq": [float(x) for x in grid.decode_kv], "ms": ms}


def _free(c: Ctx) -> None:
    if c.cuda:
        c.torch.cuda.empty_cache()  # type: ignore[attr-defined]


def lora_module_dims(c: Ctx) -> dict[str, tuple[int, int]]:
    """``(d_in, d_out)`` of every target module on one TP shard (column-parallel outputs, row-parallel inputs)."""
    out = {}
    for m in ALL_TARGET_MODULES:
        d_in, d_out = c.shape.module_dims(m)
        if m in ("o_proj", "down_proj"):
            d_in //= c.tp
        else:
            d_out = max(d_out // c.tp, c.hd)
        out[m] = (d_in, d_out)
    return out


def lora_table(c: Ctx, grid, timer, kernel: str) -> dict:
    """Shrink + expand of every target module of one layer; ``ms[tokens][adapters][rank]``.

    With more adapters than tokens, ``num_tokens`` adapters are used (a step cannot hold more).
    """
    torch = c.torch
    dims = lora_module_dims(c)
    ms = [[[0.0] * len(grid.lora_ranks) for _ in grid.lora_adapters] for _ in grid.lora_tokens]
    for ai, n_a in enumerate(grid.lora_adapters):
        for ri, r in enumerate(grid.lora_ranks):
            a_w = {m: c.rand(n_a, di, r) for m, (di, _) in dims.items()}
            b_w = {m: c.rand(n_a, r, do) for m, (_, do) in dims.items()}
            for ti, n in enumerate(grid.lora_tokens):
                n_eff = min(n_a, n)
                if kernel == "sgmv":
                    seg = math.ceil(n / n_eff)
                    xs = {di: c.rand(n_eff, seg, di) for di, _ in dims.values()}
                    ys = {do: c.rand(n_eff, seg, do) for _, do in dims.values()}

                    def fn(n_eff=n_eff, xs=xs, ys=ys, a_w=a_w, b_w=b_w):
                        for m, (di, do) in dims.items():
                            a, b = a_w[m][:n_eff], b_w[m][:n_eff]
                            ys[do].baddbmm_(torch.bmm(xs[di], a), b)  # type: ignore[attr-defined]
                else:
                    idx = torch.arange(n, device=c.device) % n_eff  # type: ignore[attr-defined]
                    xs = {di: c.rand(n, di) for di, _ in dims.values()}
                    ys = {do: c.rand(n, do) for _, do in dims.values()}
                    fn = _bgmv(c, dims, a_w, b_w, xs, ys, idx, r)
                ms[ti][ai][ri] = _ms(timer(fn, desc=f"lora {kernel} tok {n} ad {n_a} r {r}"))
            del a_w, b_w
            _free(c)
    return {"num_tokens": [float(n) for n in grid.lora_tokens],
            "num_adapters": [float(a) for a in grid.lora_adapters], "rank": [float(r) for r in grid.lora_ranks],
            "ms": ms, "kernel": kernel, "target_modules": list(dims)}


def _bgmv(c: Ctx, dims, a_w, b_w, xs, ys, idx, r):
    torch = c.torch
    elem = torch.empty((), dtype=c.dtype).element_size()  # type: ignore[attr-defined]
    n = len(idx)

    def fn():
        for m, (di, do) in dims.items():
            step = max(1, BGMV_GATHER_BYTES // (max(di, do) * r * elem))
            for s in range(0, n, step):
                ii = idx[s:s + step]
                t = torch.bmm(xs[di][s:s + step, None, :], a_w[m][ii])  # type: ignore[attr-defined]
                ys[do][s:s + step] += torch.bmm(t, b_w[m][ii]).squeeze(1)  # type: ignore[attr-defined]
    return fn


def copy_table(c: Ctx, grid, timer) -> dict:
    """Host -> device copies (pinned and pageable sources); on the CPU a host memcpy (pageable only)."""
    torch = c.torch
    out: dict = {"bytes": [float(b) for b in grid.copy_bytes], "kind": "h2d" if c.cuda else "cpu_memcpy"}
    kinds = ("pinned", "pageable") if c.cuda else ("pageable",)
    for kind in kinds:
        ms = []
        for nb in grid.copy_bytes:
            src = torch.zeros(nb, dtype=torch.uint8)  # type: ignore[attr-defined]
            if kind == "pinned":
                src = src.pin_memory()
            dst = torch.empty(nb, dtype=torch.uint8, device=c.device)  # type: ignore[attr-defined]
            pinned = kind == "pinned"
            ms.append(_ms(timer(lambda dst=dst, src=src, pinned=pinned: dst.copy_(src, non_blocking=pinned),
                                wall=True, desc=f"copy {kind} {nb} B")))
        out[f"{kind}_ms"] = ms
    return out
