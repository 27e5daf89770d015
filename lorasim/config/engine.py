"""The ``engine`` section: vLLM's knobs under vLLM's names, plus KV capacity, links and load mode."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from lorasim._model import MAX_ADAPTERS, MAX_TIME_S, MAX_TOKENS, InputModel

# vLLM ``LoRAConfig``: max_lora_rank must be one of these (vllm/config/lora.py).
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class LinkConfig(InputModel):
    """One transfer link. Unset fields take the model profile's fitted values."""


    overhead_s: float | None = Field(default=None, ge=0, le=MAX_TIME_S)
    """Fixed cost of one adapter load over this link, seconds."""
    bandwidth_bytes_per_s: float | None = Field(default=None, ge=1.0, allow_inf_nan=True)
    """Sustained bandwidth, bytes per second (``.inf`` makes size free, leaving only the overhead)."""


class EngineConfig(InputModel):
    """One replica's engine settings (vLLM ``--max-loras`` etc.)."""


    max_loras: int = Field(default=1, ge=1, le=MAX_ADAPTERS)
    """GPU adapter slots = most distinct adapters in one step (vLLM default 1)."""
    max_cpu_loras: int | None = Field(default=None, ge=1, le=MAX_ADAPTERS)
    """CPU adapter cache capacity; unset means equal to ``max_loras`` (vLLM). Must be >= ``max_loras``."""
    max_lora_rank: int = 16
    """Every GPU slot is padded to this rank; LoRA kernel cost and slot memory scale with it (vLLM default 16)."""
    max_num_seqs: int = Field(default=256, ge=1, le=1_000_000)
    """Most sequences in the running set."""
    max_num_batched_tokens: int = Field(default=2048, ge=1, le=MAX_TOKENS)
    """Token budget of one step."""
    enable_chunked_prefill: bool = True
    """Split prompts across steps to fit the token budget (vLLM V1 default)."""
    enable_lora: bool | None = None
    """LoRA kernels on; unset means on when the scenario defines adapters."""
    block_size: int = Field(default=16, ge=1, le=4096)
    """KV-cache block size in tokens."""
    kv_cache_tokens: int | None = Field(default=None, ge=1, le=10**12)
    """KV capacity in tokens; unset derives it from the profile: GPU memory x utilisation - weights and
    activations - LoRA slot memory (``max_loras`` x slot bytes at ``max_lora_rank``)."""
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    """Fraction of GPU memory the engine may use (vLLM default 0.9); only used to derive the KV capacity."""
    max_model_len: int | None = Field(default=None, ge=1, le=2 * MAX_TOKENS)
    """Longest prompt + output accepted; longer requests are reported aborted. Unset: limited by the KV cache."""
    gpu_memory_for_adapters_bytes: int | None = Field(default=None, ge=1)
    """Optional budget for the GPU slots; ``max_loras`` slots of ``max_lora_rank`` must fit in it."""
    cpu_memory_for_adapters_bytes: int | None = Field(default=None, ge=1)
    """Optional budget for the CPU cache; ``max_cpu_loras`` of the largest adapter must fit in it."""
    request_overhead_s: float | None = Field(default=None, ge=0, le=3600.0)
    """Delay from a request's arrival to its entry into the waiting queue (API server, tokenization), seconds; part
    of TTFT. Unset: the profile's value (fitted from single-request runs, ~7 ms for vLLM 0.8.5)."""
    adapter_load: Literal["blocking", "overlapped"] = "blocking"
    """``blocking``: a step loads its missing adapters one after another, then computes (vLLM). ``overlapped``:
    loads for queued requests start as soon as a slot can take them; a step waits only for adapters not yet
    resident."""
    adapter_activation: Literal["step", "vllm"] = "step"
    """How a step's missing adapters take GPU slots (blocking loads; prefetches of ``overlapped`` are unaffected).
    ``step``: one after another, never evicting an adapter the step uses. ``vllm``: as vLLM's worker does
    (``LRUCacheWorkerLoRAManager._apply_adapters``), walking the step's adapters in the iteration order of a Python
    set, each missing one evicting the eviction policy's victim among all but those already walked (under ``lru``:
    the least recently used), which may be one the step needs later: that one is then loaded again."""
    cpu_to_gpu: LinkConfig = LinkConfig()
    """CPU -> GPU (PCIe) link; unset fields from the profile."""
    disk_to_cpu: LinkConfig = LinkConfig()
    """Disk -> CPU link; unset fields from the profile."""

    @field_validator("max_lora_rank")
    @classmethod
    def _rank_supported(cls, v: int) -> int:
        if v not in VLLM_MAX_LORA_RANKS:
            raise ValueError(f"max_lora_rank {v} is not one vLLM supports: {', '.join(map(str, VLLM_MAX_LORA_RANKS))}")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "EngineConfig":
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras}): "
                             f"every adapter in a GPU slot is also held in the CPU cache")
        if self.kv_cache_tokens is not None and self.kv_cache_tokens < self.block_size:
            raise ValueError(f"kv_cache_tokens ({self.kv_cache_tokens}) is smaller than one block ({self.block_size})")
        return self

    @property
    def cpu_loras(self) -> int:
        """The effective CPU cache capacity."""
        return self.max_cpu_loras if self.max_cpu_loras is not None else self.max_loras
