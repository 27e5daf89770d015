"""Performance profiles: fitted step-time coefficients, adapter-load links and memory, loaded from JSON.

A profile is one (model, device, engine) calibration. The JSON files shipped in ``lorasim/perf/profiles/`` are
written by ``python -m lorasim.perf.fit`` (see that module for how each number is fitted and from which file);
their ``provenance`` records the input files' sha256 and the command that rebuilds them. ``lorasim run`` only loads
them: no fitting happens at run time.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lorasim.errors import ConfigError, DataFileError
from lorasim.perf.base import LinkCost
from lorasim.perf.linear import MIN_STEP_S, LinearStepTimeModel
from lorasim.perf.shapes import MODEL_SHAPES, ModelShape

LinkName = Literal["disk_to_cpu", "cpu_to_gpu"]
_FROZEN = ConfigDict(extra="forbid", frozen=True)


class StepTimeCoefficients(BaseModel):
    """Coefficients of :class:`~lorasim.perf.linear.LinearStepTimeModel`, all in milliseconds (see its docstring)."""

    model_config = _FROZEN

    base_ms: float = Field(ge=0)
    """Fixed cost of every step (ms)."""
    prefill_token_ms: float = Field(ge=0)
    """Per prefill token (ms)."""
    prefill_seq_ms: float = Field(default=0.0, ge=0)
    """Per sequence with a prefill chunk in the step (ms)."""
    decode_seq_ms: float = Field(ge=0)
    """Per decoding sequence (ms)."""
    decode_context_token_ms: float = Field(ge=0)
    """Per KV-cache token read by decoding sequences (ms)."""
    prefill_attention_ms: float = Field(ge=0)
    """Per prefill attention token pair, ``chunk * (context_before + chunk)`` (ms)."""
    lora_base_ms: float = Field(default=0.0, ge=0)
    """Every step of a LoRA-enabled server (ms)."""
    lora_slot_ms: float = Field(default=0.0, ge=0)
    """Every step of a LoRA-enabled server, per GPU slot (``max_loras``) (ms)."""
    lora_slot_rank_ms: float = Field(default=0.0, ge=0)
    """Every step of a LoRA-enabled server, per slot per unit of ``max_lora_rank`` (ms)."""
    lora_active_ms: float = Field(default=0.0, ge=0)
    """A step with at least one adapter token (ms)."""
    lora_token_rank_ms: float = Field(default=0.0, ge=0)
    """LoRA-active step, per token per unit of ``max_lora_rank`` (ms)."""
    lora_token_slot_ms: float = Field(default=0.0, ge=0)
    """LoRA-active step, per token per GPU slot (ms)."""
    lora_adapter_ms: float = Field(default=0.0, ge=0)
    """LoRA-active step, per distinct adapter in the batch (ms)."""
    lora_prefill_token_slot_ms: float = Field(default=0.0, ge=0)
    """LoRA-active step, per prefill token per GPU slot, on top of the all-token terms (ms)."""
    lora_batch_change_ms: float = Field(default=0.0, ge=0)
    """LoRA-active step whose batch differs from the previous step's: the LoRA mapping is rebuilt (ms)."""
    scheduler_skip_ms: float = Field(default=0.0, ge=0)
    """Per waiting request the scheduler's admission scan passes over (vLLM: adapter-blocked requests) (ms)."""


class LinkFit(BaseModel):
    """One adapter-transfer link: ``overhead_s + size_bytes / bandwidth_bytes_per_s``."""

    model_config = _FROZEN

    overhead_s: float = Field(ge=0)
    """Fixed cost per load (s)."""
    bandwidth_bytes_per_s: float = Field(gt=0)
    """Sustained bandwidth (bytes/s)."""
    n_events: int = Field(default=0, ge=0)
    """Load events the fit used (0: not fitted on events; see ``source``)."""
    mape: float | None = None
    """Mean absolute percentage error of the fit on the per-group medians (%)."""
    source: str = ""
    """Where the numbers come from."""


class AdapterLoad(BaseModel):
    """Adapter transfer links, per tier."""

    model_config = _FROZEN

    disk_to_cpu: LinkFit
    """Disk -> CPU cache (vLLM loads the adapter from disk synchronously in the step that needs it)."""
    cpu_to_gpu: LinkFit
    """CPU cache -> a GPU slot (copied into the slot padded to ``max_lora_rank``)."""
    assumed_target_modules: list[str] = Field(default_factory=list)
    """Modules assumed in the adapters the fit converted to bytes with ``ModelShape.adapter_size_bytes``."""


class KVPoint(BaseModel):
    """One measured KV-cache capacity."""

    model_config = _FROZEN

    max_loras: int = Field(ge=0)
    max_lora_rank: int = Field(ge=0)
    lora_enabled: bool
    max_num_seqs: int = Field(ge=1)
    kv_cache_tokens: int = Field(ge=0)


class Memory(BaseModel):
    """GPU memory split (bytes)::

        KV = gpu * utilization - non_kv_reserve - reserve_per_seq * (max_num_seqs - reference_max_num_seqs)
             - [LoRA enabled: lora_reserve + max_loras * max_lora_rank * lora_slot_bytes_per_rank]
    """

    model_config = _FROZEN

    gpu_memory_bytes: int = Field(gt=0)
    """Total device memory (bytes)."""
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    """vLLM ``gpu_memory_utilization`` the profile assumes by default."""
    non_kv_reserve_bytes: int = Field(ge=0)
    """Weights, activations and everything else that is not KV cache, LoRA disabled, at
    ``reference_max_num_seqs`` (bytes; fitted)."""
    reserve_bytes_per_seq: float = Field(default=0.0, ge=0)
    """Extra reserve per unit of ``max_num_seqs`` (vLLM profiles its sampler with ``max_num_seqs`` sequences)."""
    reference_max_num_seqs: int = Field(default=256, ge=1)
    """``max_num_seqs`` at which ``non_kv_reserve_bytes`` holds (vLLM V1's default, 256)."""
    lora_reserve_bytes: int = Field(default=0, ge=0)
    """Extra non-KV memory of a LoRA-enabled server beyond its slots (LoRA activation buffers; bytes; fitted)."""
    lora_slot_bytes_per_rank: float = Field(ge=0)
    """Bytes one GPU LoRA slot takes per unit of ``max_lora_rank`` (fitted)."""
    block_size: int = Field(default=16, ge=1)
    """KV block size in tokens: capacity is rounded down to whole blocks."""
    measured: list[KVPoint] = Field(default_factory=list)
    """Measured capacities, for reference and tests (the formula is used at run time)."""


class InputFile(BaseModel):
    """An input of the fit, relative to the data directory."""

    model_config = _FROZEN

    path: str
    sha256: str


class Provenance(BaseModel):
    """Where a profile comes from and how to rebuild it."""

    model_config = _FROZEN

    inputs: list[InputFile]
    """Every file read by the fit, with its sha256."""
    command: str
    """Command that rebuilds this file byte for byte (apart from ``generated``)."""
    generated: str
    """Date the file was written (ISO 8601); the only field a rebuild may change."""
    source_engine: str
    """The serving engine and settings the measurements come from."""
    fitted_on: str
    """Which rows of which files the coefficients were fitted on."""
    assumptions: list[str] = Field(default_factory=list)
    """Every assumption that is not in the data."""
    notes: list[str] = Field(default_factory=list)
    """Oddities found in the data and other remarks."""


class DatasetFit(BaseModel):
    """Accuracy on one dataset; ``test_*`` on held-out runs the coefficients never saw."""

    model_config = _FROZEN

    n_train_rows: int
    n_test_rows: int
    n_train_runs: int
    n_test_runs: int
    train_mape: float | None
    """Mean absolute percentage error on training rows (%)."""
    test_mape: float | None
    """Mean absolute percentage error on held-out rows (%)."""
    test_r2: float | None
    """Coefficient of determination on held-out rows (None where they barely vary: std/mean < 5%)."""
    description: str = ""


class FitStats(BaseModel):
    """How well the coefficients fit."""

    model_config = _FROZEN

    method: str
    datasets: dict[str, DatasetFit] = Field(default_factory=dict)
    checks: dict[str, float] = Field(default_factory=dict)
    """Named sanity checks (units in the name)."""


class Profile(BaseModel):
    """A fitted performance profile (see the module docstring)."""

    model_config = _FROZEN

    name: str
    model: str | None = None
    """A model name in :data:`~lorasim.perf.shapes.MODEL_SHAPES`; or set ``model_shape``."""
    model_shape: ModelShape | None = None
    """Explicit model shape (overrides ``model``)."""
    device: str
    """The GPU, and how it is known."""
    tensor_parallel_size: int = Field(default=1, ge=1)
    provenance: Provenance
    step_time: StepTimeCoefficients
    adapter_load: AdapterLoad
    memory: Memory
    fit: FitStats
    request_overhead_s: float = Field(default=0.0, ge=0)
    """Time between a request's arrival at the server and its entry into the scheduler's queue (API server,
    tokenization; also absorbs first-token streaming), seconds: part of TTFT but of no step."""

    @model_validator(mode="after")
    def _check_model(self) -> Profile:
        if self.model_shape is None:
            if self.model is None:
                raise ValueError("set model (a known model name) or model_shape")
            if self.model not in MODEL_SHAPES:
                raise ValueError(f"model {self.model!r} is unknown; known: {', '.join(sorted(MODEL_SHAPES))}")
        return self

    @property
    def shape(self) -> ModelShape:
        """The model's shape (``model_shape`` if set, else the catalog entry of ``model``)."""
        return self.model_shape if self.model_shape is not None else MODEL_SHAPES[self.model]  # type: ignore[index]

    def step_time_model(self, max_lora_rank: int, lora_enabled: bool, max_loras: int = 1) -> LinearStepTimeModel:
        """The step-time model of a server configuration.

        Args:
            max_lora_rank: vLLM ``max_lora_rank`` (every slot is padded to it).
            lora_enabled: whether the server runs with ``--enable-lora``; if not, no LoRA term applies.
            max_loras: GPU adapter slots (vLLM ``max_loras``, default 1 as in vLLM). Pass the server's value: on the
                calibration data, step time grows with the number of slots even when no adapter is in the batch.

        Returns:
            A :class:`~lorasim.perf.linear.LinearStepTimeModel` whose ``step_time_s`` returns seconds (> 0).
        """
        c = self.step_time
        always = active = per_token = per_prefill_token = per_adapter = change = 0.0
        if lora_enabled:
            always = c.lora_base_ms + max_loras * (c.lora_slot_ms + c.lora_slot_rank_ms * max_lora_rank)
            active = c.lora_active_ms
            per_token = c.lora_token_rank_ms * max_lora_rank + c.lora_token_slot_ms * max_loras
            per_prefill_token = c.lora_prefill_token_slot_ms * max_loras
            per_adapter = c.lora_adapter_ms
            change = c.lora_batch_change_ms
        return LinearStepTimeModel(
            base_ms=c.base_ms, prefill_token_ms=c.prefill_token_ms, prefill_seq_ms=c.prefill_seq_ms,
            decode_seq_ms=c.decode_seq_ms, decode_context_token_ms=c.decode_context_token_ms,
            prefill_attention_ms=c.prefill_attention_ms, lora_always_ms=always, lora_active_ms=active,
            lora_token_ms=per_token, lora_prefill_token_ms=per_prefill_token, lora_adapter_ms=per_adapter,
            lora_batch_change_ms=change, scheduler_skip_ms=c.scheduler_skip_ms, min_step_s=MIN_STEP_S)

    def link_cost(self, link: LinkName) -> LinkCost:
        """Transfer cost of one adapter load over ``link`` ("disk_to_cpu" or "cpu_to_gpu")."""
        if link not in ("disk_to_cpu", "cpu_to_gpu"):
            raise ConfigError(f"link: unknown link {link!r}; valid: cpu_to_gpu, disk_to_cpu")
        fit: LinkFit = getattr(self.adapter_load, link)
        return LinkCost(fit.overhead_s, fit.bandwidth_bytes_per_s)

    def kv_cache_tokens(self, max_loras: int, max_lora_rank: int, lora_enabled: bool,
                        gpu_memory_utilization: float | None = None, max_num_seqs: int | None = None) -> int:
        """KV-cache capacity in tokens (whole blocks) for a server configuration.

        The free memory of :class:`Memory` divided by the model's KV bytes per token (per GPU under tensor
        parallelism), rounded down to whole blocks.

        Args:
            max_loras: GPU adapter slots.
            max_lora_rank: rank every slot is padded to.
            lora_enabled: whether LoRA is enabled (if not, ``max_loras`` and ``max_lora_rank`` are ignored).
            gpu_memory_utilization: vLLM's setting; None uses the profile's (0.9).
            max_num_seqs: vLLM's ``max_num_seqs``; None uses ``memory.reference_max_num_seqs`` (256).

        Raises:
            ConfigError: the configuration leaves no memory for the KV cache.
        """
        m = self.memory
        util = m.gpu_memory_utilization if gpu_memory_utilization is None else gpu_memory_utilization
        seqs = m.reference_max_num_seqs if max_num_seqs is None else max_num_seqs
        free = (m.gpu_memory_bytes * util - m.non_kv_reserve_bytes
                - m.reserve_bytes_per_seq * (seqs - m.reference_max_num_seqs))
        if lora_enabled:
            free -= m.lora_reserve_bytes + max_loras * max_lora_rank * m.lora_slot_bytes_per_rank
        per_token = self.shape.kv_bytes_per_token / self.tensor_parallel_size
        blocks = math.floor(free / (per_token * m.block_size)) if free > 0 else 0
        if blocks <= 0:
            raise ConfigError(
                f"engine: no memory left for the KV cache with profile {self.name!r}: max_loras {max_loras}, "
                f"max_lora_rank {max_lora_rank}, gpu_memory_utilization {util} leave {free / 2**30:.2f} GiB")
        return blocks * m.block_size


PROFILES_DIR = resources.files("lorasim.perf") / "profiles"


def list_profiles() -> list[str]:
    """Names of the profiles shipped with lorasim (JSON files in ``lorasim/perf/profiles``), sorted."""
    return sorted(p.name[:-5] for p in PROFILES_DIR.iterdir() if p.name.endswith(".json"))


def one_line(err: ValidationError, what: str = "profile") -> str:
    """A pydantic error as one line: ``invalid <what>: <field path>: <message> (and N more error(s))``."""
    errors = err.errors()
    first = errors[0]
    loc = ".".join(str(x) for x in first["loc"]) or "(top level)"
    more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
    return f"invalid {what}: {loc}: {first['msg']}{more}"


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a profile by shipped name (see :func:`list_profiles`) or from a JSON file path.

    Raises:
        ConfigError: ``name_or_path`` is neither a shipped name nor a path (the message lists the names).
        DataFileError: the file is missing, not JSON, or not a valid profile (the message names the field).
    """
    text = str(name_or_path)
    names = list_profiles()
    if text in names:
        path = Path(str(PROFILES_DIR / f"{text}.json"))
    else:
        path = Path(text).expanduser()
        if not path.exists():
            if path.suffix == ".json" or "/" in text or "\\" in text:
                raise DataFileError(path, "profile file not found")
            raise ConfigError(f"model.profile: unknown profile {text!r}; valid: {', '.join(names)} "
                              f"(or a path to a profile JSON file)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFileError(path, f"invalid JSON: {e.msg}", line=e.lineno) from None
    except OSError as e:
        raise DataFileError(path, f"cannot read: {e.strerror}") from None
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        raise DataFileError(path, one_line(e)) from None
