"""``lorasim calibrate run``: microbenchmarks of one decoder layer's operators, written as an operator profile.

Random weights of a model shape (no download), on CUDA (bf16 by default) or the CPU (float32): the linear operators
of one layer vs tokens, attention through ``torch.nn.functional.scaled_dot_product_attention`` (prefill: chunk x
context, causal bottom-right; decode: batch x KV length; grouped-query heads as the shape has them), the LM head
(logits + greedy sample) vs rows, LoRA shrink + expand of every target module vs tokens x distinct adapters x rank,
and host -> device copies vs bytes (pinned and pageable; on the CPU a host memcpy, flagged ``cpu_memcpy``).

Timing follows Triton's ``do_bench`` and Vidur's ``profiling/`` timers: warm-up calls, then repeats timed with CUDA
events (the L2 cache flushed before each, so weights come from HBM as in a real forward pass) or
``time.perf_counter`` on the CPU, and the **median** kept. Copies are timed by wall clock around a synchronize (what a
synchronous adapter load sees). A time budget shrinks the repeats (never below :data:`MIN_REPEATS`) so the run fits
it; the grid is always measured whole.

PyTorch is imported inside the functions only: the rest of lorasim works without it.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from lorasim.errors import LorasimError
from lorasim.perf.operator_profile import DeviceInfo, OperatorProfile, OperatorProvenance
from lorasim.perf.operators import OperatorTables
from lorasim.perf.shapes import MODEL_SHAPES, ModelShape

MIN_REPEATS = 3
"""Fewest timed repeats of any point, whatever the time budget."""
L2_FLUSH_BYTES = 256 << 20
"""Bytes zeroed before each timed CUDA repeat (larger than any GPU's L2 cache)."""
TINY_SHAPE = ModelShape(name="tiny", num_layers=2, hidden_size=128, intermediate_size=256, num_attention_heads=4,
                        num_kv_heads=2, vocab_size=512)
"""A toy shape for tests and smoke runs (CPU, seconds)."""
TORCH_HINT = ("lorasim calibrate run needs PyTorch: pip install -e '.[calibrate]' (on a machine without a GPU, install "
              "the CPU-only torch wheel first, e.g. pip install torch==2.13.0 from PyTorch's CPU wheel index)")


@dataclass(frozen=True)
class BenchGrid:
    """The points measured (tokens, batch sizes, bytes) and the repeat counts."""

    name: str
    linear_tokens: tuple[int, ...]
    lm_head_rows: tuple[int, ...]
    prefill_chunks: tuple[int, ...]
    prefill_contexts: tuple[int, ...]
    decode_batches: tuple[int, ...]
    decode_kv: tuple[int, ...]
    lora_tokens: tuple[int, ...]
    lora_adapters: tuple[int, ...]
    lora_ranks: tuple[int, ...]
    copy_bytes: tuple[int, ...]
    warmup: int = 3
    repeats: int = 10


DEFAULT_GRID = BenchGrid(
    "default",
    linear_tokens=(1, 8, 16, 32, 64, 128, 256, 512, 1024, 1536, 2048, 3072, 4096, 6144, 8192),
    lm_head_rows=(1, 8, 32, 64, 128, 256, 512, 1024),
    prefill_chunks=(16, 64, 128, 256, 512, 1024, 2048, 4096, 8192),
    prefill_contexts=(0, 256, 512, 1024, 2048, 4096, 8192, 16384),
    decode_batches=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    decode_kv=(16, 128, 256, 512, 1024, 2048, 4096, 8192),
    lora_tokens=(1, 8, 32, 128, 512, 1024, 2048, 4096, 8192),
    lora_adapters=(1, 2, 4, 8, 16, 32, 64),
    lora_ranks=(8, 16, 32, 64, 128),
    copy_bytes=(4096, 65536, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20))
"""Sized for an H100/H200 with an 8B model: about 1,000 points, a minute or two; 34 GB at the largest decode point
of Llama-2-7B (32 KV heads)."""
QUICK_GRID = BenchGrid(
    "quick", linear_tokens=(1, 16, 64, 256), lm_head_rows=(1, 8, 32), prefill_chunks=(16, 64, 256),
    prefill_contexts=(0, 128, 512), decode_batches=(1, 8, 32), decode_kv=(64, 256, 1024), lora_tokens=(1, 16, 64, 256),
    lora_adapters=(1, 2, 4), lora_ranks=(8, 16, 32), copy_bytes=(4096, 1 << 16, 1 << 20, 1 << 22), warmup=1,
    repeats=MIN_REPEATS)
"""Small grid for tests and CPU smoke runs."""


MIN_TORCH = (2, 5)
"""SDPA's ``enable_gqa`` (2.5), ``causal_lower_right`` (2.3) and ``F.rms_norm`` (2.4) are needed."""


def import_torch():
    """``torch`` (>= :data:`MIN_TORCH`), or a one-line :class:`LorasimError` telling how to install it."""
    try:
        import torch
    except ImportError:
        raise LorasimError(TORCH_HINT) from None
    if torch.torch_version.TorchVersion(torch.__version__) < MIN_TORCH:
        raise LorasimError(f"lorasim calibrate run needs torch >= {'.'.join(map(str, MIN_TORCH))} (SDPA with "
                           f"grouped-query heads), found {torch.__version__}")
    return torch


def resolve_shape(model: str) -> ModelShape:
    """A shape from :data:`MODEL_SHAPES` or ``tiny``.

    Raises:
        LorasimError: unknown name (the message lists the valid ones).
    """
    shapes = MODEL_SHAPES | {"tiny": TINY_SHAPE}
    if model not in shapes:
        raise LorasimError(f"--model: unknown model {model!r}; valid: {', '.join(sorted(shapes))}")
    return shapes[model]


class Timer:
    """Median time of a callable in ms, on one device, within a time budget shared by ``num_points`` points."""

    def __init__(self, torch, device: str, grid: BenchGrid, budget_s: float, num_points: int,
                 advance: Callable[[str], None] = lambda desc: None):
        self.torch, self.cuda, self.advance = torch, device == "cuda", advance
        self.grid, self.deadline, self.left = grid, time.perf_counter() + budget_s, num_points
        self.flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=device) if self.cuda else None

    def _sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], object], wall: bool = False, desc: str = "") -> float:
        """Warm up, then time up to ``grid.repeats`` calls (at least :data:`MIN_REPEATS`); returns the median ms.

        Args:
            fn: the operator call (its inputs allocated already).
            wall: time by wall clock around a synchronize (copies) instead of CUDA events.
            desc: what is measured, for the progress display.
        """
        cap_s = max(self.deadline - time.perf_counter(), 0.0) / max(self.left, 1)
        self.left -= 1
        for _ in range(self.grid.warmup):
            fn()
        self._sync()
        times: list[float] = []
        start = time.perf_counter()
        for i in range(self.grid.repeats):
            if self.cuda and not wall:
                self.flush.zero_()  # type: ignore[union-attr]
                e0, e1 = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
                e0.record()
                fn()
                e1.record()
                e1.synchronize()
                times.append(e0.elapsed_time(e1))
            else:
                t0 = time.perf_counter()
                fn()
                self._sync()
                times.append((time.perf_counter() - t0) * 1000.0)
            if i + 1 >= MIN_REPEATS and time.perf_counter() - start > cap_s:
                break
        self.advance(desc)
        return float(statistics.median(times))


def _device_info(torch, device: str) -> DeviceInfo:
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        return DeviceInfo(name=props.name, kind="cuda", memory_bytes=int(props.total_memory))
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        mem = None
    return DeviceInfo(name=f"{name} ({os.cpu_count()} cores)", kind="cpu", memory_bytes=mem)


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lorasim")
    except PackageNotFoundError:  # run from a source tree, not installed
        return None


def run_bench(shape: ModelShape, device: str = "auto", dtype: str = "auto", grid: BenchGrid = DEFAULT_GRID,
              tp: int = 1, lora_kernel: str = "sgmv", time_budget_s: float = 240.0, progress: bool = True,
              command: str = "", name: str | None = None, threads: int | None = None) -> OperatorProfile:
    """Measure every operator table of ``shape`` on one device.

    Args:
        shape: the full model; tables are measured for one tensor-parallel shard of it (``tp``).
        device: ``cuda``, ``cpu`` or ``auto`` (CUDA when available).
        dtype: ``bfloat16``, ``float16``, ``float32`` or ``auto`` (bf16 on CUDA, float32 on the CPU).
        grid: the points and repeat counts (:data:`DEFAULT_GRID`, :data:`QUICK_GRID`).
        tp: tensor-parallel size (per-GPU shard: heads, MLP width and vocabulary divided by it; the all-reduce
            cannot be measured on one device and is left out of the profile).
        lora_kernel: ``sgmv`` (per-adapter segments, one batched matmul) or ``bgmv`` (per-token weight gather).
        time_budget_s: target wall time; repeats shrink to fit it.
        progress: show a progress bar on stderr.
        command: the command line, for the provenance.
        name: the profile's name (default ``<model>_<device>``).
        threads: CPU threads torch may use (None: torch's default, every core). On a shared machine 1 thread gives
            far steadier CPU timings (a descheduled worker thread stalls every parallel region).

    Returns:
        The validated :class:`OperatorProfile`.

    Raises:
        LorasimError: torch missing, CUDA requested but unavailable, a bad option, or the device ran out of memory.
    """
    from lorasim.calibrate import _kernels as K

    torch = import_torch()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cuda", "cpu"):
        raise LorasimError(f"--device: must be auto, cuda or cpu, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise LorasimError("--device cuda: no CUDA device is available to torch " + torch.__version__)
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    if dtype not in ("bfloat16", "float16", "float32"):
        raise LorasimError(f"--dtype: must be auto, bfloat16, float16 or float32, got {dtype!r}")
    if device == "cpu" and grid.name == DEFAULT_GRID.name:
        print("lorasim: note: the default grid is sized for a GPU and takes a long time on a CPU; --quick measures "
              "a small one", file=sys.stderr)
    if lora_kernel not in ("sgmv", "bgmv"):
        raise LorasimError(f"--lora-kernel: must be sgmv or bgmv, got {lora_kernel!r}")
    if tp < 1 or shape.num_attention_heads % tp or shape.intermediate_size % tp:
        raise LorasimError(f"--tp {tp}: must be >= 1 and divide the heads ({shape.num_attention_heads}) and the "
                           f"MLP width ({shape.intermediate_size})")
    if threads is not None and threads < 1:
        raise LorasimError(f"--threads: must be >= 1, got {threads}")
    t_start = time.perf_counter()
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    notes: list[str] = []
    ctx = K.Ctx(torch, device, getattr(torch, dtype), shape, tp, notes)
    n_points = K.count_points(grid, device == "cuda")
    with torch.inference_mode(), _progress(progress, n_points) as advance:
        try:
            timer = Timer(torch, device, grid, time_budget_s, n_points, advance)
            tables = K.measure_all(ctx, grid, timer, lora_kernel)
        except torch.cuda.OutOfMemoryError as e:
            raise LorasimError(f"out of device memory during the benchmark ({str(e).splitlines()[0]}); use a "
                               f"smaller grid (--quick) or free the GPU") from None
        finally:
            n_threads = torch.get_num_threads()
            torch.set_num_threads(threads_before)
    if device == "cpu":
        notes.append("Measured on the CPU: h2d_copy is a host memcpy (kind cpu_memcpy), not a PCIe link; the "
                     "tables do not describe any GPU.")
    if tp > 1:
        notes.append(f"Tables are per TP shard (tp {tp}); all_reduce is not measured (one device): add it before "
                     "composing steps.")
    prov = OperatorProvenance(
        source="lorasim calibrate run (lorasim.calibrate.bench)", device=_device_info(torch, device),
        date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), dtype=dtype,
        command=command or "lorasim calibrate run", torch_version=torch.__version__,
        python_version=platform.python_version(), lorasim_version=_version(), cuda_version=torch.version.cuda,
        settings={"grid": grid.name, "warmup": grid.warmup, "repeats": grid.repeats, "min_repeats": MIN_REPEATS,
                  "time_budget_s": time_budget_s, "lora_kernel": lora_kernel, "threads": n_threads,
                  "l2_flush_bytes": L2_FLUSH_BYTES if device == "cuda" else 0,
                  "timer": "cuda events (median)" if device == "cuda" else "perf_counter (median)"},
        elapsed_s=round(time.perf_counter() - t_start, 3), notes=notes)
    return OperatorProfile(name=name or f"{shape.name}_{device}", model_shape=shape, tensor_parallel_size=tp,
                           provenance=prov, tables=OperatorTables.model_validate(tables))


class _progress:
    """A rich progress bar on stderr (or nothing); yields ``advance(description)``."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.bar = enabled, total, None

    def __enter__(self) -> Callable[[str], None]:
        if not self.enabled:
            return lambda desc: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(file=sys.stderr), transient=False)
        self.bar.start()
        task = self.bar.add_task("calibrate", total=self.total)
        return lambda desc: self.bar.update(task, advance=1, description=desc)  # type: ignore[union-attr]

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
