"""core/windows.py: what last / start / end / years and the granularities mean."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.windows import WindowError, floor, last_window, next_bucket, window, year_windows

NOW = datetime(2026, 3, 4, 15, 27, 9, tzinfo=UTC)  # a Wednesday


def dt(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


@pytest.mark.parametrize(
    ("last", "start", "end"),
    [
        ("24h", dt(2026, 3, 3, 16), dt(2026, 3, 4, 16)),
        ("1h", dt(2026, 3, 4, 15), dt(2026, 3, 4, 16)),
        ("7d", dt(2026, 2, 26), dt(2026, 3, 5)),
        ("30d", dt(2026, 2, 3), dt(2026, 3, 5)),
        ("2w", dt(2026, 2, 19), dt(2026, 3, 5)),
        ("1y", dt(2025, 3, 5), dt(2026, 3, 5)),
        ("ytd", dt(2026, 1, 1), dt(2026, 3, 5)),
    ],
)
def test_last(last, start, end):
    w = last_window(last, NOW)
    assert (w.start, w.end, w.label) == (start, end, last)


def test_start_end_dates_are_whole_days_and_datetimes_whole_hours():
    w = window(last=None, start="2026-01-01", end="2026-01-31", now=NOW)
    assert (w.start, w.end, w.day_aligned) == (dt(2026, 1, 1), dt(2026, 2, 1), True)
    w = window(last=None, start="2026-01-01T10:00:00+02:00", end="2026-01-02T00:00:00Z", now=NOW)
    assert (w.start, w.end, w.day_aligned) == (dt(2026, 1, 1, 8), dt(2026, 1, 2), False)
    w = window(last=None, start="2026-03-01", end=None, now=NOW)
    assert w.end == dt(2026, 3, 4, 16)
    assert window(last=None, start=None, end=None, now=NOW).label == "30d"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"last": "0d"}, "last"),
        ({"last": "7"}, "last"),
        ({"last": "3654d"}, "last"),
        ({"last": "11y"}, "last"),
        ({"last": "7d", "start": "2026-01-01"}, "last"),
        ({"end": "2026-01-01"}, "start"),
        ({"start": "2026-01-02", "end": "2026-01-01"}, "end"),
        ({"start": "2026-01-01T10:30:00"}, "start"),
        ({"start": "yesterday"}, "start"),
        ({"start": "1999-12-31"}, "start"),
        ({"start": "2001-01-01", "end": "2011-06-01"}, "end"),
    ],
)
def test_bad_windows_name_their_field(kw, field):
    with pytest.raises(WindowError) as e:
        window(now=NOW, **{"last": None, "start": None, "end": None, **kw})
    assert e.value.field == field


def test_buckets_cover_the_window_and_clip_nothing_away():
    w = window(last=None, start="2026-01-28", end="2026-03-03", now=NOW)
    weeks = w.buckets("week")
    assert weeks[0] == dt(2026, 1, 26) and all(b.weekday() == 0 for b in weeks)  # ISO weeks from Monday
    assert weeks[-1] <= w.end - timedelta(days=1) < next_bucket(weeks[-1], "week")
    assert w.buckets("month") == [dt(2026, 1, 1), dt(2026, 2, 1), dt(2026, 3, 1)]
    assert len(w.buckets("day")) == 35 and len(w.buckets("hour")) == 35 * 24
    assert w.buckets("year") == [dt(2026, 1, 1)]
    assert next_bucket(dt(2026, 12, 1), "month") == dt(2027, 1, 1)
    assert floor(dt(2026, 3, 4, 15, 59), "hour") == dt(2026, 3, 4, 15)


def test_year_windows():
    ws = year_windows([2026, 2025, 2026])
    assert [(w.label, w.start, w.end) for w in ws] == [
        ("2025", dt(2025, 1, 1), dt(2026, 1, 1)),
        ("2026", dt(2026, 1, 1), dt(2027, 1, 1)),
    ]
    for bad in (1999, 2101):
        with pytest.raises(WindowError):
            year_windows([bad])
