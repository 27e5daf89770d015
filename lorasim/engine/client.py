"""The benchmark client's connections: a request that finds no free TCP connection fails at once.

vLLM's serving benchmarks open one ``aiohttp.ClientSession`` (one TCP connection) per request
(``benchmarks/backend_request_func.py``). A connection holds a local port while the request is in flight and, after
the client closes it, for the TCP ``TIME_WAIT`` period (60 s on Linux, ``TCP_TIMEWAIT_LEN``). With the default
``net.ipv4.ip_local_port_range`` of 32768-60999 a client has 28,232 ports; an overloaded server's queue therefore
stops growing near that many requests and further requests fail with ``EADDRNOTAVAIL`` (the benchmark counts them as
failed, not completed).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque


class ConnectionPool:
    """Ports of one client: in flight plus closed within ``time_wait_s``, at most ``max_connections``.

    Args:
        max_connections: local ports the client can use.
        time_wait_s: how long a closed connection keeps its port, seconds (0: released at once).
    """

    __slots__ = ("max_connections", "time_wait_s", "open", "_closed")

    def __init__(self, max_connections: int, time_wait_s: float):
        self.max_connections = max_connections
        self.time_wait_s = time_wait_s
        self.open = 0
        self._closed: deque[float] = deque()  # close times, non-decreasing, of ports still in TIME_WAIT

    @property
    def refusal(self) -> str:
        """The abort reason of a request that found no free port."""
        return f"client: no free connection ({self.max_connections} ports, in flight or in TIME_WAIT)"

    def in_use(self, now_s: float) -> int:
        """Ports in use at ``now_s``: open connections plus those closed within ``time_wait_s`` before it."""
        closed, expiry = self._closed, now_s - self.time_wait_s
        while closed and closed[0] <= expiry:
            closed.popleft()
        return self.open + len(closed)

    def try_open(self, now_s: float) -> bool:
        """Open a connection for a request that reaches the server at ``now_s`` (the engine calls it then: its
        arrival plus the request overhead); False when no port is free (the request fails)."""
        if self.in_use(now_s) >= self.max_connections:
            return False
        self.open += 1
        return True

    def close(self, now_s: float) -> None:
        """The request's connection closes at ``now_s`` (completed, aborted or cancelled)."""
        self.open -= 1
        if self.time_wait_s > 0:
            self._closed.append(now_s)

    def refused_until(self, times_s: list[float], first: int, end: int) -> int:
        """Of requests sent at ``times_s[first:end]`` (non-decreasing), with no connection opened or closed among
        them, the position of the first that finds a free port (``end`` if none): all before it are refused.

        While every port is taken, the next one frees when the oldest TIME_WAIT ends, so a whole run of arrivals is
        refused with one bisection instead of one :meth:`try_open` each.
        """
        k = first
        while k < end and self.in_use(times_s[k]) >= self.max_connections:
            closed = self._closed
            if not closed:  # every port is held by an open connection: nothing frees before a request finishes
                return end
            tw = self.time_wait_s  # the same comparison as in_use: freed at t once closed[0] <= t - tw
            k = max(k + 1, bisect_left(times_s, closed[0], k, end, key=lambda t: t - tw))
        return k
