"""The demo app's social numbers and messages: what a profile, a post and an inbox show.

Owns how ClipShare's counts move over time and how they are written, and the seeded
conversations of each account. Everything is a pure function of the phone's seed (one per
virtual phone: the farm's seed plus the phone's index), the account, and the clock, so two
screenshots taken at the same minute show the same numbers and a test can say what a screen
must read. ``virtual/ui.py`` calls it to fill the screen templates; nothing here draws.

Counts change once a minute (they are computed from the clock floored to the minute):

- followers: a per-account base (hundreds, thousands or tens of thousands, so the profile
  shows "987", "1,234" and "48.7K" across the demo accounts) plus 2 to 5 a minute since the
  phone started; following: a few hundred, one more every 10 minutes; posts: the posts.
- a post's views grow by 20 to 60 a minute from the minute it was posted; likes are 5 to
  12 % of the views, comments 0.5 to 1.5 %.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

# How each count is written on screen (real apps mix them):
# plain "987"; grouped "1,234"; compact "1.2K" from 1,000 ("12.3K", "1.5M"), truncated like
# the apps do (1,299 is "1.2K"); followers "auto": plain, grouped to 9,999, then compact.
COUNT_STYLES = ("plain", "grouped", "compact", "auto")

_PARTNERS = ("dancequeen", "skater_sam", "cookwithkim", "travelbug", "petpals")
_THEIR_LINES = (
    "Hey! Loved your last clip",
    "Where was that filmed?",
    "Can we do a collab soon?",
    "Your edits keep getting better",
    "What song was that?",
    "Saw you on my feed today",
    "Are you posting tomorrow?",
    "That sunset shot was great",
)
_OUR_LINES = (
    "Thanks so much!",
    "At the beach near home",
    "Sure, send me a message",
    "Appreciate it a lot",
    "It is on my profile",
    "Yes, in the morning",
)
# Who says each line of a conversation, top to bottom: the same shape in every chat, so the
# virtual app's screen can lay the bubbles out in its JSON.
CONVERSATION_SHAPE = ("them", "us", "them", "us", "them")
CONVERSATIONS = 3  # per account, shown in the inbox


def _h(*parts: object) -> int:
    """A stable hash of ``parts`` (the same in every process, unlike ``hash``)."""
    return zlib.crc32(":".join(str(p) for p in parts).encode())


def format_count(n: int, style: str) -> str:
    """``n`` as an app writes it in ``style`` (one of COUNT_STYLES)."""
    if n < 0:
        raise ValueError(f"a count is never negative, got {n}")
    if style == "plain":
        return str(n)
    if style == "grouped":
        return f"{n:,}"
    if style == "auto":
        return str(n) if n < 1000 else f"{n:,}" if n < 10_000 else format_count(n, "compact")
    if style != "compact":
        raise ValueError(f"unknown count style {style!r} (known: {', '.join(COUNT_STYLES)})")
    if n < 1000:
        return str(n)
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            tenths = n * 10 // size  # truncated, never rounded up
            whole, frac = divmod(tenths, 10)
            return f"{whole}{unit}" if frac == 0 else f"{whole}.{frac}{unit}"
    raise AssertionError("unreachable")


def minute(t: float) -> int:
    """The clock's whole minute: counts change once a minute."""
    return int(t // 60)


@dataclass(frozen=True)
class AccountCounts:
    followers: int
    following: int
    posts: int


@dataclass(frozen=True)
class PostCounts:
    views: int
    likes: int
    comments: int


def account_counts(seed: int, account: str, posts: int, started: float, now: float) -> AccountCounts:
    """An account's profile counts at ``now`` on a phone that started at ``started``."""
    h = _h(seed, account, "followers")
    # The demo's three accounts land in three magnitudes (see the module docstring); any
    # other account gets one picked by its hash.
    tier = {"clip_creator": 1, "dance_daily": 2, "chef_mia": 0}.get(account, h % 3)
    base = (200 + h % 700, 1000 + h % 8000, 20_000 + h % 60_000)[tier]
    rate = 2 + (h >> 8) % 4
    elapsed = max(0, minute(now) - minute(started))
    following = 120 + (h >> 12) % 700 + elapsed // 10
    return AccountCounts(base + rate * elapsed, following, posts)


def post_counts(seed: int, account: str, post_index: int, posted_at: float, now: float) -> PostCounts:
    """The ``post_index``-th post's counts at ``now`` (it was posted at ``posted_at``)."""
    h = _h(seed, account, post_index, "post")
    age = max(0, minute(now) - minute(posted_at))
    views = (20 + h % 41) * age
    likes = views * (5 + (h >> 8) % 8) // 100
    comments = views * (5 + (h >> 12) % 11) // 1000
    return PostCounts(views, likes, comments)


def partner(seed: int, account: str, chat: int) -> str:
    """Who the account's ``chat``-th conversation is with (distinct within the account)."""
    first = _h(seed, account, "partners") % len(_PARTNERS)
    return _PARTNERS[(first + chat) % len(_PARTNERS)]


def conversation(seed: int, account: str, chat: int) -> list[tuple[str, str]]:
    """The ``chat``-th conversation's messages, top to bottom, as ``(sender, text)``."""
    # Each side's lines are taken at steps that never repeat one within a conversation.
    start = {"them": _h(seed, account, chat, "them"), "us": _h(seed, account, chat, "us")}
    said = {"them": 0, "us": 0}
    out = []
    for sender in CONVERSATION_SHAPE:
        lines, step = (_THEIR_LINES, 3) if sender == "them" else (_OUR_LINES, 1)
        out.append((sender, lines[(start[sender] + step * said[sender]) % len(lines)]))
        said[sender] += 1
    return out
