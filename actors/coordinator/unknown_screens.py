"""The unknown-screens queue: frames no registered screen matched, waiting for a human or AI.

Owns the coordinator's ``unknown-screens/`` folder: one PNG and one JSON (context: phone,
node, app, the screen before, the last action, registry version, how often it was seen) per
distinct screen. Screens are deduplicated by a perceptual hash, so the same unregistered
dialog on sixty phones is one entry seen sixty times. Entry ids are ``<node>-<seq>`` of the
journaled event that brought the frame, so a replayed event is stored once.
Screens are compared by registry.fingerprint (which phone actors use too, to report each
unknown screen once).
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import cv2
import numpy as np
import orjson

from protocol.errors import FarmError, ValidationError
from protocol.files import confined, write_atomic
from registry.fingerprint import SAME_SCREEN_BITS, ScreenFingerprint, hash_distance

log = logging.getLogger(__name__)

_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")  # fullmatch: `$` would let a trailing newline in


class UnknownScreenQueue:
    """Owns the folder of unknown screens and their deduplication."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        self._fingerprints: dict[str, ScreenFingerprint] = {}  # filled lazily from the PNGs
        for meta in sorted(self.folder.glob("*.json")):
            try:
                entry = orjson.loads(meta.read_bytes())
                if not isinstance(entry["id"], str) or not _ID.fullmatch(entry["id"]):
                    # Its image would be looked up by that id: nothing outside the folder.
                    raise ValueError(f"bad id {entry['id']!r}")
                self._entries[entry["id"]] = entry
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("unknown screen %s unreadable, skipped: %s", meta, exc)

    def add(self, entry_id: str, png: bytes, context: dict) -> dict:
        """Store a frame (or count it against the entry it duplicates); returns the entry."""
        if not _ID.fullmatch(entry_id):
            raise ValidationError("unknown_screen.id", f"bad id {entry_id!r}")
        frame = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
        if frame is None:
            raise ValidationError(f"unknown_screen {entry_id}.png", "not a decodable image")
        fingerprint = ScreenFingerprint.of(frame)
        phash = fingerprint.phash
        serial = context.get("serial")
        with self._lock:
            if entry_id in self._entries:
                return self._entries[entry_id]
            same = next((e for e in self._entries.values()
                         if hash_distance(int(e["phash"], 16), phash) <= SAME_SCREEN_BITS
                         and fingerprint.same_screen(self._fingerprint(e["id"]))), None)
            if same is not None:
                same["seen"] += 1
                same["last_seen"] = context.get("at")
                if serial and serial not in same["serials"]:
                    same["serials"].append(serial)
                self._write_meta(same)
                return same
            entry = {**context, "id": entry_id, "phash": f"{phash:064x}", "seen": 1,
                     "serials": [serial] if serial else [], "last_seen": context.get("at"),
                     "status": "queued"}
            write_atomic(self.folder / f"{entry_id}.png", png)
            self._write_meta(entry)
            self._entries[entry_id] = entry
            self._fingerprints[entry_id] = fingerprint
            return entry

    def _fingerprint(self, entry_id: str) -> ScreenFingerprint | None:
        """The entry's fingerprint (caller holds the lock); None if its PNG is unreadable."""
        if entry_id not in self._fingerprints:
            frame = cv2.imread(str(self.folder / f"{entry_id}.png"), cv2.IMREAD_GRAYSCALE)
            if frame is None:
                log.error("unknown screen %s: PNG unreadable, not compared", entry_id)
                return None
            self._fingerprints[entry_id] = ScreenFingerprint.of(frame)
        return self._fingerprints[entry_id]

    def _write_meta(self, entry: dict) -> None:
        write_atomic(self.folder / f"{entry['id']}.json", orjson.dumps(entry, option=orjson.OPT_INDENT_2))

    def set_status(self, entry_id: str, status: str) -> None:
        """Mark an entry reviewed (``registered``, ``discarded``); unknown ids are ignored
        (retention may have removed the entry meanwhile)."""
        with self._lock:
            entry = self._entries.get(entry_id)
            if entry is None:
                return
            entry["status"] = status
            self._write_meta(entry)

    def forget(self, entry_ids) -> int:
        """Drop entries from memory whose files someone else removed (retention); returns
        how many were known. The files are not touched."""
        with self._lock:
            for entry_id in entry_ids:
                self._fingerprints.pop(entry_id, None)
            return sum(self._entries.pop(entry_id, None) is not None for entry_id in entry_ids)

    def entries(self) -> list[dict]:
        with self._lock:
            return sorted((dict(e) for e in self._entries.values()), key=lambda e: e["id"])

    def image(self, entry_id: str) -> bytes:
        with self._lock:
            known = entry_id in self._entries
        if not known:
            raise FarmError(f"unknown screen {entry_id!r}: no such entry")
        path = confined(self.folder, self.folder / f"{entry_id}.png")
        if path is None:
            log.warning("unknown screen %s: its image is a link outside %s, not served",
                        entry_id, self.folder)
            raise FarmError(f"unknown screen {entry_id!r}: no image")
        return path.read_bytes()
