"""An account's health state from its last seven days (issue 21.3, spec 14.4).

Pure: given the account's health events (relogin, challenge, post_failed) and its follower
readings, ``assess`` names the state (``ok``, ``watch``, ``at_risk``) and every reason. The
thresholds are documented in docs/operations.md ("Account health").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

WINDOW_S = 7 * 86400.0
OK, WATCH, AT_RISK = "ok", "watch", "at_risk"
# at_risk: any challenge screen; this many failed posts; followers down by this fraction.
RISK_FAILED_POSTS = 3
RISK_FOLLOWER_DROP = 0.10
# watch: this many forced re-logins or failed posts; followers down at all.
WATCH_RELOGINS = 2
WATCH_FAILED_POSTS = 2


@dataclass
class Health:
    """One account's state, its reasons and the counts behind them."""

    state: str = OK
    reasons: list[str] = field(default_factory=list)
    relogins_7d: int = 0
    challenges_7d: int = 0
    failed_posts_7d: int = 0
    followers: int | None = None
    followers_change_7d: int | None = None

    def view(self) -> dict[str, Any]:
        return {"state": self.state, "reasons": list(self.reasons),
                "relogins_7d": self.relogins_7d, "challenges_7d": self.challenges_7d,
                "failed_posts_7d": self.failed_posts_7d, "followers": self.followers,
                "followers_change_7d": self.followers_change_7d}


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def assess(events: Iterable[dict], followers: list[list[float]], now: float) -> Health:
    """The state of an account whose health ``events`` (kind, screen, at) and follower
    readings (``[[at, value], ...]`` oldest first, the last one before the window included)
    are given, at ``now``."""
    since = now - WINDOW_S
    recent = [e for e in events if e["at"] >= since]
    h = Health()
    screens: dict[str, set[str]] = {}
    for e in recent:
        if e["kind"] == "relogin":
            h.relogins_7d += 1
        elif e["kind"] == "challenge":
            h.challenges_7d += 1
        elif e["kind"] == "post_failed":
            h.failed_posts_7d += 1
        if e.get("screen"):
            screens.setdefault(e["kind"], set()).add(str(e["screen"]))
    if followers:
        h.followers = int(followers[-1][1])
        if len(followers) >= 2:
            h.followers_change_7d = int(followers[-1][1] - followers[0][1])
    risk: list[str] = []
    watch: list[str] = []
    if h.challenges_7d:
        where = ", ".join(sorted(screens.get("challenge", ())))
        risk.append(f"challenge screen met {_times(h.challenges_7d)} in 7 days"
                    + (f" ({where})" if where else ""))
    if h.failed_posts_7d >= RISK_FAILED_POSTS:
        risk.append(f"{h.failed_posts_7d} failed posts in 7 days")
    elif h.failed_posts_7d >= WATCH_FAILED_POSTS:
        watch.append(f"{h.failed_posts_7d} failed posts in 7 days")
    if h.relogins_7d >= WATCH_RELOGINS:
        watch.append(f"forced to log in again {h.relogins_7d} times in 7 days")
    change, start = h.followers_change_7d, followers[0][1] if followers else 0
    if change is not None and change < 0:
        text = f"followers down {-change} in 7 days"
        if start > 0 and -change / start >= RISK_FOLLOWER_DROP:
            risk.append(f"{text} ({-change / start:.0%})")
        else:
            watch.append(text)
    h.reasons = risk + watch
    h.state = AT_RISK if risk else WATCH if watch else OK
    return h
