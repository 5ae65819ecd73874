"""Hourly intensity profiles: the CSV format and its errors, the cleanest start within the completion window,
and the CO2e report versus running at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.intensity import HourlyProfile, ProfileError, carbon_report, parse_profile_csv, plan_start

HEADER = "region,hour_utc,intensity_kg_per_kwh\n"


def csv_for(region: str, hours: list[float]) -> str:
    return "".join(f"{region},{h},{v}\n" for h, v in enumerate(hours))


def test_parse_two_regions() -> None:
    text = (
        HEADER
        + csv_for("eu-north-1", [0.03] * 24)
        + "\n"
        + csv_for("us-east-1", [0.4 + h / 100 for h in range(24)])
    )
    got = {p.region: p for p in parse_profile_csv(text)}
    assert set(got) == {"eu-north-1", "us-east-1"}
    assert got["us-east-1"].hours[23] == pytest.approx(0.63)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("region,hour,value\n", "line 1: the header"),
        (HEADER + "r,24,0.1\n", "hour_utc must be 0-23"),
        (HEADER + "r,x,0.1\n", "must be an integer"),
        (HEADER + "r,1,350\n", "g/kWh"),
        (HEADER + "r,1,-0.1\n", "outside"),
        (HEADER + "r,1\n", "expected 3 fields"),
        (HEADER + csv_for("r", [0.1] * 23), "hours [23] are missing"),
        (HEADER + csv_for("r", [0.1] * 24) + "r,5,0.2\n", "hour 5 of r is given twice"),
        (HEADER, "no profile rows"),
    ],
)
def test_parse_errors_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(ProfileError, match=None) as exc:
        parse_profile_csv(text)
    assert fragment in str(exc.value)


def test_plan_picks_the_cleanest_hour_within_the_window_minus_margin() -> None:
    now = datetime(2026, 12, 3, 10, 30, tzinfo=UTC)
    hours = [0.4] * 24
    hours[15], hours[3], hours[9] = 0.1, 0.05, 0.01  # 09:00 tomorrow is past expires - margin (08:30)
    p = HourlyProfile(region="r", hours=hours)
    expires = now + timedelta(hours=24)
    assert plan_start(p, now, expires, 2.0) == datetime(2026, 12, 4, 3, 0, tzinfo=UTC)
    assert plan_start(p, now, expires, 0.0) == datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    assert plan_start(None, now, expires, 2.0) == now  # no profile: at once
    flat = HourlyProfile(region="r", hours=[0.3] * 24)
    assert plan_start(flat, now, expires, 2.0) == now  # a tie: now wins
    hours[10] = 0.001  # the current hour is the cleanest
    assert plan_start(HourlyProfile(region="r", hours=hours), now, expires, 2.0) == now


def test_report_saving_against_running_at_once() -> None:
    created = datetime(2026, 12, 3, 10, 30, tzinfo=UTC)
    hours = [0.4] * 24
    hours[3] = 0.05
    p = HourlyProfile(region="r", hours=hours)
    start = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)
    lines = [
        (3.6e6, start + timedelta(minutes=1)),
        (7.2e6, start + timedelta(minutes=70)),
    ]  # 1 kWh at 03h, 2 at 04h
    r = carbon_report("r", p, created, start, lines)
    assert r.deferred_until == start and r.energy_j == 10.8e6
    assert r.co2e_kg_immediate == pytest.approx(3 * 0.4)
    assert r.co2e_kg_scheduled == pytest.approx(1 * 0.05 + 2 * 0.4)
    assert r.co2e_kg_saved == pytest.approx(1.2 - 0.85)
    none = carbon_report("r", None, created, created, lines)
    assert none.profile is False and none.co2e_kg_saved is None and none.energy_j == 10.8e6
