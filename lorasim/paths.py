"""Where lorasim finds the shared data directory.

Resolution order: an explicit argument (the CLI's ``--data-dir``), the environment variable ``LORASIM_DATA_DIR``,
then ``../shared/data`` relative to the repository root (the directory holding ``pyproject.toml``).
Data files are read at run time and never copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

from lorasim.errors import DataFileError

ENV_VAR = "LORASIM_DATA_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """Return the data directory (it may not exist; :func:`data_file` checks files)."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR


def data_file(path: str | Path, data_dir: str | Path | None) -> Path:
    """Resolve a scenario's file reference.

    Absolute paths and paths that exist relative to the working directory are used as they are; other relative
    paths are taken relative to the data directory.

    Raises:
        DataFileError: the file exists in neither place.
    """
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        if not p.exists():
            raise DataFileError(p, "file not found")
        return p
    base = resolve_data_dir(data_dir)
    q = base / p
    if not q.exists():
        raise DataFileError(
            path,
            f"file not found (looked in the working directory and in the data directory {base}; "
            f"set --data-dir or {ENV_VAR})",
        )
    return q
