"""The adapter list of a scenario: names, ranks, target modules and sizes.

Ranks mirror the real vLLM multi-LoRA runs (Agullo et al., arXiv 2508.08343): their launcher passes a pool of three
dummy-adapter paths (e.g. ranks ``8 8 16``) that the server cycles over ``n`` adapters, giving
``adapter_rank_counts`` such as ``8x86 16x42`` for 128 adapters, i.e. ``ranks: [8, 8, 16]`` here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lorasim.perf.shapes import ModelShape
from lorasim.rng import RngStreams
from lorasim.workload.config import AdaptersConfig, ChoiceRanks, CountRanks, CycleRanks


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """One LoRA adapter.

    Attributes:
        name: adapter name (``lora-0`` ...), the ``Request.adapter`` value that selects it.
        rank: LoRA rank r.
        target_modules: projections it modifies.
        size_bytes: weight bytes, ``sum_modules r * (d_in + d_out) * num_layers * dtype_bytes``.
    """

    name: str
    rank: int
    target_modules: tuple[str, ...]
    size_bytes: int


def adapter_ranks(cfg: AdaptersConfig, rngs: RngStreams) -> list[int]:
    """The rank of each adapter, in adapter order (``adapters`` RNG stream only for ``choice`` / shuffled counts)."""
    n = cfg.count
    r = cfg.ranks
    if isinstance(r, CycleRanks):
        return [r.values[i % len(r.values)] for i in range(n)]
    if isinstance(r, CountRanks):
        ranks = [rank for rank, k in r.counts.items() for _ in range(k)]
        if r.shuffle:
            perm = rngs.get("adapters").permutation(n)
            ranks = [ranks[int(i)] for i in perm]
        return ranks
    if isinstance(r, ChoiceRanks):
        p = None if r.weights is None else np.asarray(r.weights, dtype=float) / sum(r.weights)
        return [int(v) for v in rngs.get("adapters").choice(np.asarray(r.values), size=n, p=p)]
    raise TypeError(f"unknown ranks config {r!r}")  # pragma: no cover


def build_adapters(cfg: AdaptersConfig, shape: ModelShape, rngs: RngStreams) -> list[AdapterSpec]:
    """Build the scenario's adapters.

    Args:
        cfg: the ``adapters:`` section.
        shape: the served model's shape (sets the adapter sizes).
        rngs: the simulation's random streams (``adapters`` is used for random ranks).

    Returns:
        ``cfg.count`` adapters named ``cfg.names`` or ``lora-0``, ``lora-1``, ...
    """
    names = list(cfg.names) if cfg.names is not None else [f"lora-{i}" for i in range(cfg.count)]
    modules = tuple(cfg.target_modules)
    sizes: dict[int, int] = {}  # rank -> size_bytes
    out = []
    for name, rank in zip(names, adapter_ranks(cfg, rngs), strict=True):
        if rank not in sizes:
            sizes[rank] = shape.adapter_size_bytes(rank, modules)
        out.append(AdapterSpec(name=name, rank=rank, target_modules=modules, size_bytes=sizes[rank]))
    return out
