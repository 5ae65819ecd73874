from datetime import UTC, datetime, date
from warehouse.ledger import write_enriched
from warehouse import close

def test_q(warehouse, make_enriched):
    client, db = warehouse
    evs = [make_enriched(f"e{i}", bucket_start=datetime(2026, 10, 1+i, tzinfo=UTC), labels={"a": "b"}) for i in range(3)]
    write_enriched(client, evs)
    cutoff = datetime.now(UTC)
    print(close.close_orgs(client, date(2026,10,1), date(2026,11,1), cutoff))
    print(close.close_totals(client, "org_a", date(2026,10,1), date(2026,11,1), cutoff, None))
    print(close.close_totals(client, "org_a", date(2026,11,1), date(2026,12,1), cutoff, datetime(2026,1,1,tzinfo=UTC)))
    t = close.close_events(client, "org_a", date(2026,10,1), date(2026,11,1), cutoff, None)
    print(t.schema, t.num_rows, t.column("labels"))
