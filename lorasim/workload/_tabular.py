"""Reading CSV and JSONL tables with exact 1-based line numbers for error messages.

Rows are read as strings (the ``csv`` module, which also checks every row's field count, or ``json.loads`` per
line), validated with vectorised numpy, and only the first offending row is located, so a 20k-row trace loads in
tens of milliseconds. Blank lines are skipped but still counted; a CSV row whose quoted field spans several lines
is reported at its last line.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from lorasim._model import MAX_TOKENS
from lorasim.errors import DataFileError

MISSING = object()
"""Placeholder for an optional JSONL field absent from a record (``null`` stays ``None``)."""


def open_text(path: Path, newline: str | None = None) -> IO[str]:
    """Open a (possibly ``.gz``) UTF-8 text file (a leading byte-order mark is dropped)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline=newline)
    return open(path, encoding="utf-8-sig", newline=newline)


def first_line(path: Path) -> str:
    """The first non-blank line of a file (``""`` for an empty file)."""
    try:
        with open_text(path) as f:
            for line in f:
                if line.strip():
                    return line.strip()
    except (OSError, UnicodeDecodeError) as e:
        raise DataFileError(path, f"cannot read file ({e})") from None
    return ""


def read_csv_strings(
    path: Path, required: Sequence[str], optional: Sequence[str] = ()
) -> tuple[pd.DataFrame, np.ndarray]:
    """Read the named columns of a CSV as strings.

    The header is the first non-blank line; every other non-blank line must have exactly as many fields as the
    header (blank or whitespace-only lines are skipped but counted). Column names are stripped of spaces.

    Returns:
        ``(df, lines)``: the data rows and the 1-based file line of each.

    Raises:
        DataFileError: empty file, missing or duplicated column (header line), a row with too many or too few
            fields, a malformed row, or no data rows.
    """
    usecols: list[str] = []
    idx: list[int] = []
    cols: list[list[str]] = []
    lines: list[int] = []
    header: list[str] | None = None
    header_line = 0
    reader = None
    try:
        with open_text(path, newline="") as f:
            reader = csv.reader(f)
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if header is None:
                    header, header_line = [h.strip() for h in row], reader.line_num
                    usecols, idx = _columns(path, header, header_line, required, optional)
                    cols = [[] for _ in usecols]
                    continue
                if len(row) != len(header):
                    raise DataFileError(path, f"expected {len(header)} fields, got {len(row)}", line=reader.line_num)
                for c, k in zip(cols, idx):
                    c.append(row[k])
                lines.append(reader.line_num)
    except csv.Error as e:
        raise DataFileError(path, f"malformed row ({e})", line=reader.line_num if reader else None) from None
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataFileError(path, f"cannot read file ({e})") from None
    if header is None:
        raise DataFileError(path, "empty file (no header line)", line=1)
    if not lines:
        raise DataFileError(path, "no data rows after the header", line=header_line + 1)
    df = pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in zip(usecols, cols)})
    return df, np.asarray(lines, dtype=np.int64)


def _columns(path: Path, header: list[str], line: int, required: Sequence[str], optional: Sequence[str]
             ) -> tuple[list[str], list[int]]:
    """The columns to keep (required, then the optional ones present) and their positions in the header."""
    missing = [c for c in required if c not in header]
    if missing:
        raise DataFileError(path, f"missing column(s) {missing}; the header has {header}", line=line)
    usecols = list(required) + [c for c in optional if c in header]
    twice = [c for c in usecols if header.count(c) > 1]
    if twice:
        raise DataFileError(path, f"column(s) {twice} appear more than once in the header", line=line)
    return usecols, [header.index(c) for c in usecols]


def read_jsonl_records(
    path: Path, required: Sequence[str], optional: Sequence[str] = ()
) -> tuple[dict[str, list[Any]], np.ndarray]:
    """Read the named fields of a JSON-lines file (one object per line; blank lines skipped).

    Returns:
        ``(columns, lines)``: field -> list of raw values (:data:`MISSING` where an optional field is absent), and the
        1-based line of each record.

    Raises:
        DataFileError: invalid JSON, a line that is not an object, a missing required field, or an empty file.
    """
    cols: dict[str, list[Any]] = {k: [] for k in (*required, *optional)}
    lines: list[int] = []
    try:
        with open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataFileError(path, f"invalid JSON ({e.msg})", line=lineno) from None
                except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4300 digits
                    raise DataFileError(path, f"invalid JSON ({str(e).splitlines()[0]})", line=lineno) from None
                if not isinstance(rec, dict):
                    raise DataFileError(path, "expected a JSON object per line", line=lineno)
                for k in required:
                    if k not in rec:
                        raise DataFileError(path, f"missing field {k!r} (fields: {sorted(rec)})", line=lineno)
                    cols[k].append(rec[k])
                for k in optional:
                    cols[k].append(rec.get(k, MISSING))
                lines.append(lineno)
    except (OSError, UnicodeDecodeError) as e:
        raise DataFileError(path, f"cannot read file ({e})") from None
    if not lines:
        raise DataFileError(path, "empty file (no records)", line=1)
    return cols, np.asarray(lines, dtype=np.int64)


def numbers(raw: Sequence[Any] | pd.Series, path: Path, field: str, lines: np.ndarray, *,
            integer: bool, min_value: float | None = 0, max_value: float | None = None,
            unit: str = "") -> np.ndarray:
    """Validate and convert a column of raw values (strings or JSON scalars).

    Each value must be a finite number, ``>= min_value`` (if given), ``<= max_value`` and, with ``integer``,
    integral. Integer columns are token counts: their ``max_value`` defaults to ``MAX_TOKENS`` (it keeps the
    conversion to int64 exact).

    Returns:
        float64 array (``integer=False``) or int64 array.

    Raises:
        DataFileError: naming the field, the offending value and its line.
    """
    if integer and max_value is None:
        max_value, unit = MAX_TOKENS, unit or " tokens"
    s = raw if isinstance(raw, pd.Series) else pd.Series(list(raw), dtype=object)
    bad_type = np.zeros(len(s), dtype=bool)
    if not isinstance(raw, pd.Series):
        # JSON values: bools are not numbers, strings must not be silently parsed, huge ints become +-inf
        bad_type = s.map(lambda v: isinstance(v, bool) or not isinstance(v, (int, float))).to_numpy(dtype=bool)
        num = np.array([np.nan if b else _float(v) for v, b in zip(s, bad_type)], dtype=np.float64)
    else:
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(num)
    with np.errstate(invalid="ignore"):
        if min_value is not None:
            bad |= num < min_value
        if max_value is not None:
            bad |= num > max_value
        if integer:
            bad |= num != np.floor(num)
    if bad.any():
        i = int(np.argmax(bad))
        v = s.iloc[i]
        why = "expected a JSON number" if bad_type[i] and v is not None else \
            _why(v, num[i], integer, min_value, max_value, unit)
        shown = repr(v)
        if len(shown) > 40:
            shown = shown[:30] + "..." + shown[-6:]
        raise DataFileError(path, f"{field}: {why} (value {shown})", line=int(lines[i]))
    return num.astype(np.int64) if integer else num


def _float(v: float) -> float:
    try:
        return float(v)
    except OverflowError:  # an int beyond the float range
        return math.inf if v > 0 else -math.inf


def _why(raw: Any, num: float, integer: bool, min_value: float | None, max_value: float | None, unit: str) -> str:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return "missing value"
    if np.isnan(num):
        if isinstance(raw, float) or (isinstance(raw, str) and raw.strip().lower() == "nan"):
            return "NaN"
        return "not a number"
    if np.isinf(num) and (isinstance(raw, float) or (isinstance(raw, str) and "inf" in raw.lower())):
        return "infinite value"
    if min_value is not None and num < min_value:
        return "negative value" if min_value == 0 else f"value below {min_value:g}"
    if max_value is not None and num > max_value:
        limit = f"{int(max_value)}" if max_value == int(max_value) and max_value < 1e16 else f"{max_value:g}"
        return f"value above the limit of {limit}{unit}"
    if np.isinf(num):
        return "value out of range"
    return "not an integer"


def first_decrease(t: np.ndarray) -> int | None:
    """Index of the first element smaller than its predecessor, or None if ``t`` is non-decreasing."""
    if len(t) < 2:
        return None
    d = np.diff(t) < 0
    return int(np.argmax(d)) + 1 if d.any() else None
