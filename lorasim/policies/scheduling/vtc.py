"""Virtual Token Counter fair scheduling (Sheng et al., "Fairness in Serving Large Language Models", OSDI'24,
arXiv 2401.00588; artifact ``Ying1123/VTC-artifact``, ``slora/server/router/vtc_req_queue.py``)."""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field, model_validator

from lorasim._model import InputModel
from lorasim.engine.sequence import Seq
from lorasim.policies.base import SCHEDULERS, Admit, PlanBuilder, ReplicaView, Scheduler, StepPlan


class VtcParams(InputModel):
    """Knobs of :class:`VtcScheduler` (the paper's ``w_p`` and ``w_q``; the artifact's input and output prices)."""

    client: Literal["adapter", "tenant"] = "adapter"
    """What a client is: ``adapter`` (each adapter is a client, the base model one more), as in the artifact;
    ``tenant``: the groups of adapters in ``tenants`` (a tenant's adapters share one counter; an adapter in no group is
    a tenant of its own, the base model one more)."""
    tenants: dict[str, list[str]] = Field(default_factory=dict)
    """Tenant name -> its adapters, for ``client: tenant``; an adapter may belong to one tenant only."""
    w_in: float = Field(default=1.0, ge=0.0, le=1e6)
    """Counter charge per prompt token, at admission."""
    w_out: float = Field(default=2.0, ge=0.0, le=1e6)
    """Counter charge per generated token, when the step that produced it ends."""
    on_cap: Literal["skip", "hold"] = "skip"
    """When the least-served client's adapter would exceed ``max_loras``: ``skip`` it for this step and serve the
    next client (work-conserving, but a steady stream for a running adapter can starve it, as in case 02); ``hold``:
    admit only base-model requests for the rest of the step, so the running adapters drain and it gets the next
    free slot (VTC's order is kept, at the cost of idle slots)."""


    @model_validator(mode="after")
    def _tenants_disjoint(self) -> "VtcParams":
        seen: dict[str, str] = {}
        for t, adapters in self.tenants.items():
            for a in adapters:
                if a in seen and seen[a] != t:
                    raise ValueError(f"adapter {a!r} is in tenants {seen[a]!r} and {t!r}")
                seen[a] = t
        if self.tenants and self.client != "tenant":
            raise ValueError("tenants is only used with client: tenant")
        return self


@SCHEDULERS.register("vtc")
class VtcScheduler(Scheduler):
    """Virtual Token Counter: serve the client that has received the least service.

    Rule: each client (adapter, or tenant: a group of adapters; the base model is one client) has a counter; admission repeatedly takes the client
    with the smallest counter among those with waiting requests and admits its oldest waiting request, charging
    ``w_in`` x prompt tokens; a client whose adapter would exceed ``max_loras`` is skipped for the rest of the step
    (``on_cap: hold``: only the base model is served after it); budget, ``max_num_seqs`` or a KV failure stops the
    scan. Each generated token charges its client ``w_out``. A client that gets a waiting request after having none
    is lifted to ``max(own, min counter of the other clients with waiting requests)`` (no lift when there are none),
    so idling earns no credit. Tie-break: equal counters go to the client whose oldest request is first in queue
    order; within a client, queue order.

    The artifact (S-LoRA) has no adapter cap. Under a binding cap the ``skip`` default is not fair: the least-served
    client's adapter never gets a slot while the running adapters keep being fed (case 02 starves B as under
    ``vllm``); ``hold`` restores VTC's order by letting the running adapters drain.

    Approximations: the lift is applied when the scheduler next runs (the artifact lifts on arrival; clients that
    became backlogged between two steps are lifted in the queue order of their oldest requests); output charges are
    computed from the plan when it is made and applied in ``on_step_end`` (a token sampled at the end of a prefill
    counts as output); a preempted request is not charged its prompt again when it is re-admitted (the artifact has no
    preemption). Cost per step: O(clients + admissions x log clients).
    """

    rule = ("least-served client (adapter, or tenant: a group of adapters) first: counters charge w_in/prompt and "
            "w_out/output token; cap: skip or hold")
    Params = VtcParams

    def __init__(self, params=None):
        super().__init__(params)
        self.tenant_of: dict[str, str] | None = None  # adapter -> tenant (client: tenant); None: client = adapter
        if self.params.client == "tenant":
            self.tenant_of = {a: t for t, adapters in self.params.tenants.items() for a in adapters}
        self.counters: dict[str | None, float] = {}  # client -> virtual tokens served
        self._backlogged: set[str | None] = set()  # clients with waiting requests when the last scan ended
        self._pending: Counter[str | None] = Counter()  # client -> tokens the planned step generates

    def schedule(self, view: ReplicaView, now_s: float) -> StepPlan:
        plan = super().schedule(view, now_s)
        gen = generated_by_client(view, plan)
        if self.tenant_of is not None:
            by_tenant: Counter[str | None] = Counter()
            for a, n in gen.items():
                by_tenant[self._client(a)] += n
            gen = by_tenant
        self._pending = gen
        return plan

    def check_adapters(self, names: set[str]) -> None:
        """Refuse ``tenants`` that name adapters the scenario does not define, or a tenant named like another
        adapter (their counters would merge)."""
        for t, adapters in self.params.tenants.items():
            unknown = [a for a in adapters if a not in names]
            if unknown:
                raise ValueError(f"tenants.{t}: adapter {unknown[0]!r} is not defined under adapters")
            if t in names and t not in adapters:
                raise ValueError(f"tenants.{t}: a tenant may not be named like adapter {t!r} unless it contains it")

    def _client(self, adapter: str | None) -> str | None:
        """The client an adapter's requests are charged to (the adapter itself unless grouped into a tenant)."""
        if adapter is None or self.tenant_of is None:
            return adapter
        return self.tenant_of.get(adapter, adapter)

    def on_step_end(self, plan: StepPlan, now_s: float) -> None:
        w, c = self.params.w_out, self.counters
        for k, n in self._pending.items():
            if n:
                c[k] = c.get(k, 0.0) + w * n
        self._pending = Counter()

    def admit_waiting(self, view: ReplicaView, b: PlanBuilder, now_s: float) -> None:
        queues = waiting_by_client(view, self._client if self.tenant_of is not None else None)
        c = self.counters
        order = {k: i for i, k in enumerate(queues)}  # first-seen order, the last tie-break
        head = {k: (q[0]._qpos, order[k]) for k, q in queues.items()}
        new = sorted((k for k in queues if k not in self._backlogged), key=head.__getitem__)
        if new:
            active = [c.get(k, 0.0) for k in queues if k in self._backlogged]
            for k in new:  # lift each newly backlogged client to the smallest counter of the others
                own = c.get(k, 0.0)
                c[k] = max(own, min(active)) if active else own
                active.append(c[k])
        heap = [(c[k], *head[k], k) for k in queues]
        heapq.heapify(heap)
        pos = dict.fromkeys(queues, 0)  # client -> next waiting request to try
        w_in, hold = self.params.w_in, self.params.on_cap == "hold"
        while heap:
            _, _, _, k = heap[0]
            q, p = queues[k], pos[k]
            seq = q[p]
            r = b.try_admit(seq)
            if r is Admit.ADAPTER_CAP:
                if hold:  # nobody overtakes it but the base model, which needs no slot
                    heapq.heappop(heap)
                    heap = [e for e in heap if e[3] is None]
                elif self.tenant_of is None:
                    heapq.heappop(heap)  # every request of this client needs the same adapter
                else:  # a tenant's next request may use an adapter the step already holds
                    pos[k] = p = p + 1
                    if p < len(q):
                        heapq.heapreplace(heap, (c[k], q[p]._qpos, order[k], k))
                    else:
                        heapq.heappop(heap)
                continue
            if r is not Admit.OK:
                break
            if math.isnan(seq.first_scheduled_time_s):  # charge a prompt once, not again after a preemption
                c[k] = c.get(k, 0.0) + w_in * seq.num_prompt_tokens
            pos[k] = p = p + 1
            if p < len(q):
                heapq.heapreplace(heap, (c[k], q[p]._qpos, order[k], k))
            else:
                heapq.heappop(heap)
        self._backlogged = {k for k, q in queues.items() if pos[k] < len(q)}

    def prefetch_order(self, view: ReplicaView) -> list[str]:
        """The adapters of the waiting clients, least served first (what admission takes next)."""
        c = self.counters
        queues = waiting_by_client(view, self._client if self.tenant_of is not None else None)
        ranked = sorted((k for k in queues if k is not None), key=lambda k: (c.get(k, 0.0), queues[k][0]._qpos))
        if self.tenant_of is None:
            return ranked[: view.limits.max_loras]
        adapters: dict[str, None] = {}  # a tenant's adapters in its queue order
        for k in ranked:
            for s in queues[k]:
                if s.adapter is not None and s.adapter not in adapters:
                    adapters[s.adapter] = None
                    if len(adapters) >= view.limits.max_loras:
                        return list(adapters)
        return list(adapters)


def waiting_by_client(view: ReplicaView, client_of=None) -> Mapping[str | None, Sequence[Seq]]:
    """The waiting queue split by client (adapter, or ``client_of(adapter)``; ``None`` for the base model), each in
    queue order."""
    index = view.waiting_by_adapter
    if index is not None and client_of is None:
        return index
    queues: dict[str | None, list[Seq]] = {}
    for s in view.waiting:
        queues.setdefault(s.adapter if client_of is None else client_of(s.adapter), []).append(s)
    return queues


def generated_by_client(view: ReplicaView, plan: StepPlan) -> Counter[str | None]:
    """Tokens the step of ``plan`` samples, by client: one per sequence whose scheduled tokens reach its end (a
    decode, or the last prefill chunk), plus one per steady decoder of a bulk-decode plan that is not preempted."""
    gen: Counter[str | None] = Counter()
    for seq, n in plan.scheduled:
        if seq.num_computed_tokens + n == seq.num_tokens:
            gen[seq.adapter] += 1
    g = view.decodes
    if plan.bulk_decode and g is not None:
        gen.update(g.adapters)
        if g.num > g.num_lora:
            gen[None] += g.num - g.num_lora
        for v in plan.preempted:
            if v.is_decode:  # every running sequence in steady decode is a member of the group
                gen[v.adapter] -= 1
    return gen
