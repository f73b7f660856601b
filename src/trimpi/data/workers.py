"""Worker processes for the data builders, stopped cleanly by Ctrl-C.

A terminal's Ctrl-C sends SIGINT to the whole process group. If the workers of a pool take it
too, one dies while holding the pool's queue lock and the parent waits for it for ever. Here
workers ignore SIGINT: only the parent sees KeyboardInterrupt, and it terminates the workers.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while workers start, so they inherit SIG_IGN (Python keeps an inherited SIG_IGN);
    otherwise a Ctrl-C during their start-up would kill them before the initializer runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def imap(fn: Callable[[Any], Any], jobs: Iterable[Any], workers: int, chunksize: int = 1,
         ordered: bool = True) -> Iterator[Any]:
    """`fn(job)` for every job, computed by `workers` processes (spawned: the caller may hold threads
    that fork would copy mid-state). Results come in job order unless `ordered` is False.

    Leaving early (an exception in the caller or in `fn`, Ctrl-C) terminates the workers at once."""
    with _sigint_ignored():
        pool = mp.get_context("spawn").Pool(workers, initializer=_ignore_sigint)
    try:
        yield from (pool.imap if ordered else pool.imap_unordered)(fn, jobs, chunksize)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
