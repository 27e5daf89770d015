"""Pydantic discriminator for unions whose ``kind`` key may be left out (it then takes a default)."""

from __future__ import annotations

from typing import Any, Callable


def kind_or(default: str) -> Callable[[Any], str]:
    """A callable discriminator: the ``kind`` of a dict or model, ``default`` when absent.

    A non-string kind is mapped to ``default`` too, so that validation fails there listing the valid kinds.
    """

    def tag(v: Any) -> str:
        kind = v.get("kind", default) if isinstance(v, dict) else getattr(v, "kind", default)
        return kind if isinstance(kind, str) else default

    return tag
