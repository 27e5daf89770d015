"""The operator-profile file: measured operator tables with full provenance, as one JSON document.

Written by ``lorasim calibrate run`` and read by ``lorasim calibrate fit`` (or by hand, to inspect a step with
:class:`~lorasim.perf.operators.OperatorStepTimeModel`). Layout::

    {"format": "lorasim-operator-profile/1", "name": "...", "model_shape": {...ModelShape...},
     "tensor_parallel_size": 1,
     "provenance": {"source": ..., "device": {"name", "kind", "memory_bytes"}, "date", "dtype", "command",
                    "torch_version", "python_version", "lorasim_version", "settings": {...}, "notes": [...]},
     "tables": {"linear": {"num_tokens": [...], "ops_ms": {"qkv_proj": [...], ...}},
                "attention_prefill": {"chunk_tokens": [...], "context_tokens": [...], "ms": [[...], ...]},
                "attention_decode": {"batch_size": [...], "kv_tokens_per_seq": [...], "ms": [[...], ...]},
                "lm_head": {"num_tokens": [...], "ms": [...]}, "embedding": ..., "cpu": ..., "all_reduce": ...,
                "lora": {"num_tokens", "num_adapters", "rank", "ms": [[[...]]], "kernel", "target_modules"},
                "h2d_copy": {"bytes": [...], "pinned_ms": [...], "pageable_ms": [...], "kind": "h2d"}}}

Every time is in milliseconds; see :mod:`lorasim.perf.operators` for each table's axes and units.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from lorasim._model import InputModel
from lorasim.errors import DataFileError
from lorasim.perf.operators import OperatorStepTimeModel, OperatorTables
from lorasim.perf.profile import one_line
from lorasim.perf.shapes import ModelShape

FORMAT = "lorasim-operator-profile/1"


class DeviceInfo(InputModel):
    """The device the tables were measured on."""

    name: str
    """Device name as the driver reports it (e.g. ``NVIDIA H200``), or the CPU model."""
    kind: Literal["cuda", "cpu"]
    memory_bytes: int | None = Field(default=None, ge=1)
    """Total device memory (host RAM for ``cpu``), bytes; None if unknown."""


class OperatorProvenance(InputModel):
    """Where the tables come from."""

    source: str
    """What produced them (``lorasim calibrate run``, a converter, by hand)."""
    device: DeviceInfo
    date: str
    """ISO 8601 date or time of the measurement."""
    dtype: str
    """Weights and activations dtype (``bfloat16``, ``float32``, ...)."""
    command: str
    """Command line that produced the file."""
    torch_version: str | None = None
    python_version: str | None = None
    lorasim_version: str | None = None
    cuda_version: str | None = None
    settings: dict[str, float | int | str | bool] = Field(default_factory=dict)
    """Measurement settings (warm-up and repeat counts, grid name, time budget)."""
    elapsed_s: float | None = Field(default=None, ge=0)
    """Wall time of the measurement."""
    notes: list[str] = Field(default_factory=list)
    """Anything a reader must know (fallbacks taken, flagged tables)."""


class OperatorProfile(InputModel):
    """An operator-profile document (module docstring)."""

    format: Literal["lorasim-operator-profile/1"] = FORMAT
    name: str
    model_shape: ModelShape
    """The (full, unsharded) model shape; tables are per tensor-parallel shard."""
    tensor_parallel_size: int = Field(default=1, ge=1)
    provenance: OperatorProvenance
    tables: OperatorTables

    def step_time_model(self, max_lora_rank: int = 16, lora_enabled: bool = True) -> OperatorStepTimeModel:
        """The composed step-time model of a server with these settings (see :class:`OperatorStepTimeModel`)."""
        return OperatorStepTimeModel(self.tables, self.model_shape, self.tensor_parallel_size,
                                     max_lora_rank=max_lora_rank, lora_enabled=lora_enabled)


def parse_operator_profile(data: dict, path: str | Path = "<operator profile>") -> OperatorProfile:
    """Validate a document already read.

    Raises:
        DataFileError: not a valid operator profile (the message names the first bad field).
    """
    try:
        return OperatorProfile.model_validate(data)
    except ValidationError as e:
        raise DataFileError(path, one_line(e, "operator profile")) from None


def load_operator_profile(path: str | Path) -> OperatorProfile:
    """Read and validate an operator-profile JSON file.

    Raises:
        DataFileError: the file is missing, not JSON, or not a valid operator profile (message names the field).
    """
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFileError(p, "operator profile not found") from None
    except json.JSONDecodeError as e:
        raise DataFileError(p, f"invalid JSON: {e.msg}", line=e.lineno) from None
    except OSError as e:
        raise DataFileError(p, f"cannot read: {e.strerror}") from None
    if isinstance(data, dict) and "step_time" in data and "tables" not in data:
        raise DataFileError(p, "this is a step-time profile (lorasim calibrate fit output), not an operator profile")
    return parse_operator_profile(data, p)


def dumps_compact(obj, indent: int = 0) -> str:
    """JSON with objects indented one key per line and every list of numbers on one line (tables stay readable)."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {dumps_compact(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and obj and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + dumps_compact(v, indent + 1) for v in obj) + f"\n{pad}]"
    return json.dumps(obj, allow_nan=False)


def write_operator_profile(profile: OperatorProfile, path: str | Path) -> None:
    """Write ``profile`` as indented JSON (parent directories created).

    Raises:
        DataFileError: the file cannot be written.
    """
    p = Path(path).expanduser()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(dumps_compact(profile.model_dump(mode="json")) + "\n", encoding="utf-8")
    except OSError as e:
        raise DataFileError(p, f"cannot write: {e.strerror or e}") from None
