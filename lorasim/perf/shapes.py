"""Transformer shapes and the LoRA adapter sizes that follow from them.

Shapes are the public architecture constants of each model (its Hugging Face ``config.json``). An adapter of rank
``r`` on a target module with input width ``d_in`` and output width ``d_out`` holds ``A: r x d_in`` and
``B: d_out x r`` per layer, so its size is ``sum_modules r * (d_in + d_out) * num_layers * dtype_bytes``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lorasim._model import InputModel

TargetModule = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALL_TARGET_MODULES: tuple[TargetModule, ...] = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
)


class ModelShape(InputModel):
    """Decoder-only transformer shape (one replica holds the whole model unless tensor-parallel)."""


    name: str = "custom"
    """Model name, for reports."""
    num_layers: int = Field(ge=1)
    """Number of decoder layers."""
    hidden_size: int = Field(ge=1)
    """Model width d."""
    intermediate_size: int = Field(ge=1)
    """MLP width."""
    num_attention_heads: int = Field(ge=1)
    """Query heads."""
    num_kv_heads: int = Field(ge=1)
    """Key/value heads (grouped-query attention when fewer than query heads)."""
    vocab_size: int = Field(ge=1)
    """Vocabulary size."""
    dtype_bytes: int = Field(default=2, ge=1)
    """Bytes per weight and per KV element (2 for fp16/bf16)."""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_params(self) -> int:
        """Approximate parameter count (attention, MLP, embeddings and LM head; norms ignored)."""
        d, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        per_layer = d * d * 2 + 2 * d * kv + 3 * d * self.intermediate_size
        return self.num_layers * per_layer + 2 * self.vocab_size * d

    @property
    def weights_bytes(self) -> int:
        return self.num_params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes per token: K and V, every layer."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes

    def module_dims(self, module: TargetModule) -> tuple[int, int]:
        """Return ``(d_in, d_out)`` of a target module."""
        d, kv, ff = self.hidden_size, self.num_kv_heads * self.head_dim, self.intermediate_size
        return {
            "q_proj": (d, d), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (d, d),
            "gate_proj": (d, ff), "up_proj": (d, ff), "down_proj": (ff, d),
        }[module]

    def adapter_size_bytes(self, rank: int, target_modules: tuple[str, ...] | list[str]) -> int:
        """Bytes of a rank-``rank`` LoRA adapter on ``target_modules`` (all layers)."""
        per_layer = sum(rank * sum(self.module_dims(m)) for m in target_modules)  # type: ignore[arg-type]
        return per_layer * self.num_layers * self.dtype_bytes


MODEL_SHAPES: dict[str, ModelShape] = {
    s.name: s
    for s in (
        ModelShape(name="llama-3.1-8b", num_layers=32, hidden_size=4096, intermediate_size=14336,
                   num_attention_heads=32, num_kv_heads=8, vocab_size=128256),
        ModelShape(name="qwen-2.5-7b", num_layers=28, hidden_size=3584, intermediate_size=18944,
                   num_attention_heads=28, num_kv_heads=4, vocab_size=152064),
        ModelShape(name="llama-2-7b", num_layers=32, hidden_size=4096, intermediate_size=11008,
                   num_attention_heads=32, num_kv_heads=32, vocab_size=32000),
        ModelShape(name="llama-2-13b", num_layers=40, hidden_size=5120, intermediate_size=13824,
                   num_attention_heads=40, num_kv_heads=40, vocab_size=32000),
        ModelShape(name="llama-2-70b", num_layers=80, hidden_size=8192, intermediate_size=28672,
                   num_attention_heads=64, num_kv_heads=8, vocab_size=32000),
    )
}
"""Known model shapes by name (from each model's published ``config.json``)."""
