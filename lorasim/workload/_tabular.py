"""Reading CSV and JSONL tables with exact 1-based line numbers for error messages.

Rows are read as strings (pandas C parser or ``json.loads`` per line), validated with vectorised numpy, and only
the first offending row is located, so a 20k-row trace loads in tens of milliseconds. Blank lines are skipped but
still counted. CSV fields spanning several lines (quoted newlines) are not supported in traces.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from lorasim.errors import DataFileError

MISSING = object()
"""Placeholder for an optional JSONL field absent from a record (``null`` stays ``None``)."""


def open_text(path: Path) -> IO[str]:
    """Open a (possibly ``.gz``) text file."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


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

    Returns:
        ``(df, lines)``: the non-blank data rows and the 1-based file line of each.

    Raises:
        DataFileError: empty file, missing column (line 1), a row with too many fields, or no data rows.
    """
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
    except pd.errors.EmptyDataError:
        raise DataFileError(path, "empty file (no header line)", line=1) from None
    except (UnicodeDecodeError, pd.errors.ParserError) as e:
        raise DataFileError(path, f"cannot parse the CSV header ({e})", line=1) from None
    missing = [c for c in required if c not in header]
    if missing:
        raise DataFileError(path, f"missing column(s) {missing}; the header has {header}", line=1)
    usecols = list(required) + [c for c in optional if c in header]
    try:
        df = pd.read_csv(path, usecols=usecols, dtype=str, keep_default_na=False, na_filter=False,
                         skip_blank_lines=False)
    except pd.errors.ParserError as e:
        m = re.search(r"line (\d+)", str(e))
        raise DataFileError(path, f"malformed row ({e})", line=int(m.group(1)) if m else None) from None
    lines = np.arange(len(df), dtype=np.int64) + 2
    blank = np.ones(len(df), dtype=bool)
    for c in usecols:
        blank &= (df[c].str.strip() == "").to_numpy()
    if blank.any():
        df = df.loc[~blank].reset_index(drop=True)
        lines = lines[~blank]
    if len(df) == 0:
        raise DataFileError(path, "no data rows after the header", line=2)
    return df, lines


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
            integer: bool, min_value: float | None = 0) -> np.ndarray:
    """Validate and convert a column of raw values (strings or JSON scalars).

    Each value must be a finite number, ``>= min_value`` (if given) and, with ``integer``, integral.

    Returns:
        float64 array (``integer=False``) or int64 array.

    Raises:
        DataFileError: naming the field, the offending value and its line.
    """
    s = raw if isinstance(raw, pd.Series) else pd.Series(list(raw), dtype=object)
    if s.dtype == object:  # JSON: bools are not numbers; strings must not be silently parsed
        bad_type = s.map(lambda v: isinstance(v, bool) or not isinstance(v, (int, float))).to_numpy(dtype=bool)
        num = pd.to_numeric(s.where(~bad_type, None), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    else:
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(num)
    if min_value is not None:
        bad |= num < min_value
    if integer:
        bad |= num != np.floor(num)
    if bad.any():
        i = int(np.argmax(bad))
        v = s.iloc[i]
        why = "expected a JSON number" if s.dtype == object and bad_type[i] and v is not None else \
            _why(v, num[i], integer, min_value)
        raise DataFileError(path, f"{field}: {why} (value {v!r})", line=int(lines[i]))
    return num.astype(np.int64) if integer else num


def _why(raw: Any, num: float, integer: bool, min_value: float | None) -> str:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return "missing value"
    if np.isnan(num):
        if isinstance(raw, float) or (isinstance(raw, str) and raw.strip().lower() == "nan"):
            return "NaN"
        return "not a number"
    if np.isinf(num):
        return "infinite value"
    if min_value is not None and num < min_value:
        return "negative value" if min_value == 0 else f"value below {min_value:g}"
    return "not an integer"


def first_decrease(t: np.ndarray) -> int | None:
    """Index of the first element smaller than its predecessor, or None if ``t`` is non-decreasing."""
    if len(t) < 2:
        return None
    d = np.diff(t) < 0
    return int(np.argmax(d)) + 1 if d.any() else None
