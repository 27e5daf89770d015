"""The ``scheduler`` and ``eviction`` sections: a registered policy name plus that policy's own parameters."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from lorasim.errors import PolicyError


class _PolicyConfig(BaseModel):
    """``{name: <registered name or module:Class>, <param>: <value>, ...}``; params are checked by the policy's
    own ``Params`` model and defaults are filled in."""

    model_config = ConfigDict(extra="allow", frozen=True)
    registry_name: ClassVar[str] = ""

    name: str

    @classmethod
    def _registry(cls):
        from lorasim.policies import EVICTIONS, SCHEDULERS

        return SCHEDULERS if cls.registry_name == "scheduler" else EVICTIONS

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"name": data}
        if not isinstance(data, dict) or "name" not in data:
            return data
        try:
            policy_cls = cls._registry().get(str(data["name"]))
        except PolicyError as exc:
            raise ValueError(str(exc)) from None
        params = {k: v for k, v in data.items() if k != "name"}
        try:
            validated = policy_cls.Params.model_validate(params)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise ValueError(f"{data['name']} parameter {loc!r}: {err['msg']}") from None
        return {"name": data["name"], **validated.model_dump()}

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
    name: str = "lru"
    """Eviction policy for both adapter caches, or ``module:Class``."""
