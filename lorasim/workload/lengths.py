"""Prompt and output lengths (tokens) of synthetic requests.

A stream's ``lengths:`` block is either *separate* (one distribution for the prompt, one for the output; the
default, no ``kind`` needed) or ``kind: empirical`` (paired rows sampled jointly from a length table). A
distribution is ``fixed``, ``uniform`` or ``lognormal``; a plain int is shorthand for ``fixed``.

Every length is an integer >= 1; nothing is clamped unless the config says so (``lognormal.max``).
The S-LoRA workload draws both lengths uniformly from [8, 512) (arXiv 2311.03285, §7); the vLLM multi-LoRA runs
use ShareGPT first turns filtered the way vLLM's serving benchmark does (``traces/sharegpt/`` in the data dir).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BeforeValidator, Discriminator, Field, Tag, model_validator

from lorasim._model import MAX_CV, MAX_TOKENS, InputModel

from lorasim.errors import DataFileError
from lorasim.paths import data_file
from lorasim.workload._tabular import numbers, read_csv_strings
from lorasim.workload._union import kind_or


class _Model(InputModel):
    """Base of this module's config models."""


class FixedLength(_Model):
    """Every request has the same length."""

    kind: Literal["fixed"] = "fixed"
    value: int = Field(ge=1, le=MAX_TOKENS)
    """Length in tokens."""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value, dtype=np.int64)


class UniformLength(_Model):
    """Integer length uniform in ``[low, high)`` (S-LoRA uses [8, 512))."""

    kind: Literal["uniform"] = "uniform"
    low: int = Field(default=8, ge=1, le=MAX_TOKENS)
    """Smallest length, tokens (inclusive)."""
    high: int = Field(default=512, ge=2, le=MAX_TOKENS)
    """Upper bound, tokens (exclusive)."""

    @model_validator(mode="after")
    def _order(self) -> UniformLength:
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be > low ({self.low}); the range is [low, high)")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.low, self.high, n, dtype=np.int64)


class LognormalLength(_Model):
    """Log-normal length given by the mean and coefficient of variation of the *token count*.

    With ``sigma^2 = ln(1 + cv^2)`` and ``mu = ln(mean) - sigma^2 / 2``, a draw ``x = exp(N(mu, sigma))`` has mean
    ``mean`` and CV ``cv``; the length is ``ceil(x)`` (so always >= 1; this shifts the mean up by about 0.5 token),
    then capped at ``max`` if one is given (an explicit truncation), else at ``MAX_TOKENS`` (counted in the
    workload notes).
    """

    kind: Literal["lognormal"] = "lognormal"
    mean: float = Field(gt=0, le=MAX_TOKENS)
    """Mean length, tokens."""
    cv: float = Field(default=1.0, gt=0, le=MAX_CV)
    """Coefficient of variation (std / mean)."""
    max: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    """Optional cap, tokens: longer draws are set to ``max``."""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        sigma = math.sqrt(math.log1p(self.cv * self.cv))
        mu = math.log(self.mean) - 0.5 * sigma * sigma
        cap = MAX_TOKENS if self.max is None else self.max
        # cap in float, before the int conversion: a far tail draw cannot overflow int64
        return np.ceil(np.minimum(rng.lognormal(mu, sigma, n), cap)).astype(np.int64)


def _int_is_fixed(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("a length must be an int or a distribution, not a bool")
    if isinstance(v, int):
        return {"kind": "fixed", "value": v}
    return v


LengthDist = Annotated[
    Union[FixedLength, UniformLength, LognormalLength],
    Field(discriminator="kind"),
    BeforeValidator(_int_is_fixed),
]
"""One length distribution; a plain int ``n`` means ``{kind: fixed, value: n}``."""


class SeparateLengths(_Model):
    """Prompt and output lengths drawn independently (prompt first, then output, from the stream's lengths RNG)."""

    kind: Literal["separate"] = "separate"
    prompt: LengthDist = UniformLength()
    """Prompt length distribution (default uniform [8, 512), as S-LoRA)."""
    output: LengthDist = UniformLength()
    """Output length distribution (default uniform [8, 512), as S-LoRA)."""


class EmpiricalLengths(_Model):
    """(prompt, output) pairs sampled jointly, uniformly with replacement, from the rows of a CSV length table.

    Example: ShareGPT first turns as the vLLM benchmark filters them for Llama-3
    (``path: traces/sharegpt/sharegpt_v3_first_turn_lengths.csv``, ``prompt_column: prompt_len_llama3``,
    ``output_column: output_len_llama3``, ``filter_column: vllm_keep_llama3``).
    """

    kind: Literal["empirical"] = "empirical"
    path: str
    """CSV file, absolute, relative to the working directory, or relative to the data directory."""
    prompt_column: str
    """Column holding prompt lengths (tokens)."""
    output_column: str
    """Column holding output lengths (tokens)."""
    filter_column: str | None = None
    """Optional 0/1 column: only rows where it is nonzero are sampled."""


LengthsConfig = Annotated[
    Union[Annotated[SeparateLengths, Tag("separate")], Annotated[EmpiricalLengths, Tag("empirical")]],
    Discriminator(kind_or("separate")),
]
"""A stream's ``lengths:`` block: separate distributions (default, no ``kind`` needed) or ``kind: empirical``."""


TableCache = dict[tuple[str, str, str, str | None], tuple[np.ndarray, np.ndarray]]
"""(path, prompt_col, output_col, filter_col) -> (prompts, outputs) of the kept rows."""


def sample_lengths(
    cfg: SeparateLengths | EmpiricalLengths,
    rng: np.random.Generator,
    n: int,
    data_dir: str | Path | None,
    cache: TableCache | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` (prompt, output) length pairs.

    Returns:
        Two int64 arrays of length ``n``, every value >= 1.
    """
    if isinstance(cfg, SeparateLengths):
        return cfg.prompt.sample(rng, n), cfg.output.sample(rng, n)
    prompts, outputs = load_length_table(cfg, data_dir, cache)
    idx = rng.integers(0, len(prompts), n)
    return prompts[idx], outputs[idx]


def load_length_table(
    cfg: EmpiricalLengths, data_dir: str | Path | None, cache: TableCache | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate the kept rows of a length table.

    Raises:
        DataFileError: missing file or column, a non-integer or < 1 length in a kept row (with its line number),
            or no row left after the filter.
    """
    path = data_file(cfg.path, data_dir)
    key = (str(path), cfg.prompt_column, cfg.output_column, cfg.filter_column)
    if cache is not None and key in cache:
        return cache[key]
    cols = [cfg.prompt_column, cfg.output_column] + ([cfg.filter_column] if cfg.filter_column else [])
    df, lines = read_csv_strings(path, cols)
    keep = np.ones(len(df), dtype=bool)
    if cfg.filter_column:
        keep = numbers(df[cfg.filter_column], path, cfg.filter_column, lines, integer=False, min_value=None) != 0
    if not keep.any():
        raise DataFileError(path, f"no rows left after filter column {cfg.filter_column!r}")
    out = [numbers(df[c].loc[keep], path, c, lines[keep], integer=True, min_value=1)
           for c in (cfg.prompt_column, cfg.output_column)]
    result = (out[0], out[1])
    if cache is not None:
        cache[key] = result
    return result

