"""Run independent tasks in this process, in local worker processes, or on a Dask distributed cluster.

Used by ``lorasim sweep`` and ``lorasim validate``: every task is a whole simulation seeded by name, so results do
not depend on where or in which order the tasks run; callers put them back in their own order. Ctrl-C stops at once:
worker processes ignore SIGINT themselves and are terminated when the caller stops iterating (the tasks already
yielded are kept by the caller).
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator, Sequence
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
        ConfigError: ``distributed`` is not installed, or no Dask scheduler answers at ``dask_address``.
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
    # a Pool, not a ProcessPoolExecutor: leaving the block terminates the workers (an executor would first run
    # every queued task to the end)
    with multiprocessing.get_context().Pool(min(workers, len(args)), initializer=_ignore_sigint) as pool:
        yield from pool.imap_unordered(_call, [(fn, i, a) for i, a in enumerate(args)])


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which terminates the pool


def _call(task: tuple) -> tuple[int, Any]:
    fn, i, a = task
    return i, fn(*a)


def _run_on_dask(fn, args, dask_address) -> Iterator[tuple[int, Any]]:
    try:
        from distributed import Client, as_completed as dask_completed
    except ImportError:
        raise ConfigError("--dask needs Dask distributed: pip install -e '.[dask]'") from None
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
