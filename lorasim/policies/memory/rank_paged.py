"""Rank-paged adapter memory: heterogeneous ranks packed by pages of rank (S-LoRA's heterogeneous-rank batching,
arXiv 2311.03285 section 4; Punica's SGMV serves mixed ranks)."""

from __future__ import annotations

from pydantic import Field

from lorasim._model import InputModel
from lorasim.policies.base import ADAPTER_MEMORIES, AdapterMemory


class RankPagedParams(InputModel):
    """Knobs of :class:`RankPagedMemory`."""

    page_rank: int = Field(default=8, ge=1, le=512)
    """Ranks per page: an adapter of rank r takes ``ceil(r / page_rank)`` pages (must divide ``max_lora_rank``)."""


@ADAPTER_MEMORIES.register("rank-paged")
class RankPagedMemory(AdapterMemory):
    """Pages by rank inside the flat layout's rank budget.

    Rule: the same memory as ``flat`` (``max_loras`` x ``max_lora_rank`` ranks, reserved out of the KV budget up
    front) is cut into pages of ``page_rank`` ranks; a resident adapter of rank r takes ``ceil(r / page_rank)``
    pages, so low-rank adapters pack more densely and more of them stay resident (fewer reloads). The per-step
    adapter cap stays ``max_loras``. Tie-break: none (the eviction policy picks victims; as many as needed are
    evicted to free the pages of the adapter being loaded).
    """

    rule = "max_loras x max_lora_rank ranks in pages of page_rank; an adapter takes ceil(rank/page_rank) pages"
    Params = RankPagedParams

    def bind(self, layout) -> None:
        if layout.max_lora_rank % self.params.page_rank:
            raise ValueError(f"adapter_memory.page_rank {self.params.page_rank} must divide engine.max_lora_rank "
                             f"{layout.max_lora_rank}")
        super().bind(layout)

    def reserved_slots(self) -> int:
        return self.layout.max_loras

    def units(self, rank: int, size_bytes: int) -> int:
        return -(-rank // self.params.page_rank)

    @property
    def capacity_units(self) -> int:
        return self.layout.max_loras * self.layout.max_lora_rank // self.params.page_rank
