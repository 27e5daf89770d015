"""vLLM's flat adapter slots (``vllm/lora/models.py``, ``LoRAModelManager``: ``max_loras`` stacked slots of
``max_lora_rank``)."""

from __future__ import annotations

from lorasim.policies.base import ADAPTER_MEMORIES, AdapterMemory


@ADAPTER_MEMORIES.register("flat")
class FlatMemory(AdapterMemory):
    """Flat slots (vLLM).

    Rule: ``max_loras`` slots, each padded to ``max_lora_rank`` whatever the adapter's own rank; their memory is
    taken from the KV budget up front (the KV cache shrinks with ``max_loras`` x ``max_lora_rank``, as
    ``kv_capacity_vs_max_loras.csv`` measures). An adapter occupies one slot. Tie-break: none (the eviction policy
    picks victims).
    """

    rule = "max_loras slots padded to max_lora_rank, reserved out of the KV budget up front; one adapter per slot"

    def reserved_slots(self) -> int:
        return self.layout.max_loras

    def units(self, rank: int, size_bytes: int) -> int:
        return 1

    @property
    def capacity_units(self) -> int:
        return self.layout.max_loras
