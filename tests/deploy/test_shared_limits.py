"""Limits that hold across replicas: two `Limiter`s on one Redis store (two API or gateway replicas) share one
budget; two on `memory://` (the embedded default) each keep their own. Real Redis at 127.0.0.1:6379."""

from __future__ import annotations

import uuid

import pytest

from core.ratelimit import Limiter, PublicRateLimit, rate_item
from pipelines.gateway.auth import Caller
from pipelines.gateway.budgets import RateLimiter
from pipelines.gateway.config import Budget, Budgets
from pipelines.gateway.errors import GatewayError
from tests.stack import redis_up

REDIS = "redis://127.0.0.1:6379/0"


needs_redis = pytest.mark.skipif(not redis_up(), reason="no Redis at 127.0.0.1:6379")


def _caller() -> Caller:
    org = f"org_{uuid.uuid4().hex[:12]}"  # a fresh org: keys never collide between runs
    return Caller(org, org, "free", "k1", frozenset({"ingest"}), "p1", "w1")


def _admitted(limiters: list[RateLimiter], caller: Caller, n: int) -> list[bool]:
    out = []
    for i in range(n):
        try:
            limiters[i % len(limiters)].admit(caller)
            out.append(True)
        except GatewayError as e:
            assert e.status == 429 and int(e.headers["Retry-After"]) >= 1
            out.append(False)
    return out


@needs_redis
def test_two_gateway_replicas_share_the_request_budget_in_redis():
    budgets = Budgets(default=Budget(requests_per_minute=4))
    replicas = [RateLimiter(budgets, Limiter(REDIS)), RateLimiter(budgets, Limiter(REDIS))]
    caller = _caller()
    assert _admitted(replicas, caller, 6) == [True] * 4 + [False] * 2  # 4 in all, not 4 each


@needs_redis
def test_two_gateway_replicas_share_the_token_budget_and_its_overdraw():
    budgets = Budgets(default=Budget(tokens_per_minute=100))
    a, b = RateLimiter(budgets, Limiter(REDIS)), RateLimiter(budgets, Limiter(REDIS))
    caller = _caller()
    a.admit(caller)
    a.charge_tokens(caller, 60)
    b.admit(caller)  # 60 of 100 spent: the other replica still admits
    b.charge_tokens(caller, 70)  # overdraws to 130
    for replica in (a, b):
        with pytest.raises(GatewayError) as e:
            replica.admit(caller)
        assert e.value.code == "token_budget_exceeded"


@needs_redis
def test_two_api_replicas_share_the_public_verification_limit():
    scope = f"public-verify-{uuid.uuid4().hex[:8]}"
    a, b = PublicRateLimit("3/minute", REDIS), PublicRateLimit("3/minute", REDIS)
    got = [(a, b)[i % 2].check(scope, "192.0.2.7") for i in range(5)]
    assert got[:3] == [None, None, None]
    assert all(w is not None and 1 <= w <= 60 for w in got[3:])
    assert a.check(scope, "192.0.2.8") is None  # another client has its own window


def test_memory_store_is_per_process():
    """The embedded default: each limiter counts alone (one process serves everything there)."""
    budgets = Budgets(default=Budget(requests_per_minute=2))
    caller = _caller()
    a, b = RateLimiter(budgets, Limiter()), RateLimiter(budgets, Limiter())
    assert _admitted([a], caller, 3) == [True, True, False]
    assert _admitted([b], caller, 2) == [True, True]


def test_a_store_that_is_down_fails_open_and_logs_no_password(caplog):
    lim = Limiter("redis://:hunter2@127.0.0.1:1/0")  # nothing listens on port 1
    item = rate_item(1)
    assert [lim.take(item, "x") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.spent(item, "x") == 0.0 and lim.errors >= 4
    assert "127.0.0.1:1" in caplog.text and "hunter2" not in caplog.text


def test_rate_item_windows():
    assert (rate_item(60).amount, rate_item(60).get_expiry()) == (60, 60)  # default burst: a minute's worth
    assert (rate_item(60, 10).amount, rate_item(60, 10).get_expiry()) == (10, 10)
    assert (rate_item(0.5).amount, rate_item(0.5).get_expiry()) == (1, 120)
