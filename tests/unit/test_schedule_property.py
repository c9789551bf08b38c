"""Property tests for the scheduler's parsers (hypothesis): recurrence JSON, cron text and
whole schedules.

The rule: ``recurrence_to_cron``, ``cron_of`` and ``validate`` return, or raise
`ScheduleInvalid` naming the field (``$.cron``, ``$.recurrence.at``, ...), never another
exception; and a schedule that validates can be planned: ``next_fire`` / ``last_fire`` give
a time after / at or before the moment asked about, or None, quickly, never an exception.
Strategies and settings are the parser properties' (tests/unit/test_parsers_property.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from actors.coordinator.scheduling.scheduler import (Schedule, ScheduleInvalid, cron_of, last_fire, next_fire,
                              recurrence_to_cron, validate)
from tests.unit.test_parsers_property import (FEWER, JSON_VALUES, NASTY_TEXT, PROPERTY, fields,
                                              tokens)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
# "now" as the scheduler's tick sees it: any time of this century, any zone.
AFTER = st.builds(lambda days, secs, zone: (NOW + timedelta(days=days, seconds=secs))
                  .astimezone(timezone(timedelta(minutes=zone))),
                  st.integers(-9000, 27000), st.integers(0, 86399), st.integers(-1439, 1439))

RECURRENCES = st.one_of(JSON_VALUES, fields({
    "every": st.sampled_from(["minute", "hour", "day", "week", "month", "year", "Day"]),
    "at": st.one_of(st.sampled_from(["00:00", ":15", "23:59", "24:00", "7:5", "12", "1:2:3",
                                     "", ":", "-1:00", "\u0661\u0662:00"]), NASTY_TEXT),
    "days": st.lists(st.one_of(st.sampled_from(["mon", "Thursday", "sun", "xyz", "mo"]),
                               st.integers(-1, 40), JSON_VALUES), max_size=5),
    "interval": st.one_of(st.integers(-2, 70), st.sampled_from([2**70, 1.5, "2"])),
}))

CRON_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *", "@yearly", "@reboot",
                     "* * * * *", "0 0 29 2 *", "0 0 * * 5#5"]),
    st.lists(tokens("*", "/", ",", "-", "L", "W", "#", "?", "H", "0", "1", "2", "5", "7",
                    "12", "13", "29", "30", "31", "59", "60", "mon", "jan", "feb", "sun-sat",
                    max_size=4), min_size=1, max_size=6).map(" ".join),
    st.sampled_from(["@yearly", "@monthly", "@weekly", "@daily", "@hourly", "@reboot",
                     "@every"]).map(str),
)


def field_named(error: ScheduleInvalid, prefix: str) -> None:
    assert isinstance(error.field, str) and error.field.startswith(prefix), (error.field, error)
    assert str(error)


def planned(schedule: Schedule, after: datetime) -> None:
    """A valid schedule's next and last occurrence around ``after``."""
    nxt = next_fire(schedule, after)
    assert nxt is None or nxt > after
    last = last_fire(schedule, after)
    assert last is None or last <= after


@PROPERTY
@given(RECURRENCES)
@example({"\ud800": None})  # UnicodeEncodeError from msgspec.convert in as_recurrence
def test_recurrence_gives_a_valid_cron_or_schedule_invalid_naming_the_member(rec: Any) -> None:
    try:
        cron = recurrence_to_cron(rec)
    except ScheduleInvalid as e:
        field_named(e, "$.recurrence")
        return
    schedule = Schedule(id="s", sequence="x", target="phone:all", type="recurring", cron=cron)
    assert cron_of(schedule) == cron


@PROPERTY
@given(CRON_TEXT, AFTER)
@example("0 0 30 2 *", NOW)  # croniter's is_valid takes it, but there is no 30 February:
@example("0 0 31 4,6,9,11 *", NOW)  # next_fire raised CroniterBadDateError, no field
def test_cron_validates_and_plans_or_is_schedule_invalid_naming_cron(
        cron: str, after: datetime) -> None:
    try:
        schedule = msgspec.convert({"id": "s", "sequence": "x", "target": "phone:all",
                                    "type": "recurring", "cron": cron}, Schedule)
    except msgspec.ValidationError:
        assume(False)  # the request schema's own check (length), not the scheduler's
    try:
        validate(schedule)
    except ScheduleInvalid as e:
        field_named(e, "$.cron")
        return
    planned(schedule, after)


TIMES = st.one_of(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                 timezones=st.just(timezone.utc)).map(datetime.isoformat),
    st.sampled_from(["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00",
                     "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2026-01-02T03:04:05",
                     "2026-01-02T03:04:05+14:00"]))
SCHEDULES = fields({
    "id": st.just("s"), "sequence": st.just("x"), "target": st.just("phone:all"),
    "type": st.sampled_from(["immediate", "scheduled", "window", "recurring"]),
    "at": TIMES, "window_start": TIMES, "window_end": TIMES,
    "count": st.integers(-1, 1500), "min_gap_s": st.floats(-1, 100000),
    "seed": st.integers(-1, 2**64), "cron": CRON_TEXT, "recurrence": RECURRENCES,
    "until": TIMES, "misfire": fields({"grace_s": st.floats(-1, 10**6)}),
    "workflow": st.sampled_from(["wf", ""]), "allow_past": st.booleans(),
}, extra=False).map(lambda d: {"id": "s", "sequence": "x", "target": "phone:all",
                               "type": "recurring", **d})


@FEWER
@given(SCHEDULES, AFTER)
@example({"id": "s", "sequence": "x", "target": "phone:all", "type": "immediate",
          "at": "9999-12-31T23:59:59-05:00"}, NOW)  # past year 9999 in UTC: OverflowError
@example({"id": "s", "sequence": "x", "target": "phone:all", "type": "recurring",
          "cron": "* * * * *", "until": "9999-12-31T23:59:59-05:00"}, NOW)
@example({"id": "s", "sequence": "x", "target": "phone:all", "type": "recurring",
          "recurrence": {"\ud800": None}}, NOW)  # msgspec: UnicodeEncodeError, see below
def test_schedule_validates_and_plans_or_is_schedule_invalid_naming_a_field(
        data: dict[str, Any], after: datetime) -> None:
    try:
        schedule = msgspec.convert(data, Schedule)  # a recurrence dict: as_recurrence
    except ScheduleInvalid as e:
        field_named(e, "$.recurrence")
        return
    except msgspec.ValidationError:
        assume(False)  # the request schema's own check, not the scheduler's
    except UnicodeEncodeError:
        # Only a Python caller can hand msgspec a lone surrogate: the JSON decoder refuses
        # one first (a 400 at the request body), so no stored or posted schedule holds one.
        assume(False)
    try:
        validate(schedule)
    except ScheduleInvalid as e:
        field_named(e, "$.")
        return
    planned(schedule, after)

