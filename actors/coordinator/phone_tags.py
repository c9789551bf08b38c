"""Custom phone tags (spec 4.3): the operator's labels for organising and filtering phones.

Owns the coordinator's tag file (``<data>/phone-tags.json``: serial -> sorted tags), its
validation (a tag is 1-32 of letters, digits, ``_`` and ``-``, so it can be used in a
``phone:TAG`` scope) and its atomic saves. The hub merges these tags into every phone row,
so the wall, the scopes and the stream all see the same tags.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import orjson

from protocol.errors import FarmError, ValidationError
from protocol.files import write_atomic

log = logging.getLogger(__name__)

TAG = re.compile(r"[A-Za-z0-9_-]{1,32}")  # fullmatch: `$` lets "tag\n" in
MAX_TAGS_PER_PHONE = 32


class PhoneTags:
    """Owns the custom tags of every phone and their file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._tags: dict[str, list[str]] = self._load()

    def _load(self) -> dict[str, list[str]]:
        if not self.path.exists():
            return {}
        try:
            raw = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise FarmError(f"{self.path}: unreadable tag file: {exc}") from None
        if not isinstance(raw, dict):
            raise FarmError(f"{self.path}: expected an object of serial -> tags")
        return {str(s): sorted({str(t) for t in tags if TAG.fullmatch(str(t))})
                for s, tags in raw.items() if isinstance(tags, list)}

    def of(self, serial: str) -> list[str]:
        with self._lock:
            return list(self._tags.get(serial, ()))

    def add(self, serial: str, tag: str) -> list[str]:
        """Tag ``serial``; the phone's tags afterwards. ValidationError for a bad tag."""
        check_tag(tag)
        with self._lock:
            tags = set(self._tags.get(serial, ()))
            if tag not in tags and len(tags) >= MAX_TAGS_PER_PHONE:
                raise ValidationError("$.tag", f"phone {serial} already has "
                                               f"{MAX_TAGS_PER_PHONE} tags")
            tags.add(tag)
            self._tags[serial] = sorted(tags)
            self._save()
            return list(self._tags[serial])

    def remove(self, serial: str, tag: str) -> list[str]:
        """Untag ``serial`` (no error when it did not have the tag)."""
        with self._lock:
            tags = [t for t in self._tags.get(serial, ()) if t != tag]
            if tags:
                self._tags[serial] = tags
            else:
                self._tags.pop(serial, None)
            self._save()
            return tags

    def _save(self) -> None:
        write_atomic(self.path, orjson.dumps(self._tags, option=orjson.OPT_INDENT_2
                                             | orjson.OPT_SORT_KEYS) + b"\n")


def check_tag(tag: str) -> None:
    if not TAG.fullmatch(tag):
        raise ValidationError("$.tag", f"{tag!r}: a tag is 1-32 of letters, digits, _ and -")
