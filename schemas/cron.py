"""Cron schedules as Kubernetes reads a CronJob's ``spec.schedule`` (robfig/cron's standard
parser): five fields (minute, hour, day of month, month, day of week) of ``*``, ``?``, numbers,
names (``JAN``-``DEC``, ``SUN``-``SAT``), ranges ``a-b``, steps ``*/n``, ``a-b/n`` and ``a/n``
(``a`` to the maximum), and lists ``a,b``; or one of the macros ``@yearly``/``@annually``,
``@monthly``, ``@weekly``, ``@daily``/``@midnight``, ``@hourly``. A ``CRON_TZ=Zone `` or
``TZ=Zone `` prefix names the time zone, which ``spec.timeZone`` replaces.

Day of month and day of week combine as in cron: when both are restricted (neither starts with
``*`` or ``?``) a day matching either runs; otherwise both must match.

Times are wall-clock times in the schedule's zone: :meth:`Schedule.next` walks forward from an
aware datetime and returns the first matching minute after it (aware, in that zone). A local
time that a DST change skips is taken as the same clock reading after the change; one that
occurs twice runs once. Pure.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (name, minimum, maximum, names)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)
# How far ahead a schedule is searched: past this it never runs (e.g. "0 0 30 2 *").
_HORIZON_YEARS = 5


class CronError(ValueError):
    """A schedule or time zone that cannot be read; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_any: bool  # day of month starts with * or ?
    weekdays_any: bool
    zone: dt.tzinfo = dt.UTC

    def day_matches(self, d: dt.date) -> bool:
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.days_any or self.weekdays_any:
            return dom and dow
        return dom or dow

    def next(self, after: dt.datetime) -> dt.datetime | None:
        """The first scheduled time strictly after ``after`` (aware), or None within the horizon."""
        start = after.astimezone(self.zone)
        local = start.replace(tzinfo=None, second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = local + dt.timedelta(days=366 * _HORIZON_YEARS)
        while local < limit:
            if local.month not in self.months:
                local = (local.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
                continue
            if not self.day_matches(local.date()):
                local = local.replace(hour=0, minute=0) + dt.timedelta(days=1)
                continue
            if local.hour not in self.hours:
                local = local.replace(minute=0) + dt.timedelta(hours=1)
                continue
            if local.minute not in self.minutes:
                local += dt.timedelta(minutes=1)
                continue
            found = _aware(local, self.zone)
            if found > after:
                return found
            local += dt.timedelta(minutes=1)  # the repeated hour of a DST change: run once
        return None


def _aware(local: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """``local`` in ``zone``; a reading the zone skips becomes the same reading after the skip."""
    return local.replace(tzinfo=zone).astimezone(dt.UTC).astimezone(zone)


def zone(name: str) -> dt.tzinfo:
    """The IANA time zone ``name`` (``Etc/UTC``, ``Europe/Berlin``), or CronError."""
    if not name or name.startswith(("/", ".")) or ".." in name or name != name.strip():
        raise CronError(f'unknown time zone "{name}"')
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(f'unknown time zone "{name}"') from None


def _number(text: str, names: dict[str, int], what: str) -> int:
    low = text.lower()
    if low in names:
        return names[low]
    if not text.isdigit():
        raise CronError(f'failed to parse {what} "{text}"')
    return int(text)


def _field(text: str, what: str, lo: int, hi: int, names: dict[str, int]) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    any_ = False
    for part in text.split(","):
        if not part:
            raise CronError(f'empty item in {what} "{text}"')
        rng, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f'invalid step "{step_text}" in {what} "{part}"')
            step = int(step_text)
        if rng in ("*", "?"):
            start, end = lo, hi
            any_ = any_ or step == 1
        else:
            first, dash, last = rng.partition("-")
            start = _number(first, names, what)
            end = _number(last, names, what) if dash else (hi if slash else start)
        if start < lo or end > hi:
            raise CronError(f"{what} out of range ({lo}-{hi}): \"{part}\"")
        if start > end:
            raise CronError(f'beginning of range ({start}) beyond end of range ({end}) in {what} "{part}"')
        values.update(range(start, end + 1, step))
    return frozenset(values), any_


def parse(schedule: str, tz: str | None = None) -> Schedule:
    """The schedule of ``spec.schedule`` (in zone ``tz``, UTC when None), or CronError."""
    text = schedule.strip()
    zone_name = tz
    if text.startswith(("CRON_TZ=", "TZ=")):
        prefix, _, text = text.partition(" ")
        if tz is None:
            zone_name = prefix.split("=", 1)[1]
        text = text.strip()
    if not text:
        raise CronError("empty spec string")
    if text.startswith("@"):
        if text not in MACROS:
            raise CronError(f'unrecognized descriptor: "{text}"')
        text = MACROS[text]
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(parts)}: \"{text}\"")
    parsed = [_field(p, *f) for p, f in zip(parts, _FIELDS, strict=True)]
    (minutes, _), (hours, _), (days, days_any), (months, _), (weekdays, weekdays_any) = parsed
    return Schedule(minutes=minutes, hours=hours, days=days, months=months, weekdays=weekdays,
                    days_any=days_any, weekdays_any=weekdays_any,
                    zone=zone(zone_name) if zone_name else dt.UTC)


def has_zone_prefix(schedule: str) -> bool:
    return schedule.strip().startswith(("CRON_TZ=", "TZ="))
