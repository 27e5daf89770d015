"""``lorasim calibrate fit``: from an operator profile to a step-time profile that ``lorasim run`` can load.

1. **Interpolation check**, per table: every other interior grid point of each axis (indices 1, 3, 5, ... short of
   the last; axes with fewer than 3 points keep all) is held out, the table is interpolated from the rest
   (:func:`lorasim.perf.operators.interpolate`) and the mean absolute percentage error on the held-out points is
   reported. It tells whether the grid is dense enough for linear interpolation.
2. **Composed steps**: the batch sample of the shipped Vidur profiles (:func:`lorasim.perf._vidur.sample_batches`:
   decode-only, prefill-only, mixed) within the profile's measured ranges, composed by
   :class:`~lorasim.perf.operators.OperatorStepTimeModel` with exact chunks; every batch is composed without LoRA and
   with LoRA (distinct adapters and ``max_lora_rank`` drawn from a separate stream, ranks from the table's grid).
3. **Linear fit**: the 6 base coefficients by :func:`lorasim.perf._vidur.fit_linear` on the base steps; then
   ``lora_active_ms``, ``lora_token_rank_ms`` (tokens x rank) and ``lora_adapter_ms`` on the LoRA steps' excess over
   the base prediction, non-negative least squares in relative error (:func:`lorasim.perf._regress.fit_relative`).
   Held-out per-step MAPE is measured on a separately drawn batch set.

The profile's links and memory: CPU -> GPU from the measured host -> device table (per-copy latency x the copies of
one adapter load, bandwidth from the slope); disk -> CPU, request overhead and the non-weight memory reserves from a
reference profile (by default the shipped vLLM fit of Llama-3.1-8B), scaled to the model as
``python -m lorasim.perf.fit`` does for the Vidur profiles; GPU memory from the device the tables were measured on.
"""

from __future__ import annotations

import datetime as dt
from itertools import product
from pathlib import Path

import numpy as np

from lorasim.errors import ConfigError
from lorasim.perf import _vidur as vd
from lorasim.perf._regress import fit_relative, mape, r2, sha256, sig_all
from lorasim.perf.base import BatchStats
from lorasim.perf.operator_profile import OperatorProfile
from lorasim.perf.operators import GridTable, OperatorTables, interpolate
from lorasim.perf.profile import Profile, load_profile
from lorasim.perf.shapes import ALL_TARGET_MODULES, MODEL_SHAPES

LORA_SEED = 20240503
"""Seed of the LoRA assignment (adapters, rank) of the sampled batches."""
BASE_NAMES = ("base_ms", "prefill_token_ms", "prefill_seq_ms", "decode_seq_ms", "decode_context_token_ms",
              "prefill_attention_ms")
LORA_NAMES = ("lora_active_ms", "lora_token_rank_ms", "lora_adapter_ms")
DEFAULT_REFERENCE = "llama-3.1-8b_h100-64gb"


def _split(n: int) -> tuple[list[int], set[int]]:
    held = set(range(1, n - 1, 2)) if n >= 3 else set()
    return [i for i in range(n) if i not in held], held


def heldout_mape(axes: list[list[float]], values) -> tuple[float | None, int]:
    """MAPE (%) of interpolating held-out grid points from the kept ones, and how many were held out."""
    arr = np.asarray(values, dtype=float)
    splits = [_split(len(xs)) for xs in axes]
    sub_axes = [[xs[i] for i in keep] for xs, (keep, _) in zip(axes, splits)]
    sub = arr[np.ix_(*[keep for keep, _ in splits])].tolist()
    pred, obs = [], []
    for idx in product(*[range(len(xs)) for xs in axes]):
        if any(i in held for i, (_, held) in zip(idx, splits)) and arr[idx] > 0:
            pred.append(interpolate(sub_axes, sub, tuple(xs[i] for xs, i in zip(axes, idx))))
            obs.append(arr[idx])
    return mape(np.array(pred), np.array(obs)), len(obs)


def interpolation_report(tables: OperatorTables) -> dict[str, tuple[float | None, int]]:
    """``name -> (held-out MAPE %, points held out)`` for every table (each linear op and their sum separately)."""
    out: dict[str, tuple[float | None, int]] = {}
    lin = tables.linear
    for op, vals in lin.ops_ms.items():
        out[f"linear.{op}"] = heldout_mape([lin.num_tokens], vals)
    out["linear (sum)"] = heldout_mape([lin.num_tokens], np.sum([v for v in lin.ops_ms.values()], axis=0))
    for name in ("attention_prefill", "attention_decode", "lm_head", "embedding", "cpu", "all_reduce", "lora",
                 "h2d_copy"):
        t: GridTable | None = getattr(tables, name)
        if t is None:
            continue
        for field in t.value_fields():
            vals = getattr(t, field)
            if vals is not None:
                key = name if field == "ms" else f"{name}.{field.removesuffix('_ms')}"
                out[key] = heldout_mape(t.axes(), vals)
    return out


def _limits(t: OperatorTables) -> dict:
    max_tokens = int(max(t.linear.num_tokens))
    return {"max_tokens": max_tokens, "max_context": int(max(t.attention_decode.kv_tokens_per_seq)),
            "max_batch": int(max(1, min(max(t.attention_decode.batch_size), max_tokens - 16)))}


def _stats(b: int, ctx: float, chunks, adapters: int) -> BatchStats:
    prefill = sum(c for c, _ in chunks)
    return BatchStats(num_prefill_tokens=prefill, num_prefill_seqs=len(chunks), num_decode_seqs=b,
                      num_decode_context_tokens=round(ctx), prefill_attention_work=sum(c * (k + c) for c, k in chunks),
                      num_lora_tokens=b + prefill if adapters else 0, num_distinct_adapters=adapters)


def _lora_assign(batches, seed: int, adapters_max: int, ranks: list[int]) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for b, _, chunks in batches:
        seqs = b + len(chunks)
        out.append((int(rng.integers(1, min(adapters_max, seqs) + 1)), int(rng.choice(ranks))))
    return out


def fit_step_time(op: OperatorProfile, n_train: int = 900, n_test: int = 300) -> tuple[dict, dict]:
    """Fit :class:`~lorasim.perf.profile.StepTimeCoefficients` to the composed operator model.

    Returns:
        ``(coefficients, stats)``; stats holds per-dataset (base, LoRA) train/test MAPE and R^2, the limits of the
        batch sample and the held-out predictions for printing.
    """
    t, limits = op.tables, _limits(op.tables)
    base_model = op.step_time_model(lora_enabled=False)
    coef_base, base_stats = vd.fit_linear(
        lambda b, ctx, chunks: base_model.step_time_ms(_stats(b, ctx, chunks, 0), chunks), n_train, n_test, **limits)
    coef = dict(zip(BASE_NAMES, (float(v) for v in coef_base)))
    stats: dict = {"limits": limits, "base": base_stats}
    if t.lora is None:
        return coef, stats
    ranks = [int(r) for r in t.lora.rank]
    models = {r: op.step_time_model(max_lora_rank=r, lora_enabled=True) for r in ranks}
    coef_lora = None
    for name, seed, n in (("train", vd.TRAIN_SEED, n_train), ("test", vd.TEST_SEED, n_test)):
        batches = vd.sample_batches(seed, n, **limits)
        assign = _lora_assign(batches, LORA_SEED + seed, int(max(t.lora.num_adapters)), ranks)
        xb = np.array([vd.features(*bt) for bt in batches])
        y = np.array([models[r].step_time_ms(_stats(*bt, a), bt[2]) for bt, (a, r) in zip(batches, assign)])
        tokens = xb[:, 1] + xb[:, 3]
        xl = np.c_[np.ones(n), tokens * [r for _, r in assign], [a for a, _ in assign]]
        base_pred = xb @ coef_base
        if coef_lora is None:
            coef_lora = fit_relative(xl, y - base_pred, y, np.ones(n))
        pred = base_pred + xl @ coef_lora
        stats.setdefault("lora", {}).update({f"{name}_mape": mape(pred, y), f"{name}_r2": r2(pred, y), f"n_{name}": n})
    coef |= dict(zip(LORA_NAMES, (float(v) for v in coef_lora)))  # type: ignore[arg-type]
    return coef, stats


def fit_h2d_link(op: OperatorProfile) -> dict | None:
    """CPU -> GPU :class:`~lorasim.perf.profile.LinkFit` fields from the copy table, or None without one.

    ``ms = a + bytes / bandwidth`` (relative-error least squares) on the pinned table (vLLM pins its CPU adapter
    cache), else the pageable one; one load copies A and B of every target module of every layer separately, so its
    overhead is ``2 x modules x layers x a``.
    """
    t = op.tables.h2d_copy
    if t is None:
        return None
    field = t.best_field
    y = np.array(getattr(t, field))
    x = np.c_[np.ones(len(y)), np.array(t.bytes)]
    a, b = fit_relative(x, y, y, np.ones(len(y)))
    copies = 2 * len(ALL_TARGET_MODULES) * op.model_shape.num_layers
    bw = 1000.0 / b if b > 0 else 1e15
    what = "host memcpy measured WITHOUT a GPU (not a PCIe link)" if t.kind == "cpu_memcpy" else "host->device copy"
    return {"overhead_s": copies * a / 1000.0, "bandwidth_bytes_per_s": bw, "n_events": 0,
            "mape": mape(x @ np.array([a, b]), y),
            "source": f"operator profile h2d_copy.{field} ({what}): {a * 1000:.2f} us per copy x {copies} copies per "
                      f"load (A and B of {len(ALL_TARGET_MODULES)} modules x {op.model_shape.num_layers} layers); "
                      f"bandwidth {bw / 1e9:.1f} GB/s from the slope"}


def build_profile(op: OperatorProfile, op_path: str | Path, command: str, name: str | None = None,
                  reference: str = DEFAULT_REFERENCE, gpu_memory_bytes: int | None = None, n_train: int = 900,
                  n_test: int = 300) -> tuple[Profile, dict]:
    """The step-time :class:`Profile` of ``op`` and a report (interpolation check, fit statistics).

    Raises:
        ConfigError: no device memory is known (pass ``gpu_memory_bytes``), or the tables cannot be composed.
        DataFileError: the reference profile cannot be read.
    """
    shape, tp = op.model_shape, op.tensor_parallel_size
    interp = interpolation_report(op.tables)
    coef, st = fit_step_time(op, n_train, n_test)
    ref = load_profile(reference)
    mem_total = gpu_memory_bytes or op.provenance.device.memory_bytes
    if mem_total is None:
        raise ConfigError("--gpu-memory-bytes: the operator profile records no device memory; pass it")
    rm = ref.memory
    adapter_ratio = (shape.adapter_size_bytes(1, ALL_TARGET_MODULES)
                     / ref.shape.adapter_size_bytes(1, ALL_TARGET_MODULES))
    memory = {"gpu_memory_bytes": int(mem_total), "gpu_memory_utilization": rm.gpu_memory_utilization,
              "non_kv_reserve_bytes": int(shape.weights_bytes / tp + rm.non_kv_reserve_bytes - ref.shape.weights_bytes),
              "reserve_bytes_per_seq": rm.reserve_bytes_per_seq * shape.vocab_size / ref.shape.vocab_size,
              "reference_max_num_seqs": rm.reference_max_num_seqs, "lora_reserve_bytes": rm.lora_reserve_bytes,
              "lora_slot_bytes_per_rank": rm.lora_slot_bytes_per_rank * adapter_ratio / tp,
              "block_size": rm.block_size}
    disk = ref.adapter_load.disk_to_cpu.model_dump() | {"source": f"{reference} disk_to_cpu (not measured here)"}
    cpu_link = fit_h2d_link(op) or (ref.adapter_load.cpu_to_gpu.model_dump()
                                    | {"source": f"{reference} cpu_to_gpu (no h2d_copy table)"})
    dev, prov = op.provenance.device, op.provenance
    datasets = {}
    for key, desc in (("base", "no adapter"), ("lora", "with adapters (max_lora_rank from the LoRA grid)")):
        if key in st:
            s = st[key]
            datasets[f"operator_composed_{key}"] = {
                "n_train_rows": s["n_train"], "n_test_rows": s["n_test"], "n_train_runs": 0, "n_test_runs": 0,
                "train_mape": s["train_mape"], "test_mape": s["test_mape"], "test_r2": s["test_r2"],
                "description": f"sampled batches (decode, prefill, mixed), {desc}, composed from the operator tables"}
    checks = {f"interp_heldout_mape_pct.{k}": v for k, (v, _) in interp.items() if v is not None}
    notes = [f"Operator profile notes: {n}" for n in prov.notes]
    if st["base"]["test_mape"] is not None and st["base"]["test_mape"] > 10:
        notes.append("The linear form reproduces the composed model poorly here (held-out MAPE above 10%).")
    data = {
        "name": name or op.name, "tensor_parallel_size": tp, "request_overhead_s": ref.request_overhead_s,
        "device": f"{dev.name} ({dev.kind}; operator profile {op.name}, {prov.dtype})",
        "provenance": {
            "inputs": [{"path": str(op_path), "sha256": sha256(Path(op_path))}], "command": command,
            "generated": dt.date.today().isoformat(),
            "source_engine": f"operator microbenchmarks ({prov.source}, {prov.date}, torch {prov.torch_version}), "
                             f"composed per step by lorasim.perf.operators; not measured end to end",
            "fitted_on": f"{n_train} sampled batches composed from {op_path} (tests on {n_test} others), limits "
                         + ", ".join(f"{k} {v}" for k, v in st["limits"].items()),
            "assumptions": [
                ("No per-step CPU overhead unless the operator profile has a cpu table (vLLM's scheduler, input "
                 "preparation and output processing are not microbenchmarked)."),
                ("LoRA: kernels run over every token of a LoRA-active step, padded to max_lora_rank (vLLM V1); the "
                 "slot terms (lora_base/slot/slot_rank/token_slot/prefill_token_slot) are 0: the tables have no "
                 "max_loras axis."),
                (f"disk_to_cpu, request_overhead_s and the non-weight memory reserves come from {reference}; "
                 "reserve = weights + its non-weight reserve, per-seq reserve x vocabulary ratio, slot bytes x "
                 "adapter-size ratio."),
                f"GPU memory {mem_total} bytes ({'given' if gpu_memory_bytes else 'as recorded for the device'}).",
            ],
            "notes": notes},
        "step_time": coef,
        "adapter_load": {"disk_to_cpu": disk, "cpu_to_gpu": cpu_link,
                         "assumed_target_modules": list(ALL_TARGET_MODULES)},
        "memory": memory,
        "fit": {"method": "non-negative least squares (relative error) of the linear form on steps composed from "
                          "the operator tables; base coefficients on base steps, LoRA terms on the LoRA steps' excess",
                "datasets": datasets, "checks": checks},
    }
    if shape.name in MODEL_SHAPES and MODEL_SHAPES[shape.name] == shape:
        data["model"] = shape.name
    else:
        data["model_shape"] = shape.model_dump()
    profile = Profile.model_validate(sig_all(data))
    return profile, {"interpolation": interp, "fit": st}
