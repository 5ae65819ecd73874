"""Child processes bound to their parent's life.

`die_with_parent()` (in a child) asks Linux to send the child a signal when its parent dies
(`prctl(PR_SET_PDEATHSIG)`), so a parent killed by SIGKILL, or crashing, never leaves an orphan behind:
an embedded broker still listening, an enrich process still consuming. `bind_to_parent` is the same as a
`subprocess.Popen(preexec_fn=...)`. Both do nothing off Linux (the parent still stops its children on a
clean exit).

The signal is tied to the *thread* that started the child: start long-lived children from the main thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


# resolved here, in the parent: a preexec_fn runs between fork and exec and must not load libraries
_prctl = _load_prctl()


def die_with_parent(sig: int = signal.SIGKILL, parent_pid: int | None = None) -> None:
    """Have this process receive `sig` when its parent dies. With `parent_pid` (the parent's pid seen
    before the fork), exit at once if the parent already died before the request took effect."""
    if _prctl is None:
        return
    _prctl(PR_SET_PDEATHSIG, int(sig))
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def bind_to_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A `preexec_fn` for `subprocess.Popen`: the child gets `sig` when this process dies."""
    parent = os.getpid()

    def preexec() -> None:
        die_with_parent(sig, parent)

    return preexec
