"""Media a run's texts name, sent to the phone's node and listed in the run for the phone.

`MediaCollector` wraps the `sequences.variables.MediaSource` of a run's variable context:
each ``${content.media.next}`` / ``${content.media.folder(x)}`` still picks the library's
least-used file (`FarmDB.next_media`), but the text resolves to the file's path ON THE
PHONE (``/sdcard/DCIM/PhoneFarm/<name>``), and the collector keeps which coordinator file
that is, by SHA-256 (one entry per content however often the run names it).

`ship` sends those files to the phone's node the way APKs go (`AppService.push`: ApkHave
asks the node's content-addressed cache which hashes it lacks, ApkPut chunks send only
those), so a file crosses to a node once whatever the number of runs and phones; it gives
the `MediaFile` list the RunSequence carries, which the node copies to the phone and has
the media scanner index before the steps play (actors/node/media_push.py).
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import FarmError
from protocol.messages import MediaFile
from protocol.transport import DeliveryError
from sequences.variables import MediaSource

PHONE_MEDIA_DIR = "/sdcard/DCIM/PhoneFarm"
_SHA_NAME = re.compile(r"^[0-9a-f]{64}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

# (path, size, mtime_ns) -> SHA-256: a library file is hashed once per coordinator life.
_hashes: dict[tuple[str, int, int], str] = {}
_hashes_lock = threading.Lock()


class MediaShipError(FarmError):
    """The run's media could not be sent to its phone's node (the run does not start)."""


@dataclass(frozen=True)
class LocalMedia:
    """One coordinator file a run's texts named, and where it goes on the phone."""

    local: str
    sha256: str
    size: int
    phone_path: str


def file_sha256(path: str) -> tuple[str, int]:
    """(SHA-256, size) of the file at ``path`` (memoised by path, size and mtime)."""
    st = Path(path).stat()
    key = (path, st.st_size, st.st_mtime_ns)
    with _hashes_lock:
        known = _hashes.get(key)
    if known is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        known = h.hexdigest()
        with _hashes_lock:
            _hashes[key] = known
    return known, st.st_size


def phone_name(local: str, sha256: str) -> str:
    """The file's name on the phone: a library file (``<sha256>.<ext>``) keeps its name;
    another (a ``content.media.folder`` file) gets a hash prefix, so two files of one name
    in different folders never overwrite each other. Only ``[A-Za-z0-9._-]``: the path goes
    into a shell command (the media scanner's broadcast)."""
    path = Path(local)
    if path.stem == sha256 and _SHA_NAME.match(path.stem):
        name = path.name
    else:
        name = f"{sha256[:12]}-{path.name}"
    return _UNSAFE.sub("_", name)


class MediaCollector:
    """A `MediaSource` over another one for one run: the same picks, answered with the
    phone's path, and the files picked kept by SHA-256 (called from the resolving worker
    thread)."""

    def __init__(self, inner: MediaSource | None = None,
                 phone_dir: str = PHONE_MEDIA_DIR) -> None:
        self.inner = inner
        self.phone_dir = phone_dir.rstrip("/")
        self.files: dict[str, LocalMedia] = {}

    def wrap(self, ctx: Any) -> Any:
        """``ctx`` (a VariableContext) drawing its media through this collector (a context
        without a media source is left as it is: ``${content.media.*}`` fails there)."""
        if getattr(ctx, "media", None) is not None:
            self.inner, ctx.media = ctx.media, self
        return ctx

    def next(self) -> str:
        return self._take(self.inner.next())

    def folder(self, path: str) -> str:
        return self._take(self.inner.folder(path))

    def _take(self, local: str) -> str:
        try:
            sha, size = file_sha256(local)
        except OSError as exc:
            raise FarmError(f"media file {local}: {exc.strerror or exc}") from exc
        if sha not in self.files:
            self.files[sha] = LocalMedia(local, sha, size,
                                         f"{self.phone_dir}/{phone_name(local, sha)}")
        return self.files[sha].phone_path

    def media_files(self) -> list[MediaFile]:
        """What the RunSequence carries: one per content, in the order first named."""
        return [MediaFile(sha256=m.sha256, path=m.phone_path, size=m.size)
                for m in self.files.values()]


def node_of(hub: Any, serial: str) -> str:
    node = (getattr(hub, "phone_rows", {}) or {}).get(serial, {}).get("node")
    if not node:
        raise MediaShipError(f"phone {serial} is on no node: its media cannot be sent")
    return node


async def ship(hub: Any, serial: str, files: list[LocalMedia]) -> int:
    """Send ``serial``'s node the files of ``files`` its cache lacks; the bytes sent.
    MediaShipError says why not (no apps service, node unknown or refusing)."""
    if not files:
        return 0
    apps = getattr(hub, "apps", None)
    if apps is None:
        raise MediaShipError("media needs the coordinator's apps service (it sends files to "
                             "nodes)")
    node = node_of(hub, serial)
    try:
        return await apps.push(node, [{"sha256": m.sha256, "name": Path(m.local).name,
                                       "size": m.size, "path": m.local} for m in files])
    except (FarmError, DeliveryError, OSError) as exc:
        raise MediaShipError(f"sending media to node {node} of phone {serial} failed: "
                             f"{exc}") from exc
