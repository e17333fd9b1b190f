"""schemas.cron against a brute-force minute walk, and the schedules and errors users meet."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kyb.cli.printers import table
from schemas import cron

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def field(lo: int, hi: int):
    n = st.integers(lo, hi)
    return st.one_of(
        st.just("*"), n.map(str), st.tuples(n, n).map(lambda t: f"{min(t)}-{max(t)}"),
        st.tuples(n, st.integers(1, 7)).map(lambda t: f"{t[0]}/{t[1]}"), st.integers(1, 9).map(lambda s: f"*/{s}"),
        st.lists(n, min_size=1, max_size=3).map(lambda v: ",".join(map(str, v))))


@settings(max_examples=200, deadline=None)
@given(m=field(0, 59), h=field(0, 23), dom=field(1, 31), mon=st.just("*"), dow=field(0, 6),
       start=st.integers(0, 60 * 24 * 60))
def test_next_is_the_first_matching_minute(m, h, dom, mon, dow, start):
    s = cron.parse(f"{m} {h} {dom} {mon} {dow}")
    after = T0 + dt.timedelta(minutes=start, seconds=17)
    got = s.next(after)
    t = after.replace(second=0) + dt.timedelta(minutes=1)
    for _ in range(60 * 24 * 40):
        if t.minute in s.minutes and t.hour in s.hours and t.month in s.months and s.day_matches(t.date()):
            assert got == t
            return
        t += dt.timedelta(minutes=1)
    assert got is None or got > t


@pytest.mark.parametrize(("schedule", "after", "expected"), [
    pytest.param("@hourly", "2024-01-01T10:15:00", "2024-01-01T11:00:00", id="hourly"),
    pytest.param("@weekly", "2024-01-01T10:15:00", "2024-01-07T00:00:00", id="weekly-sunday"),
    pytest.param("0 0 1 JAN *", "2024-03-01T00:00:00", "2025-01-01T00:00:00", id="month-name"),
    pytest.param("30 8 * * MON-FRI", "2024-01-05T09:00:00", "2024-01-08T08:30:00", id="weekdays"),
    pytest.param("0 0 13 * 5", "2024-01-01T00:00:00", "2024-01-05T00:00:00", id="dom-or-dow"),
    pytest.param("0 0 */10 * *", "2024-01-01T00:00:00", "2024-01-11T00:00:00", id="dom-step-from-1"),
])
def test_schedules(schedule, after, expected):
    got = cron.parse(schedule).next(dt.datetime.fromisoformat(after).replace(tzinfo=dt.UTC))
    assert got == dt.datetime.fromisoformat(expected).replace(tzinfo=dt.UTC)


def test_time_zones_and_daylight_saving():
    s = cron.parse("30 2 * * *", "Europe/Berlin")  # 02:30 does not exist on 2024-03-31
    assert s.next(dt.datetime(2024, 3, 30, 12, tzinfo=dt.UTC)).isoformat() == "2024-03-31T03:30:00+02:00"
    assert cron.parse("CRON_TZ=Asia/Tokyo 0 9 * * *").zone.key == "Asia/Tokyo"  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", ["* * * *", "60 * * * *", "* * * * 7", "5-1 * * * *", "*/0 * * * *", "@reboot",
                                 "* * * FOO *", "", "TZ=Nowhere/Land * * * * *"])
def test_refused(bad):
    with pytest.raises(cron.CronError):
        cron.parse(bad)


def test_cronjob_columns():
    cj = {"metadata": {"name": "hello", "creationTimestamp": "2024-01-01T00:00:00Z"},
          "spec": {"schedule": "* * * * *"},
          "status": {"active": [{"name": "hello-1"}], "lastScheduleTime": "2024-01-01T00:09:00Z"}}
    head, rows = table("CronJob", [cj], dt.datetime(2024, 1, 1, 0, 10, tzinfo=dt.UTC))
    assert head == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"]
    assert rows == [["hello", "* * * * *", "<none>", "False", "1", "60s", "10m"]]
