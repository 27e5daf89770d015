"""Paged KV cache, counted in blocks (vLLM ``KVCacheManager`` without prefix caching)."""

from __future__ import annotations


class KVCache:
    """A pool of fixed-size blocks; sequences hold ``ceil(tokens / block_size)`` blocks.

    Args:
        capacity_tokens: KV capacity in tokens (>= block_size).
        block_size: tokens per block (vLLM default 16).

    Raises:
        ValueError: capacity smaller than one block.
    """

    def __init__(self, capacity_tokens: int, block_size: int = 16):
        if capacity_tokens < block_size:
            raise ValueError(f"KV capacity {capacity_tokens} tokens is smaller than one block ({block_size})")
        self.block_size = block_size
        self.total_blocks = capacity_tokens // block_size
        self.used_blocks = 0

    @property
    def free_blocks(self) -> int:
        return self.total_blocks - self.used_blocks

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold ``num_tokens`` tokens."""
        return -(-num_tokens // self.block_size)

    def allocate(self, num_blocks: int) -> None:
        if num_blocks > self.free_blocks:
            raise RuntimeError(f"KV over-allocation: {num_blocks} blocks requested, {self.free_blocks} free")
        self.used_blocks += num_blocks

    def free(self, num_blocks: int) -> None:
        self.used_blocks -= num_blocks
        assert self.used_blocks >= 0
