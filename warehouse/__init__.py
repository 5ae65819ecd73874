"""The ClickHouse warehouse: client factory, migrations, the signed usage ledger and typed queries.

Embedded mode uses chdb through clickhouse-connect (`chdb:///path`); production a ClickHouse server over HTTP.
See `warehouse.ledger` for the exactness design (signed ledger + MV rollups + `warehouse.reconcile`) and
`warehouse.measures` for the columns every reader derives its lists from.
"""

from warehouse.client import WarehouseError, WarehouseLocked, close_clients, get_client
from warehouse.ledger import WriteResult, write_enriched
from warehouse.migrate import MigrationError, migrate
from warehouse.reconcile import reconcile_rollups

__all__ = [
    "MigrationError",
    "WarehouseError",
    "WarehouseLocked",
    "WriteResult",
    "close_clients",
    "get_client",
    "migrate",
    "reconcile_rollups",
    "write_enriched",
]
