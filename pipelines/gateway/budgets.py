"""Per-org budgets (429) and prepaid balances (402).

Rate and token budgets are per org, on the one limiter of core/ratelimit.py (`limits`; documented in
docs/gateway.md): a request takes one unit of the request budget's moving window up front; the token budget
must not be spent to start a request and is charged the request's actual tokens when it finishes (one request
can overdraw it; the next waits until its window resets). The store is `settings.rate_limit_storage`:
per process by default, shared by every gateway replica with `redis://…` (docs/deployment.md).

Prepaid balances live in the control plane (`controlplane.gateway.Balances`, micro-USD). Before a
request is forwarded, its maximum price at the first-choice upstream (estimated input tokens + max_tokens,
or `billing.default_output_reserve_tokens`) is *reserved* against an allowance the process took from the
balance in advance (`Prepaid`: no database write on most requests); when it ends, the difference to the
actual price goes back into the allowance and the spend to the ledger, batched in the background. A request that
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
from datetime import UTC, datetime

from limits import RateLimitItem
from sqlalchemy import Engine

from controlplane.gateway import Balances
from controlplane.ledger import Ledger
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
    """Reserve / settle against the control plane's balances, through an in-memory allowance per org.

    A process takes `billing.allowance_micros` (default 1 USD) from an org's balance at once (one
    `UPDATE … WHERE balance >= allowance`; when the balance is smaller, just what the request needs) and
    reserves requests against it in memory. Settlement refunds into the allowance; the spend is written to
    the ledger (`controlplane.ledger`, one debit row per org and hour) by a background flusher, batched. An
    allowance unused for `allowance_idle_s` (and everything at shutdown, or when a request finds the
    balance short) goes back to the balance. Bounds: a balance never goes below zero by more than the
    overshoot of requests that cost more than their reservation (as before); while a process holds an
    allowance, other processes see the balance lower by at most `allowance_micros` per process and org.
    A crashed process loses what it held (at most `allowance_micros` per org; the ledger shows it)."""

    def __init__(self, engine: Engine, billing: Billing, flush_s: float = 0.1) -> None:
        self.balances = Balances(engine)
        self.ledger = Ledger(engine)
        self.billing = billing
        self.flush_s = flush_s
        self._accounts: dict[str, tuple[float, bool]] = {}  # org_id -> (expires, has prepaid account)
        self._held: dict[str, int] = {}  # org_id -> micro-USD taken from the balance, not reserved
        self._used: dict[str, float] = {}  # org_id -> last reservation (monotonic)
        self._refills: dict[str, asyncio.Lock] = {}
        self._returns: dict[str, int] = {}  # org_id -> micro-USD to put back on the balance
        self._spent: dict[tuple[str, datetime], list[int]] = {}  # (org, hour) -> [micro-USD, requests]
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

    def _take_sync(self, org_id: str, need: int) -> tuple[bool, int]:
        """(has account, micro-USD taken): the allowance when the balance covers it, else `need`, else 0."""
        chunk = max(self.billing.allowance_micros, need)
        if self.balances.debit(org_id, chunk):
            return True, chunk
        if chunk != need and self.balances.debit(org_id, need):
            return True, need
        return self.balances.get(org_id) is not None, 0

    async def reserve(self, caller: Caller, micros: int) -> Reservation | None:
        """Reserve `micros` for a request: None when the org is not prepaid, else the reservation; 402 when
        the balance does not cover it."""
        now = time.monotonic()
        org_id = caller.org_id
        micros = max(1, micros)
        held = self._held.get(org_id)
        if held is not None and held >= micros:  # the fast path: no database
            self._held[org_id] = held - micros
            self._used[org_id] = now
            return Reservation(org_id, micros)
        acct = self._accounts.get(org_id)
        if acct is not None and acct[0] > now and not acct[1]:
            if self.billing.require_prepaid:
                raise self._insufficient()
            return None
        lock = self._refills.setdefault(org_id, asyncio.Lock())
        async with lock:  # one refill per org at a time; those waiting reserve from what it took
            held = self._held.get(org_id, 0)
            if held < micros:
                try:
                    has_account, taken = await asyncio.to_thread(self._take_sync, org_id, micros - held)
                except Exception as exc:
                    log.exception("balance reservation failed")
                    raise GatewayError(
                        503,
                        "billing is temporarily unavailable, retry",
                        type="api_error",
                        code="billing_unavailable",
                    ) from exc
                self._accounts[org_id] = (now + ACCOUNT_CACHE_S, has_account)
                if not has_account:
                    if self.billing.require_prepaid:
                        raise self._insufficient()
                    return None
                if not taken:  # short: give back what this process holds, so the balance shows it
                    self._give_back(org_id)
                    raise self._insufficient()
                held = self._held.get(org_id, 0) + taken
            self._held[org_id] = held - micros
            self._used[org_id] = time.monotonic()
        return Reservation(org_id, micros)

    def _give_back(self, org_id: str) -> None:
        held = self._held.pop(org_id, 0)
        if held:
            self._returns[org_id] = self._returns.get(org_id, 0) + held
            self._wake.set()

    def settle(self, reservation: Reservation | None, actual_micros: int) -> None:
        """Refund the unused part of a reservation into the allowance (an overshoot makes it negative) and
        count the spend for the ledger; written in the background."""
        if reservation is None:
            return
        org_id = reservation.org_id
        self._held[org_id] = self._held.get(org_id, 0) + reservation.micros - actual_micros
        if actual_micros:
            key = (org_id, datetime.now(UTC).replace(minute=0, second=0, microsecond=0))
            spent = self._spent.setdefault(key, [0, 0])
            spent[0] += actual_micros
            spent[1] += 1
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-balance-settler")

    def _expire_idle(self, everything: bool = False) -> None:
        now = time.monotonic()
        for org_id in list(self._held):
            idle = now - self._used.get(org_id, 0.0) >= self.billing.allowance_idle_s
            if everything or idle or self._held[org_id] < 0:  # a debt is settled at once
                lock = self._refills.get(org_id)
                if lock is None or not lock.locked():
                    self._give_back(org_id)

    async def _run(self) -> None:
        while True:
            self._expire_idle(everything=self._stopping)
            if not self._returns and not self._spent:
                if self._stopping:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(1.0, self.billing.allowance_idle_s))
                continue
            await asyncio.sleep(self.flush_s)
            self._expire_idle(everything=self._stopping)
            returns, self._returns = self._returns, {}
            spent, self._spent = self._spent, {}
            try:
                await asyncio.to_thread(
                    self.ledger.settle, returns, {k: (v[0], v[1]) for k, v in spent.items()}
                )
            except Exception:
                log.exception("balance settlement failed; will retry")
                for k, v in returns.items():
                    self._returns[k] = self._returns.get(k, 0) + v
                for key, (m, n) in spent.items():
                    cur = self._spent.setdefault(key, [0, 0])
                    cur[0] += m
                    cur[1] += n
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
        if self._returns or self._held or self._spent:
            log.error("unsettled balances at shutdown: returns %s held %s", self._returns, self._held)
