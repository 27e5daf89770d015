"""Loud registries of named policies.

One :class:`Registry` per kind of policy (scheduler, eviction, adapter_memory). A duplicate name raises at import time; an unknown
name raises :class:`~lorasim.errors.PolicyError` listing the valid names. ``"pkg.module:Class"`` loads a user's own
class (the escape hatch of vLLM's ``scheduler_cls``); it must subclass the registry's base class.

Plug-ins: an installed distribution may declare policies in the entry-point group ``lorasim.policies``
(``name = "pkg.module:Class"`` in its ``entry_points.txt``; ``[project.entry-points."lorasim.policies"]`` in a
``pyproject.toml``). On the first lookup or listing of any registry, every entry point of the group is loaded once;
each class is registered under the entry point's name in the registry whose base class it subclasses (a
:class:`~lorasim.policies.Scheduler` among the schedulers, an :class:`~lorasim.policies.EvictionPolicy` among the
eviction policies, an :class:`~lorasim.policies.AdapterMemory` among the adapter-memory layouts). A plug-in that cannot be imported, is not a policy class, or reuses a taken name makes every
lookup raise a one-line :class:`~lorasim.errors.PolicyError` naming the entry point and its distribution.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from typing import Callable, Generic, TypeVar

from lorasim.errors import PolicyError

T = TypeVar("T", bound=type)

PLUGIN_GROUP = "lorasim.policies"
"""Entry-point group of policy plug-ins."""

_REGISTRIES: list["Registry"] = []  # every registry, to tell a plug-in of another kind from a broken one


class Registry(Generic[T]):
    """Name -> policy class.

    Args:
        kind: what the registry holds ("scheduler", "eviction"), for messages.
        base: the ABC every entry must subclass.
    """

    def __init__(self, kind: str, base: type, group: str | None = PLUGIN_GROUP):
        self.kind = kind
        self.base = base
        self.group = group
        self._entries: dict[str, type] = {}  # name -> class
        self._plugins: list[str] = []  # names registered from entry points
        self._plugins_state = "unloaded"  # unloaded | loading | loaded
        self._plugin_error: str | None = None
        _REGISTRIES.append(self)

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
        """Registered names (built-ins and plug-ins), sorted."""
        self.load_plugins()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, type]]:
        self.load_plugins()
        return sorted(self._entries.items())

    def plugin_names(self) -> list[str]:
        """Names registered from entry points, sorted."""
        self.load_plugins()
        return sorted(self._plugins)

    def load_plugins(self) -> None:
        """Register this registry's plug-ins from the entry-point group, once (later calls re-raise a failure).

        Raises:
            PolicyError: a plug-in of the group cannot be loaded, is not a class of any registry's base, or its
                name is taken in the registry it belongs to (one line naming the entry point).
        """
        if self._plugin_error is not None:
            raise PolicyError(self._plugin_error)
        if self._plugins_state != "unloaded" or self.group is None:
            return  # loaded, or a plug-in being imported looked the registry up
        self._plugins_state = "loading"
        try:
            found = [(name, cls) for name, cls in _load_group(self.group) if issubclass(cls, self.base)]
            seen: dict[str, type] = {}
            for name, cls in found:
                if seen.setdefault(name, cls) is not cls:
                    raise PolicyError(f"{self.kind} policy plug-in {name!r} is declared twice, as "
                                      f"{seen[name].__module__}.{seen[name].__qualname__} and "
                                      f"{cls.__module__}.{cls.__qualname__}")
                if self._entries.get(name) is cls:
                    continue  # the plug-in's module registered itself under the same name
                if name in self._entries:
                    raise PolicyError(f"{self.kind} policy plug-in {name!r} ({_describe(self.group, name)}): the "
                                      f"name is taken by {self._entries[name].__module__}."
                                      f"{self._entries[name].__qualname__}")
            for name, cls in found:
                if self._entries.get(name) is not cls:
                    cls.name = name
                    self._entries[name] = cls
                    self._plugins.append(name)
        except PolicyError as exc:
            self._plugin_error = str(exc)
            self._plugins_state = "unloaded"
            raise
        self._plugins_state = "loaded"

    def _forget_plugins(self) -> None:
        """Unregister the plug-ins and forget a loading failure, so that the next lookup scans the group again
        (tests that install a plug-in)."""
        for name in self._plugins:
            self._entries.pop(name, None)
        self._plugins = []
        self._plugin_error = None
        self._plugins_state = "unloaded"
        _GROUP_CACHE.clear()

    def get(self, name: str) -> type:
        """Return the class for ``name`` or ``"module:Class"``.

        Raises:
            PolicyError: unknown name, unimportable module, missing class, or wrong base class.
        """
        self.load_plugins()
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


_GROUP_CACHE: dict[str, list[tuple[str, type]]] = {}


def _describe(group: str, name: str) -> str:
    """``value`` and distribution of the entry point ``name`` of ``group``, for messages."""
    for ep in importlib.metadata.entry_points(group=group):
        if ep.name == name:
            dist = getattr(ep, "dist", None)
            return f"{ep.value}" + (f" from {dist.name}" if dist is not None else "")
    return "entry point"


def _load_group(group: str) -> list[tuple[str, type]]:
    """Load every entry point of ``group``, once per process: ``[(name, class)]`` in entry-point order.

    Raises:
        PolicyError: one line naming the first entry point that cannot be imported, is not a class, or subclasses
            no registry's base class.
    """
    if group in _GROUP_CACHE:
        return _GROUP_CACHE[group]
    bases = tuple(r.base for r in _REGISTRIES if r.group == group)
    kinds = " or ".join(b.__qualname__ for b in bases)
    loaded: list[tuple[str, type]] = []
    for ep in importlib.metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        what = f"policy plug-in {ep.name!r} ({ep.value}" + (f" from {dist.name})" if dist is not None else ")")
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001  (the plug-in's own import failed: report it in one line)
            detail = " ".join(str(exc).split())
            where = ""
            if isinstance(exc, SyntaxError) and exc.filename:
                where = f" ({exc.filename}:{exc.lineno})"
            else:
                tb = exc.__traceback__
                while tb is not None:
                    fn = tb.tb_frame.f_code.co_filename
                    if fn.endswith(".py") and "importlib" not in fn:
                        where = f" ({fn}:{tb.tb_lineno})"
                    tb = tb.tb_next
            raise PolicyError(f"cannot load {what}: {type(exc).__name__}: {detail}{where}") from None
        if not (isinstance(obj, type) and issubclass(obj, bases)):
            raise PolicyError(f"{what} is not a subclass of {kinds}")
        loaded.append((ep.name, obj))
    _GROUP_CACHE[group] = loaded
    return loaded
