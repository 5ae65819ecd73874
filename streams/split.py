"""One worker, two processes: the enrich agent runs in a child process so that the two CPU-bound stages
use both cores (in one process they share one: measured ~13.7k ev/s end to end, where split measured
18–24k on the same machine; bench/pipeline.py prints the per-process CPU, README has the current figures).

The parent keeps everything that must live in the process holding the warehouse (sink agent, HTTP,
pollers); the child runs a Faust app with only the enrich agent. The child is bound to the parent: it
gets SIGKILL when the parent dies (PR_SET_PDEATHSIG), so a killed worker never leaves an orphan that
keeps consuming. Its counters reach the parent through shared memory.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from typing import Any

from mode import Service

from core.metrics import process_exited
from core.procs import die_with_parent
from core.settings import Settings

FIELDS = (
    "consumed",
    "batches",
    "assigned_partitions",
    "retries",
    "commit_failures",
    "enriched",
    "dlq",
    "duplicates",
)


class SharedStats:
    """The enrich agent's counters in shared memory (written by the child, read by the parent)."""

    def __init__(self, ctx: Any) -> None:
        self.array = ctx.Array("q", len(FIELDS), lock=False)

    def read(self) -> dict[str, int]:
        return dict(zip(FIELDS, self.array[:], strict=True))


class _Exporter(Service):
    def __init__(self, pipeline: Any, array: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.pipeline, self.array = pipeline, array

    @Service.timer(0.1)
    async def _export(self) -> None:
        stats = self.pipeline.stats().get("enrich", {})
        for i, name in enumerate(FIELDS):
            self.array[i] = int(stats.get(name, 0))


def _child_main(settings: Settings, array: Any, loglevel: str, logfile: str | None) -> None:
    die_with_parent(signal.SIGKILL)  # off Linux a no-op: the parent still terminates it on a clean stop
    import faust

    from core.logs import logging_config
    from streams.worker import Pipeline, build_app

    pipeline = Pipeline(settings, with_sink=False)
    # not "joulestream-enrich": the Faust app's consumer group is named after its id, and that is the enrich
    # agent's group (streams/worker.py) when there is no topic prefix — two protocols in one group fail to join
    app = build_app(settings, pipeline, app_id=f"{settings.topic_prefix}joulestream-enrich-app")
    app.add_dependency(_Exporter(pipeline, array, loop=app.loop, beacon=app.beacon))
    worker = faust.Worker(
        app,
        loglevel=loglevel,
        logfile=logfile,
        logging_config=logging_config(loglevel, logfile),
        redirect_stdouts=False,
        quiet=True,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass


class EnrichProcess:
    """The enrich child. The parent must have migrated the control plane before `start` (two processes
    running Alembic on one SQLite file at once would race)."""

    def __init__(self, settings: Settings, loglevel: str = "INFO", logfile: str | None = None) -> None:
        self._ctx = mp.get_context("spawn")
        self._args = (settings, loglevel, logfile)
        self.stats = SharedStats(self._ctx)
        self.restarts = 0
        self.proc = self._new_process()

    def _new_process(self) -> Any:
        settings, loglevel, logfile = self._args
        return self._ctx.Process(
            target=_child_main,
            args=(settings, self.stats.array, loglevel, logfile),
            name="joulestream-enrich",
            daemon=False,
        )

    def start(self) -> EnrichProcess:
        self.proc.start()
        return self

    def restart_if_dead(self) -> bool:
        """Start a new child if the current one exited; True when it did (the supervisor logs it)."""
        if self.proc.is_alive():
            return False
        self.proc.join(0)
        if self.proc.pid is not None:
            process_exited(self.proc.pid)
        self.proc = self._new_process()
        self.proc.start()
        self.restarts += 1
        return True

    def stop(self, timeout_s: float = 20) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout_s)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
        if self.proc.pid is not None:
            process_exited(self.proc.pid)


class EnrichSupervisor(Service):
    """In the parent: restarts the enrich child if it dies (its uncommitted batch is simply re-read)."""

    def __init__(self, child: EnrichProcess, **kw: Any) -> None:
        super().__init__(**kw)
        self.child = child

    @Service.timer(1.0)
    async def _watch(self) -> None:
        code = self.child.proc.exitcode
        if self.child.restart_if_dead():
            self.log.error(
                "enrich process exited with %s; restarted (restart #%d)", code, self.child.restarts
            )
