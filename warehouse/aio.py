"""Async access to the (synchronous) clickhouse-connect client from the worker's event loop.

Every warehouse call of a process goes through one thread: the chdb engine is not meant to be driven
from several threads at once, the loop stays free for Kafka heartbeats and HTTP, and calls are
served in the order they were made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")


class AsyncWarehouse:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warehouse")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(client, *args, **kwargs)` on the warehouse thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, self.client, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
