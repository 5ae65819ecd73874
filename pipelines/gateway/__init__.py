"""The inference gateway (OpenAI-compatible): see docs/gateway.md and `app.create_gateway_app`."""

from pipelines.gateway.app import Gateway, create_gateway_app
from pipelines.gateway.config import GatewayConfig, RoutesError, load_routes, parse_routes

__all__ = ["Gateway", "GatewayConfig", "RoutesError", "create_gateway_app", "load_routes", "parse_routes"]
