"""Run independent tasks in this process, in local worker processes, or on a Dask distributed cluster.

Used by ``lorasim sweep`` and ``lorasim validate``: every task is a whole simulation seeded by name, so results do
not depend on where or in which order the tasks run; callers put them back in their own order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from lorasim.errors import ConfigError


def run_tasks(fn: Callable[..., Any], args: Sequence[tuple], workers: int = 1,
              dask_address=None) -> Iterator[tuple[int, Any]]:
    """Yield ``(i, fn(*args[i]))`` for every task, as each finishes (any order).

    Args:
        fn: a top-level (picklable) function.
        args: one argument tuple per task.
        workers: local worker processes (1: run in this process, in order).
        dask_address: a Dask distributed scheduler address (``tcp://host:8786``) or a ``distributed.Client``;
            replaces ``workers``.

    Raises:
        ConfigError: no Dask scheduler answers at ``dask_address``.
        Whatever ``fn`` raises, re-raised here.
    """
    if not args:
        return
    if dask_address is not None:
        yield from _run_on_dask(fn, args, dask_address)
        return
    if workers <= 1 or len(args) == 1:
        for i, a in enumerate(args):
            yield i, fn(*a)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(args))) as pool:
        futures = {pool.submit(fn, *a): i for i, a in enumerate(args)}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def _run_on_dask(fn, args, dask_address) -> Iterator[tuple[int, Any]]:
    from distributed import Client, as_completed as dask_completed

    if isinstance(dask_address, Client):
        client = dask_address
    else:
        try:
            client = Client(dask_address, timeout=10)
        except (OSError, ValueError, TimeoutError) as exc:
            raise ConfigError(f"--dask {dask_address}: cannot connect to a Dask scheduler ({exc})") from None
    try:
        futures = {client.submit(fn, *a, pure=False): i for i, a in enumerate(args)}
        for fut in dask_completed(futures):
            yield futures[fut], fut.result()
    finally:
        if client is not dask_address:
            client.close()
