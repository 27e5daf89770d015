"""Arrival processes: when the requests of a synthetic stream arrive.

Every process is a pydantic model (the ``arrivals:`` block of a stream, chosen by ``kind``) with a vectorised sampler.
Renewal processes (``poisson``, ``gamma``, ``constant``) place the first arrival one inter-arrival gap after the
stream's ``start_s`` and stop at ``num_requests`` and/or at ``start_s + duration_s`` (exclusive), whichever comes
first. ``burst`` and ``single`` place every request at one instant.

Sources: Gamma inter-arrivals with shape ``1/cv^2`` are the S-LoRA workload (Sheng et al., arXiv 2311.03285, §7);
per-adapter independent Poisson streams are how the vLLM multi-LoRA runs in ``vllm-lora-runs/real_runs.csv`` were
driven (Agullo et al., arXiv 2508.08343, ``benchmarks/lora/benchmark_serving_by_time.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Literal, Union

import numpy as np
from pydantic import Field, model_validator

from lorasim._model import MAX_CV, MAX_RATE, MAX_TIME_S, MIN_RATE, InputModel

from lorasim.errors import ConfigError


class _Model(InputModel):
    """Base of this module's config models."""


class PoissonArrivals(_Model):
    """Poisson process: independent exponential inter-arrival gaps (CV 1)."""

    kind: Literal["poisson"] = "poisson"
    rate: float = Field(default=1.0, ge=MIN_RATE, le=MAX_RATE)
    """Mean arrival rate, requests per second."""

    def mean_rate(self) -> float:
        return self.rate

    def gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` inter-arrival gaps in seconds."""
        return rng.exponential(1.0 / self.rate, n)


class GammaArrivals(_Model):
    """Gamma renewal process (S-LoRA): gaps ~ Gamma(shape=1/cv^2, scale=cv^2/rate); cv=1 is Poisson, >1 bursty."""

    kind: Literal["gamma"] = "gamma"
    rate: float = Field(default=1.0, ge=MIN_RATE, le=MAX_RATE)
    """Mean arrival rate, requests per second."""
    cv: float = Field(default=1.0, gt=0, le=MAX_CV)
    """Coefficient of variation of the inter-arrival gaps (std / mean)."""

    def mean_rate(self) -> float:
        return self.rate

    def gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        shape = 1.0 / (self.cv * self.cv)
        return rng.gamma(shape, 1.0 / (self.rate * shape), n)


class ConstantArrivals(_Model):
    """Deterministic arrivals every ``1/rate`` seconds (CV 0); the first one ``1/rate`` after ``start_s``."""

    kind: Literal["constant"] = "constant"
    rate: float = Field(default=1.0, ge=MIN_RATE, le=MAX_RATE)
    """Arrival rate, requests per second."""

    def mean_rate(self) -> float:
        return self.rate

    def gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, 1.0 / self.rate)


class PerAdapterPoissonArrivals(_Model):
    """One independent Poisson stream per adapter, each with its own rate (the real vLLM runs' client).

    The real runs (``benchmark_serving_by_time.py``, ``--adapter-rates``) cycle the rate list over the server's
    adapters (adapter ``i`` gets ``rates[i % len(rates)]``) and then shuffle the (adapter, rate) pairs with a seeded
    RNG, so which adapter gets which rate (and hence which rank) is random; ``assignment: shuffled`` reproduces this
    with the stream's popularity RNG, ``cycled`` keeps ``rates[i % len(rates)]``.

    Sampling uses the superposition theorem: independent Poisson streams with rates ``r_i`` are, in distribution,
    one Poisson stream of rate ``sum(r_i)`` whose arrivals pick adapter ``i`` with probability ``r_i / sum(r)``.
    The stream's ``popularity`` must be left unset (the rates are the popularity); it draws no base-model requests.
    """

    kind: Literal["per_adapter_poisson"] = "per_adapter_poisson"
    rates: list[Annotated[float, Field(ge=MIN_RATE, le=MAX_RATE)]] | None = None
    """Per-adapter rates in requests per second, cycled over the stream's adapters (in adapter order)."""
    rate_by_adapter: dict[str, Annotated[float, Field(ge=0, le=MAX_RATE)]] | None = None
    """Explicit rate per adapter name (req/s); adapters of the stream not listed get rate 0 (no requests)."""
    assignment: Literal["shuffled", "cycled"] = "shuffled"
    """How ``rates`` map to adapters: ``cycled`` = ``rates[i % len]``; ``shuffled`` = cycled, then randomly permuted
    (as the real runs did). Ignored with ``rate_by_adapter``."""

    @model_validator(mode="after")
    def _one_source(self) -> PerAdapterPoissonArrivals:
        if (self.rates is None) == (self.rate_by_adapter is None):
            raise ValueError("give exactly one of 'rates' (cycled list) or 'rate_by_adapter' (name -> req/s)")
        if self.rates is not None and len(self.rates) == 0:
            raise ValueError("'rates' must not be empty")
        if self.rate_by_adapter is not None and sum(self.rate_by_adapter.values()) <= 0:
            raise ValueError("'rate_by_adapter' must give at least one adapter a positive rate")
        return self

    def adapter_rates(self, names: list[str], rng: np.random.Generator, where: str) -> np.ndarray:
        """Rate (req/s) of each adapter in ``names`` (the stream's adapters, in order).

        Raises:
            ConfigError: a ``rate_by_adapter`` key is not among ``names``, or every rate is 0.
        """
        if self.rate_by_adapter is not None:
            unknown = sorted(set(self.rate_by_adapter) - set(names))
            if unknown:
                raise ConfigError(f"{where}.arrivals.rate_by_adapter: unknown adapters {unknown[:5]} "
                                 f"(the stream's adapters are {_preview(names)})")
            return np.array([self.rate_by_adapter.get(n, 0.0) for n in names], dtype=float)
        assert self.rates is not None
        rates = np.array([self.rates[i % len(self.rates)] for i in range(len(names))], dtype=float)
        if self.assignment == "shuffled":
            rates = rates[rng.permutation(len(rates))]
        return rates


class BurstArrivals(_Model):
    """All ``num_requests`` requests arrive at the instant ``at_s`` (the calibration runs' ``request_rate=inf``)."""

    kind: Literal["burst"] = "burst"
    at_s: float = Field(default=0.0, ge=0, le=MAX_TIME_S)
    """Arrival time of every request, seconds."""


class SingleArrival(_Model):
    """Exactly one request, arriving at ``at_s``."""

    kind: Literal["single"] = "single"
    at_s: float = Field(default=0.0, ge=0, le=MAX_TIME_S)
    """Arrival time of the request, seconds."""


ArrivalsConfig = Annotated[
    Union[PoissonArrivals, GammaArrivals, ConstantArrivals, PerAdapterPoissonArrivals, BurstArrivals, SingleArrival],
    Field(discriminator="kind"),
]
"""The ``arrivals:`` block of a synthetic stream, chosen by ``kind``."""

RenewalArrivals = Union[PoissonArrivals, GammaArrivals, ConstantArrivals]


def renewal_times(
    gaps: Callable[[int], np.ndarray],
    mean_rate: float,
    start_s: float,
    num_requests: int | None,
    duration_s: float | None,
) -> np.ndarray:
    """Arrival times of a renewal process bounded by a count and/or a horizon.

    Args:
        gaps: draws ``n`` inter-arrival gaps (seconds).
        mean_rate: mean arrival rate (req/s), used only to size the draws when bounded by time alone.
        start_s: time origin; the first arrival is one gap after it.
        num_requests: at most this many arrivals (``None``: unbounded count).
        duration_s: only arrivals strictly before ``start_s + duration_s`` (``None``: unbounded time).

    Returns:
        Non-decreasing float64 arrival times in seconds.
    """
    if num_requests is not None:
        t = start_s + np.cumsum(gaps(num_requests))
        if duration_s is not None:
            t = t[: int(np.searchsorted(t, start_s + duration_s, side="left"))]
        return t
    if duration_s is None:
        raise ValueError("a stream needs num_requests and/or duration_s")
    end = start_s + duration_s
    expected = mean_rate * duration_s
    chunk = int(expected + 6.0 * math.sqrt(expected) + 16)
    pieces: list[np.ndarray] = []
    last = start_s
    while True:
        t = last + np.cumsum(gaps(chunk))
        cut = int(np.searchsorted(t, end, side="left"))
        pieces.append(t[:cut])
        if cut < len(t):
            break
        last = float(t[-1])
    return np.concatenate(pieces)


def _preview(names: list[str]) -> str:
    if len(names) <= 4:
        return str(names)
    return f"[{names[0]!r}, {names[1]!r}, ..., {names[-1]!r}] ({len(names)})"
