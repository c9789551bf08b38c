"""Putting a run's media files in the phone's gallery before its steps play (issue 21.4).

Owns the node's side of `RunSequence.media`: each file, already in the node's
content-addressed cache (sent by the coordinator like an APK: ApkHave/ApkPut, see
actors/coordinator/media_push.py), is pushed to its path under ``/sdcard/DCIM/PhoneFarm/``
and the media scanner is asked to index it (``am broadcast -a
android.intent.action.MEDIA_SCANNER_SCAN_FILE -d file://PATH``), so the app's picker shows
it as the newest item. Blocking device work: called from the playback's own thread, which
holds the phone's lock.
"""

from __future__ import annotations

import logging
import posixpath
import re
from typing import Any, Iterable

from actors.node.apk_cache import ApkCache
from protocol.errors import FarmError
from protocol.messages import MediaFile

log = logging.getLogger(__name__)

PHONE_MEDIA_DIR = "/sdcard/DCIM/PhoneFarm"
SCAN_ACTION = "android.intent.action.MEDIA_SCANNER_SCAN_FILE"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


class MediaPushError(FarmError):
    """A media file cannot be put on the phone and trying again will not help (a path
    outside the gallery folder, a file the node's cache lacks)."""


def check_media(media: MediaFile, cache: ApkCache | None) -> str:
    """The cache file to push for ``media``; MediaPushError naming what is wrong."""
    folder, name = posixpath.split(media.path)
    if folder != PHONE_MEDIA_DIR or not _SAFE_NAME.match(name) or name in (".", ".."):
        raise MediaPushError(f"media path {media.path!r} is not a plain file name under "
                             f"{PHONE_MEDIA_DIR}/")
    if cache is None:
        raise MediaPushError("this node has no media cache")
    local = cache.path(media.sha256)
    if not local.is_file():
        raise MediaPushError(f"{name}: the node's cache has no file {media.sha256} (the "
                             "coordinator sends it before the run)")
    return str(local)


def push_media(driver: Any, cache: ApkCache | None, files: Iterable[MediaFile],
               done: set[str] | None = None) -> None:
    """Push each of ``files`` to the phone and have the media scanner index it. ``done``
    holds the hashes pushed already (a retry does not push them again). Raises
    MediaPushError (hopeless) or DeviceError / DeviceGone (the phone's answer)."""
    done = set() if done is None else done
    for media in files:
        if media.sha256 in done:
            continue
        local = check_media(media, cache)
        driver.push(local, media.path)
        # The scanner's answer is asynchronous; `am broadcast` exits 0 once it is sent.
        driver.shell(["am", "broadcast", "-a", SCAN_ACTION, "-d", f"file://{media.path}"])
        done.add(media.sha256)
        log.info("phone=%s media %s (%d bytes) in the gallery", getattr(driver, "serial", "?"),
                 media.path, media.size)
