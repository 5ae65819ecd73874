"""Provider usage pollers: the scheduler that polls every active connection through the provider clients
(`providers/`) and publishes the buckets as UsageEvents. See docs/pollers.md."""
