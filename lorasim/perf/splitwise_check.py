"""Independent check of the composed step time against Splitwise's measured whole iterations.

``python -m lorasim.perf.splitwise_check [--data-dir D] [--out CSV]``

**What is compared.** Splitwise (Patel et al., ISCA'24; MIT) measured vLLM serving Llama2-70B at tensor parallelism
2, 4 and 8 on DGX-A100-80GB and DGX-H100-80GB machines (``profiles/splitwise-sim/perf_model.csv``): per
configuration (``batch_size`` prompts of ``prompt_size`` tokens, ``token_size`` output tokens, 5 repeats, one factor
varied at a time around 512 / 1 / 128), ``prompt_time`` = the whole batch's prefill (ms) and ``token_time`` = ms per
decode step. Each row is set against the step that :class:`~lorasim.perf.operators.OperatorStepTimeModel` composes
from Vidur's operator tables (:func:`lorasim.perf._vidur.operator_tables`) for the same model, GPU and TP:

* prompt row: one prefill step of ``batch_size`` fresh chunks of ``prompt_size`` tokens (exact chunks);
* token row: one decode step of ``batch_size`` sequences, each with ``prompt_size + token_size / 2`` KV tokens (the
  mean over the ``token_size - 1`` decode steps; the composed decode step is linear in the KV tokens, so the step at
  the mean context is the mean step).

Nothing is fitted or tuned on Splitwise: every number of the composed model comes from Vidur's tables (and the two
public spec-sheet bandwidths already used by :mod:`lorasim.perf._vidur`). It is a check only.

**Assumptions** (each a possible source of the error reported):

* Linear operators (norms, QKV, RoPE, O, up/gate, act, down, residual add) and the embedding: Vidur's
  ``compute/{a100,h100}/meta-llama/Llama-2-70b-hf/mlp.csv`` at ``num_tensor_parallel_workers`` = the row's TP
  (per-GPU shard), medians; tables end at 4,096 tokens and are extrapolated beyond (prompts of 8,192 tokens,
  batched prompts up to 32,768 tokens) along the least-squares line of their top octave, 2,048-4,096 tokens
  (:func:`~lorasim.perf._vidur.operator_tables`; the raw last 16-token segment's slope is noise).
* Attention: the parametric fit of Vidur's one A100 FlashAttention profile (``legacy-a100/attention.csv``; 64 query
  / 8 KV heads at TP2, i.e. exactly Llama-2-70B at TP2), scaled as :mod:`lorasim.perf._vidur` does: prefill pair term
  x query heads per GPU / 32, decode KV term x KV heads per GPU / 4 (KV heads per GPU = max(8 / TP, 1)). H100:
  prefill / the H100-over-A100 GEMM speed-up measured on the same Llama-2-70B tables at the same TP (median ratio at
  >= 2,048 tokens, :func:`~lorasim.perf._vidur.gemm_speedup`), decode / the HBM bandwidth ratio 3350 / 2039 GB/s.
  Prefill beyond 4,096 tokens and decode KV beyond 4,032 tokens extrapolate the fit.
* Tensor-parallel all-reduce: two per layer of ``tokens x 8192 x 2`` bytes (bf16), NCCL medians from Vidur's
  ``network/a100_dgx/all_reduce.csv`` and ``network/h100_dgx/all_reduce.csv`` (Splitwise ran on DGX-class 8-GPU
  NVSwitch nodes), all TP GPUs on one node; resampled to one point per octave of size
  (:func:`~lorasim.perf._vidur.load_all_reduce`) and extrapolated linearly above 64 MiB (prefills over 4,096
  tokens).
* CPU overhead (schedule + sampler + prepare inputs + process outputs): ``a + b * batch`` fitted on
  ``legacy-a100/cpu_overheads.csv`` (CodeLlama-34B TP2 on A100, the only such profile), used as is on both GPUs;
  its ``ray_comm_time`` column (vLLM's Ray workers under TP) is not counted, as in the shipped profiles.
* LM head = the up-projection time at ``batch_size`` rows x vocab / (2 x intermediate), as in the shipped profiles.
  No LoRA (Splitwise served the base model).
* A whole-batch prefill is composed as one step even when vLLM would split it (its default
  ``max_num_batched_tokens``); splitting would add only per-step CPU and LM-head time.
* Excluded rows (:data:`EXCLUDED`): Llama2-70B at TP2 with 64 prompts of 512 tokens. At vLLM's default
  ``gpu_memory_utilization`` 0.9 two 80 GB GPUs keep ~134 GiB, of which the weights take ~128 GiB: ~6 GiB of KV
  cache, under 20k tokens at 320 KiB per token, while the batch needs 64 x 640 = 40,960. Indeed the measured
  prefill is below the 8-prompt value on both GPUs (A100 794 vs 1,597 ms, H100 361 vs 606 ms) and the decode step
  below the 32-sequence one: vLLM did not run that batch as one. Printed apart, not in the statistics.
* BLOOM-176B (TP8) is not checkable: Vidur has no BLOOM tables. Rows with hardware ``h100-80gb-pcap`` are synthetic
  (1.3 x H100) and ignored.

Error of a row = ``predicted / measured - 1`` (%); per group (hardware, TP, phase) MAPE = mean |error| and bias =
mean error, over the measured rows (repeats count once each).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lorasim.errors import DataFileError, LorasimError
from lorasim.paths import resolve_data_dir
from lorasim.perf import _vidur as vd
from lorasim.perf.base import BatchStats
from lorasim.perf.operators import OperatorStepTimeModel
from lorasim.perf.shapes import MODEL_SHAPES

SPLITWISE = "profiles/splitwise-sim/perf_model.csv"
VIDUR = "profiles/vidur/"
ATTENTION = VIDUR + "legacy-a100/attention.csv"
CPU = VIDUR + "legacy-a100/cpu_overheads.csv"
HARDWARE = {"a100-80gb": ("a100", "a100_dgx"), "h100-80gb": ("h100", "h100_dgx")}
"""Splitwise hardware -> (Vidur compute folder, Vidur network folder)."""
MODELS = {"llama2-70b": ("meta-llama/Llama-2-70b-hf", "llama-2-70b")}
"""Splitwise model -> (Vidur compute folder, lorasim shape); BLOOM-176B has no Vidur tables."""
IGNORED_HARDWARE = ("h100-80gb-pcap",)
EXCLUDED = {
    ("llama2-70b", 2, 64, 512, 128): "KV cache too small at TP2 for the batch (prefill faster than with 8 prompts)",
}
"""(model, tp, batch_size, prompt_size, token_size) -> why the row is left out of the statistics."""
COLUMNS = ("model", "hardware", "prompt_size", "batch_size", "token_size", "prompt_time", "token_time",
           "tensor_parallel")
OUT_COLUMNS = ["model", "hardware", "tp", "phase", "batch_size", "prompt_size", "token_size", "measured_ms",
               "predicted_ms", "error_pct", "excluded"]


def mlp_path(hardware: str, model: str) -> str:
    return f"{VIDUR}compute/{HARDWARE[hardware][0]}/{MODELS[model][0]}/mlp.csv"


def all_reduce_path(hardware: str) -> str:
    return f"{VIDUR}network/{HARDWARE[hardware][1]}/all_reduce.csv"


def _require(data_dir: Path, rel: str) -> Path:
    p = data_dir / rel
    if not p.is_file():
        raise DataFileError(p, "input of the Splitwise check not found (set --data-dir or LORASIM_DATA_DIR)")
    return p


def load_splitwise(path: Path) -> pd.DataFrame:
    """The measured rows (synthetic ``h100-80gb-pcap`` rows dropped).

    Raises:
        DataFileError: unreadable, or a column of :data:`COLUMNS` is missing.
    """
    try:
        d = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataFileError(path, f"cannot read: {e}") from None
    missing = [c for c in COLUMNS if c not in d.columns]
    if missing:
        raise DataFileError(path, f"missing column(s) {', '.join(missing)}")
    return d[~d.hardware.isin(IGNORED_HARDWARE)].reset_index(drop=True)


def step_model(data_dir: Path, hardware: str, tp: int, model: str = "llama2-70b",
               cache: dict | None = None) -> OperatorStepTimeModel:
    """The composed (base-model, no LoRA) step of ``model`` on ``hardware`` at ``tp`` from Vidur's tables.

    Raises:
        DataFileError: a Vidur file is missing or has no rows for ``tp``.
    """
    cache = {} if cache is None else cache
    shape = MODEL_SHAPES[MODELS[model][1]]

    def get(key, fn, rel):
        if key not in cache:
            p = _require(data_dir, rel)
            try:
                cache[key] = fn(p)
            except (ValueError, KeyError) as e:
                raise DataFileError(p, str(e)) from None
        return cache[key]

    attn = get("attn", vd.fit_attention, ATTENTION)
    cpu = get("cpu", vd.fit_cpu_overhead, CPU)
    ops = {hw: get(("ops", hw, tp), lambda p: vd.load_linear_ops(p, tp), mlp_path(hw, model)) for hw in HARDWARE}
    compute, bandwidth = 1.0, 1.0
    dev = HARDWARE[hardware][0]
    if dev != "a100":
        compute = vd.gemm_speedup(ops["a100-80gb"], ops[hardware])
        bandwidth = vd.HBM_BANDWIDTH_GBPS[dev] / vd.HBM_BANDWIDTH_GBPS["a100"]
        cache[("speedup", hardware, tp)] = compute
    ar = None
    if tp > 1:
        ar = get(("ar", hardware, tp), lambda p: vd.load_all_reduce(p, tp), all_reduce_path(hardware))
    tables = vd.operator_tables(ops[hardware], attn, cpu, shape, tp, compute, bandwidth, all_reduce=ar)
    return OperatorStepTimeModel(tables, shape, tp, lora_enabled=False)


def predict_ms(m: OperatorStepTimeModel, phase: str, batch: int, prompt: int, tokens: int) -> float:
    """Composed ms of a Splitwise ``prompt`` row (whole-batch prefill) or ``token`` row (mean decode step)."""
    if phase == "prompt":
        b = BatchStats(num_prefill_tokens=batch * prompt, num_prefill_seqs=batch,
                       prefill_attention_work=batch * prompt * prompt)
        return m.step_time_ms(b, [(prompt, 0)] * batch)
    ctx = prompt + tokens / 2
    return m.step_time_ms(BatchStats(num_decode_seqs=batch, num_decode_context_tokens=batch * ctx))


def compare(data_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """Per measured row, composed vs measured (:data:`OUT_COLUMNS`), and notes on what was not checkable."""
    sw = load_splitwise(_require(data_dir, SPLITWISE))
    notes = []
    for model in sorted(set(sw.model) - set(MODELS)):
        n = int((sw.model == model).sum())
        notes.append(f"{model}: {n} rows x 2 phases not checkable (no Vidur operator tables for this model)")
    sw = sw[sw.model.isin(list(MODELS))]
    unknown = sorted(set(sw.hardware) - set(HARDWARE))
    if unknown:
        notes.append(f"hardware {', '.join(unknown)}: not checkable (no Vidur tables)")
        sw = sw[sw.hardware.isin(list(HARDWARE))]
    cache: dict = {}
    models: dict = {}
    pred: dict = {}
    out = []
    for r in sw.itertuples(index=False):
        key = (r.model, r.hardware, int(r.tensor_parallel))
        if key not in models:
            models[key] = step_model(data_dir, r.hardware, key[2], r.model, cache)
        cfg = (int(r.batch_size), int(r.prompt_size), int(r.token_size))
        for phase, measured in (("prompt", r.prompt_time), ("token", r.token_time)):
            if (key, phase, cfg) not in pred:
                pred[(key, phase, cfg)] = predict_ms(models[key], phase, *cfg)
            p = pred[(key, phase, cfg)]
            out.append((r.model, r.hardware, key[2], phase, *cfg, float(measured), p,
                        (p / float(measured) - 1.0) * 100.0, (r.model, key[2], *cfg) in EXCLUDED))
    speedups = [f"{hw} tp{tp} {v:.2f}x" for (kind, hw, tp), v in
                ((k, v) for k, v in cache.items() if isinstance(k, tuple) and k[0] == "speedup")]
    if speedups:
        notes.append("H100 prefill attention speed-up (Vidur Llama-2-70B GEMMs, same TP): " + ", ".join(speedups))
    return pd.DataFrame(out, columns=OUT_COLUMNS), notes


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """n, MAPE (%) and bias (mean signed error, %) per (model, hardware, tp, phase) over the included rows."""
    inc = rows[~rows.excluded]
    g = inc.groupby(["model", "hardware", "tp", "phase"], sort=True).error_pct
    return pd.DataFrame({"n": g.size(), "mape_pct": g.apply(lambda e: float(np.mean(np.abs(e)))),
                         "bias_pct": g.mean()}).reset_index()


def report(rows: pd.DataFrame, summary: pd.DataFrame, notes: list[str]) -> str:
    lines = ["composed (Vidur operator tables) vs Splitwise measured, error = predicted / measured - 1",
             f"{'model':11s} {'hardware':10s} {'tp':>2s} {'phase':6s} {'n':>4s} {'MAPE%':>7s} {'bias%':>7s}"]
    for s in summary.itertuples(index=False):
        lines.append(f"{s.model:11s} {s.hardware:10s} {s.tp:2d} {s.phase:6s} {s.n:4d} {s.mape_pct:7.1f} "
                     f"{s.bias_pct:+7.1f}")
    inc = rows[~rows.excluded]
    for phase in ("prompt", "token"):
        e = inc[inc.phase == phase].error_pct
        lines.append(f"all {phase:6s} n={len(e):4d} MAPE {np.mean(np.abs(e)):.1f}% bias {e.mean():+.1f}%")
    e = inc.error_pct
    lines.append(f"overall      n={len(e):4d} MAPE {np.mean(np.abs(e)):.1f}% bias {e.mean():+.1f}%")
    ex = rows[rows.excluded]
    if len(ex):
        for (model, hw, tp, phase, b, p, t), g in ex.groupby(["model", "hardware", "tp", "phase", "batch_size",
                                                             "prompt_size", "token_size"]):
            why = EXCLUDED[(model, tp, b, p, t)]
            lines.append(f"excluded: {model} {hw} tp{tp} {phase} batch {b} prompt {p}: {len(g)} rows, measured "
                         f"{g.measured_ms.median():.1f} ms vs composed {g.predicted_ms.iloc[0]:.1f} ms ({why})")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lorasim.perf.splitwise_check", description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="shared data directory (default: lorasim.paths)")
    ap.add_argument("--out", default=None, help="write the per-row comparison to this CSV")
    args = ap.parse_args(argv)
    try:
        rows, notes = compare(resolve_data_dir(args.data_dir))
    except LorasimError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report(rows, summarize(rows), notes))
    if args.out:
        out = Path(args.out).expanduser()
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            rows.to_csv(out, index=False, float_format="%.6g")
        except OSError as e:
            print(f"error: {DataFileError(out, f'cannot write: {e.strerror or e}')}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
