"""The scenario's ``workload:`` and ``adapters:`` sections (pydantic v2, frozen, unknown keys rejected).

``workload:`` is a list of ``streams`` merged in time; each stream is ``kind: synthetic`` (the default) or
``kind: trace``. A workload with one stream may be written without the ``streams:`` list (the stream's keys directly
under ``workload:``). ``adapters:`` describes the LoRA adapters (count, names, ranks, target modules).

Configs do no I/O: files are read and cross-checks against the adapter list are made by
:func:`lorasim.workload.build_requests`, whose errors name the field (``workload.streams[1].adapters``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from lorasim._model import MAX_ADAPTERS, MAX_REQUESTS, MAX_TIME_S, InputModel

from lorasim.perf.shapes import ALL_TARGET_MODULES, TargetModule
from lorasim.workload._union import kind_or
from lorasim.workload.arrivals import (
    ArrivalsConfig,
    BurstArrivals,
    PerAdapterPoissonArrivals,
    PoissonArrivals,
    SingleArrival,
)
from lorasim.workload.lengths import LengthsConfig, SeparateLengths
from lorasim.workload.popularity import PopularityConfig
from lorasim.workload.traces import TraceFormat, ZeroTokens


class _Model(InputModel):
    """Base of this module's config models."""


AdapterRef = Union[str, Annotated[int, Field(ge=0)]]

DelayS = Annotated[float, Field(ge=0, le=MAX_TIME_S)]


class _Cancellation(_Model):
    """Client-side cancellation (abort) of a stream's requests, drawn from the ``cancel:<name>`` random stream."""

    cancel_probability: float = Field(default=0.0, ge=0.0, le=1.0)
    """Each request of the stream is cancelled by its client with this probability (0: never)."""
    cancel_after_s: DelayS | tuple[DelayS, DelayS] | None = None
    """When a cancelled request is cancelled, seconds after its arrival: a number (fixed delay) or ``[low, high]``
    (uniform in that range). Required when ``cancel_probability`` > 0. The engine applies a cancellation between
    steps: wherever the request is (queued: removed; running: removed and its KV blocks freed; finished: nothing);
    one that falls during a step takes effect when the step ends (a request that completes in that step counts as
    completed). Reported as ``cancelled`` (column and ``num_cancelled``), outside the latency statistics."""

    @model_validator(mode="after")
    def _cancel_delay(self):
        d = self.cancel_after_s
        if self.cancel_probability > 0 and d is None:
            raise ValueError("cancel_probability > 0 needs cancel_after_s (a delay in seconds, or [low, high])")
        if isinstance(d, tuple) and d[1] < d[0]:
            raise ValueError(f"cancel_after_s: [low, high] needs low <= high, got {list(d)}")
        if d is not None and self.cancel_probability == 0:
            raise ValueError("cancel_after_s is set but cancel_probability is 0 (no request would be cancelled); "
                             "set cancel_probability or drop cancel_after_s")
        return self


class SyntheticStream(_Cancellation):
    """Requests generated from an arrival process, length distributions and an adapter popularity."""

    kind: Literal["synthetic"] = "synthetic"
    name: str | None = None
    """Stream name; keys its random streams (``arrivals:<name>`` ...). Default: its index in ``streams``.
    Give streams names if you reorder them and want unchanged draws."""
    arrivals: ArrivalsConfig = PoissonArrivals()
    """Arrival process (``kind``: poisson, gamma, constant, per_adapter_poisson, burst, single)."""
    num_requests: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    """Stop after this many requests (required for ``burst``)."""
    duration_s: float | None = Field(default=None, gt=0, le=MAX_TIME_S)
    """Only arrivals in ``[start_s, start_s + duration_s)``, seconds."""
    start_s: float = Field(default=0.0, ge=0, le=MAX_TIME_S)
    """Time origin of the process, seconds (the first arrival comes one gap later)."""
    lengths: LengthsConfig = SeparateLengths()
    """Prompt/output lengths: ``{prompt: .., output: ..}`` or ``{kind: empirical, ..}``."""
    popularity: PopularityConfig | None = None
    """Which adapter each request uses (``kind``: uniform, zipf, power_law, weights; plus ``base_share``).
    Unset means uniform with no base-model requests. Must be unset for ``per_adapter_poisson``."""
    adapters: list[AdapterRef] | None = None
    """Restrict the stream to these adapters (names, or 0-based positions in the adapter list); unset = all."""

    @model_validator(mode="after")
    def _bounds(self) -> SyntheticStream:
        a = self.arrivals
        if isinstance(a, (BurstArrivals, SingleArrival)):
            if self.duration_s is not None or self.start_s != 0.0:
                raise ValueError(f"arrivals kind '{a.kind}' uses arrivals.at_s; leave duration_s and start_s unset")
            if isinstance(a, BurstArrivals) and self.num_requests is None:
                raise ValueError("arrivals kind 'burst' needs num_requests")
            if isinstance(a, SingleArrival) and self.num_requests not in (None, 1):
                raise ValueError(f"arrivals kind 'single' makes one request; num_requests is {self.num_requests}")
        elif self.num_requests is None and self.duration_s is None:
            raise ValueError("a synthetic stream needs num_requests and/or duration_s")
        if isinstance(a, PerAdapterPoissonArrivals) and self.popularity is not None:
            raise ValueError("per_adapter_poisson arrivals set the adapter of each request from the rates; "
                             "leave popularity unset (use another stream for base-model requests)")
        return self


class TraceStream(_Cancellation):
    """Requests replayed from a trace file (Azure 2023, Mooncake, or lorasim's generic CSV/JSONL).

    Order of operations: keep rows with trace time in ``[window_start_s, window_end_s)``; shift so the window start
    is 0; divide times by ``rate_scale``; keep the first ``max_requests``; add ``start_s``.
    """

    kind: Literal["trace"] = "trace"
    name: str | None = None
    """Stream name; keys its random streams (``trace-adapters:<name>``, ``lengths:<name>``). Default: its index."""
    path: str
    """Trace file: absolute, relative to the working directory, or relative to the data directory."""
    format: TraceFormat = "auto"
    """``auto`` (from the header / first record), ``azure``, ``mooncake``, ``csv`` or ``jsonl`` (generic)."""
    window_start_s: float = Field(default=0.0, ge=0, le=MAX_TIME_S)
    """Start of the replayed window, seconds of trace time (0 = the first request of Azure/Mooncake traces)."""
    window_end_s: float | None = Field(default=None, gt=0, le=MAX_TIME_S)
    """End of the window (exclusive), seconds of trace time; unset = the whole trace."""
    rate_scale: float = Field(default=1.0, ge=1e-6, le=1e6)
    """Speed-up factor: 2.0 replays at twice the rate (inter-arrival gaps halved)."""
    max_requests: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    """Keep only the first N requests of the (scaled) window."""
    start_s: float = Field(default=0.0, ge=0, le=MAX_TIME_S)
    """Simulation time at which the window starts, seconds."""
    zero_tokens: ZeroTokens = "error"
    """A 0 prompt/output length: ``error`` (default) or ``one`` (use 1; counted and reported as a warning)."""
    bad_rows: Literal["error", "skip"] = "error"
    """A malformed row: ``error`` stops the run naming its line (default); ``skip`` leaves it out and the run's
    notes say how many rows were skipped and which lines (``lorasim run --skip-bad-rows`` sets it)."""
    use_trace_adapters: bool = True
    """Use the trace's ``adapter`` column when it has one; otherwise adapters come from ``popularity``."""
    popularity: PopularityConfig | None = None
    """Adapter of each request when the trace has none (unset = uniform, no base-model requests)."""
    adapters: list[AdapterRef] | None = None
    """Restrict sampled adapters to these (names or positions); unset = all."""
    lengths: LengthsConfig | None = None
    """Replace the trace's lengths with sampled ones (keeps only its arrival times); unset = the trace's."""

    @model_validator(mode="after")
    def _window(self) -> TraceStream:
        if self.window_end_s is not None and self.window_end_s <= self.window_start_s:
            raise ValueError(f"window_end_s ({self.window_end_s}) must be > window_start_s ({self.window_start_s})")
        return self


class ServegenStream(_Cancellation):
    """Per-client production traffic from ServeGen (Alibaba Bailian; ``traces/servegen/language/<pool>``): client
    ``k`` (file ``chunk-k-trace.csv``: rate, CV and inter-arrival distribution per 600 s window over 14 days) sends
    the requests of adapter ``k`` of the stream's adapters, so popularity skew and churn come from production data.

    Each window's arrivals follow its fitted Gamma or Weibull inter-arrival distribution (Poisson where none is
    given), with every client's rate multiplied so that the clients' mean total rate over the replayed windows is
    ``total_rate`` (unset: as recorded), and time compressed ``time_scale`` times (a 600 s window lasts
    ``600 / time_scale`` s). Loader semantics follow ServeGen's ``clientpool.py``.
    """

    kind: Literal["servegen"] = "servegen"
    name: str | None = None
    """Stream name; keys its random streams (``servegen:<name>:<client>``, ``lengths:<name>``). Default: index."""
    path: str = "traces/servegen/language/m-large"
    """Directory of ``chunk-N-trace.csv`` files (relative to the data directory, or absolute)."""
    clients: int | None = Field(default=None, ge=1, le=MAX_ADAPTERS)
    """Use clients 0..clients-1 (unset: as many as the stream has adapters); client k -> the stream's adapter k."""
    window_start_s: float = Field(default=0.0, ge=0, le=14 * 86400)
    """Trace time of the first replayed window, seconds (a multiple of 600)."""
    duration_s: float = Field(default=3600.0, gt=0, le=MAX_TIME_S)
    """Trace time replayed, seconds (before time compression)."""
    total_rate: float | None = Field(default=None, gt=0, le=1e6)
    """Mean total request rate of the replayed clients, req/s of simulated time (after compression)."""
    time_scale: float = Field(default=1.0, ge=1e-3, le=1e4)
    """Time compression: simulated seconds = trace seconds / time_scale."""
    start_s: float = Field(default=0.0, ge=0, le=MAX_TIME_S)
    """Simulation time at which the replay starts, seconds."""
    lengths: LengthsConfig = SeparateLengths()
    """Prompt/output lengths (ServeGen's per-client length statistics are not used)."""
    adapters: list[AdapterRef] | None = None
    """The adapters the clients map to, in client order (names or positions); unset = all, in order."""


StreamConfig = Annotated[
    Union[Annotated[SyntheticStream, Tag("synthetic")], Annotated[TraceStream, Tag("trace")],
          Annotated[ServegenStream, Tag("servegen")]],
    Discriminator(kind_or("synthetic")),
]
"""One stream of a workload: ``kind: synthetic`` (default), ``kind: trace`` or ``kind: servegen``."""


def _default_streams() -> list[SyntheticStream]:
    return [SyntheticStream(num_requests=1000)]


class WorkloadConfig(_Model):
    """The ``workload:`` section: one or more request streams merged by arrival time.

    Default: one S-LoRA-style stream of 1,000 Poisson arrivals at 1 req/s, prompt and output lengths uniform in
    [8, 512), adapters uniform.
    """

    streams: list[StreamConfig] = Field(default_factory=_default_streams, min_length=1)
    """The streams; requests are merged by arrival time (ties: stream order, then order within the stream)."""

    @model_validator(mode="before")
    @classmethod
    def _single_stream_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and data and "streams" not in data:
            return {"streams": [data]}
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> WorkloadConfig:
        names = [s.name if s.name is not None else str(i) for i, s in enumerate(self.streams)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"stream names must be unique (a stream without a name is named by its index): {dup}")
        return self


class CycleRanks(_Model):
    """Adapter ``i`` gets ``values[i % len(values)]`` (how the real runs' ``--dummy-lora-modules`` pool maps)."""

    kind: Literal["cycle"] = "cycle"
    values: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=lambda: [16], min_length=1)
    """Ranks, cycled over the adapters in order."""


class CountRanks(_Model):
    """Exact number of adapters per rank, in the order given (``{8: 86, 16: 42}``), optionally shuffled."""

    kind: Literal["counts"] = "counts"
    counts: dict[Annotated[int, Field(ge=1, le=4096)], Annotated[int, Field(ge=0, le=MAX_ADAPTERS)]]
    """rank -> number of adapters; must sum to ``count``."""
    shuffle: bool = False
    """Randomly permute the ranks over the adapters (the ``adapters`` RNG stream)."""


class ChoiceRanks(_Model):
    """Each adapter's rank is drawn independently from ``values`` (with ``weights``) from the ``adapters`` stream."""

    kind: Literal["choice"] = "choice"
    values: list[Annotated[int, Field(ge=1, le=4096)]] = Field(min_length=1)
    """Candidate ranks."""
    weights: list[Annotated[float, Field(ge=0, le=1e12)]] | None = None
    """Relative probability of each value (unset = equal)."""

    @model_validator(mode="after")
    def _weights(self) -> ChoiceRanks:
        if self.weights is not None and (len(self.weights) != len(self.values) or sum(self.weights) <= 0):
            raise ValueError(f"weights must have one non-negative entry per value ({len(self.values)}) and a "
                             "positive sum")
        return self


def _ranks_shorthand(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("ranks must be an int, a list of ints, or a {kind: ...} block")
    if isinstance(v, int):
        return {"kind": "cycle", "values": [v]}
    if isinstance(v, (list, tuple)):
        return {"kind": "cycle", "values": list(v)}
    return v


RanksConfig = Annotated[Union[CycleRanks, CountRanks, ChoiceRanks], Field(discriminator="kind")]


class AdaptersConfig(_Model):
    """The ``adapters:`` section: the LoRA adapters that exist (on disk) for the scenario.

    ``ranks`` accepts an int (all the same), a list (cycled: adapter ``i`` gets ``ranks[i % len]``), or a block
    ``{kind: cycle | counts | choice, ...}``. Sizes follow from the model shape (:meth:`ModelShape.adapter_size_bytes`).
    """

    count: int = Field(default=16, ge=0, le=MAX_ADAPTERS)
    """Number of adapters (0 = base model only). Defaults to ``len(names)`` when names are given."""
    names: list[Annotated[str, Field(min_length=1)]] | None = None
    """Explicit adapter names, one per adapter; unset = ``lora-0``, ``lora-1``, ..."""
    ranks: RanksConfig = CycleRanks()
    """LoRA rank of each adapter (default 16, vLLM's default ``max_lora_rank``)."""
    target_modules: tuple[TargetModule, ...] = Field(default=ALL_TARGET_MODULES, min_length=1)
    """Projections each adapter modifies; default all seven (q, k, v, o, gate, up, down). vLLM sizes every GPU slot
    for all of a model's LoRA-capable modules regardless of this; it sets the adapter's file size (load time)."""

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "ranks" in data:
                data["ranks"] = _ranks_shorthand(data["ranks"])
            if data.get("names") is not None and "count" not in data:
                data["count"] = len(data["names"])
        return data

    @model_validator(mode="after")
    def _consistent(self) -> AdaptersConfig:
        if self.names is not None:
            if len(self.names) != self.count:
                raise ValueError(f"names has {len(self.names)} entries but count is {self.count}")
            dup = sorted({n for n in self.names if self.names.count(n) > 1})
            if dup:
                raise ValueError(f"adapter names must be unique: {dup[:5]}")
        if isinstance(self.ranks, CountRanks) and sum(self.ranks.counts.values()) != self.count:
            raise ValueError(f"ranks.counts sum to {sum(self.ranks.counts.values())} but count is {self.count}")
        if len(set(self.target_modules)) != len(self.target_modules):
            raise ValueError(f"target_modules has duplicates: {list(self.target_modules)}")
        return self
