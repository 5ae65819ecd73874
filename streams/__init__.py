"""Stream workers: validate → dedup → enrich → emit (usage.raw.v1 → usage.enriched.v1), and the
ClickHouse sink (usage.enriched.v1 → warehouse). Invalid input goes to usage.dlq.v1 with a reason."""
