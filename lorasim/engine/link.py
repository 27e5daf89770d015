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
    """

    def __init__(self, env: simpy.Environment, name: str, cost: LinkCost):
        self.env = env
        self.name = name
        self.cost = cost
        self._res = simpy.Resource(env, capacity=1)

    def transfer(self, size_bytes: int):
        """SimPy generator: wait for the link, then hold it for the transfer time."""
        with self._res.request() as req:
            yield req
            dt = self.cost.transfer_time_s(size_bytes)
            yield self.env.timeout(dt)
