"""A transfer link (disk -> CPU, CPU -> GPU) as a SimPy resource: one transfer at a time, FIFO."""

from __future__ import annotations

import simpy

from lorasim.perf.base import LinkCost


class Link:
    """Serialises adapter transfers over one link.

    Args:
        env: the SimPy environment.
        name: ``"disk_to_cpu"`` or ``"cpu_to_gpu"``.
        cost: per-transfer overhead and bandwidth.
        exclusive: only one process ever transfers over the link, one transfer after another (one replica loading
            adapters inside its steps, no prefetch): a transfer then never waits, and the link is not queued for.
    """

    def __init__(self, env: simpy.Environment, name: str, cost: LinkCost, exclusive: bool = False):
        self.env = env
        self.name = name
        self.cost = cost
        self.exclusive = exclusive
        self._res = simpy.Resource(env, capacity=1)

    def transfer(self, size_bytes: int):
        """SimPy generator: wait for the link, then hold it for the transfer time."""
        if self.exclusive:
            yield self.env.timeout(self.cost.transfer_time_s(size_bytes))
            return
        with self._res.request() as req:
            yield req
            dt = self.cost.transfer_time_s(size_bytes)
            yield self.env.timeout(dt)
