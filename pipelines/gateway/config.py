"""The routing file (YAML): upstreams, budgets, billing and spool settings. See docs/gateway.md and
`routes.example.yaml`.

    upstreams:
      - name: nebius-helsinki            # unique
        provider: nebius                 # provider key of the carbon factor set (pue / grid tables)
        base_url: http://127.0.0.1:9001/v1
        api_key_env: NEBIUS_API_KEY      # the credential is read from this env var; never logged
        region: eu-helsinki
        silicon: h100-sxm5
        models: [llama-3.3-70b-instruct] # the first one is what `model: "auto"` sends to this upstream
        price_in_per_1m: 0.13            # USD per 1M input tokens
        price_out_per_1m: 0.40           # USD per 1M output tokens
        tiers: [L0, L1, L2]              # routing tiers this upstream is capable of
        endpoints: [chat, completions]   # or [embeddings]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.contracts import RoutingTier
from core.settings import env_secret

Endpoint = Literal["chat", "completions", "embeddings"]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class RoutesError(ValueError):
    """A routing file that cannot be used; the message lists every problem."""


class Upstream(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    provider: str = Field(min_length=1, max_length=64)
    base_url: str = Field(pattern=r"^https?://", description="OpenAI-compatible base URL, e.g. …/v1")
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    region: str | None = Field(default=None, max_length=64)
    silicon: str = Field(default="unknown", min_length=1, max_length=64)
    models: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1)
    price_in_per_1m: float = Field(ge=0, le=10_000)
    price_out_per_1m: float = Field(ge=0, le=10_000)
    tiers: list[RoutingTier] = Field(default_factory=lambda: list(RoutingTier))
    endpoints: list[Endpoint] = Field(default_factory=lambda: ["chat", "completions"])
    timeout_s: float = Field(default=60.0, gt=0, le=3600, description="read timeout per attempt")
    connect_timeout_s: float = Field(default=2.0, gt=0, le=60)
    max_connections: int = Field(default=256, ge=1, le=10_000)

    @field_validator("provider")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.strip().lower()

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @property
    def routed_to(self) -> str:
        """`provider/region/silicon`: the X-Routed-To header."""
        return f"{self.provider}/{self.region or 'default'}/{self.silicon}"

    def api_key(self) -> str | None:
        return env_secret(self.api_key_env)


class Budget(BaseModel):
    """Per-org budgets (token buckets). None = unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: float | None = Field(default=None, gt=0)
    request_burst: float | None = Field(default=None, gt=0, description="default: one minute's worth")
    tokens_per_minute: float | None = Field(default=None, gt=0)
    token_burst: float | None = Field(default=None, gt=0, description="default: one minute's worth")


class Budgets(BaseModel):
    """Which budget applies to an org: `orgs[slug or id]`, else `plans[plan_tier]`, else `default`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Budget = Budget()
    plans: dict[str, Budget] = Field(default_factory=dict)
    orgs: dict[str, Budget] = Field(default_factory=dict)


class Billing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    require_prepaid: bool = Field(
        default=False, description="orgs without a prepaid balance get 402 (default: they are not charged)"
    )
    default_output_reserve_tokens: int = Field(
        default=1024, ge=1, description="output tokens reserved when the request sets no max_tokens"
    )
    allowance_micros: int = Field(
        default=1_000_000,
        ge=0,
        description="micro-USD a gateway process takes from an org's balance at once and reserves requests "
        "against in memory (0: one balance UPDATE per request)",
    )
    allowance_idle_s: float = Field(
        default=5.0, gt=0, description="an allowance unused this long goes back to the balance"
    )


class SpoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: str | None = Field(default=None, description="default: $JOULESTREAM_HOME/gateway/spool")
    max_bytes: int = Field(default=1 << 30, ge=1 << 16)
    segment_bytes: int = Field(default=16 << 20, ge=1 << 12)


class Routing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pinned_fallback_to_tier: bool = Field(
        default=False,
        description="a pinned model whose every upstream failed may fall back to any upstream capable of "
        "the request's tier (default: only upstreams serving the same model)",
    )
    default_output_tokens: int = Field(
        default=256, ge=1, description="output tokens assumed for cost ranking when max_tokens is unset"
    )


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    upstreams: list[Upstream] = Field(min_length=1)
    routing: Routing = Routing()
    budgets: Budgets = Budgets()
    billing: Billing = Billing()
    spool: SpoolConfig = SpoolConfig()
    auth_cache_ttl_s: float = Field(default=30.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _unique(self) -> GatewayConfig:
        names = [u.name for u in self.upstreams]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate upstream name(s): {', '.join(dupes)}")
        for u in self.upstreams:
            if "auto" in u.models:
                raise ValueError(f"upstream {u.name}: 'auto' is reserved and cannot be a model name")
        return self


def parse_routes(text: str) -> GatewayConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RoutesError(f"routing file is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RoutesError("routing file must be a YAML mapping with an `upstreams:` list")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{loc}: {msg}" if loc else msg)
        raise RoutesError("invalid routing file: " + "; ".join(problems)) from exc


def load_routes(path: str | Path) -> GatewayConfig:
    p = Path(path)
    if not p.is_file():
        raise RoutesError(f"routing file {p} not found")
    return parse_routes(p.read_text(encoding="utf-8"))
