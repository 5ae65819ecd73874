"""`joulestream up --dagster`: the Dagster webserver and daemon (`dagster dev -m orchestration`) beside the
embedded stack, so operators can see and re-run the monthly close in the Dagster UI. Runs reach the warehouse
`up` holds through the runtime (warehouse/runtime.py), as they already do (docs/monthly-close.md).

`dagster dev` started from a non-interactive parent ignores SIGINT/SIGTERM unless the handlers are reset before
exec (measured, shared/ARCHITECTURE.md); it runs in its own session and is stopped as a process group. Its
instance lives in `home/dagster` (DAGSTER_HOME), its log in `home/logs/dagster.log`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from cli.broker import port_open
from core.files import private_dir, private_file
from core.procs import die_with_parent


class DagsterUI:
    def __init__(self, port: int, home: Path, env: dict[str, str] | None = None) -> None:
        self.port, self.home = port, home
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def executable() -> str | None:
        beside = Path(sys.executable).parent / "dagster"
        return str(beside) if beside.exists() else shutil.which("dagster")

    def start(self) -> subprocess.Popen[bytes]:
        """Start it (it answers ~5 s later: `wait_ready`); the caller watches the process."""
        exe = self.executable()
        if exe is None:
            raise RuntimeError("the dagster CLI is not installed (pip install -e '.[dev]')")
        if port_open("127.0.0.1", self.port):
            raise RuntimeError(f"port {self.port} is in use (--dagster-port)")
        dagster_home = private_dir(self.home / "dagster")
        log_path = private_dir(self.home / "logs") / "dagster.log"
        log_path.touch(mode=0o600)
        private_file(log_path)
        parent = os.getpid()

        def preexec() -> None:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.umask(0o077)  # its instance and run storage are private like the rest of home
            die_with_parent(signal.SIGTERM, parent)

        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "dev", "-m", "orchestration", "-h", "127.0.0.1", "-p", str(self.port)],
                env={**(self.env if self.env is not None else os.environ), "DAGSTER_HOME": str(dagster_home)},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=preexec,
                start_new_session=True,
            )
        return self.proc

    def wait_ready(self, timeout_s: float = 90) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc is not None and self.proc.poll() is None:
            try:
                if httpx.get(f"{self.url}/server_info", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
