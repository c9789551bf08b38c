"""``${ai.caption(prompt)}``, ``${ai.response(context)}``, ``${ai.hashtags(topic,count)}``:
the sequences' ``AIProvider`` (sequences/variables.py) over the farm's ``AIClient``.

Owns the three prompts, the clean-up of the model's answers, and a cache per run (one
``AIVariables`` per run: the same call in one run, on any of its phones, asks the model once).
Variables are resolved in a worker thread (RunManager resolves off the loop), while the
client lives on the coordinator's loop: each call is posted to that loop and waited for.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading

from actors.coordinator.ai.client import AIClient
from sequences.variables import VariableError

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 120.0
_HASHTAG = re.compile(r"#?([^\s#,;]+)")

CAPTION_SYSTEM = ("You write short social media captions. Answer with the caption text only: "
                  "no quotes, no hashtags unless asked, at most 200 characters.")
RESPONSE_SYSTEM = ("You write short, friendly replies to social media posts and comments. "
                   "Answer with the reply text only, at most 200 characters.")
HASHTAGS_SYSTEM = ("You suggest hashtags. Answer with the hashtags only, separated by spaces, "
                   "each starting with #.")


class AIVariables:
    """The ``ai.*`` variables of one run, answered by ``client`` on ``loop``, cached."""

    def __init__(self, client: AIClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self._cache: dict[tuple, str] = {}
        self._key_locks: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()

    def _ask(self, key: tuple, system: str, user: str) -> str:
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            # One question per key even when the run's phones resolve at the same time.
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:  # on the loop's own thread it would wait for itself forever
            raise RuntimeError("AIVariables must be called from a worker thread")
        with key_lock:
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
            future = asyncio.run_coroutine_threadsafe(self.client.chat(system, user), self.loop)
            reply = future.result(timeout=CALL_TIMEOUT_S)
            text = reply.text.strip().strip('"').strip()
            if not text:
                raise VariableError(user, 0, "the AI model answered nothing")
            with self._lock:
                self._cache[key] = text
            return text

    def caption(self, prompt: str) -> str:
        return self._ask(("caption", prompt), CAPTION_SYSTEM, prompt)

    def response(self, context: str) -> str:
        return self._ask(("response", context), RESPONSE_SYSTEM,
                         f"Write a reply to this: {context}")

    def hashtags(self, topic: str, count: int) -> str:
        raw = self._ask(("hashtags", topic, count), HASHTAGS_SYSTEM,
                        f"Give {count} hashtags about: {topic}")
        tags = []
        for m in _HASHTAG.finditer(raw):
            tag = "#" + m.group(1).strip(".")
            if len(tag) > 1 and tag.lower() not in (t.lower() for t in tags):
                tags.append(tag)
        if not tags:
            raise VariableError(topic, 0, f"the AI model gave no hashtags ({raw[:80]!r})")
        return " ".join(tags[:count])
