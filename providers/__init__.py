"""Provider usage-API clients, one module per provider (openai, anthropic, openrouter), on a shared base
(`base`: HTTP policy, errors, UsageBucket). Used by the pollers (pipelines/pollers) and by the API, which
checks a key when a connection is created. See docs/pollers.md."""

from __future__ import annotations

from core.settings import Settings
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


def base_urls(settings: Settings) -> dict[str, str]:
    """Provider base URLs: `settings.<provider>_base_url` (JOULESTREAM_<PROVIDER>_BASE_URL), else the
    provider's public API."""
    configured = {
        "openai": settings.openai_base_url,
        "anthropic": settings.anthropic_base_url,
        "openrouter": settings.openrouter_base_url,
    }
    return {p: (configured[p] or cls.default_base_url).rstrip("/") for p, cls in CLIENTS.items()}


def client_for(provider: str, api_key: str, base_url: str | None = None, **kwargs) -> ProviderClient:
    try:
        cls = CLIENTS[provider]
    except KeyError:
        raise ValueError(f"unknown provider {provider!r}") from None
    return cls(api_key, base_url=base_url, **kwargs)


__all__ = [
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
