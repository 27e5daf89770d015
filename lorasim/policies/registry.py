"""Loud registries of named policies.

One :class:`Registry` per kind of policy (scheduler, eviction). A duplicate name raises at import time; an unknown
name raises :class:`~lorasim.errors.PolicyError` listing the valid names. ``"pkg.module:Class"`` loads a user's own
class (the escape hatch of vLLM's ``scheduler_cls``); it must subclass the registry's base class.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable, Generic, TypeVar

from lorasim.errors import PolicyError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Name -> policy class.

    Args:
        kind: what the registry holds ("scheduler", "eviction"), for messages.
        base: the ABC every entry must subclass.
    """

    def __init__(self, kind: str, base: type):
        self.kind = kind
        self.base = base
        self._entries: dict[str, type] = {}  # name -> class

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator adding ``cls`` under ``name`` (and setting ``cls.name``).

        Raises:
            ValueError: ``name`` is already registered.
        """

        def deco(cls: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} policy {name!r} is registered twice "
                                 f"({self._entries[name].__qualname__} and {cls.__qualname__})")
            if not issubclass(cls, self.base):
                raise TypeError(f"{cls.__qualname__} must subclass {self.base.__qualname__}")
            cls.name = name
            self._entries[name] = cls
            return cls

        return deco

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, type]]:
        return sorted(self._entries.items())

    def get(self, name: str) -> type:
        """Return the class for ``name`` or ``"module:Class"``.

        Raises:
            PolicyError: unknown name, unimportable module, missing class, or wrong base class.
        """
        if name in self._entries:
            return self._entries[name]
        if ":" in name:
            module_name, _, qualname = name.partition(":")
            if not module_name or not qualname:
                raise PolicyError(f"{self.kind} policy {name!r}: expected 'module:Class'")
            cwd = os.getcwd()  # like `python -m`: a module in the working directory is importable
            added = cwd not in sys.path
            if added:
                sys.path.insert(0, cwd)
            try:
                obj = importlib.import_module(module_name)
                for part in qualname.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as exc:
                raise PolicyError(f"cannot load {self.kind} policy {name!r}: {exc}") from None
            except Exception as exc:  # the user's module failed while importing
                where = ""
                tb = exc.__traceback__
                while tb is not None:
                    if tb.tb_frame.f_code.co_filename.endswith(".py"):
                        where = f" ({tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"
                    tb = tb.tb_next
                if isinstance(exc, SyntaxError):
                    where = f" ({exc.filename}:{exc.lineno})"
                raise PolicyError(f"cannot load {self.kind} policy {name!r}: importing {module_name} raised "
                                  f"{type(exc).__name__}: {exc}{where}") from None
            finally:
                if added:
                    sys.path.remove(cwd)
            if not (isinstance(obj, type) and issubclass(obj, self.base)):
                raise PolicyError(f"{self.kind} policy {name!r} is not a subclass of {self.base.__qualname__}")
            return obj
        raise PolicyError(
            f"unknown {self.kind} policy {name!r}; valid names: {', '.join(self.names())} "
            f"(or 'module:Class' for your own)"
        )
