"""Private state: everything joulestream keeps under `JOULESTREAM_HOME` is readable by its owner only.

The control-plane database (key hashes, encrypted provider keys), the usage spool, receipts and their
signing keys, runtime.json (the runtime's token), the logs and the embedded warehouse all live under the
home. `private_home(settings)` — called once by each command that creates state, before anything else —
creates the home with mode 0700 (and brings an existing one owned by this user to 0700) and sets the
process umask to 077, so every directory created afterwards is 0700 and every file 0600, whatever library
creates it (SQLite, chdb, logging, the spool). Files kept outside the home get explicit modes where they
are created (`private_file`, e.g. a SQLite database at a custom path, see controlplane/db.py).
"""

from __future__ import annotations

import logging
import os
import stat
from contextlib import suppress
from pathlib import Path

from core.settings import Settings

log = logging.getLogger("joulestream.files")

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def _shared_dir(path: Path) -> bool:
    """Directories whose mode must not be changed even if they are ours: /, sticky dirs (/tmp), ~."""
    try:
        st = path.stat()
    except OSError:
        return True
    return path == Path(path.anchor) or bool(st.st_mode & stat.S_ISVTX) or path == Path.home().resolve()


def private_dir(path: Path) -> Path:
    """Create `path` (and its missing parents) with mode 0700; bring an existing one of ours to 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    resolved = path.resolve()
    with suppress(OSError):
        st = resolved.stat()
        if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) != DIR_MODE:
            if _shared_dir(resolved):
                log.warning("%s is a shared directory: its mode is left as it is", resolved)
            else:
                resolved.chmod(DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Mode 0600 for an existing file of ours (missing files are ignored)."""
    with suppress(FileNotFoundError, PermissionError):
        if stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
            path.chmod(FILE_MODE)


def private_home(settings: Settings) -> Path:
    """Set the umask to 077 and create (or tighten) the home, 0700. Returns the home."""
    os.umask(PRIVATE_UMASK)
    return private_dir(settings.home)
