"""The whole scenario: ``seed``, ``model``, ``workload``, ``adapters``, ``engine``, ``scheduler``, ``eviction``,
``adapter_memory``, ``client``, ``cluster``, ``metrics``, ``output``. Validated once at the boundary (pydantic v2, unknown keys rejected, frozen)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from lorasim._model import MAX_TIME_S, InputModel

from lorasim.config.engine import EngineConfig
from lorasim.config.policy import AdapterMemoryConfig, EvictionConfig, RouterConfig, SchedulerConfig
from lorasim.perf.shapes import ModelShape
from lorasim.workload.config import AdaptersConfig, WorkloadConfig


class ProfileStepTime(InputModel):
    """Step time from the model profile's fitted coefficients."""

    kind: Literal["profile"] = "profile"


class ConstantStepTime(InputModel):
    """Every step takes the same time (for hand-computed checks and analytic queueing tests)."""

    kind: Literal["constant"]
    step_time_s: float = Field(ge=1e-9, le=3600.0)
    """Duration of every step, seconds."""


StepTimeConfig = Annotated[Union[ProfileStepTime, ConstantStepTime], Field(discriminator="kind")]


class ModelConfig(InputModel):
    """The served model and its performance profile."""


    profile: str = "llama-3.1-8b_h100-64gb"
    """Step-time/memory profile: a name shipped with lorasim (``lorasim profiles``) or a path to a profile JSON."""
    shape: str | ModelShape | None = None
    """Model shape for adapter sizes and KV bytes: a known name, an explicit shape, or unset for the profile's."""
    step_time: StepTimeConfig = ProfileStepTime()
    """How step times are computed."""


class MetricsConfig(InputModel):
    """How the run judges what it records (thresholds of derived metrics)."""

    starvation_threshold_s: float | None = Field(default=30.0, gt=0, le=MAX_TIME_S)
    """The starvation watchdog flags a request (column ``starved``, ``num_starved_requests``) once it has waited this
    long since arrival, never scheduled, at a step that passes it over (admits a request that arrived after it) while a
    GPU slot is idle or evictable for it (see ``lorasim.engine.starvation``). Unset: no watchdog."""
    ttft_slo_s: float | None = Field(default=None, gt=0, le=MAX_TIME_S)
    """TTFT SLO, seconds: with it (or ``tpot_slo_s``) the summary reports ``slo_attainment`` (share of all requests
    that completed within every SLO set) and ``goodput_rps`` (such requests per second of ``duration_s``)."""
    tpot_slo_s: float | None = Field(default=None, gt=0, le=MAX_TIME_S)
    """TPOT SLO (mean time per output token after the first), seconds; see ``ttft_slo_s``."""


class OutputConfig(InputModel):
    """What a run writes (the CLI's ``--out`` overrides ``dir``)."""


    dir: str | None = None
    """Output directory; unset: print the summary only."""
    steps: bool = True
    """Write ``steps.parquet`` (one row per engine step; only ``records: full`` keeps that table)."""
    records: Literal["full", "requests", "summary"] = "full"
    """What the run keeps in memory: ``full`` (the requests table and one row per engine step), ``requests`` (no
    per-step table: step totals only, for long runs and sweeps; ``steps.parquet`` is not written and the step-derived
    summary metrics come from running totals) or ``summary`` (no table at all: each request is folded into running
    totals and quantile sketches when it ends, so memory stays bounded however long the run; the summary,
    ``per_adapter.csv`` and ``per_replica.csv`` are written, with percentiles within 1% (DDSketch) and every count,
    total and mean exact)."""


class ClusterConfig(InputModel):
    """Several identical replicas behind a router (each with its own engine, caches and scheduler)."""

    replicas: int = Field(default=1, ge=1, le=1024)
    """Engine replicas (each uses the profile's tensor-parallel degree of GPUs)."""
    gpus_per_host: int = Field(default=8, ge=1, le=1024)
    """GPUs per host: replicas on one host share its disk and PCIe links (adapter loads queue behind each other)."""
    router: RouterConfig = RouterConfig()
    """How requests are spread over the replicas (``lorasim policies`` lists the routers)."""


class ClientConfig(InputModel):
    """The load generator's connection limit (vLLM's serving benchmark opens one TCP connection per request)."""

    max_connections: int | None = Field(default=None, ge=1, le=10**9)
    """Local ports the client can use: a request that arrives while this many are taken (requests in flight, plus
    connections closed within ``time_wait_s``) fails at once and is reported aborted (``abort_reason`` says why).
    Unset: unlimited. Linux's default ``ip_local_port_range`` (32768-60999) gives 28232."""
    time_wait_s: float = Field(default=0.0, ge=0.0, le=3600.0)
    """How long a closed connection keeps its port (TCP TIME_WAIT; 60 s on Linux), seconds."""


class Scenario(InputModel):
    """A complete, validated simulation input. Build with :func:`lorasim.load_scenario`."""


    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    """Root seed; every random stream derives from it by name."""
    model: ModelConfig = ModelConfig()
    workload: WorkloadConfig = WorkloadConfig()
    adapters: AdaptersConfig = AdaptersConfig()
    engine: EngineConfig = EngineConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    eviction: EvictionConfig = EvictionConfig()
    adapter_memory: AdapterMemoryConfig = AdapterMemoryConfig()
    client: ClientConfig = ClientConfig()
    cluster: ClusterConfig = ClusterConfig()
    metrics: MetricsConfig = MetricsConfig()
    output: OutputConfig = OutputConfig()
    horizon_s: float | None = Field(default=None, gt=0, le=MAX_TIME_S)
    """Stop the simulation at this time (s). Requests not finished by then are reported as unfinished (column
    ``unfinished``, ``num_unfinished``), as vLLM's fixed-window serving benchmark counts only the requests finished
    inside its window. Unset: run until every request has finished or been aborted."""
