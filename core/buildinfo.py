"""What build is running: the package version, the git commit when the code runs from a checkout, and the
Python version. Read once per process (the commit from the files under `.git`, no `git` binary needed)."""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class BuildInfo:
    version: str
    git_commit: str | None
    python: str


def package_version() -> str:
    try:
        return metadata.version("joulestream")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _git_dir(root: Path) -> Path | None:
    dot = root / ".git"
    if dot.is_dir():
        return dot
    if dot.is_file():  # a worktree or submodule: "gitdir: <path>"
        text = dot.read_text(encoding="utf-8", errors="replace").strip()
        if text.startswith("gitdir:"):
            path = Path(text[len("gitdir:") :].strip())
            return path if path.is_absolute() else (root / path).resolve()
    return None


def git_commit(root: Path = REPO) -> str | None:
    """The commit checked out at `root` (HEAD, following one symbolic ref through loose or packed refs), or
    None when `root` is not a git checkout (an installed wheel) or it cannot be read."""
    try:
        gd = _git_dir(root)
        if gd is None:
            return None
        head = (gd / "HEAD").read_text(encoding="utf-8").strip()
        if _SHA.match(head):
            return head
        if not head.startswith("ref:"):
            return None
        ref = head[4:].strip()
        common = gd
        if (gd / "commondir").is_file():  # worktrees keep their branches in the main repository
            common = (gd / (gd / "commondir").read_text(encoding="utf-8").strip()).resolve()
        for base in (gd, common):
            loose = base / ref
            if loose.is_file():
                sha = loose.read_text(encoding="utf-8").strip()
                return sha if _SHA.match(sha) else None
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                sha, _, name = line.partition(" ")
                if name == ref and _SHA.match(sha):
                    return sha
    except OSError:
        return None
    return None


@lru_cache(maxsize=1)
def build_info() -> BuildInfo:
    return BuildInfo(package_version(), git_commit(), platform.python_version())
