"""Named, independent random streams from one root seed.

``RngStreams(seed).get("arrivals")`` always returns the same ``numpy.random.Generator`` for the same
``(seed, name)`` pair, independent of which other streams exist or in which order they are created, so adding a
component never shifts the draws of another. No module-level or global random state is used anywhere in lorasim.
"""

from __future__ import annotations

import zlib

import numpy as np


class RngStreams:
    """Factory of named ``numpy.random.Generator`` streams.

    Args:
        seed: the root seed (non-negative int).
    """

    def __init__(self, seed: int):
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed = int(seed)
        self._streams: dict[str, np.random.Generator] = {}  # name -> generator

    def get(self, name: str) -> np.random.Generator:
        """Return the generator for ``name``, creating it from ``SeedSequence([seed, crc32(name)])``."""
        gen = self._streams.get(name)
        if gen is None:
            ss = np.random.SeedSequence([self.seed, zlib.crc32(name.encode("utf-8"))])
            gen = np.random.Generator(np.random.PCG64(ss))
            self._streams[name] = gen
        return gen
