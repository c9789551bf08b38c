"""Groups (spec 15.4, 15.6): named sets of phones or accounts, the rules between them, and
what ``${group...}`` variables and ``group:`` scopes mean.

Owns `GroupBook`: plain data (no database, no I/O) holding groups and relationship rules, and
checking every rule on every change. The farm DB stores it in the tables of spec 15.5
(actors/store/schema/v4.sql; `FarmDB.group_book` / `save_group_book`); the control API, the CLI,
the variable context and run scopes load a book and call it.

Groups:

* **system**: built in. ``all_phones``, ``all_accounts`` and one ``platform:NAME`` per
  platform with accounts are computed from the rows and never stored; ``active`` and
  ``warming`` (`GroupBook.with_defaults`) are stored account groups in the exclusivity set
  ``account_status``. A system group cannot be deleted.
* **custom**: user-defined, with explicit members.
* **smart**: a saved filter over the rows, evaluated at call time:
  ``filter.phones where FIELD=VALUE and ...`` or ``filter.accounts where ...`` (the condition
  grammar and matching of `sequences.scope_functions`).

A member is a phone serial, or an account written ``platform.account_number@serial`` (as
`sequences.scopes.AccountTarget` prints it), compared exactly.

Rules, checked on every ``add_member``/``remove_member``/``set_parent``/``add_rule``; a
violation is a `ValidationError` naming the group, the member and the rule:

* exclusivity set NAME over groups G1..Gn: a member is in at most one of them;
* ``requires(A, B)``: a member of A must be in B (so B cannot lose it while A has it);
* ``excludes(A, B)``: no member is in both;
* hierarchy: a child's members are a subset of its parent's (when either is smart, so the
  members only exist over rows, the child's members are cut to the parent's when evaluated).
  Rules on a parent therefore hold for its whole branch.

Rules relate stored groups only: a smart or computed group has no members to check until rows
are given, so a rule naming one is refused.

Group expressions, shared by scopes and variables (left to right, no precedence)::

    expr = name , { ( "&" | "-" | "+" ) , name } ;   (* & intersection, - difference, + union *)
    name = [A-Za-z0-9_]+ | "platform:" platform ;

Hence group names cannot contain ``-``. Scopes: ``group:EXPR`` (see `GroupBook.targets`, hooked
into `sequences.scopes.targets`). Variables (``${group...}``, see `GroupBook.variable`)::

    ${group.NAME.count}   ${group.NAME.random}   ${group.NAME.members}   (comma-joined)
    ${group.count(EXPR)}  ${group.random(EXPR)}  ${group.members(EXPR)}  e.g. count(active&tiktok)
    ${group.intersection(A,B)}  ${group.difference(A,B)}  ${group.union(A,B)}   (members)
    ${group.filter(NAME,FIELD=VALUE and ...)}  members of NAME whose row matches (comma-joined)

The function form is how to count an intersection or name a ``platform:X`` group: the template
parser takes ``name(args)`` but not ``.count`` after ``)``, and ``:`` is not a name character.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, NoReturn, Sequence

from protocol.errors import FarmError, ScopeError, ValidationError
from sequences.conditions import MISSING, holds, lookup, parse_conditions

GroupType = Literal["system", "custom", "smart"]
MemberKind = Literal["account", "phone"]
RuleKind = Literal["exclusive", "requires", "excludes"]

ALL_PHONES = "all_phones"
ALL_ACCOUNTS = "all_accounts"
PLATFORM_PREFIX = "platform:"
GROUP_SCOPE = "group:"
_NAME = re.compile(r"[A-Za-z0-9_]+")
_EXPR_NAME = re.compile(r"platform:[A-Za-z0-9_.]+|[A-Za-z0-9_]+")
_OPERATORS = {"&": "intersection", "-": "difference", "+": "union"}
_FILTERS: dict[str, MemberKind] = {"filter.phones": "phone", "filter.accounts": "account"}
_SUBSET = "a child's members are a subset of its parent's"

# What spec 15.5 needs in the farm DB (a migration appends it; entity_id is the member text so
# an account is named as scopes name it; positions keep the written order).
@dataclass
class Group:
    """One group: ``kind`` says whether members are phones or accounts; ``members`` are the
    explicit ones (custom and stored system groups), ``filter`` the smart group's condition."""

    name: str
    kind: MemberKind
    type: GroupType = "custom"
    members: list[str] = field(default_factory=list)
    filter: str | None = None
    parent: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Rule:
    """A relationship between groups: ``exclusive`` (``name`` is the set's name, ``groups``
    its members), ``requires`` (groups = (A, B): A's members must be in B) or ``excludes``
    (groups = (A, B): none in both)."""

    kind: RuleKind
    groups: tuple[str, ...]
    name: str = ""

    def __str__(self) -> str:
        if self.kind == "exclusive":
            return f"exclusivity set {self.name!r}"
        a, b = self.groups
        return f"rule {self.kind}({a!r}, {b!r})"


class GroupBook:
    """All groups of a farm and the rules between them; see the module docstring."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self.rules: list[Rule] = []

    @classmethod
    def with_defaults(cls) -> "GroupBook":
        """A book with the spec's built-in account groups ``active`` and ``warming`` in the
        exclusivity set ``account_status``."""
        book = cls()
        book.create("active", "account", type="system", description="accounts in use")
        book.create("warming", "account", type="system", description="accounts being warmed")
        book.exclusivity_set("account_status", ["active", "warming"])
        return book

    # -- definitions -----------------------------------------------------------------------

    def create(self, name: str, kind: MemberKind, *, type: GroupType = "custom",
               filter: str | None = None, parent: str | None = None,
               description: str = "") -> Group:
        """Define a group. A smart group needs ``filter`` (``filter.phones where ...`` for a
        phone group, ``filter.accounts where ...`` for an account group), others must not
        have one. Raises `ValidationError` (a malformed filter: `ScopeError` with offset)."""
        where = f"group {name!r}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValidationError(where, "a group name is letters, digits and '_' ('-' is "
                                         "the difference operator)")
        if name in self.groups or name in (ALL_PHONES, ALL_ACCOUNTS):
            raise ValidationError(where, "a group with this name exists")
        if kind not in ("account", "phone"):
            raise ValidationError(where, f"members are 'account' or 'phone', not {kind!r}")
        if type not in ("system", "custom", "smart"):
            raise ValidationError(where, f"type is system, custom or smart, not {type!r}")
        if (type == "smart") != (filter is not None):
            raise ValidationError(where, "a smart group needs a filter ('filter.phones where "
                                         "...' or 'filter.accounts where ...')"
                                  if type == "smart" else "only a smart group has a filter")
        if filter is not None:
            filter_kind, _ = _parse_filter(filter, [])
            if filter_kind != kind:
                raise ValidationError(where, f"a {kind} group filters with "
                                             f"'{_filter_head(kind)} where ...'")
        group = Group(name, kind, type, [], filter, None, description)
        self.groups[name] = group
        if parent is not None:
            try:
                self.set_parent(name, parent)
            except ValidationError:
                del self.groups[name]
                raise
        return group

    def delete(self, name: str) -> None:
        """Remove a group; refused for system groups and groups with children or rules."""
        group = self._stored(name)
        where = f"group {name!r}"
        if group.type == "system":
            raise ValidationError(where, "a system group cannot be deleted")
        children = self.children(name)
        if children:
            raise ValidationError(where, f"it has child groups: {', '.join(children)}")
        rule = next((r for r in self.rules if name in r.groups), None)
        if rule is not None:
            raise ValidationError(where, f"it is named by {rule}; remove the rule first")
        del self.groups[name]

    def set_parent(self, name: str, parent: str | None) -> None:
        """Make ``parent`` the parent of ``name`` (None: no parent). Refused for a cycle, a
        different member kind, or a member of ``name`` (or its branch) not in the parent."""
        group = self._stored(name)
        where = f"group {name!r}"
        if parent is None:
            group.parent = None
            return
        up = self._stored(parent)
        if up.kind != group.kind:
            raise ValidationError(where, f"parent {parent!r} holds {up.kind}s, this group "
                                         f"holds {group.kind}s")
        chain = [parent]
        while chain[-1] != name and self.groups[chain[-1]].parent is not None:
            chain.append(self.groups[chain[-1]].parent)  # type: ignore[arg-type]
        if chain[-1] == name:
            raise ValidationError(where, f"parent {parent!r} would make a cycle "
                                         f"({' -> '.join([name, *chain])})")
        if up.filter is None:
            for member in group.members:
                if member not in up.members:
                    raise ValidationError(where, f"{group.kind} {member} is not in parent "
                                                 f"group {parent!r} ({_SUBSET})")
        group.parent = parent

    def children(self, name: str) -> list[str]:
        """Direct children of ``name``, in creation order."""
        return [g.name for g in self.groups.values() if g.parent == name]

    def branch(self, name: str) -> list[str]:
        """``name`` and every group below it, depth first (to operate on a whole branch)."""
        self._stored(name)
        out = [name]
        for child in self.children(name):
            out.extend(self.branch(child))
        return out

    # -- rules ---------------------------------------------------------------------------

    def exclusivity_set(self, set_name: str, groups: Sequence[str]) -> Rule:
        """A member may be in at most one of ``groups`` (spec ``exclusivity_set``)."""
        return self.add_rule(Rule("exclusive", tuple(groups), set_name))

    def requires(self, group: str, required: str) -> Rule:
        """Members of ``group`` must be members of ``required``."""
        return self.add_rule(Rule("requires", (group, required)))

    def excludes(self, group: str, other: str) -> Rule:
        """No member may be in both ``group`` and ``other``."""
        return self.add_rule(Rule("excludes", (group, other)))

    def add_rule(self, rule: Rule) -> Rule:
        """Add ``rule`` if the current members satisfy it; else `ValidationError` naming the
        first violation, worded as adding that member would be."""
        where = f"{rule}"
        if rule.kind not in ("exclusive", "requires", "excludes"):
            raise ValidationError(where, "a rule is exclusive, requires or excludes")
        if rule.kind == "exclusive":
            if not rule.name:
                raise ValidationError("exclusivity set", "needs a name")
            if any(r.kind == "exclusive" and r.name == rule.name for r in self.rules):
                raise ValidationError(where, "an exclusivity set with this name exists")
            if len(rule.groups) < 2:
                raise ValidationError(where, "needs at least two groups")
        elif len(rule.groups) != 2 or rule.groups[0] == rule.groups[1]:
            raise ValidationError(where, "relates two different groups")
        if len(set(rule.groups)) != len(rule.groups):
            raise ValidationError(where, "names a group twice")
        kinds = set()
        for name in rule.groups:
            group = self._stored(name)
            if group.filter is not None:
                raise ValidationError(where, f"{name!r} is a smart group; rules relate groups "
                                             f"with stored members")
            kinds.add(group.kind)
        if len(kinds) > 1:
            raise ValidationError(where, "mixes phone groups and account groups")
        # Check as if the members were added one group at a time, so the error reads like
        # the one that adding the offending member would give.
        seen: dict[str, str] = {}
        for name in rule.groups:
            for member in self.groups[name].members:
                problem = self._breaks(rule, name, member, seen)
                if problem:
                    raise ValidationError(f"group {name!r}", problem)
                seen.setdefault(member, name)
        self.rules.append(rule)
        return rule

    def remove_rule(self, rule: Rule) -> None:
        """Drop ``rule`` (removing a rule cannot break another)."""
        self.rules.remove(rule)

    # -- membership ----------------------------------------------------------------------

    def add_member(self, name: str, member: str) -> None:
        """Add ``member`` to group ``name`` after checking the hierarchy and every rule.
        Adding a member already there is a no-op."""
        group = self._stored(name)
        where = f"group {name!r}"
        if group.filter is not None:
            raise ValidationError(where, "a smart group's members come from its filter")
        _check_member(where, group.kind, member)
        if member in group.members:
            return
        parent = self.groups[group.parent] if group.parent else None
        if parent is not None and parent.filter is None and member not in parent.members:
            raise ValidationError(where, f"{group.kind} {member} is not in parent group "
                                         f"{parent.name!r} ({_SUBSET})")
        for rule in self.rules:
            if name in rule.groups:
                problem = self._breaks(rule, name, member, None)
                if problem:
                    raise ValidationError(where, problem)
        group.members.append(member)

    def remove_member(self, name: str, member: str) -> None:
        """Remove ``member`` from ``name``; refused while a child group or a group requiring
        ``name`` still has it. Removing a non-member is a `ValidationError`."""
        group = self._stored(name)
        where = f"group {name!r}"
        if member not in group.members:
            raise ValidationError(where, f"{group.kind} {member} is not a member")
        for child in self.children(name):
            if member in self.groups[child].members:
                raise ValidationError(where, f"cannot remove {group.kind} {member}: it is in "
                                             f"child group {child!r} ({_SUBSET})")
        for rule in self.rules:
            if rule.kind == "requires" and rule.groups[1] == name:
                if member in self.groups[rule.groups[0]].members:
                    raise ValidationError(where, f"cannot remove {group.kind} {member}: it is "
                                                 f"in {rule.groups[0]!r} ({rule})")
        group.members.remove(member)

    def _breaks(self, rule: Rule, name: str, member: str,
                placed: dict[str, str] | None) -> str | None:
        """Why adding ``member`` to ``name`` breaks ``rule`` (None if it doesn't). ``placed``
        (rule creation) maps members to the rule group already holding them; without it the
        stored members are the truth."""
        kind = self.groups[name].kind
        if rule.kind == "exclusive":
            if placed is not None:
                other = placed.get(member)
            else:
                other = next((g for g in rule.groups
                              if g != name and member in self.groups[g].members), None)
            if other is not None and other != name:
                return f"{kind} {member} is already in {other!r} ({rule})"
            return None
        a, b = rule.groups
        if rule.kind == "requires":
            if name == a and member not in self.groups[b].members:
                return f"{kind} {member} is not in {b!r} ({rule})"
            return None
        other = b if name == a else a
        # At rule creation each pair is reported once, from A's side.
        if placed is None or name == a:
            if member in self.groups[other].members:
                return f"{kind} {member} is in {other!r} ({rule})"
        return None

    # -- evaluation ----------------------------------------------------------------------

    def kind_of(self, name: str, accounts: Sequence[dict] = ()) -> MemberKind:
        """Whether group ``name`` (stored or computed) holds phones or accounts."""
        if name == ALL_PHONES:
            return "phone"
        if name == ALL_ACCOUNTS or name.startswith(PLATFORM_PREFIX):
            return "account"
        return self._stored(name).kind

    def exists(self, name: str, accounts: Sequence[dict] = ()) -> bool:
        """Whether ``name`` is a stored group or a computed system group over ``accounts``."""
        if name in self.groups or name in (ALL_PHONES, ALL_ACCOUNTS):
            return True
        platform = name[len(PLATFORM_PREFIX):].casefold()
        return name.startswith(PLATFORM_PREFIX) and any(
            str(r.get("platform", "")).casefold() == platform for r in accounts)

    def members(self, name: str, phones: Sequence[dict] = (),
                accounts: Sequence[dict] = ()) -> list[str]:
        """Members of ``name``: serials for a phone group, ``platform.number@serial`` for an
        account group. Stored members in the order added; smart and computed groups over
        ``phones``/``accounts`` (rows as for `sequences.scopes`) in row order."""
        if name == ALL_PHONES:
            return _dedup(str(p["serial"]) for p in phones)
        if name == ALL_ACCOUNTS:
            return _dedup(_account_ref(r) for r in accounts)
        if name.startswith(PLATFORM_PREFIX):
            if not self.exists(name, accounts):
                raise ValidationError(f"group {name!r}", "no account has that platform")
            platform = name[len(PLATFORM_PREFIX):].casefold()
            return _dedup(_account_ref(r) for r in accounts
                          if str(r.get("platform", "")).casefold() == platform)
        group = self._stored(name)
        if group.filter is None:
            found = list(group.members)
        else:
            _, conditions = _parse_filter(group.filter,
                                          phones if group.kind == "phone" else accounts)
            rows = phones if group.kind == "phone" else accounts
            key = _row_key(group.kind)
            found = _dedup(key(r) for r in rows
                           if all(holds(r, path, op, value) for path, op, value in conditions))
        # A stored child of a stored parent is a subset by construction; with a smart group
        # on either side the subset only exists over rows, so it is cut here.
        if group.parent is not None and (group.filter is not None
                                         or self.groups[group.parent].filter is not None):
            parent = set(self.members(group.parent, phones, accounts))
            found = [m for m in found if m in parent]
        return found

    def intersection(self, a: str, b: str, phones: Sequence[dict] = (),
                     accounts: Sequence[dict] = ()) -> list[str]:
        """Members of ``a`` that are in ``b``, in ``a``'s order."""
        return self.evaluate(f"{a}&{b}", phones, accounts)

    def difference(self, a: str, b: str, phones: Sequence[dict] = (),
                   accounts: Sequence[dict] = ()) -> list[str]:
        """Members of ``a`` not in ``b``, in ``a``'s order."""
        return self.evaluate(f"{a}-{b}", phones, accounts)

    def union(self, a: str, b: str, phones: Sequence[dict] = (),
              accounts: Sequence[dict] = ()) -> list[str]:
        """Members of ``a`` then those of ``b`` not already listed."""
        return self.evaluate(f"{a}+{b}", phones, accounts)

    def evaluate(self, expr: str, phones: Sequence[dict] = (), accounts: Sequence[dict] = (),
                 *, offset: int = 0, text: str | None = None) -> list[str]:
        """Members of a group expression (``active&tiktok-banned``). Errors are `ScopeError`s
        with offsets into ``text`` (default ``expr``; ``expr`` starts at ``offset`` in it)."""
        return self._evaluate(expr, phones, accounts, offset, expr if text is None else text)[1]

    def _evaluate(self, expr: str, phones: Sequence[dict], accounts: Sequence[dict],
                  offset: int, text: str) -> tuple[MemberKind, list[str]]:
        pos, result, kind, op, op_at = 0, [], None, None, offset
        while True:
            while pos < len(expr) and expr[pos].isspace():
                pos += 1
            match = _EXPR_NAME.match(expr, pos)
            if match is None:
                what = f"{expr[pos]!r}" if pos < len(expr) else "the end"
                _fail(text, offset + pos, f"expected a group name, found {what}")
            name = match.group()
            if not self.exists(name, accounts):
                _fail(text, offset + pos, f"unknown group {name!r} (groups: "
                                          f"{', '.join(self.names(accounts)) or 'none'})")
            this_kind = self.kind_of(name, accounts)
            if kind is not None and this_kind != kind:
                _fail(text, op_at, f"cannot combine {kind} group(s) with {this_kind} group "
                                   f"{name!r}")
            found = self.members(name, phones, accounts)
            found_set = set(found)
            if op is None:
                result, kind = found, this_kind
            elif op == "&":
                result = [m for m in result if m in found_set]
            elif op == "-":
                result = [m for m in result if m not in found_set]
            else:
                result = _dedup([*result, *found])
            pos = match.end()
            while pos < len(expr) and expr[pos].isspace():
                pos += 1
            if pos >= len(expr):
                return kind, result  # type: ignore[return-value]
            if expr[pos] not in _OPERATORS:
                _fail(text, offset + pos, f"expected '&', '-' or '+' between groups, found "
                                          f"{expr[pos]!r}")
            op, op_at = expr[pos], offset + pos
            pos += 1

    def names(self, accounts: Sequence[dict] = ()) -> list[str]:
        """Every group name usable in expressions: stored, then computed over ``accounts``."""
        platforms = _dedup(str(r.get("platform")).casefold() for r in accounts
                           if r.get("platform"))
        return [*self.groups, ALL_PHONES, ALL_ACCOUNTS,
                *(PLATFORM_PREFIX + p for p in platforms)]

    # -- scopes and variables ------------------------------------------------------------

    def targets(self, scope: str, phones: Sequence[dict],
                accounts: Sequence[dict]) -> list[tuple[str, str | None]]:
        """A ``group:EXPR`` scope as `sequences.scopes.targets` returns it: ``(serial, None)``
        per phone of a phone group, ``(serial, "platform.account_number")`` per account."""
        lead = len(scope) - len(scope.lstrip())
        if not scope.lstrip().startswith(GROUP_SCOPE):
            _fail(scope, lead, "a group scope starts with 'group:'")
        start = lead + len(GROUP_SCOPE)
        if not scope[start:].strip():
            _fail(scope, start, "empty group expression after 'group:'")
        kind, found = self._evaluate(scope[start:], phones, accounts, start, scope)
        if kind == "phone":
            return [(m, None) for m in found]
        out = []
        for member in found:
            ref, _, serial = member.rpartition("@")
            out.append((serial, ref))
        return out

    def variable(self, path: tuple[str, ...], args: list[str] | None, phones: Sequence[dict],
                 accounts: Sequence[dict], rng: random.Random) -> str | int:
        """The value of ``${group.<path>(<args>)}`` (path without "group"). Raises
        `FarmError` with the reason; the variables module adds text and offset."""
        if len(path) == 2 and args is None:
            name, what = path
            if what not in ("count", "random", "members"):
                raise FarmError(f"unknown group variable {what!r} (known: count, random, "
                                "members)")
            return _pick(what, name, self._eval_var(name, phones, accounts), rng)
        if len(path) == 1 and args is not None:
            what = path[0]
            if what in ("count", "random", "members") and len(args) == 1:
                return _pick(what, args[0].strip(),
                             self._eval_var(args[0].strip(), phones, accounts), rng)
            if what in ("intersection", "difference", "union") and len(args) >= 2:
                op = next(k for k, v in _OPERATORS.items() if v == what)
                expr = op.join(a.strip() for a in args)
                return ",".join(self._eval_var(expr, phones, accounts))
            if what == "filter" and len(args) >= 2:
                return ",".join(self._filter(args[0].strip(), ",".join(args[1:]),
                                             phones, accounts))
        raise FarmError("usage: ${group.NAME.count|random|members}, "
                        "${group.count|random|members(EXPR)}, "
                        "${group.intersection|difference|union(A,B)}, "
                        "${group.filter(NAME,FIELD=VALUE)}")

    def _eval_var(self, expr: str, phones: Sequence[dict],
                  accounts: Sequence[dict]) -> list[str]:
        try:
            return self.evaluate(expr, phones, accounts)
        except ScopeError as e:
            raise FarmError(f"in {expr!r} at offset {e.offset}: {e.reason}") from None

    def _filter(self, name: str, criteria: str, phones: Sequence[dict],
                accounts: Sequence[dict]) -> list[str]:
        """Members of group ``name`` whose row matches ``criteria`` (FIELD=VALUE and ...)."""
        found = self._eval_var(name, phones, accounts)
        kind = self.kind_of(name, accounts)
        rows = {_row_key(kind)(r): r for r in (phones if kind == "phone" else accounts)}
        head = f"{_filter_head(kind)} where "
        try:
            _, conditions = _parse_filter(head + criteria, list(rows.values()))
        except ScopeError as e:
            raise FarmError(f"in {criteria!r} at offset {max(0, e.offset - len(head))}: "
                            f"{e.reason}") from None
        return [m for m in found if m in rows
                and all(holds(rows[m], path, op, value) for path, op, value in conditions)]

    def _stored(self, name: str) -> Group:
        group = self.groups.get(name)
        if group is None:
            if name in (ALL_PHONES, ALL_ACCOUNTS) or str(name).startswith(PLATFORM_PREFIX):
                raise ValidationError(f"group {name!r}", "a computed system group has no "
                                                         "stored members or rules")
            raise ValidationError(f"group {name!r}", f"no such group (groups: "
                                                     f"{', '.join(self.groups) or 'none'})")
        return group


class ClientGroupBooks:
    """Several clients' group books seen as one for ``group:`` scopes (a caller reaching
    more than one client: each client names its groups in its own book). The expression is
    evaluated in each client's book over that client's phones and accounts, and the targets
    are put together in client order; a book lacking a name of the expression adds nothing.
    When no book can evaluate it, the first book's error is raised."""

    def __init__(self, books: dict[int, GroupBook], client_of: Any) -> None:
        self.books = books
        self.client_of = client_of  # serial -> client id

    def targets(self, scope: str, phones: Sequence[dict],
                accounts: Sequence[dict]) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        first: ScopeError | None = None
        evaluated = False
        for client_id, book in self.books.items():
            mine = [p for p in phones if self.client_of(str(p.get("serial"))) == client_id]
            theirs = [a for a in accounts if self.client_of(str(a.get("serial"))) == client_id]
            try:
                found = book.targets(scope, mine, theirs)
            except ScopeError as exc:
                first = first or exc
                continue
            evaluated = True
            out.extend(found)
        out = _dedup_pairs(out)
        if not evaluated and first is not None:
            raise first
        return out


# --- helpers --------------------------------------------------------------------------


def _pick(what: str, name: str, found: list[str], rng: random.Random) -> str | int:
    if what == "count":
        return len(found)
    if what == "members":
        return ",".join(found)
    if not found:
        raise FarmError(f"group {name!r} has no members, so there is none to pick")
    return rng.choice(found)


def _filter_head(kind: MemberKind) -> str:
    return next(head for head, k in _FILTERS.items() if k == kind)


def _parse_filter(text: str, rows: Sequence[dict]) -> tuple[MemberKind,
                                                             list[tuple[list[str], str, str]]]:
    """A smart filter's kind and conditions; the condition grammar is scope_functions'. A
    field no row has is a typo (checked here so the message says phone or account)."""
    if not isinstance(text, str):
        raise ScopeError(repr(text), 0, "a filter is text such as 'filter.phones where x=y'")
    start = len(text) - len(text.lstrip())
    words = text[start:].split(None, 2)
    if not words or words[0] not in _FILTERS:
        _fail(text, start, "a smart group's filter starts with 'filter.phones where' or "
                           "'filter.accounts where'")
    kind = _FILTERS[words[0]]
    if len(words) < 2 or words[1] != "where":
        _fail(text, start + len(words[0]), f"expected 'where' after {words[0]!r}")
    cond_start = text.index("where", start + len(words[0])) + len("where")
    end = len(text.rstrip())
    if cond_start >= end:
        _fail(text, end, "nothing after 'where'")
    conditions = parse_conditions(text, cond_start, end, [])
    if rows:
        for path, _, _ in conditions:
            if all(lookup(r, path) is MISSING for r in rows):
                field_name = ".".join(path)
                _fail(text, text.find(field_name, cond_start),
                      f"no {kind} has field {field_name!r}")
    return kind, conditions


def _check_member(where: str, kind: MemberKind, member: Any) -> None:
    if not isinstance(member, str) or not member or any(c.isspace() for c in member):
        raise ValidationError(where, f"a {kind} member is a non-empty name without spaces, "
                                     f"not {member!r}")
    if kind == "account":
        ref, at, serial = member.rpartition("@")
        platform, dot, number = ref.partition(".")
        if not (at and serial and dot and platform and number):
            raise ValidationError(where, f"an account member is written "
                                         f"PLATFORM.ACCOUNT_NUMBER@SERIAL, not {member!r}")
    elif "@" in member:
        raise ValidationError(where, f"a phone member is a serial, not {member!r}")


def _account_ref(row: dict) -> str:
    return f"{row.get('platform')}.{row.get('account_number')}@{row.get('serial')}"


def _row_key(kind: MemberKind):  # type: ignore[no-untyped-def]
    return (lambda r: str(r["serial"])) if kind == "phone" else _account_ref


def _dedup_pairs(values: Iterable[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    return list(dict.fromkeys(values))


def _dedup(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _fail(text: str, offset: int, reason: str) -> NoReturn:
    raise ScopeError(text, offset, reason)
