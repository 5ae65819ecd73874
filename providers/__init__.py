"""Provider usage-API clients, one module per provider (openai, anthropic, openrouter), on a shared base
(`base`: HTTP policy, errors, UsageBucket). Used by the pollers (pipelines/pollers) and by the API, which
checks a key when a connection is created. See docs/pollers.md."""

from __future__ import annotations

import os
from collections.abc import Mapping

from providers.anthropic import AnthropicUsage
from providers.base import (
    AuthError,
    HttpPolicy,
    ProviderClient,
    ProviderError,
    ProviderResponseError,
    ProviderUnavailable,
    RateLimited,
    UsageBucket,
)
from providers.openai import OpenAIUsage
from providers.openrouter import OpenRouterUsage

CLIENTS: dict[str, type[ProviderClient]] = {
    "openai": OpenAIUsage,
    "anthropic": AnthropicUsage,
    "openrouter": OpenRouterUsage,
}
BASE_URL_ENV = {
    "openai": "JOULESTREAM_OPENAI_BASE_URL",
    "anthropic": "JOULESTREAM_ANTHROPIC_BASE_URL",
    "openrouter": "JOULESTREAM_OPENROUTER_BASE_URL",
}


def base_urls(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Provider base URLs: JOULESTREAM_<PROVIDER>_BASE_URL, else the provider's public API."""
    e = os.environ if env is None else env
    return {p: (e.get(var) or CLIENTS[p].default_base_url).rstrip("/") for p, var in BASE_URL_ENV.items()}


def client_for(provider: str, api_key: str, base_url: str | None = None, **kwargs) -> ProviderClient:
    try:
        cls = CLIENTS[provider]
    except KeyError:
        raise ValueError(f"unknown provider {provider!r}") from None
    return cls(api_key, base_url=base_url, **kwargs)


__all__ = [
    "BASE_URL_ENV",
    "CLIENTS",
    "AnthropicUsage",
    "AuthError",
    "HttpPolicy",
    "OpenAIUsage",
    "OpenRouterUsage",
    "ProviderClient",
    "ProviderError",
    "ProviderResponseError",
    "ProviderUnavailable",
    "RateLimited",
    "UsageBucket",
    "base_urls",
    "client_for",
]
