"""Terminal output of the `farm` CLI: aligned tables, event lines, values."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any


def align_columns(rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def format_table(rows: list[list[str]], header: list[str]) -> str:
    return "\n".join(align_columns([header, *rows]))


def phones_table(phones: list[dict]) -> str:
    def cell(value: Any) -> str:
        return "-" if value in (None, "") else str(value)

    rows = [[cell(p.get("serial")), cell(p.get("node")), cell(p.get("state")),
             cell(p.get("lock_holder")), cell(p.get("active_app")), cell(p.get("last_screen")),
             cell(p.get("io"))]
            for p in phones]
    table = format_table(rows, ["SERIAL", "NODE", "STATE", "LOCK", "APP", "SCREEN", "IO"])
    return "\n".join([table, *io_reasons(phones)])


def io_reasons(phones: list[dict]) -> list[str]:
    """Why phones are on the shell path: one line per reason, naming its phones."""
    by_reason: dict[str, list[str]] = {}
    for p in phones:
        if p.get("io") == "shell" and p.get("io_reason"):
            by_reason.setdefault(p["io_reason"], []).append(str(p.get("serial")))
    return [f"IO shell ({', '.join(serials)}): {reason}"
            for reason, serials in sorted(by_reason.items(), key=lambda kv: kv[1])]


def format_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in "\"'=" for c in value):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def format_event(name: str, payload: dict) -> str:
    """``HH:MM:SS event serial key=value ...`` (UTC); ``-`` when no phone is concerned."""
    ts = payload.get("ts")
    clock = (datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M:%S")
             if isinstance(ts, (int, float)) else "--:--:--")
    parts = [clock, name, payload.get("serial") or "-"]
    if payload.get("node"):
        parts.append(f"node={format_value(payload['node'])}")
    data = payload.get("data")
    if isinstance(data, dict):
        parts.extend(f"{key}={format_value(value)}" for key, value in data.items())
    return " ".join(parts)


def format_result(serial: str, result: dict) -> str:
    status = result.get("status", "error")
    error = result.get("error")
    return f"{serial} {status}" + (f": {error}" if error and status != "ok" else "")
