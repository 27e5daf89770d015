"""Turn the vLLM estimator runs (``vllm-lora-runs/``) into regression rows for the step-time fit.

Each run's ``scheduler_steps`` rows are split into segments at idle rows (a step with ``batched_tokens`` 0, or an
unknown count and an interval over 1 s, or the final row). The last segment is the benchmark; the ones before are
the client's warm-up request and, with ``lora_pre_loading``, one request per adapter (batch 1, all the same shape).

Rows are *per step* where the composition of each step is known: replayed from ``batched_tokens``
(:meth:`~lorasim.perf._replay.Replay.advance`), or a single request at a time (warm-ups, pre-loading, the loading
runs, the memory runs). Where the log has no ``batched_tokens`` and the batch is large (the base-model latency
runs), a run gives one *aggregate* row: the sum of its step intervals against the sum of each feature. Those sums are
exact whatever the arrival stagger (every request contributes ``P`` prefill tokens, ``L-1`` decodes and contexts
``P+1 .. P+L-1``; the step count is read from the log), so the linear model can be fitted on them unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from lorasim.perf._replay import Replay, ReplayError, StepComp, simulate

BUDGET_TOKENS = 2048
"""``max_num_batched_tokens`` of every V1 estimator run (vLLM 0.8.5 default below 70 GiB of GPU memory)."""
DEFAULT_MAX_NUM_SEQS = 256
"""V1 default ``max_num_seqs`` where the launch script left it unset."""
MIN_AGGREGATE_STEPS = 50
"""Shortest benchmark usable as an aggregate row (the 64-prompt Qwen runs have 4-6 steps, all start-up)."""
PRE_SEGMENT_WEIGHT = 0.25
"""Total weight of a run's warm-up and pre-loading segments (its benchmark segment weighs 1)."""
FEATURES = ("n_steps", "prefill_tokens", "prefill_seqs", "decode_seqs", "decode_ctx", "prefill_attn",
            "lora_steps", "lora_slots", "lora_slot_rank", "active_steps", "active_token_rank", "active_token_slot",
            "adapters", "active_prefill_slot")
N_BASE = 6


@dataclass
class Rows:
    """Regression rows: features (:data:`FEATURES`, sums over the steps a row covers) against observed ms."""

    run: list[str] = field(default_factory=list)
    group: list[str] = field(default_factory=list)
    dataset: list[str] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)
    obs_ms: list[float] = field(default_factory=list)
    x: list[tuple[float, ...]] = field(default_factory=list)

    def add(self, run: str, group: str, dataset: str, weight: float, obs_ms: float, x: tuple[float, ...]) -> None:
        self.run.append(run)
        self.group.append(group)
        self.dataset.append(dataset)
        self.weight.append(weight)
        self.obs_ms.append(obs_ms)
        self.x.append(x)

    def frame(self) -> tuple[pd.DataFrame, np.ndarray]:
        meta = pd.DataFrame({"run": self.run, "group": self.group, "dataset": self.dataset,
                             "weight": self.weight, "obs_ms": self.obs_ms})
        return meta, np.asarray(self.x, dtype=float).reshape(len(self.x), len(FEATURES))


@dataclass(frozen=True)
class RunConfig:
    run_dir: str
    experiment: str
    lora: bool
    max_loras: int
    rank: int
    prompt_len: int
    output_len: int
    num_prompts: int
    max_num_seqs: int
    kv_cache_tokens: float


def features(s: StepComp, cfg: RunConfig, adapters: int) -> tuple[float, ...]:
    """Feature vector of one step (see :data:`FEATURES`)."""
    base = (1.0, s.num_prefill_tokens, s.num_prefill_seqs, s.num_decode_seqs, s.num_decode_context_tokens,
            s.prefill_attention_work)
    if not cfg.lora:
        return base + (0.0,) * 8
    act = 1.0 if adapters > 0 else 0.0
    tok = s.num_tokens * act
    return base + (1.0, cfg.max_loras, cfg.max_loras * cfg.rank, act, tok * cfg.rank, tok * cfg.max_loras,
                   float(adapters), act * s.num_prefill_tokens * cfg.max_loras)


def run_config(r: pd.Series) -> RunConfig:
    n = int(r.num_prompts)
    p = int(round(r.total_input_tokens / n))
    out = r.synthetic_output_len if not pd.isna(r.synthetic_output_len) else r.total_output_tokens / n
    return RunConfig(
        run_dir=r.run_dir, experiment=r.experiment, lora=bool(r.enable_lora),
        max_loras=0 if pd.isna(r.max_loras) else int(r.max_loras),
        rank=0 if pd.isna(r.max_lora_rank) else int(r.max_lora_rank), prompt_len=p, output_len=int(round(out)),
        num_prompts=n, max_num_seqs=DEFAULT_MAX_NUM_SEQS if pd.isna(r.max_num_seqs) else int(r.max_num_seqs),
        kv_cache_tokens=float(r.kv_cache_tokens))


def segments(steps: pd.DataFrame) -> list[np.ndarray]:
    """Row positions of each segment between idle rows."""
    bt = steps.batched_tokens.to_numpy()
    si = steps.step_interval_s.to_numpy()
    idle = (bt == 0) | (np.isnan(bt) & (si > 1.0)) | np.isnan(si)
    out, cur = [], []
    for i, is_idle in enumerate(idle):
        if is_idle:
            if cur:
                out.append(np.asarray(cur))
            cur = []
        else:
            cur.append(i)
    if cur:
        out.append(np.asarray(cur))
    return out


@dataclass
class RunReport:
    """What happened to one run (for the fit report)."""

    run_dir: str
    kind: str
    n_steps: int = 0
    note: str = ""
    tpot_recon_ms: float = math.nan
    tpot_reported_ms: float = math.nan
    ttft_recon_ms: float = math.nan
    ttft_reported_ms: float = math.nan


def _single_request_rows(rows: Rows, cfg: RunConfig, seg_steps: pd.DataFrame, weight: float, dataset: str) -> int:
    """Rows of a segment that serves one request alone (warm-up, pre-loading); returns rows added."""
    n = len(seg_steps)
    bt = seg_steps.batched_tokens.to_numpy()
    if not np.isnan(bt[0]) and (bt[0] != cfg.prompt_len or (n > 1 and np.nanmax(bt[1:]) != 1)):
        return 0  # not one request of the benchmark's shape
    comps = simulate(cfg.prompt_len, n, 1, BUDGET_TOKENS, 1)
    ua = seg_steps.unique_adapters.to_numpy()
    si = seg_steps.step_interval_s.to_numpy() * 1000.0
    start = 1 if ua[0] > 0 else 0  # the first step of an adapter's first request includes its load
    for i in range(start, n):
        rows.add(cfg.run_dir, cfg.experiment, dataset, weight, si[i], features(comps[i], cfg, int(ua[i])))
    return n - start


def build_run(rows: Rows, r: pd.Series, steps: pd.DataFrame, loads: pd.DataFrame) -> RunReport:
    """Add one estimator run's rows to ``rows``."""
    cfg = run_config(r)
    segs = segments(steps)
    rep = RunReport(cfg.run_dir, "skipped")
    if not segs:
        rep.note = "no steps"
        return rep
    dataset = "lora_steps" if cfg.lora else "base_steps"
    pre, main = segs[:-1], steps.iloc[segs[-1]]
    for s in pre:  # the server's prompt length: the first step of a single-request segment (the client's count
        first = steps.batched_tokens.iloc[s[0]]  # can be off by one: Qwen LoRA runs log 5 where the client says 4)
        if first > 0:
            cfg = replace(cfg, prompt_len=int(first))
            break
    n_pre = sum(len(s) for s in pre)
    for s in pre:
        _single_request_rows(rows, cfg, steps.iloc[s], PRE_SEGMENT_WEIGHT / max(n_pre, 1), dataset)
    si = main.step_interval_s.to_numpy() * 1000.0
    ua = main.unique_adapters.to_numpy().astype(int)
    bt = main.batched_tokens.to_numpy()
    rep.n_steps = len(main)
    if not np.isnan(bt).all():
        rep.kind = "replayed from batched_tokens"
        rp = Replay(cfg.prompt_len, cfg.output_len, cfg.num_prompts)
        comps: list[StepComp] = []
        try:
            for b in bt:
                comps.append(rp.advance(int(b) - rp.num_decoding))
        except ReplayError as e:
            rep.note = f"replay stopped at step {len(comps)}/{len(bt)}: {e}"
        for i, c in enumerate(comps):
            rows.add(cfg.run_dir, cfg.experiment, dataset, 1.0 / len(comps), si[i], features(c, cfg, ua[i]))
        if rp.done and cfg.output_len > 1:
            t_end = (main.ts.to_numpy() + main.step_interval_s.to_numpy()) * 1000.0
            cnt = np.array([f[0] for f in rp.finished], dtype=float)
            first = np.array([f[1] for f in rp.finished])
            last = np.array([f[2] for f in rp.finished])
            tpot = (t_end[last] - t_end[first]) / (cfg.output_len - 1)
            rep.tpot_recon_ms = float(np.average(tpot, weights=cnt))
            rep.ttft_recon_ms = float(np.average(t_end[first] - main.ts.to_numpy()[0] * 1000.0, weights=cnt))
            rep.tpot_reported_ms, rep.ttft_reported_ms = float(r.mean_tpot_ms), float(r.mean_ttft_ms)
        elif not rp.done:
            rep.note = rep.note or f"replay ended with {rp.waiting} waiting, {rp.num_running} running"
        return rep
    if cfg.experiment == "predictor_loading" or cfg.num_prompts == 1:
        # One request at a time (max_loras 1 with a distinct adapter per request, or a single prompt).
        n_out = cfg.output_len if cfg.num_prompts > 1 else len(main)
        comps = simulate(cfg.prompt_len, n_out, cfg.num_prompts, BUDGET_TOKENS, 1)
        if len(comps) != len(main):
            rep.note = f"{len(main)} logged steps, {len(comps)} expected: skipped"
            return rep
        obs = si.copy()
        if cfg.experiment == "predictor_loading":
            ev = loads[loads.phase == "serving"].sort_values("cum_count")
            firsts = [i for i, c in enumerate(comps) if c.num_prefill_tokens > 0]
            if len(ev) != len(firsts):
                rep.note = f"{len(ev)} serving loads for {len(firsts)} requests: skipped"
                return rep
            obs[firsts] -= ev.delta_time_s.to_numpy() * 1000.0  # the CPU->GPU load happens inside that step
        rep.kind = "one request at a time"
        for i, c in enumerate(comps):
            rows.add(cfg.run_dir, cfg.experiment, dataset, 1.0 / len(comps), obs[i], features(c, cfg, ua[i]))
        return rep
    # Large batches without batched_tokens: one aggregate row over the benchmark.
    if cfg.lora:
        rep.note = "LoRA run without batched_tokens: skipped"
        return rep
    if len(main) < MIN_AGGREGATE_STEPS:
        rep.note = f"only {len(main)} steps (start-up transients dominate): skipped"
        return rep
    n_conc = min(cfg.max_num_seqs, cfg.num_prompts)
    need = n_conc * math.ceil((cfg.prompt_len + cfg.output_len) / 16) * 16
    if not need <= cfg.kv_cache_tokens:  # NaN capacity counts as unknown
        rep.note = f"may preempt ({need} KV tokens needed, capacity {cfg.kv_cache_tokens:.0f}): skipped"
        return rep
    comps = simulate(cfg.prompt_len, cfg.output_len, cfg.num_prompts, BUDGET_TOKENS, cfg.max_num_seqs)
    if abs(len(comps) - len(main)) > 0.1 * len(comps) + 5:  # only a gross mismatch (recompute) matters
        rep.note = f"{len(main)} logged steps, ~{len(comps)} expected: skipped"
        return rep
    x = np.sum([features(c, cfg, 0) for c in comps], axis=0)
    x[0] = len(main)  # the step count is read from the log (the stagger adds a few steps)
    rep.kind = "aggregate"
    rows.add(cfg.run_dir, cfg.experiment, "base_runs", 1.0, float(si.sum()), tuple(float(v) for v in x))
    return rep


def build_rows(runs: pd.DataFrame, steps: pd.DataFrame, loads: pd.DataFrame,
               model: str) -> tuple[Rows, list[RunReport]]:
    """Rows of every usable run of ``model`` (the estimator runs' model name, e.g. ``llama-3.1-8b-instruct``)."""
    rows, reports = Rows(), []
    runs = runs[(runs.model == model) & runs.num_prompts.notna() & runs.total_input_tokens.notna()]
    by_run = dict(tuple(steps.groupby("run_dir", sort=False)))
    by_load = dict(tuple(loads.groupby("run_dir", sort=False)))
    for _, r in runs.sort_values("run_dir").iterrows():
        st = by_run.get(r.run_dir)
        if st is None:
            reports.append(RunReport(r.run_dir, "skipped", note="no scheduler steps"))
            continue
        reports.append(build_run(rows, r, st.sort_values("ts", kind="stable"),
                                 by_load.get(r.run_dir, loads.iloc[:0])))
    return rows, reports
