"""Small numerical helpers for the fits: non-negative weighted least squares, error metrics, run splits.

numpy only (no scipy). Every routine is deterministic: same inputs, same floating-point operations.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from pathlib import Path

import numpy as np


def nnls_gram(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Minimise ``x' G x - 2 h' x`` subject to ``x >= 0`` by trying every support set (k <= ~10 unknowns).

    Args:
        gram: ``A'A`` (k x k, symmetric positive semi-definite).
        rhs: ``A'b`` (k).
    """
    k = len(rhs)
    best, best_obj = np.zeros(k), 0.0
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            idx = list(support)
            sub = gram[np.ix_(idx, idx)]
            sol, *_ = np.linalg.lstsq(sub, rhs[idx], rcond=1e-12)
            if (sol < 0).any():
                continue
            obj = float(sol @ sub @ sol - 2 * sol @ rhs[idx])
            if obj < best_obj - 1e-12 * max(1.0, abs(best_obj)):
                best, best_obj = np.zeros(k), obj
                best[idx] = sol
    return best


def fit_relative(x: np.ndarray, y: np.ndarray, obs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising ``sum w * ((x @ c - y) / obs)**2`` (relative error, weighted rows).

    Columns that are all zero get coefficient 0. Columns are scaled to unit norm before solving.
    """
    s = np.sqrt(w) / obs
    a = x * s[:, None]
    b = y * s
    norms = np.sqrt((a * a).sum(axis=0))
    live = norms > 0
    coef = np.zeros(x.shape[1])
    an = a[:, live] / norms[live]
    coef[live] = nnls_gram(an.T @ an, an.T @ b) / norms[live]
    return coef


def mape(pred: np.ndarray, obs: np.ndarray) -> float | None:
    """Mean absolute percentage error (%), None for no rows."""
    if len(obs) == 0:
        return None
    return float(np.mean(np.abs(pred - obs) / obs) * 100.0)


def r2(pred: np.ndarray, obs: np.ndarray) -> float | None:
    """Coefficient of determination, None for fewer than 2 rows."""
    if len(obs) < 2:
        return None
    ss_tot = float(((obs - obs.mean()) ** 2).sum())
    return 1.0 - float(((obs - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else None


def held_out(names: list[str], groups: list[str], every: int = 5, offset: int = 2) -> set[str]:
    """Hold out every ``every``-th run (sorted by name) of each group with at least ``every`` runs."""
    by_group: dict[str, list[str]] = {}
    for n, g in zip(names, groups):
        by_group.setdefault(g, [])
        if n not in by_group[g]:
            by_group[g].append(n)
    out: set[str] = set()
    for g in sorted(by_group):
        runs = sorted(by_group[g])
        if len(runs) >= every:
            out.update(r for i, r in enumerate(runs) if i % every == offset)
    return out


def sig(x: float, digits: int = 6) -> float:
    """``x`` rounded to ``digits`` significant digits (keeps the committed JSON stable across BLAS builds)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.{digits}g}")


def sig_all(obj):
    """Every float inside nested dicts and lists rounded with :func:`sig` (other values unchanged)."""
    if isinstance(obj, float):
        return sig(obj)
    if isinstance(obj, dict):
        return {k: sig_all(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [sig_all(v) for v in obj]
    return obj


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
