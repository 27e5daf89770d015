"""The ``scheduler``, ``eviction`` and ``adapter_memory`` sections: a registered policy name plus that policy's own
parameters."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from lorasim.errors import PolicyError


class _PolicyConfig(BaseModel):
    """``{name: <registered name or module:Class>, <param>: <value>, ...}``; params are checked by the policy's
    own ``Params`` model and defaults are filled in."""

    model_config = ConfigDict(extra="allow", frozen=True)
    registry_name: ClassVar[str] = ""
    shared_fields: ClassVar[tuple[str, ...]] = ()  # knobs of every policy of the kind, handled outside the policy

    name: str

    @classmethod
    def _registry(cls):
        from lorasim.policies import ADAPTER_MEMORIES, EVICTIONS, ROUTERS, SCHEDULERS

        return {"scheduler": SCHEDULERS, "eviction": EVICTIONS, "adapter_memory": ADAPTER_MEMORIES,
                "router": ROUTERS}[cls.registry_name]

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"name": data}
        if not isinstance(data, dict) or not data:
            return data  # the default policy without knobs (also: class defaults built at import, before plug-ins)
        if "name" not in data:  # knobs of the default policy
            data = {"name": cls.model_fields["name"].default, **data}
        try:
            policy_cls = cls._registry().get(str(data["name"]))
        except PolicyError as exc:
            raise ValueError(str(exc)) from None
        shared = {k: data[k] for k in cls.shared_fields if k in data}
        params = {k: v for k, v in data.items() if k != "name" and k not in shared}
        try:
            validated = policy_cls.Params.model_validate(params)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            raise ValueError(f"{data['name']} parameter {loc!r}: {msg}" if loc else f"{data['name']}: {msg}") from None
        return {"name": data["name"], **shared, **validated.model_dump()}

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def build(self):
        """Instantiate the policy with its validated parameters."""
        policy_cls = self._registry().get(self.name)
        return policy_cls(policy_cls.Params.model_validate(self.params))


class SchedulerConfig(_PolicyConfig):
    registry_name: ClassVar[str] = "scheduler"
    name: str = "vllm"
    """Scheduler policy (``lorasim policies`` lists them) or ``module:Class``."""


class EvictionConfig(_PolicyConfig):
    registry_name: ClassVar[str] = "eviction"
    shared_fields: ClassVar[tuple[str, ...]] = ("pinned",)
    name: str = "lru"
    """Eviction policy for both adapter caches, or ``module:Class``."""
    pinned: tuple[str, ...] = ()
    """Adapters never chosen as victims, in either cache, whatever the policy (loaded on first use, then kept).
    Fewer than ``engine.max_loras``. A step that needs more unpinned adapters than the unpinned slots hold evicts a
    pinned adapter it does not use, as the only way to run (see ``AdapterStore``)."""

    @field_validator("pinned")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        twice = sorted({a for a in v if v.count(a) > 1})
        if twice:
            raise ValueError(f"adapter {twice[0]!r} is pinned twice")
        return v


class AdapterMemoryConfig(_PolicyConfig):
    registry_name: ClassVar[str] = "adapter_memory"
    name: str = "flat"
    """How GPU memory holds adapters: ``flat`` (vLLM slots), ``rank-paged``, ``unified`` (S-LoRA's shared pool), or
    ``module:Class``. The KV capacity follows from the same memory budget."""


class RouterConfig(_PolicyConfig):
    registry_name: ClassVar[str] = "router"
    name: str = "round-robin"
    """How a cluster sends each request to a replica (``lorasim policies`` lists the routers), or ``module:Class``."""
