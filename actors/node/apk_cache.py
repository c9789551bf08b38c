"""The node's cache of APK files, by SHA-256, filled chunk by chunk over the link.

Owns ``DATA/apk-cache-<node>/``: ``<sha256>.apk`` files that are whole and match their name
(the coordinator sends each APK to a node once; every phone of the node installs from here;
the media files runs put in phones' galleries are kept here the same way, by their hash),
and ``<sha256>.apk.part`` files being received. A file becomes ``.apk`` only after the last
chunk, when its size and hash are checked: a wrong one is deleted and nothing is kept.
Blocking file work: the node calls it from a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

from protocol.errors import ValidationError
from protocol.files import fsync_dir
from protocol.messages import MAX_APK_CHUNK, ApkPut

SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_APK_BYTES = 4 * 1024 ** 3  # no APK or split is larger (Play's limit is far below)


def check_sha256(value: str, where: str) -> str:
    if not isinstance(value, str) or not SHA256.match(value):
        raise ValidationError(where, f"{value!r} is not a SHA-256 (64 lowercase hex digits)")
    return value


class ApkCache:
    """APK files of one node by SHA-256, whole or absent."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()  # one writer at a time: chunks of one file stay in order

    def path(self, sha256: str) -> Path:
        return self.root / f"{check_sha256(sha256, 'sha256')}.apk"

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def missing(self, sha256s: list[str]) -> list[str]:
        """The ones of ``sha256s`` not in the cache (each checked to be a SHA-256 first)."""
        for i, sha in enumerate(sha256s):
            check_sha256(sha, f"sha256s[{i}]")
        return [sha for sha in dict.fromkeys(sha256s) if not self.has(sha)]

    def put(self, chunk: ApkPut) -> dict:
        """Write one chunk at its offset (a chunk at an offset already held replaces what
        follows it: a re-sent chunk is harmless); on the last, check size and hash and keep
        the file. ValidationError naming the field; a failed check deletes the part file."""
        sha = check_sha256(chunk.sha256, "apk_put.sha256")
        if not 0 < chunk.size <= MAX_APK_BYTES:
            raise ValidationError("apk_put.size", f"{chunk.size} is not in 1..{MAX_APK_BYTES}")
        if len(chunk.data) > MAX_APK_CHUNK:
            raise ValidationError("apk_put.data", f"{len(chunk.data)} bytes, more than "
                                                  f"{MAX_APK_CHUNK} in one chunk")
        end = chunk.offset + len(chunk.data)
        if chunk.offset < 0 or end > chunk.size:
            raise ValidationError("apk_put.offset", f"bytes {chunk.offset}..{end} are outside "
                                                    f"the file's {chunk.size}")
        if chunk.last and end != chunk.size:
            raise ValidationError("apk_put.last", f"the last chunk ends at {end}, the file "
                                                  f"has {chunk.size} bytes")
        with self._lock:
            final = self.path(sha)
            if final.is_file():
                return {"stored": True, "already": True}
            self.root.mkdir(parents=True, exist_ok=True)
            part = final.with_name(final.name + ".part")
            held = part.stat().st_size if part.exists() else 0
            if chunk.offset > held:
                raise ValidationError("apk_put.offset", f"{chunk.offset}, but the node holds "
                                                        f"{held} bytes of {sha}: send from there")
            with open(part, "r+b" if part.exists() else "wb") as f:
                f.seek(chunk.offset)
                f.write(chunk.data)
                f.truncate(end)
                if chunk.last:
                    f.flush()
                    os.fsync(f.fileno())
            if not chunk.last:
                return {"stored": False, "held": end}
            digest = _sha256_of(part)
            if digest != sha:
                part.unlink(missing_ok=True)
                raise ValidationError("apk_put.sha256", f"the {chunk.size} bytes received hash "
                                                        f"to {digest}, not {sha}: dropped")
            os.replace(part, final)
            fsync_dir(self.root)
            return {"stored": True}


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
