"""What one execution read off the screen and the data events it sends (issue 21).

Owns an execution's read variables (``${read.NAME}``), the texts its labelled type steps typed
(a record_post's caption), and the shape and numbering of its data events:
``metric_recorded``, ``post_recorded``, ``health_signal`` and ``messages_read``. Each carries
``execution_id`` (the execution's key, ``ex-...``, as RunSequence carries it: the coordinator
looks it up by key and checks the execution is this phone's), ``serial``, ``account`` (the
run's ``platform.number`` or None), ``app`` (registry app key or None), ``at`` (epoch
seconds) and ``seq``: ``(top-level step index + 1) * 1000 + n``, n counting the events of that
step. A resumed execution (node restart, AI recovery) starts again at a later step, so its
numbers never repeat an earlier event's, while the same step played again gives the same
numbers: consumers key rows on execution_id + seq and a replay changes nothing. Health
signals have numbers of their own (``HEALTH_SEQ``, one per kind and execution) so a login
screen met in one playback and not in its replay never shifts a step's numbers. The
post-failed event at the end of an execution has ``FAILED_POST_SEQ``; it is sent only when
the execution really ends failed here: a failure kept for AI recovery (the lock held) is
left to the coordinator, which records the failed post if the execution ends failed.
"""

from __future__ import annotations

import re
import time
from typing import Callable

from protocol.messages import RunSequence
from sequences.load import walk_steps
from sequences.model import RecordPostStep, TypeStep

# One post-failed event per execution, after every step's numbers.
FAILED_POST_SEQ = 10**9
# One health signal per kind and execution, numbered apart from every step's events.
HEALTH_SEQ = {"challenge": FAILED_POST_SEQ + 1, "relogin": FAILED_POST_SEQ + 2}
# Events one step may send before its numbers would run into the next step's.
PER_STEP = 1000

_HASHTAG = re.compile(r"#\w+")


def hashtags_of(caption: str) -> list[str]:
    """The ``#words`` of a caption, in order, each once, as written (``#fun``)."""
    return list(dict.fromkeys(_HASHTAG.findall(caption)))


def sender_of(box: list[int] | tuple[int, ...], width: int) -> str:
    """Who wrote a message line: its box's centre left of the body's middle is ``them``
    (the partner's bubbles are on the left), right of it ``us``."""
    return "them" if (box[0] + box[2]) / 2 < width / 2 else "us"


def step_index(path: str) -> int:
    """The top-level index of a step path (``steps[3].then[0]`` -> 3)."""
    return int(path[len("steps["):path.index("]")])


def caption_text(steps: list, label: str | None) -> str | None:
    """The text of the type step labelled ``label`` as the coordinator resolved it (None:
    no such step, or its text waits for a read variable only the playback knows)."""
    for _path, step in walk_steps(steps):
        if isinstance(step, TypeStep) and step.label == label and label:
            return None if "${read." in step.text else step.text
    return None


class Readings:
    """One execution's read variables, typed texts and data events (see the module)."""

    def __init__(self, run: RunSequence, serial: str,
                 publish: Callable[[str, dict], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.run = run
        self.serial = serial
        self.publish = publish
        self.clock = clock
        self.values: dict[str, str] = {}     # read variables: into -> text (a number's digits)
        self.typed: dict[str, str] = {}      # type step label -> the text it typed
        self._index = -1
        self._n = 0
        self._signalled: set[str] = set()
        posts = [(path, step) for path, step in walk_steps(run.steps)
                 if isinstance(step, RecordPostStep)]
        self.will_post = bool(posts)
        self._caption_step = posts[0][1].caption_step if posts else None
        # A resume past the record_post step: an earlier playback of this execution posted.
        self.post_sent = any(step_index(path) < run.resume_from for path, _ in posts)

    def at_step(self, index: int) -> None:
        """A top-level step ``index`` starts: its events are numbered from its base."""
        if index != self._index:
            self._index, self._n = index, 0

    def _next_seq(self) -> int:
        self._n += 1
        return (self._index + 1) * PER_STEP + min(self._n, PER_STEP - 1)

    def _send(self, event: str, data: dict, seq: int | None = None) -> None:
        self.publish(event, {"execution_id": self.run.execution_id,
                             "serial": self.serial, "account": self.run.account,
                             "app": self.run.app, "at": self.clock(),
                             "seq": self._next_seq() if seq is None else seq, **data})

    def metric(self, metric: str, value: int, post: str | None) -> None:
        self._send("metric_recorded", {"metric": metric, "value": value, "post": post})

    def posted(self, caption: str | None, hashtags: list[str], media: str | None,
               platform_post_id: str | None) -> None:
        self.post_sent = True
        self._send("post_recorded", {"status": "posted", "caption": caption,
                                     "hashtags": hashtags, "media": media,
                                     "platform_post_id": platform_post_id, "reason": None})

    def caption(self, label: str | None) -> str | None:
        """The caption a record_post names: what this playback typed in the step labelled
        ``label``, else (a resumed execution that did not replay it) that step's text as
        the coordinator resolved it in the run's steps."""
        typed = self.typed.get(label or "")
        return typed if typed is not None else caption_text(self.run.steps, label)

    def post_failed(self, reason: str, error: str | None, held: bool = False) -> None:
        """The execution ended failed: a sequence that was to record a post and had not says
        the post failed (once). Not when it failed before its first step (the phone was
        locked or gone, the app or account could not be made active): no post was tried.
        Not when the failure is ``held`` for AI recovery: the execution may still post; the
        coordinator records the failed post if the recovery fails."""
        if not self.will_post or self.post_sent or self._index < 0 or held:
            return
        self.post_sent = True
        caption = self.caption(self._caption_step)
        self._send("post_recorded", {"status": "failed", "caption": caption,
                                     "hashtags": hashtags_of(caption or ""), "media": None,
                                     "platform_post_id": None,
                                     "reason": f"{reason}: {error}" if error else reason},
                   seq=FAILED_POST_SEQ)

    def health_signal(self, kind: str, screen: str) -> None:
        """One ``health_signal`` of each kind per execution, numbered apart (``HEALTH_SEQ``)."""
        if kind in self._signalled:
            return
        self._signalled.add(kind)
        self._send("health_signal", {"kind": kind, "screen": screen},
                   seq=HEALTH_SEQ.get(kind, FAILED_POST_SEQ + 9))

    def messages_read(self, partner: str, messages: list[dict]) -> None:
        self._send("messages_read", {"partner": partner, "messages": messages})
