"""The project's one exception family.

Every error a user or another component can see derives from ``FarmError``. A message names
what was wrong and where: the phone serial and command, the peer, the file/line/field.
"""

from __future__ import annotations

import re

# msgspec's "- at `$.x`", or "- at `key` in `$.x`" for a dict key that failed.
_MSGSPEC_AT = re.compile(r" - at (?:`key` in )?`(\$[^`]*)`\Z")


def split_msgspec_error(message: str) -> tuple[str, str]:
    """A msgspec validation message as (JSON path, reason): ``"Expected `int`, got `str` -
    at `$.steps[3].x`"`` gives ``("$.steps[3].x", "Expected `int`, got `str`")``; a bad key
    of a dict is named by the dict's path (``"... - at `key` in `$.variables`"`` gives
    ``"$.variables"``, the reason saying "key"); the path is ``"$"`` when msgspec names none."""
    m = _MSGSPEC_AT.search(message)
    if m is None:
        return "$", message
    reason = message[:m.start()]
    return m.group(1), (f"{reason} (a key)" if "`key` in" in m.group(0) else reason)


class FarmError(Exception):
    """Root of every phonefarm error."""


class DeviceError(FarmError):
    """A device command failed; names the serial and the command. ``sent``: its request had
    already gone on to the phone (the adb server may have passed it on before it went), so
    it may have run there and must not be sent again blindly."""

    def __init__(self, serial: str, command: str, reason: str, *, sent: bool = False) -> None:
        self.serial = serial
        self.command = command
        self.reason = reason
        self.sent = sent
        super().__init__(f"phone {serial}: {command!r} failed: {reason}")


class DeviceGone(DeviceError):
    """The device vanished (unplugged, offline, adb lost it) while a command needed it.
    ``sent``: the command had already reached the phone (its shell service was open), so
    it may have run there and must not be sent again blindly."""

    def __init__(self, serial: str, command: str, reason: str, *, sent: bool = False) -> None:
        super().__init__(serial, command, reason, sent=sent)


class DeviceTimeout(DeviceError):
    """A command was sent to the phone but no answer came in time: it may still run there
    (a hung phone plays a queued tap late), so it must not be sent again blindly."""


class ProtocolError(FarmError):
    """A message or a peer broke the wire rules (version, schema, size, framing)."""

    def __init__(self, peer: str, reason: str) -> None:
        self.peer = peer
        self.reason = reason
        super().__init__(f"peer {peer}: {reason}")


class ValidationError(FarmError):
    """Bad user data: names the file, line or JSON path, and the field."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


class ValidationErrors(FarmError):
    """Several validation problems found at once, reported together."""

    def __init__(self, problems: list[ValidationError]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class DeliveryError(FarmError):
    """A message could not be delivered to a peer, or no answer came before the deadline."""

    def __init__(self, peer: str, reason: str) -> None:
        self.peer = peer
        self.reason = reason
        super().__init__(f"peer {peer}: {reason}")


class PhoneNotFound(FarmError):
    """No phone with that serial is known to the farm."""

    def __init__(self, serial: str) -> None:
        self.serial = serial
        super().__init__(f"phone {serial}: not known to the farm")


class PhoneLocked(FarmError):
    """The phone's lock is held by another execution."""

    def __init__(self, serial: str, holder: str, expires: float) -> None:
        self.serial = serial
        self.holder = holder
        self.expires = expires
        super().__init__(f"phone {serial}: locked by execution {holder}")


class ActorStopped(FarmError):
    """The actor that should have answered stopped (crashed or shut down) first."""


class ScopeError(ValidationError):
    """A scope expression (``phone:a,b``, ``node:rack1``, ``account:tiktok.all@phone1``) or a
    scope-aware function is malformed or names an unknown phone, node, client, platform or
    account; names the text and the 0-based offset of the problem."""

    def __init__(self, text: str, offset: int, reason: str) -> None:
        self.text = text
        self.offset = offset
        super().__init__(f"scope {text!r}: offset {offset}", reason)


class VariableError(ValidationError):
    """Template text (variables ``${...}`` and spintax ``{a|b}``) is malformed, or names a
    variable that cannot be resolved; names the text and the 0-based offset of the problem."""

    def __init__(self, text: str, offset: int, reason: str) -> None:
        self.text = text
        self.offset = offset
        super().__init__(f"text {text!r}: offset {offset}", reason)
