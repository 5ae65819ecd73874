"""Ingestion edges: they turn usage into `UsageEvent`s on `usage.raw.v1`."""
