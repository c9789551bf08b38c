"""``HH:MM`` flags of the coordinator's daily jobs (--backup-at, --report-at,
--apps-reconcile-at): one parser, so each flag takes and refuses the same texts."""

from __future__ import annotations

from datetime import time


def parse_time_of_day(value: str | None, zone: str) -> time | None:
    """``HH:MM`` (24-hour) as a time; None when unset. ``zone`` only names, in the error,
    which clock the flag follows ("UTC", "local time"). ValueError says what is wrong
    (argparse names the flag)."""
    if value is None or not value.strip():
        return None
    try:
        hours, minutes = value.strip().split(":")
        if not (hours.isdigit() and minutes.isdigit()) or len(hours) > 2 or len(minutes) != 2:
            raise ValueError
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"{value!r}: expected HH:MM, 00:00 to 23:59 ({zone})") from None
