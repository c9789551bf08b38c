"""Scope expressions: which phones, or which accounts on which phones, something applies to.

Owns the spec's scope grammar (section 15.2): parsing scope text into a `PhoneScope` or an
`AccountScope` (with 0-based error offsets into the original text) and resolving it against
the farm's phone rows and account rows. It is pure: no I/O, no hub; the control endpoint,
the scheduler and the scope-aware functions (`sequences.scope_functions`) all call it with
the rows they hold. Selector kinds are a table (``phone:``, ``node:``, ``account:``), so a
later kind (groups, ...) is one parser more.

Grammar (EBNF; spaces around items are ignored, offsets count them)::

    scope        = phone-sel | node-sel | account-sel ;
    phone-sel    = "phone:" phone-body ;
    phone-body   = "all" | "all-" names | names ;
    node-sel     = "node:" names ;
    names        = name , { "," , name } ;
    name         = serial | tag | "client:" client-name ;
    account-sel  = "account:" account-body , "@" , phone-part ;
    account-body = "all" | "all-" account-list | account-list ;
    account-list = account-ref , { "," , account-ref } ;
    account-ref  = platform , "." , ( account-number | "all" ) ;
    phone-part   = phone-sel | node-sel | phone-body ;

A phone name is a serial (which may contain ``:`` and ``.``, e.g. ``127.0.0.1:40123``), a tag
of a phone (e.g. ``phone3``; a tag may match several phones), or ``client:NAME`` (every phone
whose ``client`` field is NAME, case-insensitive). A serial wins over a tag of the same name.
Every name must match at least one phone: a typo in ``all-`` would otherwise act on the phone
meant to be spared.

An account is named ``PLATFORM.ACCOUNT_NUMBER`` (``tiktok.account1``; the platform compares
case-insensitively, the account number exactly); ``PLATFORM.all`` is every account of that
platform. After ``@`` come the phones: ``all``, a list of phone names, or a nested ``phone:``
or ``node:`` selector. A platform or account that exists on no phone at all is an error at its
offset; an account named for a phone named explicitly must be on that phone; an account named
for a set of phones (``@all``, ``@phone:client:X``) must be on at least one of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, NamedTuple, NoReturn, Protocol, Sequence, Union

from protocol.errors import ScopeError

log = logging.getLogger(__name__)

ScopeKind = Literal["phones", "all", "all_except", "nodes"]
AccountKind = Literal["accounts", "all", "all_except"]

_CLIENT = "client:"


class GroupScopes(Protocol):
    """What `targets` needs of a group book (sequences.groups.GroupBook): resolving a
    ``group:EXPR`` scope to targets. A Protocol, so this module never imports groups."""

    def targets(self, scope: str, phones: Sequence[dict],
                accounts: Sequence[dict]) -> list[tuple[str, str | None]]:
        """``(serial, None)`` per phone of a phone group, ``(serial, ref)`` per account."""


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
        """Serials this scope selects among ``phones`` (dicts with "serial", "node", "tags",
        optionally "client").

        Order is stable: for ``phone:all``/``all-``/``node:`` the order of ``phones``; for an
        explicit list, the order written (duplicates dropped). Raises `ScopeError` naming the
        first name that matches no phone (or no node, or no client), with its offset.
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


class AccountTarget(NamedTuple):
    """One account on one phone, as an account scope resolves it."""

    serial: str
    platform: str
    account_number: str

    @property
    def ref(self) -> str:
        """``platform.account_number``, the name the scope grammar uses."""
        return f"{self.platform}.{self.account_number}"

    def __str__(self) -> str:
        return f"{self.ref}@{self.serial}"


@dataclass(frozen=True)
class AccountItem:
    """One ``PLATFORM.ACCOUNT`` (or ``PLATFORM.all``: ``account`` is None) in an account
    scope, with the offset of its platform in the scope text."""

    platform: str
    account: str | None
    offset: int

    @property
    def account_offset(self) -> int:
        return self.offset + len(self.platform) + 1

    @property
    def ref(self) -> str:
        return f"{self.platform}.{self.account or 'all'}"

    def matches(self, row: dict) -> bool:
        if str(row.get("platform", "")).casefold() != self.platform.casefold():
            return False
        return self.account is None or str(row.get("account_number")) == self.account


@dataclass(frozen=True)
class AccountScope:
    """A parsed account scope: which accounts (``kind`` and ``items``) on which phones
    (``phones``, itself a `PhoneScope`), the original text and the offset where the scope
    starts in it. Pure data; `resolve` maps it onto phone and account rows."""

    text: str
    kind: AccountKind
    items: tuple[AccountItem, ...]
    phones: PhoneScope
    offset: int = 0

    def resolve(self, phones: list[dict], accounts: list[dict],
                retired: Sequence[dict] = ()) -> list[AccountTarget]:
        """Accounts this scope selects: ``phones`` are phone rows (as for `PhoneScope`),
        ``accounts`` are account rows with at least "platform", "account_number", "serial";
        ``retired`` are deleted accounts' rows, only there to name them in errors.

        Order: phone by phone in the order the phone part resolves to; on one phone, the
        written order for an explicit list, else the order of ``accounts``. Raises
        `ScopeError` for an unknown phone, platform or account, a retired account, or an
        account named for a phone that doesn't have it.
        """
        serials = self.phones.resolve(phones)
        for item in self.items:
            self._check_exists(item, accounts, retired)
        on_phone: dict[str, list[dict]] = {s: [] for s in serials}
        for row in accounts:
            if row.get("serial") in on_phone:
                on_phone[row["serial"]].append(row)
        if self.kind == "accounts":
            self._check_present(phones, accounts, on_phone, retired)
        chosen: list[AccountTarget] = []
        for serial in serials:
            rows = on_phone[serial]
            if self.kind == "all":
                picked = rows
            elif self.kind == "all_except":
                picked = [r for r in rows if not any(i.matches(r) for i in self.items)]
            else:
                picked = [r for item in self.items for r in rows if item.matches(r)]
            chosen.extend(AccountTarget(serial, str(r["platform"]), str(r["account_number"]))
                          for r in picked)
        return list(dict.fromkeys(chosen))

    def _check_exists(self, item: AccountItem, accounts: list[dict],
                      retired: Sequence[dict]) -> None:
        """A platform or account that is on no phone at all is a typo, not an empty set;
        one that only deleted accounts had is said to be retired."""
        platforms = {str(r.get("platform", "")).casefold(): str(r.get("platform"))
                     for r in accounts}
        if item.platform.casefold() not in platforms:
            if any(item.matches(r) for r in retired):
                _fail(self.text, item.offset, _retired_on(item, retired))
            known = ", ".join(sorted(platforms.values())) or "none"
            _fail(self.text, item.offset,
                  f"unknown platform {item.platform!r} (platforms with accounts: {known})")
        if item.account is not None and not any(item.matches(r) for r in accounts):
            if any(item.matches(r) for r in retired):
                _fail(self.text, item.account_offset, _retired_on(item, retired))
            _fail(self.text, item.account_offset,
                  f"unknown account {item.ref} (no phone has it)")

    def _check_present(self, phones: list[dict], accounts: list[dict],
                       on_phone: dict[str, list[dict]], retired: Sequence[dict]) -> None:
        """An explicitly named account must be where it was asked for: on each phone named
        explicitly, or on at least one phone of a set (``@all``, ``@phone:client:X``)."""
        named = [item for item in self.items if item.account is not None]
        if self.phones.kind == "phones":
            for phone_item in self.phones.items:
                found = _match_phone(phone_item, phones, self.text)
                rows = [r for s in found for r in on_phone.get(s, ())]
                for item in named:
                    if not any(item.matches(r) for r in rows):
                        gone = [r for r in retired if r.get("serial") in found and item.matches(r)]
                        if gone:
                            _fail(self.text, item.offset, _retired_on(item, gone))
                        has = ", ".join(_dedup(f"{r['platform']}.{r['account_number']}"
                                               for r in rows)) or "no accounts"
                        _fail(self.text, item.offset,
                              f"{_lacks(phone_item, found, item.ref)} (it has: {has})")
            return
        for item in named:
            if not any(item.matches(r) for rows in on_phone.values() for r in rows):
                gone = [r for r in retired if r.get("serial") in on_phone and item.matches(r)]
                if gone:
                    _fail(self.text, item.offset, _retired_on(item, gone))
                where = ", ".join(_dedup(str(r.get("serial")) for r in accounts
                                         if item.matches(r)))
                _fail(self.text, item.offset, f"none of the selected phones has account "
                                              f"{item.ref} (it is on: {where})")


def _retired_on(item: AccountItem, rows: Sequence[dict]) -> str:
    """The error for an account (or platform) only deleted accounts match."""
    where = ", ".join(_dedup(str(r.get("serial")) for r in rows if item.matches(r)))
    what = f"account {item.ref} is" if item.account else f"every {item.platform} account is"
    return f"{what} retired (deleted) on {where}: never selected"


Scope = Union[PhoneScope, AccountScope]


def parse_scope(text: str) -> Scope:
    """Parse any scope: ``phone:...`` / ``node:...`` give a `PhoneScope`, ``account:...``
    an `AccountScope`. Raises `ScopeError(text, offset, reason)` for malformed text."""
    if not isinstance(text, str):
        raise ScopeError(repr(text), 0, "a scope must be a string such as 'phone:all'")
    return parse_scope_span(text, 0, len(text))


def parse_scope_span(text: str, start: int, end: int) -> Scope:
    """Parse the scope in ``text[start:end]``; offsets in the result and in errors are into
    the whole ``text``, so a scope inside a larger expression reports where it went wrong."""
    segment = text[start:end]
    pos = start + len(segment) - len(segment.lstrip())
    body = segment.strip()
    if not body:
        return _fail(text, start, "empty scope (expected e.g. 'phone:all', 'phone:SERIAL', "
                                  "'node:NAME', 'account:tiktok.all@phone:all')")
    prefix, colon, _ = body.partition(":")
    if not colon:
        return _fail(text, pos, f"missing scope kind: expected one of {_kinds_hint()} "
                                f"before {body!r}")
    parser = _PARSERS.get(prefix)
    if parser is None:
        return _fail(text, pos, f"unknown scope kind {prefix!r}: expected one of {_kinds_hint()}")
    rest_offset = pos + len(prefix) + 1
    return parser(text, rest_offset, text[rest_offset:pos + len(body)])


def parse_phone_scope(text: str, *, why: str = "a phone scope is expected here") -> PhoneScope:
    """Parse a scope that must select phones: ``phone:all``, ``phone:SERIAL``, ``phone:a,b``,
    ``phone:all-a,b``, ``phone:client:NAME``, ``node:a,b``.

    An account scope is a `ScopeError` at its start, reading "account scopes select
    accounts; {why}". Other errors as for `parse_scope`.
    """
    scope = parse_scope(text)
    if isinstance(scope, AccountScope):
        _fail(scope.text, scope.offset, f"account scopes select accounts; {why}")
    return scope


def targets(scope: str | Scope, phones: list[dict], accounts: list[dict],
            groups: GroupScopes | None = None,
            retired: Sequence[dict] = ()) -> list[tuple[str, str | None]]:
    """What a runner iterates over, for either kind of scope: ``(serial, None)`` per phone
    of a phone scope, ``(serial, "platform.account_number")`` per account of an account
    scope. With ``groups``, ``group:EXPR`` (``group:active&warm-banned``) is a scope too
    (`sequences.groups.GroupBook.targets`). ``retired``: account rows that were deleted,
    never selected, only named in the error when a scope asks for one of them."""
    if groups is not None and isinstance(scope, str) and scope.lstrip().startswith("group:"):
        # The book resolves its own scopes: sequences.groups imports this module.
        return groups.targets(scope, phones, accounts)
    parsed = parse_scope(scope) if isinstance(scope, str) else scope
    if isinstance(parsed, AccountScope):
        return [(t.serial, t.ref) for t in parsed.resolve(phones, accounts, retired)]
    return [(serial, None) for serial in parsed.resolve(phones)]


# --- selector parsers (one per prefix) ------------------------------------------------


def _parse_phone(text: str, offset: int, rest: str) -> PhoneScope:
    if not rest.strip():
        return _fail(text, offset, "empty phone list after 'phone:' (use 'phone:all' for all)")
    lead = len(rest) - len(rest.lstrip())
    head = rest.lstrip()
    if head.rstrip() == "all":
        return PhoneScope(text, "all")
    if head.startswith("all-"):
        after = offset + lead + len("all-")
        if not head[len("all-"):].strip():
            return _fail(text, after, "nothing after 'all-': name the phones to leave out")
        return PhoneScope(text, "all_except", _phone_names(text, after, head[len("all-"):]))
    items = _phone_names(text, offset, rest)
    for item in items:
        if item.name == "all":
            return _fail(text, item.offset, "'all' cannot be combined with other phones "
                                            "(use 'phone:all-a,b' to leave phones out)")
    return PhoneScope(text, "phones", items)


def _parse_node(text: str, offset: int, rest: str) -> PhoneScope:
    if not rest.strip():
        return _fail(text, offset, "empty node list after 'node:'")
    return PhoneScope(text, "nodes", _split_names(text, offset, rest, "node"))


def _parse_account(text: str, offset: int, rest: str) -> AccountScope:
    at = rest.find("@")
    if at < 0:
        return _fail(text, offset + len(rest), "missing '@PHONES' after the accounts "
                                               "(e.g. '@all', '@phone1,phone2', '@phone:all')")
    accounts_part, phones_part = rest[:at], rest[at + 1:]
    phones_offset = offset + at + 1
    if not accounts_part.strip():
        return _fail(text, offset, "empty account list before '@' "
                                   "(use 'account:all@...' for every account)")
    if not phones_part.strip():
        return _fail(text, phones_offset, "empty phone list after '@' "
                                          "(use '@all' for every phone)")
    if "@" in phones_part:
        return _fail(text, phones_offset + phones_part.index("@"),
                     "second '@': an account scope has one '@PHONES' part")
    phones = _parse_phone_part(text, phones_offset, phones_part)
    lead = len(accounts_part) - len(accounts_part.lstrip())
    head = accounts_part.strip()
    start = offset - len("account:")
    if head == "all":
        return AccountScope(text, "all", (), phones, start)
    if head.startswith("all-"):
        after = offset + lead + len("all-")
        if not head[len("all-"):].strip():
            return _fail(text, after, "nothing after 'all-': name the accounts to leave out")
        return AccountScope(text, "all_except",
                            _account_refs(text, after, accounts_part[lead + len("all-"):]),
                            phones, start)
    return AccountScope(text, "accounts", _account_refs(text, offset, accounts_part), phones,
                        start)


def _parse_phone_part(text: str, offset: int, rest: str) -> PhoneScope:
    """The phones after ``@``: a nested ``phone:``/``node:`` selector, or a bare phone body
    (``all``, ``all-a``, ``a,b``, ``client:X``). A serial may contain ``:``, so only a known
    phone-selecting prefix counts as nested."""
    lead = len(rest) - len(rest.lstrip())
    prefix, colon, _ = rest.lstrip().partition(":")
    if colon and prefix == "account":
        return _fail(text, offset + lead, "the phones after '@' cannot be an account scope")
    if colon and prefix in ("phone", "node"):
        inner = offset + lead + len(prefix) + 1
        return _PHONE_PARSERS[prefix](text, inner, rest[lead + len(prefix) + 1:])
    return _parse_phone(text, offset, rest)


_PHONE_PARSERS: dict[str, Callable[[str, int, str], PhoneScope]] = {
    "phone": _parse_phone,
    "node": _parse_node,
}

_PARSERS: dict[str, Callable[[str, int, str], Scope]] = {
    **_PHONE_PARSERS,
    "account": _parse_account,
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


def _phone_names(text: str, offset: int, rest: str) -> tuple[ScopeItem, ...]:
    items = _split_names(text, offset, rest, "phone")
    for item in items:
        if item.name.startswith(_CLIENT) and not item.name[len(_CLIENT):]:
            _fail(text, item.offset + len(_CLIENT), "empty client name after 'client:'")
    return items


def _account_refs(text: str, offset: int, rest: str) -> tuple[AccountItem, ...]:
    refs: list[AccountItem] = []
    for item in _split_names(text, offset, rest, "account"):
        platform, dot, account = item.name.partition(".")
        if not dot:
            if item.name == "all":
                _fail(text, item.offset, "'all' cannot be combined with other accounts "
                                         "(use 'account:all-tiktok.account1@...' to leave "
                                         "accounts out)")
            _fail(text, item.offset, f"expected PLATFORM.ACCOUNT or PLATFORM.all, "
                                     f"got {item.name!r}")
        if not platform:
            _fail(text, item.offset, f"empty platform in {item.name!r}")
        if not account:
            _fail(text, item.offset + len(platform) + 1,
                  f"empty account after {platform + '.'!r} (use {platform + '.all'!r} for "
                  f"every {platform} account)")
        refs.append(AccountItem(platform, None if account == "all" else account, item.offset))
    return tuple(refs)


def _match_phone(item: ScopeItem, phones: list[dict], text: str) -> list[str]:
    """Serials ``item`` names: the phone with that serial, else the phones of that client
    (``client:NAME``), else every phone with that tag."""
    exact = [p["serial"] for p in phones if p["serial"] == item.name]
    if exact:
        return exact
    if item.name.startswith(_CLIENT):
        client = item.name[len(_CLIENT):]
        found = [p["serial"] for p in phones
                 if str(p.get("client") or "").casefold() == client.casefold()]
        if not found:
            known = ", ".join(sorted({str(p["client"]) for p in phones if p.get("client")}))
            raise ScopeError(text, item.offset + len(_CLIENT),
                             f"unknown client {client!r} (no phone belongs to it; "
                             f"clients: {known or 'none'})")
        return found
    tagged = [p["serial"] for p in phones if item.name in (p.get("tags") or ())]
    if not tagged:
        raise ScopeError(text, item.offset, f"unknown phone {item.name!r} (no such serial or tag)")
    return tagged


def _lacks(item: ScopeItem, serials: list[str], ref: str) -> str:
    """'phone X has no account REF', worded for what the list item stands for."""
    if item.name.startswith(_CLIENT) and item.name not in serials:
        return f"no phone of client {item.name[len(_CLIENT):]!r} has account {ref}"
    if len(serials) > 1:
        return f"no phone tagged {item.name!r} has account {ref}"
    return f"phone {item.name!r} has no account {ref}"


def _dedup(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _kinds_hint() -> str:
    return ", ".join(f"'{k}:'" for k in _PARSERS)


def _fail(text: str, offset: int, reason: str) -> NoReturn:
    raise ScopeError(text, offset, reason)
