"""Per-org budgets (429) and prepaid balances (402).

Rate and token budgets are per org, on the one limiter of core/ratelimit.py (`limits`; documented in
docs/gateway.md): a request takes one unit of the request budget's moving window up front; the token budget
must not be spent to start a request and is charged the request's actual tokens when it finishes (one request
can overdraw it; the next waits until its window resets). The store is `settings.rate_limit_storage`:
per process by default, shared by every gateway replica with `redis://…` (docs/deployment.md).

Prepaid balances live in the control plane (`controlplane.gateway.Balances`, micro-USD). Before a
request is forwarded, its maximum price at the first-choice upstream (estimated input tokens + max_tokens,
or `billing.default_output_reserve_tokens`) is *reserved* with one `UPDATE … WHERE balance >= price`; when
it ends, the difference to the actual price is settled by a background task (batched). A request that
costs more than its reservation (a fallback to a dearer upstream, a longer prompt than estimated) is
charged the difference at settlement, so a balance can end at most one request below zero. An org without a balance row is not prepaid
(no 402, no charge) unless `billing.require_prepaid` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem
from sqlalchemy import Engine

from controlplane.gateway import Balances
from core.ratelimit import Limiter, rate_item
from pipelines.gateway.auth import Caller
from pipelines.gateway.config import Billing, Budget, Budgets
from pipelines.gateway.errors import GatewayError

log = logging.getLogger("joulestream.gateway.budgets")
ACCOUNT_CACHE_S = 5.0


@dataclass(frozen=True)
class _OrgLimits:
    requests: RateLimitItem | None
    tokens: RateLimitItem | None


def _retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


class RateLimiter:
    """The org budgets over the one limiter (core/ratelimit.py): in its shared store (Redis) every gateway
    replica draws from the same budget."""

    def __init__(self, budgets: Budgets, limiter: Limiter | None = None) -> None:
        self.budgets = budgets
        self.limiter = limiter or Limiter()
        self._orgs: dict[str, _OrgLimits] = {}

    def budget_for(self, caller: Caller) -> Budget:
        b = self.budgets
        return (
            b.orgs.get(caller.org_slug)
            or b.orgs.get(caller.org_id)
            or b.plans.get(caller.plan_tier)
            or b.default
        )

    def _limits(self, caller: Caller) -> _OrgLimits:
        ol = self._orgs.get(caller.org_id)
        if ol is None:
            b = self.budget_for(caller)
            ol = _OrgLimits(
                rate_item(b.requests_per_minute, b.request_burst) if b.requests_per_minute else None,
                rate_item(b.tokens_per_minute, b.token_burst) if b.tokens_per_minute else None,
            )
            self._orgs[caller.org_id] = ol
        return ol

    def admit(self, caller: Caller) -> None:
        """Take one request from the org's budget, or raise 429 with Retry-After."""
        ol = self._limits(caller)
        if ol.tokens is not None:
            wait = self.limiter.spent(ol.tokens, "gw-tokens", caller.org_id)
            if wait:
                raise GatewayError(
                    429,
                    "Token budget exceeded for this organization; retry after the Retry-After seconds.",
                    type="rate_limit_error",
                    code="token_budget_exceeded",
                    headers={"Retry-After": _retry_after(wait)},
                )
        if ol.requests is not None:
            wait = self.limiter.take(ol.requests, "gw-requests", caller.org_id)
            if wait:
                raise GatewayError(
                    429,
                    "Request rate budget exceeded for this organization; retry after the Retry-After seconds.",
                    type="rate_limit_error",
                    code="rate_limit_exceeded",
                    headers={"Retry-After": _retry_after(wait)},
                )

    def charge_tokens(self, caller: Caller, tokens: int) -> None:
        ol = self._orgs.get(caller.org_id)
        if ol is not None and ol.tokens is not None and tokens:
            self.limiter.charge(ol.tokens, "gw-tokens", caller.org_id, cost=tokens)


@dataclass
class Reservation:
    org_id: str
    micros: int


class Prepaid:
    """Reserve / settle against the control plane's balances."""

    def __init__(self, engine: Engine, billing: Billing, flush_s: float = 0.1) -> None:
        self.balances = Balances(engine)
        self.billing = billing
        self.flush_s = flush_s
        self._accounts: dict[str, tuple[float, bool]] = {}  # org_id -> (expires, has prepaid account)
        self._deltas: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    def _insufficient(self) -> GatewayError:
        return GatewayError(
            402,
            "Your prepaid balance is empty (or too low for this request's maximum price). Top up to continue.",
            type="insufficient_balance",
            code="insufficient_balance",
        )

    def _reserve_sync(self, org_id: str, micros: int) -> tuple[bool, bool]:
        """(has account, reserved)."""
        if self.balances.debit(org_id, micros):
            return True, True
        return self.balances.get(org_id) is not None, False

    async def reserve(self, caller: Caller, micros: int) -> Reservation | None:
        """Reserve `micros` for a request: None when the org is not prepaid, else the reservation; 402 when
        the balance does not cover it."""
        now = time.monotonic()
        acct = self._accounts.get(caller.org_id)
        if acct is not None and acct[0] > now and not acct[1]:
            if self.billing.require_prepaid:
                raise self._insufficient()
            return None
        micros = max(1, micros)
        try:
            has_account, ok = await asyncio.to_thread(self._reserve_sync, caller.org_id, micros)
        except Exception as exc:
            log.exception("balance reservation failed")
            raise GatewayError(
                503, "billing is temporarily unavailable, retry", type="api_error", code="billing_unavailable"
            ) from exc
        self._accounts[caller.org_id] = (now + ACCOUNT_CACHE_S, has_account)
        if not has_account:
            if self.billing.require_prepaid:
                raise self._insufficient()
            return None
        if not ok:
            raise self._insufficient()
        return Reservation(caller.org_id, micros)

    def settle(self, reservation: Reservation | None, actual_micros: int) -> None:
        """Refund the unused part of a reservation (or charge the overshoot), in the background."""
        if reservation is None:
            return
        delta = reservation.micros - actual_micros
        if delta:
            self._deltas[reservation.org_id] = self._deltas.get(reservation.org_id, 0) + delta
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-balance-settler")

    async def _run(self) -> None:
        while not self._stopping or self._deltas:
            if not self._deltas:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            await asyncio.sleep(self.flush_s)
            deltas, self._deltas = self._deltas, {}
            try:
                await asyncio.to_thread(self.balances.adjust_many, deltas)
            except Exception:
                log.exception("balance settlement failed; will retry")
                for k, v in deltas.items():
                    self._deltas[k] = self._deltas.get(k, 0) + v
                if self._stopping:
                    return
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 10)
            except TimeoutError:
                self._task.cancel()
            self._task = None
        if self._deltas:
            log.error("unsettled balance deltas at shutdown: %s", self._deltas)
