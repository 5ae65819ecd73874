"""Upstream selection: the ordered list of upstreams to try for one request.

- `model: "auto"`: every upstream that serves the endpoint and is capable of the request's tier, cheapest
  first (estimated price of *this* request: estimated input tokens × input price + expected output tokens ×
  output price), ties broken by lower grid intensity (the carbon factor set's grid table for the upstream's
  provider and region), then by order in the routing file. Each upstream is sent its first model.
- a pinned model: the upstreams that list it, in the same order; with `routing.pinned_fallback_to_tier`,
  followed by the tier-capable upstreams of the auto order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.contracts import RoutingTier
from core.methodology import FactorSet, grid_intensity
from core.pricing import price_usd
from pipelines.gateway.config import GatewayConfig, Upstream
from pipelines.gateway.errors import GatewayError

AUTO = "auto"


@dataclass(frozen=True)
class Candidate:
    upstream: Upstream
    model: str  # the model name sent upstream (and recorded)
    grid: float  # kg CO2e/kWh
    est_cost_usd: float


def request_cost_usd(u: Upstream, in_tokens: int, out_tokens: int) -> float:
    return price_usd(in_tokens, out_tokens, u.price_in_per_1m, u.price_out_per_1m)


class Router:
    """`factors` is a factor set, or a callable returning the current one (the grid intensities follow it)."""

    def __init__(self, config: GatewayConfig, factors: FactorSet | Callable[[], FactorSet]) -> None:
        self.config = config
        self.upstreams = list(config.upstreams)
        self.order = {u.name: i for i, u in enumerate(self.upstreams)}
        self._factors: Callable[[], FactorSet] = factors if callable(factors) else lambda: factors
        self._grid: tuple[FactorSet, dict[str, float]] | None = None
        self.by_model: dict[str, list[Upstream]] = {}
        for u in self.upstreams:
            for m in u.models:
                self.by_model.setdefault(m, []).append(u)

    @property
    def grid(self) -> dict[str, float]:
        """Grid intensity (kg CO2e/kWh) of each upstream under the current factor set."""
        fs = self._factors()
        if self._grid is None or self._grid[0] is not fs:
            self._grid = (fs, {u.name: grid_intensity(fs, u.provider, u.region) for u in self.upstreams})
        return self._grid[1]

    def _rank(self, items: list[tuple[Upstream, str]], in_tokens: int, out_tokens: int) -> list[Candidate]:
        grid = self.grid
        cands = [
            Candidate(u, model, grid[u.name], request_cost_usd(u, in_tokens, out_tokens))
            for u, model in items
        ]
        cands.sort(key=lambda c: (round(c.est_cost_usd, 12), c.grid, self.order[c.upstream.name]))
        return cands

    def auto(self, endpoint: str, tier: RoutingTier, in_tokens: int, out_tokens: int) -> list[Candidate]:
        items = [(u, u.models[0]) for u in self.upstreams if endpoint in u.endpoints and tier in u.tiers]
        return self._rank(items, in_tokens, out_tokens)

    def candidates(
        self, endpoint: str, model: str, tier: RoutingTier, in_tokens: int, out_tokens: int
    ) -> list[Candidate]:
        """Upstreams to try, in order. Raises GatewayError (404 unknown model, 400 wrong endpoint,
        503 nothing capable)."""
        if model == AUTO:
            cands = self.auto(endpoint, tier, in_tokens, out_tokens)
            if not cands:
                raise GatewayError(
                    503,
                    f"no upstream is configured for {endpoint} requests of tier {tier.value}",
                    type="api_error",
                    code="no_capable_upstream",
                )
            return cands
        serving = self.by_model.get(model)
        if not serving:
            raise GatewayError(
                404,
                f"The model `{model}` does not exist or is not routed by this gateway; "
                'see GET /v1/models, or use model "auto"',
                type="invalid_request_error",
                param="model",
                code="model_not_found",
            )
        on_endpoint = [u for u in serving if endpoint in u.endpoints]
        if not on_endpoint:
            raise GatewayError(
                400,
                f"The model `{model}` is not served on the {endpoint} endpoint",
                type="invalid_request_error",
                param="model",
                code="model_not_supported",
            )
        cands = self._rank([(u, model) for u in on_endpoint], in_tokens, out_tokens)
        if self.config.routing.pinned_fallback_to_tier:
            pinned = {c.upstream.name for c in cands}
            cands += [
                c for c in self.auto(endpoint, tier, in_tokens, out_tokens) if c.upstream.name not in pinned
            ]
        return cands

    def model_list(self) -> list[dict]:
        """GET /v1/models entries (OpenAI shape plus a `joulestream` object with tiers, prices, routes)."""
        out = []
        grid = self.grid
        tiers_all = sorted({t.value for u in self.upstreams for t in u.tiers})
        out.append(
            {
                "id": AUTO,
                "object": "model",
                "created": 0,
                "owned_by": "joulestream",
                "joulestream": {
                    "tiers": tiers_all,
                    "cost_tier": "routed",
                    "description": "routed per request to the cheapest capable upstream (docs/gateway.md)",
                },
            }
        )
        for model, ups in self.by_model.items():
            prices = [(u.price_in_per_1m, u.price_out_per_1m) for u in ups]
            lo_in = min(p[0] for p in prices)
            lo_out = min(p[1] for p in prices)
            out.append(
                {
                    "id": model,
                    "object": "model",
                    "created": 0,
                    "owned_by": ups[0].provider,
                    "joulestream": {
                        "tiers": sorted({t.value for u in ups for t in u.tiers}),
                        "cost_tier": cost_tier(lo_in, lo_out),
                        "price_per_1m_input_usd": lo_in,
                        "price_per_1m_output_usd": lo_out,
                        "endpoints": sorted({e for u in ups for e in u.endpoints}),
                        "routes": [
                            {
                                "upstream": u.name,
                                "routed_to": u.routed_to,
                                "grid_kg_per_kwh": grid[u.name],
                            }
                            for u in ups
                        ],
                    },
                }
            )
        return out


def cost_tier(price_in: float, price_out: float) -> str:
    """Coarse price class of a model, by blended 3:1 input:output USD per 1M tokens: low < $0.5 ≤ medium <
    $2 ≤ high."""
    blended = (3 * price_in + price_out) / 4
    if blended < 0.5:
        return "low"
    if blended < 2:
        return "medium"
    return "high"
