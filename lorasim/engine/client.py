"""The benchmark client's connections: a request that finds no free TCP connection fails at once.

vLLM's serving benchmarks open one ``aiohttp.ClientSession`` (one TCP connection) per request
(``benchmarks/backend_request_func.py``). A connection holds a local port while the request is in flight and, after
the client closes it, for the TCP ``TIME_WAIT`` period (60 s on Linux, ``TCP_TIMEWAIT_LEN``). With the default
``net.ipv4.ip_local_port_range`` of 32768-60999 a client has 28,232 ports; an overloaded server's queue therefore
stops growing near that many requests and further requests fail with ``EADDRNOTAVAIL`` (the benchmark counts them as
failed, not completed).
"""

from __future__ import annotations

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

    def in_use(self, now_s: float) -> int:
        """Ports in use at ``now_s``: open connections plus those closed within ``time_wait_s`` before it."""
        closed, expiry = self._closed, now_s - self.time_wait_s
        while closed and closed[0] <= expiry:
            closed.popleft()
        return self.open + len(closed)

    def try_open(self, now_s: float) -> bool:
        """Open a connection for a request sent at ``now_s``; False when no port is free (the request fails)."""
        if self.in_use(now_s) >= self.max_connections:
            return False
        self.open += 1
        return True

    def close(self, now_s: float) -> None:
        """The request's connection closes at ``now_s`` (completed, aborted or cancelled)."""
        self.open -= 1
        if self.time_wait_s > 0:
            self._closed.append(now_s)
