"""Which carbon factor set the enrich agent applies: the current version in the control plane.

`joulestream factors publish FILE` adds a version; a running worker picks it up within `ttl_s`
without a restart. If the control-plane database cannot be read, the last known set stays in use
(and the built-in v1.0 before any read succeeded), so enrichment never stops on a control-plane hiccup.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from controlplane import FactorVersions
from core.methodology import FactorSet, load_factor_set

log = logging.getLogger(__name__)


class CurrentFactors:
    """Callable returning the current FactorSet, re-read from the control plane at most every `ttl_s`."""

    def __init__(self, engine: Engine, ttl_s: float = 10.0) -> None:
        self.repo = FactorVersions(engine)
        self.ttl_s = ttl_s
        self._current: FactorSet = load_factor_set()
        self._checked_at = float("-inf")
        self.repo.ensure_seeded()

    def __call__(self) -> FactorSet:
        now = time.monotonic()
        if now - self._checked_at >= self.ttl_s:
            self._checked_at = now
            try:
                latest = self.repo.current()
            except SQLAlchemyError as exc:
                log.warning("cannot read carbon factor versions, keeping %s: %s", self._current.version, exc)
                return self._current
            if latest is not None and latest.version != self._current.version:
                log.info("carbon factors %s → %s", self._current.version, latest.version)
                self._current = latest.factor_set
        return self._current
