"""Adapter popularity: which adapter each request of a stream uses.

A stream's ``popularity:`` block (chosen by ``kind``) gives a probability for each of the stream's adapters, in the
order of the scenario's adapter list (``lora-0`` first), restricted to the stream's ``adapters:`` subset if one is
given. Every kind also has ``base_share``: the probability that a request uses no adapter (``adapter=None``, the base
model), drawn independently per request.

Sources: S-LoRA's power law (Sheng et al., arXiv 2311.03285, §7 and ``benchmarks/``): ``adapter = floor(X * n)`` with
``X ~ numpy.random.power(alpha)`` (density ``alpha x^(alpha-1)`` on [0, 1]); ``alpha = 1`` is uniform, smaller alpha is
more skewed towards ``lora-0``. Zipf: ``P(k) ∝ 1 / k^s`` for the k-th adapter (k = 1, 2, ...).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import numpy as np
from pydantic import Field, model_validator

from lorasim._model import InputModel

from lorasim.errors import ConfigError


class _Model(InputModel):
    """Base of this module's config models."""


class _Popularity(_Model):
    base_share: float = Field(default=0.0, ge=0.0, le=1.0)
    """Probability that a request uses the base model (no adapter), in [0, 1]."""

    def probabilities(self, names: list[str], where: str) -> np.ndarray:  # pragma: no cover - abstract
        """Probability of each adapter in ``names`` (the stream's adapters, in order); sums to 1.

        Raises:
            ConfigError: the weights do not fit ``names`` (message starts with ``where``).
        """
        raise NotImplementedError


class UniformPopularity(_Popularity):
    """Every adapter of the stream is equally likely."""

    kind: Literal["uniform"] = "uniform"

    def probabilities(self, names: list[str], where: str) -> np.ndarray:
        return np.full(len(names), 1.0 / len(names))


class ZipfPopularity(_Popularity):
    """Zipf law over the stream's adapters in order: ``P(k-th adapter) ∝ 1 / k^s`` (s = 0 is uniform)."""

    kind: Literal["zipf"] = "zipf"
    s: float = Field(default=1.0, ge=0.0, le=100.0)
    """Zipf exponent; larger is more skewed towards the first adapter."""

    def probabilities(self, names: list[str], where: str) -> np.ndarray:
        w = np.arange(1, len(names) + 1, dtype=float) ** -self.s
        return w / w.sum()


class PowerLawPopularity(_Popularity):
    """S-LoRA power law: ``adapter = floor(X * n)``, ``X ~ power(alpha)``; alpha = 1 uniform, < 1 skewed to the first.

    The exact probabilities ``P(k) = ((k+1)/n)^alpha - (k/n)^alpha`` are used (same distribution as S-LoRA's draw).
    """

    kind: Literal["power_law"] = "power_law"
    alpha: float = Field(default=1.0, gt=0.0, le=100.0)
    """Power-law exponent; 1 = uniform, smaller = more skewed (S-LoRA sweeps 0.1 to 1)."""

    def probabilities(self, names: list[str], where: str) -> np.ndarray:
        n = len(names)
        edges = (np.arange(n + 1, dtype=float) / n) ** self.alpha
        return np.diff(edges)


class WeightsPopularity(_Popularity):
    """Explicit relative weights: a list aligned with the stream's adapters, or a map name -> weight.

    With a map, adapters of the stream that are not listed get weight 0.
    """

    kind: Literal["weights"] = "weights"
    weights: list[Annotated[float, Field(ge=0, le=1e12)]] | dict[str, Annotated[float, Field(ge=0, le=1e12)]]
    """Non-negative relative weights (normalised); at least one must be positive."""

    @model_validator(mode="after")
    def _positive(self) -> WeightsPopularity:
        vals = self.weights.values() if isinstance(self.weights, dict) else self.weights
        if sum(vals) <= 0:
            raise ValueError("weights must contain at least one positive value")
        return self

    def probabilities(self, names: list[str], where: str) -> np.ndarray:
        if isinstance(self.weights, dict):
            unknown = sorted(set(self.weights) - set(names))
            if unknown:
                raise ConfigError(f"{where}.popularity.weights: unknown adapters {unknown[:5]} "
                                 f"(not among the stream's {len(names)} adapters)")
            w = np.array([self.weights.get(n, 0.0) for n in names], dtype=float)
        else:
            if len(self.weights) != len(names):
                raise ConfigError(f"{where}.popularity.weights: {len(self.weights)} weights for "
                                 f"{len(names)} adapters; give one weight per adapter or a name -> weight map")
            w = np.asarray(self.weights, dtype=float)
        if w.sum() <= 0:
            raise ConfigError(f"{where}.popularity.weights: every adapter of the stream has weight 0")
        return w / w.sum()


PopularityConfig = Annotated[
    Union[UniformPopularity, ZipfPopularity, PowerLawPopularity, WeightsPopularity],
    Field(discriminator="kind"),
]
"""A stream's ``popularity:`` block, chosen by ``kind``."""


def sample_adapters(
    probs: np.ndarray, base_share: float, rng: np.random.Generator, n: int
) -> np.ndarray:
    """Draw ``n`` adapter positions (indices into ``probs``), ``-1`` meaning the base model.

    The base-model coin is drawn first for all ``n`` requests, then the adapter for all ``n`` (so changing
    ``base_share`` does not reshuffle which adapter the adapter requests get).

    Args:
        probs: probability of each candidate adapter (sums to 1); may be empty when ``base_share == 1``.
        base_share: probability of ``-1``.
        rng: the stream's popularity generator.
        n: number of requests.
    """
    base = rng.random(n) < base_share if base_share > 0 else np.zeros(n, dtype=bool)
    if len(probs) == 0:
        return np.full(n, -1, dtype=np.int64)
    if len(probs) == 1:
        idx = np.zeros(n, dtype=np.int64)
    else:
        cdf = np.cumsum(probs)
        cdf /= cdf[-1]
        cdf[int(np.flatnonzero(probs > 0)[-1]):] = 1.0  # trailing zero-weight adapters stay unreachable
        idx = np.searchsorted(cdf, rng.random(n), side="right").astype(np.int64)
        np.minimum(idx, len(probs) - 1, out=idx)  # guards the u == 1.0 - eps rounding case only
    idx[base] = -1
    return idx
