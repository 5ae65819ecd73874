"""Reporting windows and time buckets: what `last=7d`, `start`/`end`, `years=2025` and a granularity mean.

Every window is a half-open range of whole UTC hours, `[start, end)`, because the finest rollup is hourly:
any window is then exactly a set of rollup rows, and every granularity over it sums the same events.

* `last=<n>h` — the n hours ending with the current (partial) hour: `end` = the next whole hour.
* `last=<n>d`, `<n>w`, `<n>y` — n days (7n, 365n) ending with today (UTC, today included): `end` = the next
  midnight. `1y` is 365 days.
* `last=ytd` — 1 January of the current year to the next midnight.
* `start` / `end` — ISO 8601. A date is a whole day (`end=2026-01-31` includes the 31st); a date-time must be
  a whole hour (`end` is then exclusive) and reads as UTC when it has no offset.
* `years=2025` — the calendar year [2025-01-01, 2026-01-01).

Windows are at most 10 years long and within years 2000–2100. Buckets (`hour`, `day`, `week` — ISO weeks
starting on Monday —, `month`, `year`) are labelled by their start; the first and last bucket of a window that
does not start or end on a bucket boundary hold only the part inside the window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

Granularity = Literal["hour", "day", "week", "month", "year"]
GRANULARITIES: tuple[Granularity, ...] = ("hour", "day", "week", "month", "year")
# the report's spelling of the same granularities
REPORT_GRANULARITIES: dict[str, Granularity] = {
    "hourly": "hour",
    "daily": "day",
    "weekly": "week",
    "monthly": "month",
    "yearly": "year",
}
# the windows of the precomputed dashboard (KPI cache), each with the granularity of its chart
WINDOW_SLUGS: dict[str, Granularity] = {"24h": "hour", "7d": "day", "30d": "day", "1y": "week", "ytd": "day"}
MAX_WINDOW = timedelta(days=3653)  # 10 years
MIN_YEAR, MAX_YEAR = 2000, 2100
_LAST = re.compile(r"^([1-9][0-9]{0,5})([hdwy])$")
_HOUR = timedelta(hours=1)


class WindowError(ValueError):
    """A window parameter is invalid: `field` names the query parameter (for a 422's field errors)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Window:
    """[start, end) in whole UTC hours; `label` names it in file names and responses (`7d`, `2025`, …)."""

    start: datetime
    end: datetime
    label: str

    @property
    def day_aligned(self) -> bool:
        """Both ends on midnight: the daily rollup holds exactly this window."""
        return self.start.hour == 0 and self.end.hour == 0

    def buckets(self, granularity: Granularity) -> list[datetime]:
        """The start of every bucket the window touches, in order (the first one floored)."""
        out = []
        b = floor(self.start, granularity)
        while b < self.end:
            out.append(b)
            b = next_bucket(b, granularity)
        return out


def floor(t: datetime, granularity: Granularity) -> datetime:
    """The start of the bucket holding `t` (aware UTC)."""
    t = t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if granularity == "hour":
        return t
    t = t.replace(hour=0)
    if granularity == "day":
        return t
    if granularity == "week":
        return t - timedelta(days=t.weekday())
    if granularity == "month":
        return t.replace(day=1)
    return t.replace(month=1, day=1)


def next_bucket(b: datetime, granularity: Granularity) -> datetime:
    if granularity == "hour":
        return b + _HOUR
    if granularity == "day":
        return b + timedelta(days=1)
    if granularity == "week":
        return b + timedelta(days=7)
    if granularity == "month":
        return b.replace(year=b.year + 1, month=1) if b.month == 12 else b.replace(month=b.month + 1)
    return b.replace(year=b.year + 1)


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _check(w: Window, field: str) -> Window:
    if w.start >= w.end:
        raise WindowError(field, "start must be before end")
    if w.end - w.start > MAX_WINDOW:
        raise WindowError(field, "a window is at most 10 years")
    if w.start.year < MIN_YEAR or w.end > _midnight(date(MAX_YEAR + 1, 1, 1)):
        raise WindowError(field, f"windows lie within the years {MIN_YEAR}–{MAX_YEAR}")
    return w


def last_window(last: str, now: datetime) -> Window:
    """`last` (`24h`, `7d`, `4w`, `1y`, `ytd`, …) ending now."""
    now = now.astimezone(UTC)
    tomorrow = _midnight(now.date() + timedelta(days=1))
    if last == "ytd":
        return _check(Window(_midnight(date(now.year, 1, 1)), tomorrow, "ytd"), "last")
    m = _LAST.match(last)
    if m is None:
        raise WindowError("last", "last must be <n>h, <n>d, <n>w, <n>y (e.g. 24h, 7d, 30d, 1y) or ytd")
    n, unit = int(m.group(1)), m.group(2)
    if n > 100_000:
        raise WindowError("last", "a window is at most 10 years")
    if unit == "h":
        end = floor(now, "hour") + _HOUR
        return _check(Window(end - n * _HOUR, end, last), "last")
    days = {"d": 1, "w": 7, "y": 365}[unit] * n
    if days > MAX_WINDOW.days:
        raise WindowError("last", "a window is at most 10 years")
    return _check(Window(tomorrow - timedelta(days=days), tomorrow, last), "last")


def _parse_bound(value: str, field: str, *, is_end: bool) -> datetime:
    text = value.strip()
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return _midnight(d + timedelta(days=1) if is_end else d)
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise WindowError(field, f"{field} must be an ISO 8601 date or date-time") from None
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    if (t.minute, t.second, t.microsecond) != (0, 0, 0):
        raise WindowError(field, f"{field} must be a whole hour (the finest rollup is hourly)")
    return t


def window(
    *,
    last: str | None,
    start: str | None,
    end: str | None,
    now: datetime,
    default_last: str = "30d",
) -> Window:
    """The window of a request's `last` or `start`/`end` (neither: `default_last`)."""
    if last is not None and (start is not None or end is not None):
        raise WindowError("last", "give last or start/end, not both")
    if start is None and end is not None:
        raise WindowError("start", "start is required with end")
    if start is None:
        return last_window(last or default_last, now)
    lo = _parse_bound(start, "start", is_end=False)
    if lo.year < MIN_YEAR or lo.year > MAX_YEAR:
        raise WindowError("start", f"start must lie within the years {MIN_YEAR}–{MAX_YEAR}")
    hi = _parse_bound(end, "end", is_end=True) if end is not None else floor(now, "hour") + _HOUR
    if hi.year > MAX_YEAR + 1 or hi.year < MIN_YEAR:
        raise WindowError("end", f"end must lie within the years {MIN_YEAR}–{MAX_YEAR}")
    if lo >= hi:
        raise WindowError("end", "start must be before end")
    label = f"{lo:%Y%m%dT%H}-{hi:%Y%m%dT%H}" if not (lo.hour == hi.hour == 0) else f"{lo:%Y%m%d}-{hi:%Y%m%d}"
    return _check(Window(lo, hi, label), "end")


def year_windows(years: list[int]) -> list[Window]:
    """One window per calendar year, in order, each once."""
    out = []
    for y in sorted(set(years)):
        if not MIN_YEAR <= y <= MAX_YEAR:
            raise WindowError("years", f"years must lie within {MIN_YEAR}–{MAX_YEAR}")
        out.append(Window(_midnight(date(y, 1, 1)), _midnight(date(y + 1, 1, 1)), str(y)))
    return out
