"""Scope expressions: which phones an action, task or sequence applies to.

Owns parsing scope text into a `PhoneScope` and resolving it against the farm's phone list.
This is the phone subset of the spec's scope grammar; it is built as a table of selector
kinds (``phone:``, ``node:``) so later kinds (groups, tags, ...) are one parser each.

Grammar (offsets in errors are 0-based into the original text)::

    scope      := phone-sel | node-sel
    phone-sel  := "phone:" ( "all" | "all-" names | names )
    node-sel   := "node:" names
    names      := name ( "," name )*

A phone name is a serial (which may contain ``:`` and ``.``, e.g. ``127.0.0.1:40123``) or a
tag/alias of a phone (e.g. ``phone3``); a tag may match several phones. Items are split on
``,`` only after the prefix. Spaces around items are ignored. Every name must match at least
one phone (a typo in ``all-`` would otherwise act on the phone meant to be spared).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, NoReturn

from protocol.errors import ScopeError

log = logging.getLogger(__name__)

ScopeKind = Literal["phones", "all", "all_except", "nodes"]


@dataclass(frozen=True)
class ScopeItem:
    """One name in a scope's list and the offset where it starts in the scope text."""

    name: str
    offset: int


@dataclass(frozen=True)
class PhoneScope:
    """A parsed phone scope: its kind, the names it lists, and the original text (for
    error messages). Pure data; `resolve` maps it onto a concrete phone list."""

    text: str
    kind: ScopeKind
    items: tuple[ScopeItem, ...] = ()

    def resolve(self, phones: list[dict]) -> list[str]:
        """Serials this scope selects among ``phones`` (dicts with "serial", "node", "tags").

        Order is stable: for ``phone:all``/``all-``/``node:`` the order of ``phones``; for an
        explicit list, the order written (duplicates dropped). Raises `ScopeError` naming the
        first name that matches no phone (or no node), with its offset.
        """
        serials = [p["serial"] for p in phones]
        if self.kind == "all":
            return _dedup(serials)
        if self.kind == "nodes":
            selected: set[str] = set()
            for item in self.items:
                on_node = [p["serial"] for p in phones if p.get("node") == item.name]
                if not on_node:
                    raise ScopeError(self.text, item.offset,
                                     f"unknown node {item.name!r} (no phone on it)")
                selected.update(on_node)
            return _dedup(s for s in serials if s in selected)
        matched = [(item, _match_phone(item, phones, self.text)) for item in self.items]
        if self.kind == "all_except":
            excluded = {s for _, found in matched for s in found}
            return _dedup(s for s in serials if s not in excluded)
        return _dedup(s for _, found in matched for s in found)


def parse_phone_scope(text: str) -> PhoneScope:
    """Parse ``phone:all``, ``phone:SERIAL``, ``phone:a,b``, ``phone:all-a,b``, ``node:a,b``.

    Raises `ScopeError(text, offset, reason)` for an empty scope, an unknown prefix, an
    empty name, or ``all-`` with nothing after it.
    """
    if not isinstance(text, str):
        raise ScopeError(repr(text), 0, "a scope must be a string such as 'phone:all'")
    start = len(text) - len(text.lstrip())
    body = text.strip()
    if not body:
        return _fail(text, 0, "empty scope (expected e.g. 'phone:all', 'phone:SERIAL', 'node:NAME')")
    prefix, colon, _ = body.partition(":")
    if not colon:
        return _fail(text, start, f"missing scope kind: expected one of {_kinds_hint()} "
                                  f"before {body!r}")
    parser = _PARSERS.get(prefix)
    if parser is None:
        return _fail(text, start, f"unknown scope kind {prefix!r}: expected one of {_kinds_hint()}")
    rest_offset = start + len(prefix) + 1
    return parser(text, rest_offset, text[rest_offset:len(text.rstrip())])


# --- selector parsers (one per prefix) ------------------------------------------------


def _parse_phone(text: str, offset: int, rest: str) -> PhoneScope:
    if not rest.strip():
        return _fail(text, offset, "empty phone list after 'phone:' (use 'phone:all' for all)")
    lead = len(rest) - len(rest.lstrip())
    head = rest.lstrip()
    if head == "all":
        return PhoneScope(text, "all")
    if head.startswith("all-"):
        after = offset + lead + len("all-")
        if not head[len("all-"):].strip():
            return _fail(text, after, "nothing after 'all-': name the phones to leave out")
        return PhoneScope(text, "all_except", _split_names(text, after, head[len("all-"):], "phone"))
    items = _split_names(text, offset, rest, "phone")
    for item in items:
        if item.name == "all":
            return _fail(text, item.offset, "'all' cannot be combined with other phones "
                                            "(use 'phone:all-a,b' to leave phones out)")
    return PhoneScope(text, "phones", items)


def _parse_node(text: str, offset: int, rest: str) -> PhoneScope:
    if not rest.strip():
        return _fail(text, offset, "empty node list after 'node:'")
    return PhoneScope(text, "nodes", _split_names(text, offset, rest, "node"))


_PARSERS: dict[str, Callable[[str, int, str], PhoneScope]] = {
    "phone": _parse_phone,
    "node": _parse_node,
}


# --- helpers --------------------------------------------------------------------------


def _split_names(text: str, offset: int, rest: str, what: str) -> tuple[ScopeItem, ...]:
    """Split ``rest`` (which starts at ``offset`` in ``text``) on commas into named items."""
    items: list[ScopeItem] = []
    pos = offset
    for raw in rest.split(","):
        name = raw.strip()
        item_offset = pos + (len(raw) - len(raw.lstrip()))
        if not name:
            _fail(text, item_offset, f"empty {what} name")
        if any(c.isspace() for c in name):
            bad = item_offset + next(i for i, c in enumerate(name) if c.isspace())
            _fail(text, bad, f"space inside {what} name {name!r} (separate names with ',')")
        items.append(ScopeItem(name, item_offset))
        pos += len(raw) + 1
    return tuple(items)


def _match_phone(item: ScopeItem, phones: list[dict], text: str) -> list[str]:
    """Serials ``item`` names: the phone with that serial, else every phone with that tag."""
    exact = [p["serial"] for p in phones if p["serial"] == item.name]
    if exact:
        return exact
    tagged = [p["serial"] for p in phones if item.name in (p.get("tags") or ())]
    if not tagged:
        raise ScopeError(text, item.offset, f"unknown phone {item.name!r} (no such serial or tag)")
    return tagged


def _dedup(serials: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(serials))


def _kinds_hint() -> str:
    return ", ".join(f"'{k}:'" for k in _PARSERS)


def _fail(text: str, offset: int, reason: str) -> NoReturn:
    raise ScopeError(text, offset, reason)
