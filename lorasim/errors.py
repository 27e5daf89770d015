"""User-facing errors.

Every mistake a user can make (bad YAML, unknown keys, impossible settings, malformed trace rows, missing files)
raises a subclass of :class:`LorasimError`. The CLI turns these into one line on stderr and exit status 2; a bare
traceback means a bug in lorasim, not in the input.
"""

from __future__ import annotations

from pathlib import Path


class LorasimError(Exception):
    """Base class of errors caused by user input; the message is one line meant for the user."""


class ConfigError(LorasimError):
    """Invalid scenario: YAML syntax, unknown key, wrong type, out-of-range or contradictory values.

    The message starts with the dotted field path (e.g. ``engine.max_cpu_loras``) or ``file:line``.
    """


class DataFileError(LorasimError):
    """A data file (trace, length table, profile) is missing or malformed.

    Args:
        path: the file.
        message: what is wrong.
        line: 1-based line number in the file, where one can be named.
    """

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # picklable (sweep worker processes send it back)
        return (type(self), (self.path, self.message, self.line))


class PolicyError(LorasimError):
    """Unknown policy name, bad ``module:Class`` reference, or a policy that broke an engine invariant."""
