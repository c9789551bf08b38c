"""Variables (spec 15.1): what ``${category.path(args)}`` means, and resolving template text.

Owns `VariableContext` (everything a variable can name for one phone and account), the
resolution of the categories client, profile, account, content, dynamic, custom and ai
(group delegates to `sequences.groups.GroupBook.variable`), and the `AIProvider` interface
the AI issue implements. Parsing is `sequences.spintax.parse` (one parser for variables and
spintax). Resolution is synchronous and pure apart from the context's
callables: counters, media and the AI provider; only the chosen spintax option is resolved, so
a counter in an option not taken does not move.

The farm database builds a context with `FarmDB.variable_context` (its counters and media
persist); tests build one by hand with `MemoryCounters` and `MemoryMedia`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Protocol

from protocol.errors import FarmError, ScopeError, VariableError
from sequences.scope_functions import evaluate_function
from sequences.spintax import Node, Spin, Text, Var, choose, parse

if TYPE_CHECKING:
    from sequences.groups import GroupBook

log = logging.getLogger(__name__)

__all__ = ["AIProvider", "MediaSource", "MemoryCounters", "MemoryMedia", "NoAIProvider",
           "VariableContext", "check_template", "parse", "parse_account_ref", "read_variables", "resolve",
           "substitute_reads"]

CAPTION_DEPTH = 5
CLIENT_FIELDS = ("name", "status", "contact_email", "contact_discord")
PROFILE_FIELDS = ("first_name", "last_name", "birth_month", "birth_day", "birth_year",
                  "gender", "profile_password", "interests")
ACCOUNT_FIELDS = ("username", "password", "bio", "platform", "account_number", "status")
CATEGORIES = ("client", "profile", "account", "content", "dynamic", "custom", "ai", "group",
              "read")
# ``${read.NAME}``: a value a read step of the same execution took off the screen. The
# coordinator leaves it as written (resolve returns its text); the node fills it in when it
# plays the step (`substitute_reads`).
READ_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_READ_VARIABLE = re.compile(r"\$\{read\.([a-z][a-z0-9_]{0,31})\}")
# Counters persist as SQLite INTEGERs (64-bit signed): a start or step beyond that would be
# an OverflowError out of the database, not an error about the variable.
COUNTER_LIMIT = 2**63


class AIProvider(Protocol):
    """Text generation behind ``${ai.*}`` (implemented by the AI issue). Methods raise a
    `FarmError` when they cannot answer; its message is shown with the variable's offset."""

    def caption(self, prompt: str) -> str: ...

    def response(self, context: str) -> str: ...

    def hashtags(self, topic: str, count: int) -> str: ...


class NoAIProvider:
    """The AI provider until one is configured: every call is a clear error."""

    def _missing(self, what: str) -> str:
        raise VariableError(what, 0, "no AI provider configured: AI is off on this coordinator "
                                     "(start it with --ai-base-url or PHONEFARM_AI_BASE_URL)")

    def caption(self, prompt: str) -> str:
        return self._missing(prompt)

    def response(self, context: str) -> str:
        return self._missing(context)

    def hashtags(self, topic: str, count: int) -> str:
        return self._missing(topic)


class MediaSource(Protocol):
    """Media files for ``${content.media.*}``: each call returns the next not-yet-used file
    (round robin over a folder) and records the use."""

    def next(self) -> str: ...

    def folder(self, path: str) -> str: ...


class MemoryMedia:
    """`MediaSource` over in-memory folder listings (tests, previews without a database)."""

    def __init__(self, folders: dict[str, list[str]], default_folder: str = "") -> None:
        self.folders = {k: sorted(v) for k, v in folders.items()}
        self.default_folder = default_folder
        self.used: dict[str, int] = {}

    def next(self) -> str:
        return self.folder(self.default_folder)

    def folder(self, path: str) -> str:
        files = self.folders.get(path)
        if not files:
            raise FarmError(f"media folder {path!r} has no media files")
        # Least used first, ties by name: a round robin that survives new files.
        pick = min(files, key=lambda f: (self.used.get(f, 0), f))
        self.used[pick] = self.used.get(pick, 0) + 1
        return pick


class MemoryCounters:
    """Named counters in memory: ``start`` on first use, then + ``step``."""

    def __init__(self, values: dict[str, int] | None = None) -> None:
        self.values = dict(values or {})

    def __call__(self, name: str, start: int, step: int) -> int:
        self.values[name] = self.values[name] + step if name in self.values else start
        return self.values[name]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class VariableContext:
    """Everything ``${...}`` can name for one phone (and optionally its current account).

    ``accounts`` are dicts with platform, account_number, username, password, bio, status
    (and optionally ``profile``, whose profile_password is the password fallback);
    ``account`` is the current (platform, account_number) for ``${account.FIELD}``.
    ``counters(name, start, step)`` returns the next value and persists it."""

    serial: str = ""
    client: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    account: tuple[str, str] | None = None
    hashtag_sets: dict[str, list[str]] = field(default_factory=dict)
    caption_templates: dict[str, str] = field(default_factory=dict)
    media: MediaSource | None = None
    custom: dict[str, str] = field(default_factory=dict)
    counters: Callable[[str, int, int], int] = field(default_factory=MemoryCounters)
    clock: Callable[[], datetime] = _utc_now
    ai: AIProvider = field(default_factory=NoAIProvider)
    # The whole farm, for the scope-aware functions (``${random.account from …}``).
    phones: list[dict[str, Any]] = field(default_factory=list)
    farm_accounts: list[dict[str, Any]] = field(default_factory=list)
    # Groups for ``${group...}`` (sequences.groups), evaluated over phones and farm_accounts.
    groups: "GroupBook | None" = None


def parse_account_ref(ref: str | tuple[str, str]) -> tuple[str, str]:
    """``"clipshare.account1"`` (or a pair) as (platform, account_number)."""
    if isinstance(ref, tuple):
        return ref
    platform, dot, number = ref.partition(".")
    if not dot or not platform or not number or "." in number:
        raise VariableError(ref, 0, "an account is written PLATFORM.ACCOUNT_NUMBER, "
                                    "e.g. clipshare.account1")
    return platform, number


def resolve(text: str, ctx: VariableContext, rng: random.Random) -> str:
    """``text`` with its spintax chosen (by ``rng``) and its variables replaced from ``ctx``.

    Raises `VariableError` naming the text, the offset of the variable or syntax mistake and
    the reason (unknown category, field or account, a value that is not set, ...)."""
    return _Resolver(ctx, rng).template(text, depth=0)


class _Fail(Exception):
    """A variable cannot be resolved; `_Resolver.variable` adds the text and offset."""


class _Resolver:
    def __init__(self, ctx: VariableContext, rng: random.Random) -> None:
        self.ctx = ctx
        self.rng = rng
        self.captions: list[str] = []  # caption templates being resolved, outermost first

    def template(self, text: str, depth: int) -> str:
        return self.sequence(parse(text), text, depth)

    def sequence(self, nodes: tuple[Node, ...], text: str, depth: int) -> str:
        out = []
        for node in nodes:
            if isinstance(node, Text):
                out.append(node.value)
            elif isinstance(node, Spin):
                out.append(self.sequence(choose(node, self.rng), text, depth))
            else:
                out.append(self.variable(node, text, depth))
        return "".join(out)

    def variable(self, var: Var, text: str, depth: int) -> str:
        written = text[var.offset:var.end]
        if var.expression is not None:
            return self.scope_function(var, text)
        if var.path[0] == "read":
            if (reason := _read_problem(var)) is not None:
                raise VariableError(text, var.offset, f"{written}: {reason}")
            return written  # the node fills it in at play time
        try:
            args = (None if var.args is None
                    else [self.sequence(a, text, depth) for a in var.args])
            handler = getattr(self, "_" + var.path[0], None)
            if var.path[0] not in CATEGORIES or handler is None:
                raise _Fail(f"unknown variable category {var.path[0]!r} "
                            f"(known: {', '.join(CATEGORIES)})")
            value = handler(var.path[1:], args, depth)
        except _Fail as e:
            raise VariableError(text, var.offset, f"{written}: {e}") from None
        except VariableError as e:
            if e.text == text:  # already names this text (an argument's own variable)
                raise
            raise VariableError(text, var.offset, f"{written}: {e.reason}") from None
        except FarmError as e:
            raise VariableError(text, var.offset, f"{written}: {e}") from None
        return str(value)

    def scope_function(self, var: Var, text: str) -> str:
        """``${count.accounts in account:…}`` and its kin, over the farm's phones and accounts
        (a list comes out comma-separated)."""
        head = f"{var.name} "
        try:
            value = evaluate_function(head + var.expression, self.ctx.phones,
                                      self.ctx.farm_accounts, self.rng)
        except ScopeError as e:
            offset = var.expression_offset + max(0, e.offset - len(head))
            raise VariableError(text, offset, f"{text[var.offset:var.end]}: {e.reason}") from None
        return ",".join(value) if isinstance(value, list) else str(value)

    # -- categories ------------------------------------------------------------------------

    def _client(self, path: tuple[str, ...], args: list[str] | None, depth: int) -> Any:
        _no_args(args)
        key = "_".join(path)
        if key not in CLIENT_FIELDS:
            raise _Fail(f"unknown client field {'.'.join(path)!r} "
                        "(known: name, status, contact.email, contact.discord)")
        if not self.ctx.client:
            raise _Fail(f"phone {self.ctx.serial or '?'} belongs to no client")
        return _present(self.ctx.client.get(key), f"client {self.ctx.client.get('name')!r}")

    def _profile(self, path: tuple[str, ...], args: list[str] | None, depth: int) -> Any:
        _no_args(args)
        key = ".".join(path)
        if key not in PROFILE_FIELDS:
            raise _Fail(f"unknown profile field {key!r} (known: {', '.join(PROFILE_FIELDS)})")
        if not self.ctx.profile:
            raise _Fail(f"phone {self.ctx.serial or '?'} has no profile (a phone's profile is "
                        "its accounts' profile)")
        return _present(self.ctx.profile.get(key), "the profile")

    def _account(self, path: tuple[str, ...], args: list[str] | None, depth: int) -> Any:
        _no_args(args)
        if len(path) == 1:
            if self.ctx.account is None:
                raise _Fail("no current account: name one, ${account.PLATFORM.NUMBER.FIELD}")
            (platform, number), key = self.ctx.account, path[0]
        elif len(path) == 3:
            platform, number, key = path
        else:
            raise _Fail("write ${account.PLATFORM.ACCOUNT_NUMBER.FIELD} "
                        "(or ${account.FIELD} for the current account)")
        account = next((a for a in self.ctx.accounts
                        if a.get("platform") == platform and a.get("account_number") == number),
                       None)
        if account is None:
            have = ", ".join(f"{a.get('platform')}.{a.get('account_number')}"
                             for a in self.ctx.accounts) or "none"
            raise _Fail(f"phone {self.ctx.serial or '?'} has no account {platform}.{number} "
                        f"(it has: {have})")
        if key not in ACCOUNT_FIELDS:
            raise _Fail(f"unknown account field {key!r} (known: {', '.join(ACCOUNT_FIELDS)})")
        value = account.get(key)
        if key == "password" and not value:
            # Spec 15.1: an account without its own password uses the profile password.
            value = ((account.get("profile") or {}).get("profile_password")
                     or self.ctx.profile.get("profile_password"))
        return _present(value, f"account {platform}.{number}")

    def _content(self, path: tuple[str, ...], args: list[str] | None, depth: int) -> Any:
        kind, rest = (path[0], path[1:]) if path else ("", ())
        if kind == "hashtags" and len(rest) == 1:
            _no_args(args)
            tags = self.ctx.hashtag_sets.get(rest[0])
            if tags is None:
                raise _Fail(f"no hashtag set {rest[0]!r} "
                            f"(known: {', '.join(sorted(self.ctx.hashtag_sets)) or 'none'})")
            return " ".join("#" + t.lstrip("#") for t in tags)
        if kind == "caption" and len(rest) == 1:
            _no_args(args)
            template = self.ctx.caption_templates.get(rest[0])
            if template is None:
                raise _Fail(f"no caption template {rest[0]!r} (known: "
                            f"{', '.join(sorted(self.ctx.caption_templates)) or 'none'})")
            if rest[0] in self.captions:
                chain = " -> ".join([*self.captions, rest[0]])
                raise _Fail(f"caption template {rest[0]!r} names itself ({chain})")
            if depth >= CAPTION_DEPTH:
                raise _Fail(f"caption templates nest deeper than {CAPTION_DEPTH}")
            self.captions.append(rest[0])
            try:
                return self.template(template, depth + 1)
            except VariableError as e:
                raise _Fail(f"in caption template {rest[0]!r}: offset {e.offset}: "
                            f"{e.reason}") from None
            finally:
                self.captions.pop()
        if kind == "media" and rest in (("next",), ("folder",)):
            if self.ctx.media is None:
                raise _Fail("no media source configured")
            if rest == ("next",):
                _no_args(args)
                return self.ctx.media.next()
            folder = _args(args, 1, None, "content.media.folder(path)")
            return self.ctx.media.folder(",".join(folder))
        raise _Fail("unknown content variable (known: content.hashtags.NAME, "
                    "content.caption.NAME, content.media.next, content.media.folder(path))")

    def _dynamic(self, path: tuple[str, ...], args: list[str] | None, depth: int) -> Any:
        if path in (("date",), ("date", "format"), ("time",), ("time", "format")):
            default = "%Y-%m-%d" if path[0] == "date" else "%H:%M"
            if len(path) == 1:
                _no_args(args)
                fmt = default
            else:
                fmt = ",".join(args) if args else default
            return self.ctx.clock().strftime(fmt)
        if path == ("random", "number"):
            parts = [a.strip() for a in _args(args, 1, 2, "dynamic.random.number(min-max)")]
            match = (re.fullmatch(r"(-?\d+)\s*-\s*(-?\d+)", parts[0]) if len(parts) == 1
                     else re.fullmatch(r"(-?\d+),(-?\d+)", ",".join(parts)))
            if not match:
                raise _Fail("expected a range of whole numbers, e.g. (1-10)")
            try:
                low, high = int(match[1]), int(match[2])
            except ValueError:  # int() refuses more than 4300 digits
                raise _Fail("a number of the range is too long") from None
            if low > high:
                raise _Fail(f"empty range: {low} is above {high}")
            return self.rng.randint(low, high)
        if path == ("random", "choice"):
            items = [a.strip() for a in _args(args, 1, None, "dynamic.random.choice(a,b,c)")]
            return items[self.rng.randrange(len(items))]
        if path == ("counter",):
            parts = [a.strip() for a in _args(args, 1, 3, "dynamic.counter(name,start,step)")]
            if not parts[0]:
                raise _Fail("a counter needs a name")
            try:
                start = int(parts[1]) if len(parts) > 1 and parts[1] else 1
                step = int(parts[2]) if len(parts) > 2 and parts[2] else 1
            except ValueError:
                raise _Fail("start and step must be whole numbers") from None
            if not all(-COUNTER_LIMIT <= v < COUNTER_LIMIT for v in (start, step)):
                raise _Fail("start and step must be within -2**63..2**63-1 (counters are "
                            "64-bit integers in the farm database)")
            return self.ctx.counters(parts[0], start, step)
        raise _Fail("unknown dynamic variable (known: dynamic.date.format(F), "
                    "dynamic.time.format(F), dynamic.random.number(A-B), "
                    "dynamic.random.choice(a,b,...), dynamic.counter(name,start,step))")

    def _custom(self, path: tuple[str, ...], args: list[str] | None, depth: int) -> Any:
        _no_args(args)
        name = ".".join(path)
        if name not in self.ctx.custom:
            raise _Fail(f"no custom variable {name!r} "
                        f"(known: {', '.join(sorted(self.ctx.custom)) or 'none'})")
        return self.ctx.custom[name]

    def _ai(self, path: tuple[str, ...], args: list[str] | None, depth: int) -> Any:
        if path == ("caption",):
            return self.ctx.ai.caption(",".join(_args(args, 1, None, "ai.caption(prompt)")))
        if path == ("response",):
            return self.ctx.ai.response(",".join(_args(args, 1, None, "ai.response(context)")))
        if path == ("hashtags",):
            topic, count = _args(args, 2, 2, "ai.hashtags(topic,count)")
            try:
                number = int(count.strip())
            except ValueError:
                raise _Fail(f"count must be a whole number, not {count.strip()!r}") from None
            return self.ctx.ai.hashtags(topic.strip(), number)
        raise _Fail("unknown ai variable (known: ai.caption(prompt), ai.response(context), "
                    "ai.hashtags(topic,count))")

    def _group(self, path: tuple[str, ...], args: list[str] | None, depth: int) -> Any:
        if self.ctx.groups is None:
            raise _Fail("no groups configured")
        return self.ctx.groups.variable(path, args, self.ctx.phones, self.ctx.farm_accounts,
                                        self.rng)


def _no_args(args: list[str] | None) -> None:
    if args is not None:
        raise _Fail("takes no arguments")


def _args(args: list[str] | None, low: int, high: int | None, usage: str) -> list[str]:
    if args is None or len(args) < low or (high is not None and len(args) > high):
        raise _Fail(f"usage: ${{{usage}}}")
    return args


def _present(value: Any, owner: str) -> Any:
    if value is None or value == "":
        raise _Fail(f"not set for {owner}")
    return value


# --- read variables (issue 21) ------------------------------------------------------------------


def _read_problem(var: Var) -> str | None:
    """Why ``var`` (a ``read.*`` variable) is not ``${read.NAME}``, or None."""
    if var.args is not None:
        return "takes no arguments"
    if len(var.path) != 2 or not READ_NAME.fullmatch(var.path[1]):
        return ("a read variable is ${read.NAME}, NAME [a-z][a-z0-9_]{0,31} (the into of an "
                "earlier read_text or read_number step)")
    return None


def read_variables(text: str) -> list[tuple[str, int]]:
    """Every ``${read.NAME}`` of template ``text`` (in spintax options and arguments too) as
    (NAME, offset); raises `VariableError` for a template that does not parse or a malformed
    read variable."""
    found: list[tuple[str, int]] = []

    def walk(nodes: tuple[Node, ...]) -> None:
        for node in nodes:
            if isinstance(node, Spin):
                for option in node.options:
                    walk(option)
            elif isinstance(node, Var):
                if node.path[0] == "read" and node.expression is None:
                    if (reason := _read_problem(node)) is not None:
                        raise VariableError(text, node.offset,
                                            f"{text[node.offset:node.end]}: {reason}")
                    found.append((node.path[1], node.offset))
                for arg in node.args or ():
                    walk(arg)

    walk(parse(text))
    return found


def substitute_reads(text: str, values: dict[str, str]) -> str:
    """``text`` (already resolved by the coordinator) with each ``${read.NAME}`` replaced by
    ``values[NAME]``; raises `VariableError` naming the first NAME that has no value."""
    def one(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            known = ", ".join(sorted(values)) or "none yet"
            raise VariableError(text, match.start(), f"${{read.{name}}}: no read step of this "
                                                     f"execution set {name!r} (set: {known})")
        return values[name]
    return _READ_VARIABLE.sub(one, text)


# --- checking a template without a phone --------------------------------------------------------


class _Anything(dict):
    """A mapping that has every name (its value "x"): the probe's custom variables, caption
    templates and hashtag sets, whose names only a phone's context can check."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: Any) -> Any:
        return "x"

    def get(self, key: Any, default: Any = None) -> Any:
        return "x"


class _ProbeSource:
    """Media and AI answers for the probe: always a value, nothing used up."""

    def next(self) -> str:
        return "x"

    def folder(self, path: str) -> str:
        return "x"

    def caption(self, prompt: str) -> str:
        return "x"

    def response(self, context: str) -> str:
        return "x"

    def hashtags(self, topic: str, count: int) -> str:
        return "x"


def _probe_context() -> VariableContext:
    account = {f: "x" for f in ACCOUNT_FIELDS} | {"platform": "p", "account_number": "n"}
    source = _ProbeSource()
    return VariableContext(
        serial="probe", client={f: "x" for f in CLIENT_FIELDS},
        profile={f: "x" for f in PROFILE_FIELDS}, accounts=[account], account=("p", "n"),
        hashtag_sets=_Anything(), caption_templates=_Anything(), media=source,
        custom=_Anything(), ai=source)


def check_template(text: str) -> None:
    """Raise `VariableError` (offset, reason) when template ``text`` does not parse or names
    a variable no phone could resolve: an unknown category, field or form (``${foo.bar}``,
    ``${account.nope}``, ``${content.video}``, ``${dynamic.counter}`` without its name).

    Each variable is resolved by the resolver itself against a context in which every value
    is present, so "known" here means exactly what `resolve` knows. What depends on a
    phone is left to resolution: whether its account, custom variable, caption template,
    hashtag set, group or media exists, the scope functions, and the arguments of a variable
    whose arguments hold variables or spintax (their values are known at run time only)."""
    probe = _Resolver(_probe_context(), random.Random(0))

    def walk(nodes: tuple[Node, ...]) -> None:
        for node in nodes:
            if isinstance(node, Spin):
                for option in node.options:
                    walk(option)
            elif isinstance(node, Var):
                for arg in node.args or ():
                    walk(arg)
                check(node)

    def check(var: Var) -> None:
        if var.expression is not None or var.path[0] == "group":
            return  # evaluated over the farm's phones and groups at run time
        if var.path[0] not in CATEGORIES:
            probe.variable(var, text, 0)  # the resolver's own words for it
        if var.args is not None and not all(isinstance(n, Text) for a in var.args for n in a):
            return
        if var.path[0] == "account" and len(var.path) == 4:
            # Another account of the phone, ${account.PLATFORM.NUMBER.FIELD}: its field.
            var = dataclasses.replace(var, path=("account", var.path[3]))
        probe.variable(var, text, 0)

    walk(parse(text))
