"""Trace readers: Azure LLM inference 2023, Mooncake, and a generic CSV / JSONL format.

Every reader returns a :class:`TraceData` whose times are seconds from the start of the trace:

* ``azure`` — ``TIMESTAMP,ContextTokens,GeneratedTokens`` (Patel et al., *Splitwise*, ISCA'24; Azure LLM inference
  trace 2023). TIMESTAMP is a wall-clock time with up to 7 fractional digits (100 ns); time 0 is the first row.
* ``mooncake`` — JSON lines with ``timestamp`` (ms), ``input_length``, ``output_length`` (Qin et al., *Mooncake*,
  FAST'25); time 0 is the first row (0 in the published traces). Other fields (``hash_ids``) are ignored.
* ``csv`` / ``jsonl`` — lorasim's generic format: ``arrival_time_s``, ``prompt_tokens``, ``output_tokens`` and an
  optional ``adapter`` (empty or null = base model). Times are used as given (time 0 is the simulation's 0).

Validation (vectorised; the first bad row is reported as ``DataFileError(path, message, line)`` with its 1-based
line): missing column or field, a CSV row with too many or too few fields, non-numeric, NaN, negative,
non-integer or too large (> ``MAX_TOKENS``) token counts, unparseable, decreasing or out-of-range (> ``MAX_TIME_S``
from the start) timestamps (equal timestamps are allowed), Azure timestamps mixing UTC offsets and none, empty
file. Token counts of 0 are an error by default; with ``zero_tokens="one"`` they become 1 and are counted in
``TraceData.num_zero_prompt`` / ``num_zero_output`` (reported in the run's notes, not as a warning).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from lorasim._model import MAX_TIME_S, MAX_TOKENS
from lorasim.errors import DataFileError
from lorasim.workload._tabular import MISSING, first_decrease, first_line, numbers, read_csv_strings, read_jsonl_records

TraceFormat = Literal["auto", "azure", "mooncake", "csv", "jsonl"]
ZeroTokens = Literal["error", "one"]

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length")
GENERIC_FIELDS = ("arrival_time_s", "prompt_tokens", "output_tokens")


@dataclass(frozen=True, slots=True)
class TraceData:
    """A validated trace, one entry per request, in file order (times non-decreasing).

    Attributes:
        path: the file read.
        format: the format used (``azure``, ``mooncake``, ``csv``, ``jsonl``).
        arrival_s: float64 arrival times, seconds from the trace start.
        prompt_tokens: int64 prompt lengths (>= 1).
        output_tokens: int64 output lengths (>= 1).
        adapter: object array of adapter names (``None`` = base model), or ``None`` if the trace has no adapters.
        lines: int64 1-based file line of each request.
        num_zero_prompt: prompt lengths of 0 raised to 1 (``zero_tokens="one"``).
        num_zero_output: output lengths of 0 raised to 1 (``zero_tokens="one"``).
    """

    path: Path
    format: str
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    adapter: np.ndarray | None
    lines: np.ndarray
    num_zero_prompt: int = 0
    num_zero_output: int = 0

    def __len__(self) -> int:
        return len(self.arrival_s)


def detect_format(path: Path) -> str:
    """Guess a trace's format from its first non-blank line (CSV header or first JSON object).

    Raises:
        DataFileError: empty file or an unrecognised header / record.
    """
    head = first_line(path)
    if not head:
        raise DataFileError(path, "empty file", line=1)
    if head.startswith("{"):
        try:
            keys = set(json.loads(head))
        except (json.JSONDecodeError, TypeError):
            raise DataFileError(path, "the first record is not a JSON object", line=None) from None
        if set(MOONCAKE_FIELDS) <= keys:
            return "mooncake"
        if set(GENERIC_FIELDS) <= keys:
            return "jsonl"
        raise DataFileError(path, f"unrecognised JSONL trace: fields {sorted(keys)}; expected Mooncake "
                                  f"{list(MOONCAKE_FIELDS)} or generic {list(GENERIC_FIELDS)} (+ adapter)")
    cols = {c.strip() for c in head.split(",")}
    if set(AZURE_COLUMNS) <= cols:
        return "azure"
    if set(GENERIC_FIELDS) <= cols:
        return "csv"
    raise DataFileError(path, f"unrecognised trace header {head[:200]!r}; expected Azure {list(AZURE_COLUMNS)}, "
                              f"generic {list(GENERIC_FIELDS)} (+ adapter), or JSON lines", line=1)


MAX_SKIPPED_ROWS = 1000


def read_trace_skipping(path: Path, fmt: TraceFormat = "auto", zero_tokens: ZeroTokens = "error"
                        ) -> tuple[TraceData, list[tuple[int, str]]]:
    """:func:`read_trace`, leaving out the rows it would refuse (``--skip-bad-rows``).

    A row-level error (one naming a line after the header) drops that line and the file is read again without it,
    until it reads cleanly; errors about the file as a whole (missing, empty, unknown header or format) still raise.

    Returns:
        ``(trace, skipped)``: ``skipped`` lists ``(line, message)`` of the left-out rows, lines of the original file.

    Raises:
        DataFileError: a whole-file error, or more than ``MAX_SKIPPED_ROWS`` bad rows.
    """
    import os
    import tempfile

    path = Path(path)
    try:
        return read_trace(path, fmt, zero_tokens), []
    except DataFileError as exc:
        if exc.line is None or exc.line <= 1:
            raise
    if fmt == "auto":
        fmt = detect_format(path)
    text = path.read_bytes().decode("utf-8", errors="replace").splitlines(keepends=True)
    header = 0 if fmt in ("mooncake", "jsonl") else 1
    kept = list(range(len(text)))  # indices (0-based) of the original lines still in the file
    skipped: list[tuple[int, str]] = []
    fd, tmp = tempfile.mkstemp(suffix=path.suffix, prefix=".lorasim-trace-")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        while True:
            tmp_path.write_text("".join(text[i] for i in kept))
            try:
                tr = read_trace(tmp_path, fmt, zero_tokens)
            except DataFileError as exc:
                if exc.line is None or exc.line <= header:
                    raise DataFileError(path, exc.message) from None
                orig = kept[exc.line - 1]
                skipped.append((orig + 1, exc.message))
                if len(skipped) > MAX_SKIPPED_ROWS:
                    raise DataFileError(path, f"more than {MAX_SKIPPED_ROWS} bad rows (the first at line "
                                              f"{skipped[0][0]}: {skipped[0][1]}); is it the right file and format?")
                del kept[exc.line - 1]
                continue
            lines = np.asarray([kept[int(k) - 1] + 1 for k in tr.lines], dtype=np.int64)
            return TraceData(path, tr.format, tr.arrival_s, tr.prompt_tokens, tr.output_tokens, tr.adapter, lines,
                             tr.num_zero_prompt, tr.num_zero_output), sorted(skipped)
    finally:
        tmp_path.unlink(missing_ok=True)


def read_trace(path: Path, fmt: TraceFormat = "auto", zero_tokens: ZeroTokens = "error") -> TraceData:
    """Read and validate a trace file.

    Args:
        path: an existing file (resolve scenario paths with :func:`lorasim.paths.data_file` first).
        fmt: the format, or ``auto`` to detect it from the first line.
        zero_tokens: ``error`` (default) rejects a 0 token count; ``one`` raises it to 1 and counts it.

    Raises:
        DataFileError: missing file or malformed content, with the 1-based line where one applies.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "file not found")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "azure":
        df, lines = read_csv_strings(path, AZURE_COLUMNS)
        t = _azure_times(df["TIMESTAMP"], path, lines)
        prompt_raw, output_raw, adapter = df["ContextTokens"], df["GeneratedTokens"], None
        names = ("ContextTokens", "GeneratedTokens")
    elif fmt == "mooncake":
        cols, lines = read_jsonl_records(path, MOONCAKE_FIELDS)
        ms = numbers(cols["timestamp"], path, "timestamp", lines, integer=False, min_value=None)
        _check_sorted(ms, path, "timestamp", lines)
        with np.errstate(over="ignore"):  # a span beyond the float range becomes inf, refused just below
            t = (ms - ms[0]) / 1000.0
        _check_span(t, path, "timestamp", lines)
        prompt_raw, output_raw, adapter = cols["input_length"], cols["output_length"], None
        names = ("input_length", "output_length")
    elif fmt in ("csv", "jsonl"):
        if fmt == "csv":
            df, lines = read_csv_strings(path, GENERIC_FIELDS, optional=("adapter",))
            raw = {c: df[c] for c in df.columns}
            adapter = _adapter_names(df["adapter"].tolist()) if "adapter" in df.columns else None
        else:
            raw, lines = read_jsonl_records(path, GENERIC_FIELDS, optional=("adapter",))
            present = any(v is not MISSING for v in raw["adapter"])
            adapter = _adapter_names(raw["adapter"], path, lines) if present else None
        t = numbers(raw["arrival_time_s"], path, "arrival_time_s", lines, integer=False, min_value=0,
                    max_value=MAX_TIME_S, unit=" s")
        _check_sorted(t, path, "arrival_time_s", lines)
        prompt_raw, output_raw = raw["prompt_tokens"], raw["output_tokens"]
        names = ("prompt_tokens", "output_tokens")
    else:
        raise DataFileError(path, f"unknown trace format {fmt!r}; use auto, azure, mooncake, csv or jsonl")
    prompt = numbers(prompt_raw, path, names[0], lines, integer=True, min_value=0, max_value=MAX_TOKENS,
                     unit=" tokens")
    output = numbers(output_raw, path, names[1], lines, integer=True, min_value=0, max_value=MAX_TOKENS,
                     unit=" tokens")
    nz_prompt = _zeros(prompt, path, names[0], lines, zero_tokens)
    nz_output = _zeros(output, path, names[1], lines, zero_tokens)
    return TraceData(path, fmt, t, prompt, output, adapter, lines, nz_prompt, nz_output)


_TICKS_PER_S = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def _azure_times(raw: pd.Series, path: Path, lines: np.ndarray) -> np.ndarray:
    """Azure TIMESTAMP strings -> seconds from the first row (exact to the parsed resolution, 100 ns here).

    Either every timestamp has a UTC offset (they are compared in UTC) or none has; a mix is refused, as is an
    unparseable one, a decrease, or a span beyond ``MAX_TIME_S``.
    """
    ts = _parse_datetimes(raw, utc=False)
    if ts is None:  # pandas refused the column as a whole: mixed offsets, or timestamps with and without one
        _first_bad_timestamp(raw, path, lines)
        ts = _parse_datetimes(raw, utc=True)  # every row has an offset, not all the same
        if ts is None:
            raise DataFileError(path, "TIMESTAMP: cannot parse the column as date-times", line=int(lines[0]))
    bad = ts.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataFileError(path, f"TIMESTAMP: cannot parse {raw.iloc[i]!r} as a date-time", line=int(lines[i]))
    if ts.dt.tz is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    values = ts.to_numpy()
    unit, count = np.datetime_data(values.dtype)
    if unit not in _TICKS_PER_S or count != 1:  # pandas parses to s, ms, us or ns
        raise DataFileError(path, f"TIMESTAMP: unexpected date-time resolution {values.dtype}", line=int(lines[0]))
    ticks, per_s = values.view(np.int64), _TICKS_PER_S[unit]
    _check_sorted(ticks, path, "TIMESTAMP", lines)
    d = ticks - ticks[0]  # >= 0 since sorted; a span beyond the int64 range wraps to < 0
    over = (d < 0) | (d > int(MAX_TIME_S) * per_s)
    if over.any():
        i = int(np.argmax(over))
        raise DataFileError(path, f"TIMESTAMP: {raw.iloc[i]!r} is more than the limit of {int(MAX_TIME_S)} s after "
                                  f"the first row ({raw.iloc[0]!r})", line=int(lines[i]))
    return d.astype(np.float64) / per_s


def _parse_datetimes(raw: pd.Series, utc: bool) -> pd.Series | None:
    """ISO 8601 parse (unparseable -> NaT), or None where pandas refuses the column or warns about it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return pd.to_datetime(raw, format="ISO8601", errors="coerce", utc=utc)
    except (ValueError, TypeError, OverflowError, Warning):
        return None


def _first_bad_timestamp(raw: pd.Series, path: Path, lines: np.ndarray) -> None:
    """Raise for the first row that cannot be parsed alone, or whose UTC offset presence differs from row 1's."""
    first_aware: bool | None = None
    for i, v in enumerate(raw):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                x = pd.to_datetime(v, format="ISO8601")
        except (ValueError, TypeError, OverflowError, Warning):
            raise DataFileError(path, f"TIMESTAMP: cannot parse {v!r} as a date-time", line=int(lines[i])) from None
        if x is pd.NaT:
            raise DataFileError(path, f"TIMESTAMP: cannot parse {v!r} as a date-time", line=int(lines[i]))
        aware = x.tzinfo is not None
        if first_aware is None:
            first_aware = aware
        elif aware != first_aware:
            has, lacks = ("has a", "has none") if aware else ("has no", "has one")
            raise DataFileError(path, f"TIMESTAMP: {v!r} {has} UTC offset but the first row ({raw.iloc[0]!r}, "
                                      f"line {int(lines[0])}) {lacks}; give every timestamp an offset or none",
                                line=int(lines[i]))


def _check_span(t: np.ndarray, path: Path, field: str, lines: np.ndarray) -> None:
    """Refuse a trace time (seconds from the first row) beyond ``MAX_TIME_S``."""
    over = t > MAX_TIME_S
    if over.any():
        i = int(np.argmax(over))
        raise DataFileError(path, f"{field}: {t[i]:g} s after the first row, beyond the limit of {int(MAX_TIME_S)} s",
                            line=int(lines[i]))


def _check_sorted(t: np.ndarray, path: Path, field: str, lines: np.ndarray) -> None:
    i = first_decrease(t)
    if i is not None:
        raise DataFileError(path, f"{field}: timestamps must be non-decreasing; this row is earlier than the "
                                  f"previous one (line {int(lines[i - 1])})", line=int(lines[i]))


def _zeros(v: np.ndarray, path: Path, field: str, lines: np.ndarray, policy: ZeroTokens) -> int:
    zero = v == 0
    if not zero.any():
        return 0
    if policy == "error":
        i = int(np.argmax(zero))
        raise DataFileError(path, f"{field}: 0 tokens ({int(zero.sum())} such rows; a request needs >= 1; set the "
                                  f"stream's zero_tokens: one to count them as 1)", line=int(lines[i]))
    v[zero] = 1
    return int(zero.sum())


def _adapter_names(raw: list, path: Path | None = None, lines: np.ndarray | None = None) -> np.ndarray | None:
    """Adapter column -> object array of str / None (empty, null or absent = base model)."""
    out = np.empty(len(raw), dtype=object)
    for i, v in enumerate(raw):
        if v is None or v is MISSING or (isinstance(v, str) and not v.strip()):
            out[i] = None
        elif isinstance(v, str):
            out[i] = v.strip()
        else:
            assert path is not None and lines is not None
            raise DataFileError(path, f"adapter: expected a name or null, got {v!r}", line=int(lines[i]))
    return out
