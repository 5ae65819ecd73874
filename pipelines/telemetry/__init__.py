"""GPU telemetry: the third ingestion edge. Scrapes DCGM exporters and model servers (or a Prometheus server),
attributes measured GPU energy to models per hour and publishes UsageEvents (docs/measured-energy.md)."""
