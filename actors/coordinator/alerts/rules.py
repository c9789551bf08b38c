"""Alert rules and notification channels: the model, loading config/alerts.toml, validation.

Owns what a rule of each kind may say (``KINDS``), the checks every rule passes before it is
stored (a TOML file's or ``POST /api/alerts/rules``'s alike: `parse_rule`), the channels a
file configures (`parse_channel`), and `load_config`, whose errors name the file, the line,
the rule or channel and the field (the coordinator refuses to start on one: exit 2)."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from actors.store.retention import format_duration, parse_duration
from protocol.errors import ValidationError
from protocol.names import check_printable

# A rule's or a channel's name: what `farm alerts silence NAME` and `channels = [...]` say.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_REPEAT_S = 3600.0
MIN_REPEAT_S = 60.0  # a shorter repeat would flood the channels while an alert stays active
CHANNEL_TYPES = ("webhook", "slack", "discord", "email")
NOTICE_KINDS = ("alert", "resolved", "report", "run_finished", "workflow_finished")


@dataclass(frozen=True)
class Param:
    """One field of a kind: its type (``number``, ``integer``, ``text``), bounds, default."""

    type: str
    default: Any = None
    low: float | None = None
    high: float | None = None
    help: str = ""


@dataclass(frozen=True)
class Kind:
    """What a rule kind watches: its fields, whether it is farm-wide only (super users),
    whether it is an event (a notice per occurrence, nothing to resolve) or a condition."""

    params: dict[str, Param]
    farm_only: bool = False
    event: bool = False
    help: str = ""


KINDS: dict[str, Kind] = {
    "phone_offline": Kind({"minutes": Param("number", 10.0, 0, 7 * 24 * 60,
                                            "offline at least this long")},
                          help="a phone offline (unplugged, its node down) longer than N minutes"),
    "phone_paused": Kind({}, help="a phone the coordinator paused (repeated failed recoveries)"),
    "node_down": Kind({"seconds": Param("number", 30.0, 0, 7 * 86400,
                                        "down at least this long")},
                      farm_only=True, help="a node silent longer than N seconds"),
    "recovery_failed": Kind({}, event=True, help="an AI recovery of an execution failed"),
    "failure_rate": Kind({"percent": Param("number", 20.0, 0, 100, "failed executions, %"),
                          "min_executions": Param("integer", 5, 1, 1_000_000,
                                                  "at least this many finished in the hour"),
                          "sequence": Param("text", None, help="only this sequence")},
                         help="a sequence's failure rate over X% in the last hour"),
    "scheduler_delay": Kind({"seconds": Param("number", 60.0, 0, 86400,
                                              "p95 dispatch delay over this"),
                             "window_minutes": Param("number", 15.0, 1, 24 * 60,
                                                     "the window the p95 is taken over")},
                            farm_only=True,
                            help="scheduled executions starting late: p95 delay over N s"),
    "disk": Kind({"percent": Param("number", 90.0, 0, 100, "used, % of the disk"),
                  "path": Param("text", None, help="default: the coordinator's data folder")},
                 farm_only=True, help="the data folder's disk fuller than X%"),
    "run_finished": Kind({"sequence": Param("text", None, help="only runs of this sequence"),
                          "status": Param("text", "any",
                                          help="any, completed or failed (a run with a failure)")},
                         event=True, help="a run (all its executions) finished (opt-in)"),
    "workflow_finished": Kind({"workflow": Param("text", None, help="only this workflow"),
                               "status": Param("text", "any",
                                               help="any, completed or failed")},
                              event=True, help="a workflow run finished (opt-in)"),
}
COMMON = ("name", "kind", "client", "repeat", "channels", "enabled")


@dataclass(frozen=True)
class Rule:
    """Owns one alert rule as validated: kind, its fields, whose (client None: the farm),
    how often it repeats while active (None: never), which channels (None: all that take
    it). ``rule_id``/``source``/``silenced_until`` come from the store."""

    name: str
    kind: str
    params: dict[str, Any]
    client: str | None = None
    repeat_s: float | None = DEFAULT_REPEAT_S
    channels: tuple[str, ...] | None = None
    enabled: bool = True
    rule_id: int | None = None
    client_id: int | None = None
    source: str = "api"
    silenced_until: float | None = None
    silenced_by: str | None = None

    def view(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "name": self.name, "kind": self.kind,
                "client": self.client, "source": self.source, "enabled": self.enabled,
                "repeat": format_duration_s(self.repeat_s),
                "channels": list(self.channels) if self.channels is not None else None,
                "silenced_until": self.silenced_until, "silenced_by": self.silenced_by,
                **self.params}


@dataclass(frozen=True)
class Channel:
    """Owns one notification channel of the config: where notices go and which ones."""

    name: str
    type: str
    url: str | None = None
    to: tuple[str, ...] = ()
    sender: str | None = None
    smtp: str | None = None
    starttls: bool = False
    tls: bool = False
    user: str | None = None
    password_file: str | None = None
    ca_file: str | None = None  # trust this CA (PEM) for the SMTP server's certificate
    kinds: tuple[str, ...] | None = None
    clients: tuple[str, ...] | None = None
    timeout_s: float = 10.0

    def takes(self, kind: str, client: str | None) -> bool:
        """Whether a notice of ``kind`` about ``client`` (None: farm-wide) goes here."""
        if self.kinds is not None and kind not in self.kinds:
            return False
        return self.clients is None or (client is not None and client in self.clients)

    def password(self) -> str | None:
        """The SMTP password, read from its file at each use (a rotated file is taken)."""
        if self.password_file is None:
            return None
        return Path(self.password_file).read_text().strip()

    def view(self) -> dict[str, Any]:
        """What GET /api/alerts/channels shows: never the password, nor a webhook's path
        (a Slack or Discord webhook URL is its secret)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type,
                               "kinds": list(self.kinds) if self.kinds else None,
                               "clients": list(self.clients) if self.clients else None}
        if self.url:
            parts = urlsplit(self.url)
            out["url"] = f"{parts.scheme}://{parts.netloc}/..."
        if self.type == "email":
            out.update(to=list(self.to), smtp=self.smtp, starttls=self.starttls, tls=self.tls,
                       password_set=self.password_file is not None)
        return out


@dataclass(frozen=True)
class AlertsConfig:
    """A loaded config/alerts.toml: its channels and rules (empty without a file)."""

    channels: tuple[Channel, ...] = ()
    rules: tuple[Rule, ...] = ()
    path: str | None = None

    def channel(self, name: str) -> Channel | None:
        return next((c for c in self.channels if c.name == name), None)


def format_duration_s(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    from datetime import timedelta
    return format_duration(timedelta(seconds=seconds))


# --- one rule -------------------------------------------------------------------------------


def parse_rule(raw: Any, where: Callable[[str], str],
               channels: Callable[[str], bool] | None = None) -> Rule:
    """A rule from a TOML table or a JSON object, checked whole; ValidationError naming the
    field (``where(field)`` says where it is). ``channels(name)``: whether a channel exists
    (None: not checked)."""
    if not isinstance(raw, dict):
        raise ValidationError(where(""), "expected a table/object with name and kind")
    kind_name = raw.get("kind")
    if not isinstance(kind_name, str) or kind_name not in KINDS:
        raise ValidationError(where("kind"), f"{kind_name!r}: expected one of "
                                             f"{', '.join(KINDS)}")
    kind = KINDS[kind_name]
    for key in raw:
        if key not in COMMON and key not in kind.params:
            allowed = ", ".join([*COMMON, *kind.params])
            raise ValidationError(where(key), f"unknown field for kind {kind_name} "
                                              f"(fields: {allowed})")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ValidationError(where("name"), f"{name!r}: expected 1-64 letters, digits, "
                                             "'_', '.', '-' (a letter or digit first)")
    client = raw.get("client")
    if client is not None:
        if not isinstance(client, str) or not client or len(client) > 128:
            raise ValidationError(where("client"), "expected a client's name")
        check_printable(client, where("client"))
        if kind.farm_only:
            raise ValidationError(where("client"), f"kind {kind_name} is farm-wide: it "
                                                   "names no client (super users only)")
    repeat: float | None = DEFAULT_REPEAT_S
    if "repeat" in raw:
        value = raw["repeat"]
        if value in (None, "never", "0", 0):
            repeat = None
        else:
            seconds = parse_duration(value, where("repeat")).total_seconds()
            if seconds < MIN_REPEAT_S:
                raise ValidationError(where("repeat"), "at least 1m (or \"never\")")
            repeat = seconds
    chosen: tuple[str, ...] | None = None
    if raw.get("channels") is not None:
        value = raw["channels"]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValidationError(where("channels"), "expected a list of channel names")
        for item in value:
            if channels is not None and item != "console" and not channels(item):
                raise ValidationError(where("channels"), f"no channel named {item!r}")
        chosen = tuple(value)
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValidationError(where("enabled"), "expected true or false")
    params = {key: _param(raw.get(key, p.default), p, where(key), key in raw)
              for key, p in kind.params.items()}
    if "status" in params and params["status"] not in ("any", "completed", "failed"):
        raise ValidationError(where("status"), f"{params['status']!r}: expected any, "
                                               "completed or failed")
    if kind_name == "disk" and params.get("path") is not None \
            and not os.path.isabs(params["path"]):
        raise ValidationError(where("path"), "expected an absolute folder path")
    return Rule(name=name, kind=kind_name, params=params, client=client, repeat_s=repeat,
                channels=chosen, enabled=enabled)


def _param(value: Any, param: Param, where: str, given: bool) -> Any:
    if value is None:
        return None
    if param.type == "text":
        if not isinstance(value, str) or not value or len(value) > 256:
            raise ValidationError(where, "expected a non-empty text of at most 256 characters")
        return check_printable(value, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (param.type == "integer" and not isinstance(value, int)):
        raise ValidationError(where, f"{value!r}: expected a{'n integer' if param.type == 'integer' else ' number'}")
    if value != value or (param.low is not None and value < param.low) \
            or (param.high is not None and value > param.high):
        raise ValidationError(where, f"{value!r}: expected {param.low:g} to {param.high:g}")
    return int(value) if param.type == "integer" else float(value)


# --- one channel ----------------------------------------------------------------------------

_CHANNEL_FIELDS = {"name", "type", "url", "to", "from", "smtp", "starttls", "tls", "user",
                   "password_file", "ca_file", "kinds", "clients", "timeout_s"}
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


def parse_channel(raw: Any, where: Callable[[str], str], base: Path | None = None) -> Channel:
    """A channel table of the config, checked whole; ValidationError naming the field.
    A relative password_file is taken from ``base`` (the config's folder)."""
    if not isinstance(raw, dict):
        raise ValidationError(where(""), "expected a [[channel]] table")
    for key in raw:
        if key not in _CHANNEL_FIELDS:
            raise ValidationError(where(key), f"unknown field (fields: "
                                              f"{', '.join(sorted(_CHANNEL_FIELDS))})")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name) or name == "console":
        raise ValidationError(where("name"), f"{name!r}: expected 1-64 letters, digits, "
                                             "'_', '.', '-' (\"console\" is the console's own)")
    kind = raw.get("type")
    if kind not in CHANNEL_TYPES:
        raise ValidationError(where("type"), f"{kind!r}: expected one of "
                                             f"{', '.join(CHANNEL_TYPES)}")
    kinds = _names(raw, "kinds", where)
    if kinds is not None:
        for k in kinds:
            if k not in NOTICE_KINDS:
                raise ValidationError(where("kinds"), f"{k!r}: expected some of "
                                                      f"{', '.join(NOTICE_KINDS)}")
    clients = _names(raw, "clients", where)
    timeout = raw.get("timeout_s", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not 0.1 <= timeout <= 300:
        raise ValidationError(where("timeout_s"), "expected seconds, 0.1 to 300")
    channel = Channel(name=name, type=kind, kinds=kinds, clients=clients,
                      timeout_s=float(timeout))
    if kind != "email":
        for key in ("to", "from", "smtp", "starttls", "tls", "user", "password_file", "ca_file"):
            if key in raw:
                raise ValidationError(where(key), f"an e-mail field; a {kind} channel has a url")
        url = raw.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValidationError(where("url"), "expected an http:// or https:// URL")
        return replace(channel, url=url)
    if "url" in raw:
        raise ValidationError(where("url"), "an e-mail channel has to, from and smtp")
    to = _names(raw, "to", where)
    if not to:
        raise ValidationError(where("to"), "expected a list of at least one address")
    for address in to:
        if not _EMAIL.match(address):
            raise ValidationError(where("to"), f"{address!r}: not an e-mail address")
    sender = raw.get("from")
    if not isinstance(sender, str) or not _EMAIL.match(sender):
        raise ValidationError(where("from"), "expected the sender's e-mail address")
    smtp = raw.get("smtp")
    host, _, port = smtp.rpartition(":") if isinstance(smtp, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationError(where("smtp"), f"{smtp!r}: expected HOST:PORT")
    flags = {}
    for key in ("starttls", "tls"):
        flags[key] = raw.get(key, False)
        if not isinstance(flags[key], bool):
            raise ValidationError(where(key), "expected true or false")
    if flags["starttls"] and flags["tls"]:
        raise ValidationError(where("tls"), "tls (implicit, port 465) or starttls, not both")
    user = raw.get("user")
    if user is not None and (not isinstance(user, str) or not user):
        raise ValidationError(where("user"), "expected the SMTP user name")
    password_file = _readable(raw, "password_file", where, base)
    if password_file is not None and user is None:
        raise ValidationError(where("user"), "a password_file needs the user it logs in as")
    ca_file = _readable(raw, "ca_file", where, base)
    if ca_file is not None and not (flags["starttls"] or flags["tls"]):
        raise ValidationError(where("ca_file"), "a CA is for starttls or tls")
    return replace(channel, to=to, sender=sender, smtp=smtp, user=user,
                   password_file=password_file, ca_file=ca_file, **flags)


def _readable(raw: dict, key: str, where: Callable[[str], str], base: Path | None) -> str | None:
    """A file field: readable now (relative to the config's folder); its absolute path."""
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValidationError(where(key), "expected a file path")
    path = Path(value)
    if not path.is_absolute() and base is not None:
        path = base / path
    try:
        path.read_bytes()
    except OSError as exc:
        raise ValidationError(where(key), f"{path}: unreadable: {exc.strerror or exc}") from None
    return str(path)


def _names(raw: dict, key: str, where: Callable[[str], str]) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValidationError(where(key), "expected a list of names")
    return tuple(value)


# --- the file -------------------------------------------------------------------------------


def load_config(path: str | os.PathLike | None) -> AlertsConfig:
    """config/alerts.toml's channels and rules, every one checked (None: none). The first
    problem is a ValidationError ``FILE:LINE: rule 'NAME' (#N): FIELD: why``."""
    if path is None:
        return AlertsConfig()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValidationError(str(path), f"unreadable: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(str(path), f"not valid TOML: {exc}") from None
    lines = text.splitlines()
    for key in doc:
        if key not in ("channel", "rule"):
            raise ValidationError(f"{path}:{_line(lines, key)}: {key}",
                                  "unknown table (expected [[channel]] and [[rule]])")
    tables: dict[str, list] = {}
    for key in ("channel", "rule"):
        value = doc.get(key, [])
        if not isinstance(value, list):
            raise ValidationError(f"{path}:{_line(lines, key)}: {key}",
                                  f"expected [[{key}]] tables")
        tables[key] = value

    def locate(table: str, index: int, raw: Any) -> Callable[[str], str]:
        label = raw.get("name") if isinstance(raw, dict) else None
        what = f"{table} {label!r} (#{index + 1})" if isinstance(label, str) \
            else f"{table} #{index + 1}"
        return lambda fld: (f"{path}:{_line(lines, table, index, fld)}: {what}"
                            + (f": {fld}" if fld else ""))

    channels: list[Channel] = []
    for i, raw in enumerate(tables["channel"]):
        channel = parse_channel(raw, locate("channel", i, raw), Path(path).parent)
        if any(c.name == channel.name for c in channels):
            raise ValidationError(locate("channel", i, raw)("name"),
                                  f"a second channel named {channel.name!r}")
        channels.append(channel)
    names = {c.name for c in channels}
    rules: list[Rule] = []
    for i, raw in enumerate(tables["rule"]):
        rule = parse_rule(raw, locate("rule", i, raw), channels=lambda n: n in names)
        if any(r.name == rule.name for r in rules):
            raise ValidationError(locate("rule", i, raw)("name"),
                                  f"a second rule named {rule.name!r}")
        rules.append(replace(rule, source="file"))
    return AlertsConfig(tuple(channels), tuple(rules), str(path))


_HEADER = re.compile(r"^\s*\[\[\s*([A-Za-z_]+)\s*\]\]")


def _line(lines: list[str], table: str, index: int = 0, field_name: str = "") -> int:
    """The line of ``[[table]]`` number ``index`` (or of its ``field =``), 1-based; the
    table's header line when the field is not found there."""
    seen, start = -1, None
    for n, line in enumerate(lines):
        m = _HEADER.match(line)
        if m and m.group(1) == table:
            seen += 1
            if seen == index:
                start = n
                break
    if start is None:
        pattern = re.compile(rf"^\s*{re.escape(table)}\s*=")
        return next((n + 1 for n, line in enumerate(lines) if pattern.match(line)), 1)
    if field_name:
        pattern = re.compile(rf"^\s*\"?{re.escape(field_name)}\"?\s*=")
        for n in range(start + 1, len(lines)):
            if lines[n].lstrip().startswith("["):
                break
            if pattern.match(lines[n]):
                return n + 1
    return start + 1
