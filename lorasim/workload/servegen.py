"""ServeGen per-client arrival statistics (``traces/servegen/language/<pool>/chunk-N-trace.csv``).

Each headerless row is one 600 s window of one client: ``window_start_s, rate (req/s), cv, pattern (Gamma, Weibull or
empty), shape, scale``; ``shape``/``scale`` parametrise the inter-arrival distribution of that window (ServeGen's
``clientpool.py``). A window with rate 0 sends nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lorasim.errors import DataFileError

WINDOW_S = 600.0


@dataclass(frozen=True)
class ClientTable:
    """One client's windows (arrays of equal length, sorted by start)."""

    path: Path
    start_s: np.ndarray
    rate: np.ndarray
    pattern: np.ndarray  # "Gamma", "Weibull" or "" per window
    shape: np.ndarray
    scale: np.ndarray

    def mean_rate(self, t0: float, t1: float) -> float:
        """Mean recorded rate over ``[t0, t1)`` of trace time, req/s (windows weighted by their overlap)."""
        lo = np.maximum(self.start_s, t0)
        hi = np.minimum(self.start_s + WINDOW_S, t1)
        overlap = np.clip(hi - lo, 0.0, None)
        return float((self.rate * overlap).sum() / (t1 - t0))


def read_client(root: Path, k: int) -> ClientTable:
    """Read client ``k`` of a pool directory.

    Raises:
        DataFileError: the file is missing, or a row is malformed (the line is named).
    """
    path = root / f"chunk-{k}-trace.csv"
    if not path.exists():
        raise DataFileError(path, f"no such client file (the pool {root} has clients 0..N-1; ask for fewer clients)")
    starts, rates, patterns, shapes, scales = [], [], [], [], []
    with open(path) as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            f = line.rstrip("\n").split(",")
            if len(f) != 6:
                raise DataFileError(path, f"expected 6 fields (window_start_s, rate, cv, pattern, shape, scale), "
                                          f"got {len(f)}", line=line_no)
            try:
                start, rate = float(f[0]), float(f[1])
                shape, scale = float(f[4] or 0), float(f[5] or 0)
            except ValueError:
                raise DataFileError(path, "a non-numeric window_start_s, rate, shape or scale", line=line_no) from None
            if not (math.isfinite(start) and math.isfinite(rate) and rate >= 0 and start >= 0):
                raise DataFileError(path, f"window_start_s {f[0]!r} and rate {f[1]!r} must be finite and >= 0",
                                    line=line_no)
            if f[3] not in ("", "Gamma", "Weibull"):
                raise DataFileError(path, f"unknown pattern {f[3]!r} (Gamma, Weibull or empty)", line=line_no)
            starts.append(start)
            rates.append(rate)
            patterns.append(f[3])
            shapes.append(shape)
            scales.append(scale)
    order = np.argsort(starts, kind="stable")
    return ClientTable(path, np.asarray(starts)[order], np.asarray(rates)[order], np.asarray(patterns)[order],
                       np.asarray(shapes)[order], np.asarray(scales)[order])


def client_arrivals(tb: ClientTable, t0: float, t1: float, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times (trace seconds) of one client over ``[t0, t1)``, every rate multiplied by ``factor``.

    Within each window the gaps follow the window's Gamma or Weibull fit, rescaled so that their mean is
    ``1 / (rate x factor)`` (Poisson when the window has no fit); a renewal process restarts at each window.
    """
    out = []
    for start, rate, pat, shape, scale in zip(tb.start_s, tb.rate, tb.pattern, tb.shape, tb.scale):
        lo, hi = max(start, t0), min(start + WINDOW_S, t1)
        r = rate * factor
        if hi <= lo or r <= 0:
            continue
        mean_gap = 1.0 / r
        n = int((hi - lo) * r * 1.5) + 16
        t = lo
        while True:
            if pat == "Gamma" and shape > 0:
                gaps = rng.gamma(shape, mean_gap / shape, n)
            elif pat == "Weibull" and shape > 0:
                gaps = rng.weibull(shape, n) * (mean_gap / math.gamma(1.0 + 1.0 / shape))
            else:
                gaps = rng.exponential(mean_gap, n)
            ts = t + np.cumsum(gaps)
            keep = ts[ts < hi]
            out.append(keep)
            if len(keep) < n:
                break
            t = float(ts[-1])
    return np.concatenate(out) if out else np.empty(0)
