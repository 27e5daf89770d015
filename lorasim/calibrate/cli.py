"""``lorasim calibrate``: measure operator tables on this machine (``run``) and fit a step-time profile (``fit``).

Heavy imports (torch, numpy, the fitting code) happen inside the commands, so ``lorasim --help`` stays fast and
works without torch.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

calibrate_app = typer.Typer(
    no_args_is_help=True, add_completion=False,
    help="Calibrate on your own hardware: `run` microbenchmarks one decoder layer's operators (needs the optional "
         "torch extra: pip install -e '.\\[calibrate]') and writes an operator profile; `fit` turns it into a "
         "step-time profile for `lorasim run` (model.profile: PATH).")


def _command(ctx: typer.Context) -> str:
    """The running command, rebuilt from its parsed parameters (options left at their defaults omitted)."""
    parts = ["lorasim", "calibrate", ctx.info_name or ""]
    for p in ctx.command.params:
        v = ctx.params.get(p.name or "")
        if v is None or v == p.default or v is False:
            continue
        if p.param_type_name == "argument":
            parts.append(shlex.quote(str(v)))
        elif getattr(p, "is_flag", False):
            parts.append(p.opts[0])
        else:
            parts.append(f"{p.opts[0]} {shlex.quote(str(v))}")
    return " ".join(parts)


@calibrate_app.command("run")
def run_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="Operator profile JSON to write."),
    model: str = typer.Option("llama-3.1-8b", "--model", help="Model shape (random weights, no download): a name "
                              "from `lorasim profiles`' models (llama-3.1-8b, llama-2-7b, qwen-2.5-7b, ...) or "
                              "`tiny` (a toy shape for smoke tests)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cuda or cpu."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bfloat16 on CUDA, float32 on CPU), bfloat16, float16 "
                              "or float32."),
    quick: bool = typer.Option(False, "--quick", help="A small grid with 3 repeats (tests, CPU smoke runs)."),
    time_budget_s: float = typer.Option(240.0, "--time-budget-s", help="Target wall time: repeats shrink (to 3) "
                                        "to fit it; the grid is always measured whole.", min=0),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel size: measure one shard (heads, MLP, vocab / tp). "
                           "The all-reduce is not measured.", min=1),
    lora_kernel: str = typer.Option("sgmv", "--lora-kernel", help="LoRA emulation: sgmv (per-adapter segments, "
                                    "as vLLM V1 / punica SGMV) or bgmv (per-token weight gather)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: all cores; 1 "
                                          "gives steadier timings on a busy machine).", min=1),
    name: Optional[str] = typer.Option(None, "--name", help="Profile name (default <model>_<device>)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Microbenchmark one decoder layer's operators, the LM head, LoRA kernels and host->device copies."""
    from lorasim.calibrate.bench import DEFAULT_GRID, QUICK_GRID, resolve_shape, run_bench
    from lorasim.perf.operator_profile import write_operator_profile

    shape = resolve_shape(model)
    prof = run_bench(shape, device=device, dtype=dtype, grid=QUICK_GRID if quick else DEFAULT_GRID, tp=tp,
                     lora_kernel=lora_kernel, time_budget_s=time_budget_s, progress=not no_progress,
                     command=_command(ctx), name=name, threads=threads)
    write_operator_profile(prof, out)
    p = prof.provenance
    print(f"measured {shape.name} on {p.device.name} ({p.device.kind}, {p.dtype}) in {p.elapsed_s:.1f} s; "
          f"wrote {out}")
    for note in p.notes:
        print(f"note: {note}", file=sys.stderr)


@calibrate_app.command("fit")
def fit_cmd(
    ctx: typer.Context,
    operator_profile: Path = typer.Argument(..., help="Operator profile JSON (from `lorasim calibrate run`)."),
    out: Path = typer.Option(..., "--out", help="Step-time profile JSON to write (use it as model.profile: PATH)."),
    name: Optional[str] = typer.Option(None, "--name", help="Profile name (default: the operator profile's)."),
    reference: str = typer.Option("llama-3.1-8b_h100-64gb", "--reference", help="Profile (name or path) giving "
                                  "what is not microbenchmarked: disk->CPU link, request overhead, memory reserves."),
    gpu_memory_bytes: Optional[int] = typer.Option(None, "--gpu-memory-bytes", help="Device memory (default: as "
                                                   "recorded by `run`).", min=1),
    n_train: int = typer.Option(900, "--n-train", help="Sampled batches to fit on.", min=10),
    n_test: int = typer.Option(300, "--n-test", help="Other sampled batches to test on.", min=10),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check the tables' interpolation on held-out grid points, fit the linear step-time form, write a profile."""
    from lorasim.calibrate.fit import build_profile
    from lorasim.errors import LorasimError
    from lorasim.perf.operator_profile import load_operator_profile

    op = load_operator_profile(operator_profile)
    profile, rep = build_profile(op, operator_profile, _command(ctx), name=name, reference=reference,
                                 gpu_memory_bytes=gpu_memory_bytes, n_train=n_train, n_test=n_test)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(profile.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        raise LorasimError(f"--out {out}: cannot write ({e.strerror or e})") from None
    if as_json:
        print(json.dumps({"interpolation_heldout_mape_pct": {k: v for k, (v, _) in rep["interpolation"].items()},
                          "step_fit": {k: rep["fit"][k] for k in ("base", "lora") if k in rep["fit"]},
                          "out": str(out)}, indent=2))
        return
    _print_report(op, profile, rep)
    print(f"wrote {out}")


def _pct(v) -> str:
    return "     -" if v is None else f"{v:6.2f}"


def _print_report(op, profile, rep) -> None:
    from lorasim.perf.base import BatchStats
    from lorasim.perf.operators import PARTS

    print(f"{op.name}: {op.model_shape.name} on {op.provenance.device.name} ({op.provenance.dtype})")
    print("interpolation, held-out grid points (every other interior point per axis):")
    for k, (v, n) in rep["interpolation"].items():
        print(f"  {k:28s} MAPE {_pct(v)}%  (n={n})")
    print("linear step-time fit vs the composed operator model:")
    for key in ("base", "lora"):
        if key in rep["fit"]:
            s = rep["fit"][key]
            print(f"  {key:5s} train n={s['n_train']} MAPE {_pct(s['train_mape'])}%   held-out n={s['n_test']} "
                  f"MAPE {_pct(s['test_mape'])}%")
    model = op.step_time_model(lora_enabled=op.tables.lora is not None)
    lim = rep["fit"]["limits"]
    b = min(64, lim["max_batch"])
    examples = {f"decode {b} x {lim['max_context'] // 2} ctx": BatchStats(0, 0, b, b * (lim["max_context"] // 2)),
                f"prefill {lim['max_tokens'] // 2}": BatchStats(lim["max_tokens"] // 2, 1, 0, 0,
                                                                 (lim["max_tokens"] // 2) ** 2)}
    print("composed step (ms) by part, max_lora_rank 16, one adapter:")
    short = {"embedding": "emb", "attention_prefill": "attn_pre", "attention_decode": "attn_dec"}
    print("  " + " ".join(f"{short.get(p, p):>9.9s}" for p in (*PARTS, "total", "lin_fit")))
    lin = profile.step_time_model(16, op.tables.lora is not None)
    for label, bs in examples.items():
        if op.tables.lora is not None:
            bs.num_lora_tokens, bs.num_distinct_adapters = bs.num_tokens, 1
        parts = model.breakdown_ms(bs)
        print("  " + " ".join(f"{parts[p]:9.3f}" for p in PARTS)
              + f" {sum(parts.values()):9.3f} {lin.step_time_s(bs) * 1000:9.3f}  {label}")
