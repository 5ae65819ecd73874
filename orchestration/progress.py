"""Progress of an in-process close run, for `joulestream close-month`'s progress bar.

The assets call `report(step, done, total)`; whoever runs the job in-process installs a listener with
`listening(callback)`. Without a listener, reports go nowhere (Dagster's own event log has the steps).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, int, int], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def report(step: str, done: int, total: int) -> None:
    with _lock:
        listeners = list(_listeners)
    for fn in listeners:
        fn(step, done, total)


@contextmanager
def listening(fn: Listener) -> Iterator[None]:
    with _lock:
        _listeners.append(fn)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(fn)
