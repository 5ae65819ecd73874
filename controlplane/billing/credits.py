"""The carbon-credit inventory and its allocations to billing periods.

Tables (`controlplane.schema`, migration `0030_billing`): `credit_blocks` — the operator-loaded inventory
(`joulestream credits load FILE.csv`): a registry's block of consecutive serial numbers, one serial = one
tonne CO2e; `allocated_tonnes` counts the block's serials handed out, always from the start of the block.
`credit_allocations` — which serials (block, first index, count) cover which period.

Credits are taken with a compare-and-swap: `UPDATE credit_blocks SET allocated_tonnes = :seen + n WHERE id =
:id AND allocated_tonnes = :seen`; see `controlplane.billing.periods` for the locking rules.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, Engine, insert, select, update

from controlplane._util import new_id as _new_id
from controlplane._util import now as _now
from controlplane.billing.periods import lock_period
from controlplane.errors import Conflict, Invalid
from controlplane.schema import credit_allocations, credit_blocks

KG_PER_TONNE = 1000.0


class CreditBlock(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    registry: str
    serial_block: str
    serial_prefix: str
    first_number: int
    width: int
    project: str
    vintage: int
    tonnes: int
    allocated_tonnes: int
    loaded_at: datetime

    def serial(self, index: int) -> str:
        return f"{self.serial_prefix}{self.first_number + index:0{self.width}d}"

    @property
    def available(self) -> int:
        return self.tonnes - self.allocated_tonnes


class Allocation(BaseModel):
    model_config = ConfigDict(frozen=True)

    block_id: str
    registry: str
    project: str
    vintage: int
    first_index: int
    count: int
    serials: tuple[str, ...]


def tonnes_needed(co2_kg: float) -> int:
    """Whole tonnes (one credit serial each) that cover `co2_kg`."""
    if co2_kg <= 0:
        return 0
    return math.ceil(co2_kg / KG_PER_TONNE - 1e-12)


_BLOCK_RE = re.compile(r"^(?P<prefix>.*?)(?P<first>\d+)(?:-(?P<last>\d+))?$")
CSV_COLUMNS = ("registry", "serial_block", "project", "vintage", "tonnes")


@dataclass(frozen=True)
class BlockSpec:
    registry: str
    serial_block: str
    project: str
    vintage: int
    tonnes: int
    prefix: str
    first_number: int
    width: int


def parse_block(
    registry: str, serial_block: str, project: str, vintage: int | str, tonnes: int | str
) -> BlockSpec:
    """One inventory line. `serial_block` is `<prefix><first>-<last>` (e.g. `VCS-1234-2024-000001-000500`;
    `last - first + 1` must equal `tonnes`) or `<prefix><first>` (the block then spans `tonnes` serials)."""
    serial_block = serial_block.strip()
    registry, project = registry.strip(), project.strip()
    if not registry or not project:
        raise Invalid("registry and project must not be blank")
    try:
        t = int(str(tonnes).strip())
        v = int(str(vintage).strip())
    except ValueError:
        raise Invalid(f"{serial_block}: tonnes and vintage must be whole numbers") from None
    if t <= 0:
        raise Invalid(f"{serial_block}: tonnes must be positive (one serial per tonne)")
    if not 1990 <= v <= 2100:
        raise Invalid(f"{serial_block}: implausible vintage {v}")
    m = _BLOCK_RE.match(serial_block)
    if not m:
        raise Invalid(f"serial block {serial_block!r}: expected <prefix><first>-<last> or <prefix><first>")
    prefix, first_s, last_s = m.group("prefix"), m.group("first"), m.group("last")
    if last_s is not None and (len(first_s) != len(last_s) or int(last_s) < int(first_s)):
        # not a range (e.g. "VCS-1205-2024-000001": the last number starts the block)
        prefix, first_s, last_s = f"{prefix}{first_s}-", last_s, None
    if last_s is not None:
        first, last = int(first_s), int(last_s)
        if last - first + 1 != t:
            raise Invalid(f"serial block {serial_block!r} holds {last - first + 1} serials, not {t} tonnes")
        width = max(len(first_s), len(last_s))
    else:
        first, width = int(first_s), len(first_s)
    return BlockSpec(registry, serial_block, project, v, t, prefix, first, width)


class Credits:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def load_csv(self, text: str) -> tuple[int, int]:
        """Load inventory lines (header: registry,serial_block,project,vintage,tonnes). Returns (blocks
        added, blocks already present). All or nothing: one bad line rejects the file. Serial ranges must
        not overlap each other or the existing inventory."""
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise Invalid(
                f"credit CSV lacks column(s) {', '.join(missing)}; expected {', '.join(CSV_COLUMNS)}"
            )
        specs = []
        for i, line in enumerate(reader, start=2):
            try:
                specs.append(parse_block(**{c: line[c] or "" for c in CSV_COLUMNS}))
            except Invalid as exc:
                raise Invalid(f"line {i}: {exc}") from None
        now = _now()
        added = existing = 0
        with self.engine.begin() as conn:
            present = {r.serial_block: r for r in conn.execute(select(credit_blocks)).mappings().all()}
            ranges = [
                (
                    r["serial_prefix"],
                    r["first_number"],
                    r["first_number"] + r["tonnes"] - 1,
                    r["serial_block"],
                )
                for r in present.values()
            ]
            for s in specs:
                if s.serial_block in present:
                    old = present[s.serial_block]
                    if (old["registry"], old["project"], old["vintage"], old["tonnes"]) != (
                        s.registry,
                        s.project,
                        s.vintage,
                        s.tonnes,
                    ):
                        raise Conflict(f"serial block {s.serial_block} is already loaded with other details")
                    existing += 1
                    continue
                lo, hi = s.first_number, s.first_number + s.tonnes - 1
                for prefix, a, b, name in ranges:
                    if prefix == s.prefix and lo <= b and a <= hi:
                        raise Conflict(f"serial block {s.serial_block} overlaps {name}")
                ranges.append((s.prefix, lo, hi, s.serial_block))
                conn.execute(
                    insert(credit_blocks).values(
                        id=_new_id(),
                        registry=s.registry,
                        serial_block=s.serial_block,
                        serial_prefix=s.prefix,
                        first_number=s.first_number,
                        width=s.width,
                        project=s.project,
                        vintage=s.vintage,
                        tonnes=s.tonnes,
                        allocated_tonnes=0,
                        loaded_at=now,
                    )
                )
                present[s.serial_block] = {}  # type: ignore[assignment]
                added += 1
        return added, existing

    def blocks(self) -> list[CreditBlock]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(credit_blocks).order_by(*_BLOCK_ORDER)).mappings().all()
        return [CreditBlock(**dict(r)) for r in rows]

    def allocations(self, period_id: str) -> list[Allocation]:
        with self.engine.connect() as conn:
            return _allocations(conn, period_id)

    def allocate(self, period_id: str, tonnes: int, max_attempts: int = 50) -> list[Allocation]:
        """Allocate `tonnes` serials to the period, oldest vintage first; idempotent (a period that has
        allocations gets them back). Raises Invalid when the inventory cannot cover it (nothing allocated)."""
        if tonnes < 0:
            raise Invalid("tonnes must not be negative")
        with self.engine.begin() as conn:
            lock_period(conn, period_id)
            existing = _allocations(conn, period_id)
            if existing:
                have = sum(a.count for a in existing)
                if have != tonnes:
                    raise Conflict(f"period already holds {have} t of credits, not {tonnes} t")
                return existing
            if tonnes == 0:
                return []
            remaining = tonnes
            now = _now()
            for _ in range(max_attempts):
                if remaining == 0:
                    break
                rows = (
                    conn.execute(
                        select(credit_blocks)
                        .where(credit_blocks.c.allocated_tonnes < credit_blocks.c.tonnes)
                        .order_by(*_BLOCK_ORDER)
                    )
                    .mappings()
                    .all()
                )
                if sum(r["tonnes"] - r["allocated_tonnes"] for r in rows) < remaining:
                    raise Invalid(
                        f"credit inventory exhausted: this close needs {tonnes} t, "
                        f"{sum(r['tonnes'] - r['allocated_tonnes'] for r in rows) + tonnes - remaining} t available"
                    )
                for r in rows:
                    take = min(remaining, r["tonnes"] - r["allocated_tonnes"])
                    seen = r["allocated_tonnes"]
                    won = conn.execute(
                        update(credit_blocks)
                        .where(credit_blocks.c.id == r["id"], credit_blocks.c.allocated_tonnes == seen)
                        .values(allocated_tonnes=seen + take)
                    ).rowcount
                    if not won:  # another close took serials of this block first: re-read and retry
                        break
                    conn.execute(
                        insert(credit_allocations).values(
                            id=_new_id(),
                            period_id=period_id,
                            block_id=r["id"],
                            first_index=seen,
                            count=take,
                            created_at=now,
                        )
                    )
                    remaining -= take
                    if remaining == 0:
                        break
            if remaining:
                raise Conflict("could not allocate credits: too much contention, retry the close")
            return _allocations(conn, period_id)


_BLOCK_ORDER = (credit_blocks.c.vintage, credit_blocks.c.loaded_at, credit_blocks.c.serial_block)


def _allocations(conn: Connection, period_id: str) -> list[Allocation]:
    rows = (
        conn.execute(
            select(credit_allocations, credit_blocks)
            .join(credit_blocks, credit_blocks.c.id == credit_allocations.c.block_id)
            .where(credit_allocations.c.period_id == period_id)
            .order_by(credit_blocks.c.vintage, credit_blocks.c.serial_block, credit_allocations.c.first_index)
        )
        .mappings()
        .all()
    )
    out = []
    for r in rows:
        block = CreditBlock(**{c.name: r[c] for c in credit_blocks.c})
        first, count = r[credit_allocations.c.first_index], r[credit_allocations.c.count]
        out.append(
            Allocation(
                block_id=block.id,
                registry=block.registry,
                project=block.project,
                vintage=block.vintage,
                first_index=first,
                count=count,
                serials=tuple(block.serial(first + i) for i in range(count)),
            )
        )
    return out
