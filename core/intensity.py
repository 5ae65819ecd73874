"""Hourly grid-intensity profiles and the carbon-aware batch schedule (docs/batch.md).

A profile is, per region, the expected grid intensity (kg CO2e per kWh) for each hour of the day, UTC. An
operator loads it as CSV (`joulestream batch profile load FILE`, or `PUT /v1/intensity-profiles`):

    region,hour_utc,intensity_kg_per_kwh
    eu-north-1,0,0.031
    eu-north-1,1,0.029
    ...                                     (all 24 hours of each region, 0-23)

The schedule (`plan_start`): a batch may start now or at the start of any whole hour that leaves
`margin_h` of its completion window to finish; it starts at the candidate with the lowest expected intensity
(the earliest of equals, so "now" wins a tie). Without a profile for the region it starts now.

The report (`carbon_report`): with the profile, the CO2e of the energy the batch used, each line at the
intensity of the hour it ran, versus the same energy at the intensity of the hour the batch was created
(running at once). The ledger's CO2e is the factor set's (methodology); this report is the operator
profile's estimate of what the deferral saved.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from core.methodology import J_PER_KWH

HOURS = 24
MAX_INTENSITY = 2.0  # kg/kWh: coal is ~1.0; more is a units error (g/kWh)
CSV_HEADER = ("region", "hour_utc", "intensity_kg_per_kwh")


class HourlyProfile(BaseModel):
    region: str = Field(min_length=1, max_length=64)
    hours: list[float] = Field(min_length=HOURS, max_length=HOURS)  # index = hour of the day, UTC

    def at(self, when: datetime) -> float:
        return self.hours[when.hour]


class CarbonReport(BaseModel):
    region: str | None
    profile: bool  # a profile was loaded for the region
    deferred_until: datetime | None  # the planned start, when later than creation
    intensity_immediate_kg_per_kwh: float | None
    intensity_planned_kg_per_kwh: float | None
    energy_j: float = 0.0
    co2e_kg_immediate: float | None = None
    co2e_kg_scheduled: float | None = None
    co2e_kg_saved: float | None = None


class ProfileError(ValueError):
    """A profile CSV that cannot be loaded; the message names the line."""


def parse_profile_csv(text: str) -> list[HourlyProfile]:
    """The profiles of a CSV (header `region,hour_utc,intensity_kg_per_kwh`; every region all 24 hours)."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(c.strip() for c in rows[0]) != CSV_HEADER:
        raise ProfileError(f"line 1: the header must be {','.join(CSV_HEADER)}")
    by_region: dict[str, dict[int, float]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 3:
            raise ProfileError(f"line {n}: expected 3 fields, got {len(row)}")
        region, hour_s, value_s = (c.strip() for c in row)
        if not region or len(region) > 64:
            raise ProfileError(f"line {n}: region must be 1-64 characters")
        try:
            hour, value = int(hour_s), float(value_s)
        except ValueError:
            raise ProfileError(f"line {n}: hour_utc must be an integer and intensity a number") from None
        if not 0 <= hour < HOURS:
            raise ProfileError(f"line {n}: hour_utc must be 0-23, got {hour}")
        if not 0 <= value <= MAX_INTENSITY:
            raise ProfileError(
                f"line {n}: intensity {value} is outside 0-{MAX_INTENSITY} kg CO2e/kWh "
                "(values in g/kWh must be divided by 1000)"
            )
        hours = by_region.setdefault(region, {})
        if hour in hours:
            raise ProfileError(f"line {n}: hour {hour} of {region} is given twice")
        hours[hour] = value
    if not by_region:
        raise ProfileError("the file holds no profile rows")
    out = []
    for region, hours in by_region.items():
        missing = sorted(set(range(HOURS)) - set(hours))
        if missing:
            raise ProfileError(f"region {region}: hours {missing} are missing (all 24 are required)")
        out.append(HourlyProfile(region=region, hours=[hours[h] for h in range(HOURS)]))
    return out


def plan_start(
    profile: HourlyProfile | None, now: datetime, expires_at: datetime, margin_h: float
) -> datetime:
    """When a batch created at `now` should start (see the module doc)."""
    if profile is None:
        return now
    latest = expires_at - timedelta(hours=margin_h)
    best, best_i = now, profile.at(now)
    slot = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    while slot <= latest:
        i = profile.at(slot)
        if i < best_i:
            best, best_i = slot, i
        slot += timedelta(hours=1)
    return best


def carbon_report(
    region: str | None,
    profile: HourlyProfile | None,
    created_at: datetime,
    planned: datetime | None,
    lines: Iterable[tuple[float, datetime]],
) -> CarbonReport:
    """The batch's CO2e as run versus run at once; `lines` = (energy J, when it ran) per finished line."""
    lines = list(lines)
    energy = sum(e for e, _ in lines)
    if profile is None:
        return CarbonReport(
            region=region,
            profile=False,
            deferred_until=None,
            intensity_immediate_kg_per_kwh=None,
            intensity_planned_kg_per_kwh=None,
            energy_j=energy,
        )
    now_i = profile.at(created_at)
    immediate = energy / J_PER_KWH * now_i
    scheduled = sum(e / J_PER_KWH * profile.at(t) for e, t in lines)
    return CarbonReport(
        region=region,
        profile=True,
        deferred_until=planned if planned is not None and planned > created_at else None,
        intensity_immediate_kg_per_kwh=now_i,
        intensity_planned_kg_per_kwh=profile.at(planned) if planned is not None else now_i,
        energy_j=energy,
        co2e_kg_immediate=immediate,
        co2e_kg_scheduled=scheduled,
        co2e_kg_saved=immediate - scheduled,
    )
