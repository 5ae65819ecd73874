"""The one resolver of carbon factor sets, shared by the inference gateway and the stream workers.

    resolver = FactorResolver(engine)          # ttl_s=10
    fs = resolver.current()                    # the control plane's current version (re-checked every ttl_s)
    fs = resolver.version("v1.0")              # a published version by name (immutable: read once)

`joulestream factors publish FILE` adds a version; both sides pick it up within `ttl_s` without a restart.
The two may switch a moment apart, so a producer that shows figures before enrichment (the gateway: energy
headers, signed receipts) stamps the version it used on its event under the label `FACTORS_VERSION_LABEL`,
and enrichment applies that version (`version`) instead of the current one: the ledger row then equals the
receipt.

If the control plane cannot be read, the last known set stays in use (the latest built-in set, v2.0, before any read
succeeded), so neither serving nor enrichment stops on a control-plane hiccup.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from controlplane import FactorVersions
from core.methodology import FactorSet, FactorSetError, load_factor_set

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 10.0
# The label under which a producer records the factor version its own figures used.
FACTORS_VERSION_LABEL = "factors_version"


class FactorResolver:
    """The current FactorSet of the control plane (re-read at most every `ttl_s`), and published versions by
    name. Thread-safe: the gateway refreshes it from a worker thread while requests read `cached`."""

    def __init__(self, engine: Engine, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.repo = FactorVersions(engine)
        self.ttl_s = ttl_s
        self._current: FactorSet = load_factor_set()
        self._checked_at = float("-inf")
        self._versions: dict[str, FactorSet] = {}
        self._missing: dict[str, float] = {}  # version -> when it was last looked up in vain
        self._lock = threading.Lock()

    @property
    def cached(self) -> FactorSet:
        """The current set as last read, without touching the control plane."""
        return self._current

    def current(self) -> FactorSet:
        """The current set, re-read from the control plane when the last read is older than `ttl_s`."""
        if time.monotonic() - self._checked_at >= self.ttl_s:
            return self.refresh()
        return self._current

    __call__ = current

    def refresh(self) -> FactorSet:
        """Read the control plane's current version now (one small query; the YAML is parsed only when the
        version changed)."""
        with self._lock:
            self._checked_at = time.monotonic()
            try:
                latest = self.repo.current()
                if latest is None or latest.version == self._current.version:
                    return self._current
                fs = latest.factor_set
            except (SQLAlchemyError, FactorSetError) as exc:
                log.warning(
                    "cannot read the current carbon factors, keeping %s: %s", self._current.version, exc
                )
                return self._current
            log.info("carbon factors %s → %s", self._current.version, fs.version)
            self._versions[fs.version] = fs
            self._current = fs
            return fs

    def version(self, version: str) -> FactorSet | None:
        """The published set `version`: from the control plane, else core's built-in file of that name; None
        when neither has it (looked up again after `ttl_s`). Versions are immutable, so a found one is kept."""
        fs = self._versions.get(version)
        if fs is not None:
            return fs
        if self._current.version == version:
            return self._current
        missed = self._missing.get(version)
        if missed is not None and time.monotonic() - missed < self.ttl_s:
            return None
        try:
            row = self.repo.get(version)
            fs = row.factor_set if row is not None else None
        except (SQLAlchemyError, FactorSetError) as exc:
            log.warning("cannot read carbon factor version %s: %s", version, exc)
            fs = None
        if fs is None:
            try:
                fs = load_factor_set(version)
            except FactorSetError:
                fs = None
        with self._lock:
            if fs is None:
                if len(self._missing) > 1000:
                    self._missing.clear()
                self._missing[version] = time.monotonic()
            else:
                self._versions[fs.version] = fs
                self._missing.pop(version, None)
        return fs
