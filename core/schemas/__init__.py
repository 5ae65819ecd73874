"""JSON Schema files of the event contracts. Regenerate with `python -m core.schemas`."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from core.contracts import DeadLetter, EnrichedUsage, UsageEvent

SCHEMA_DIR = Path(__file__).parent
MODELS: dict[str, type[BaseModel]] = {
    "usage_event.v1.json": UsageEvent,
    "enriched_usage.v1.json": EnrichedUsage,
    "dead_letter.v1.json": DeadLetter,
}


def render(model: type[BaseModel]) -> str:
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_all() -> list[Path]:
    paths = []
    for name, model in MODELS.items():
        path = SCHEMA_DIR / name
        path.write_text(render(model))
        paths.append(path)
    return paths
