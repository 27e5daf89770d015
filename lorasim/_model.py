"""The base of every validated input model (scenario sections, profiles)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class InputModel(BaseModel):
    """Frozen, unknown keys rejected, no NaN or infinity unless a field allows it (``Field(allow_inf_nan=True)``);
    attribute docstrings become field descriptions."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True)


# Upper bounds on input values: far beyond any real deployment, low enough that arithmetic stays exact and memory
# bounded (a value above one is a typo, and is refused naming the field).
MAX_TOKENS = 10_000_000
"""Most tokens in one prompt or output."""
MAX_REQUESTS = 100_000_000
"""Most requests in one stream."""
MAX_ADAPTERS = 1_000_000
"""Most adapters in one scenario."""
MAX_RATE = 1e6
"""Highest arrival rate, requests per second."""
MIN_RATE = 1e-9
"""Lowest arrival rate, requests per second."""
MAX_TIME_S = 1e9
"""Latest time or longest duration, seconds (about 32 years)."""
MAX_CV = 100.0
"""Largest coefficient of variation."""
