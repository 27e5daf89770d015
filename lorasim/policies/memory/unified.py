"""S-LoRA's unified memory pool (Sheng et al., "S-LoRA: Serving Thousands of Concurrent LoRA Adapters",
MLSys'24, arXiv 2311.03285 section 4.1; ``S-LoRA/slora/common/unified_mem_allocator.py``)."""

from __future__ import annotations

from lorasim.policies.base import ADAPTER_MEMORIES, AdapterMemory


@ADAPTER_MEMORIES.register("unified")
class UnifiedMemory(AdapterMemory):
    """One pool for adapter weights and KV blocks (S-LoRA).

    Rule: nothing is reserved up front: the KV cache is sized as if LoRA slots took no memory, and a resident
    adapter takes ``ceil(adapter_size_bytes / kv_block_bytes)`` blocks from that same pool while it stays in GPU
    memory (at most ``max_cpu_loras`` resident). Adapters that no running request uses are evicted when the KV cache
    needs their blocks, so many adapters stay resident at low load and few at high load. The per-step adapter cap
    stays ``max_loras`` (set it high to model S-LoRA, which has none). Tie-break: none (the eviction policy picks
    the victims).
    """

    rule = "adapters and KV blocks share one pool (S-LoRA); an adapter takes ceil(bytes/block bytes) KV blocks"
    shares_kv = True

    def reserved_slots(self) -> int:
        return 0

    def units(self, rank: int, size_bytes: int) -> int:
        return max(1, -(-size_bytes // self.layout.kv_block_bytes))

    @property
    def capacity_units(self) -> None:
        return None
