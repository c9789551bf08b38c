"""The `sync:` service: file transfer between host and a virtual phone (AOSP SYNC.TXT).

Owns the sync request loop: STAT/STA2/LST2, LIST, SEND, RECV, QUIT. Requests may arrive
split across WRTE packets, so everything is read through the stream's byte buffer.
"""

from __future__ import annotations

import errno
import logging
import posixpath
import stat
import struct

from virtual.adbd import AdbStream
from virtual.fs import FsError, VirtualFS

log = logging.getLogger(__name__)

SYNC_DATA_MAX = 64 * 1024
REQ = struct.Struct("<4sI")
STAT_V1 = struct.Struct("<4sIII")
# id, error, dev, ino, mode, nlink, uid, gid, size, atime, mtime, ctime
STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")
DENT = struct.Struct("<4sIIII")
# A path longer than this is a malformed request, not a path.
MAX_PATH = 4096


async def serve_sync(stream: AdbStream, fs: VirtualFS, serial: str) -> None:
    """Answer sync requests until QUIT or the host closes the stream."""
    while True:
        ident, length = REQ.unpack(await stream.read_exactly(REQ.size))
        if ident == b"QUIT":
            return
        if length > MAX_PATH:
            await _fail(stream, f"sync request {ident!r} with a {length}-byte path")
            return
        path = (await stream.read_exactly(length)).decode("utf-8", "replace")
        if ident == b"STAT":
            await _stat_v1(stream, fs, path)
        elif ident in (b"STA2", b"LST2"):
            await _stat_v2(stream, fs, path, ident)
        elif ident == b"LIST":
            await _list(stream, fs, path)
        elif ident == b"SEND":
            await _send(stream, fs, path, serial)
        elif ident == b"RECV":
            await _recv(stream, fs, path)
        else:
            log.error("phone=%s unknown sync request %r", serial, ident)
            await _fail(stream, f"unknown sync request {ident!r}")
            return


async def _fail(stream: AdbStream, message: str) -> None:
    data = message.encode()
    await stream.write(REQ.pack(b"FAIL", len(data)) + data)


async def _stat_v1(stream: AdbStream, fs: VirtualFS, path: str) -> None:
    node = fs.stat(path)
    if node is None:
        await stream.write(STAT_V1.pack(b"STAT", 0, 0, 0))
    else:
        await stream.write(STAT_V1.pack(b"STAT", node.mode, node.size & 0xFFFFFFFF, node.mtime))


async def _stat_v2(stream: AdbStream, fs: VirtualFS, path: str, ident: bytes) -> None:
    node = fs.stat(path)
    if node is None:
        await stream.write(STAT_V2.pack(ident, errno.ENOENT, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    else:
        await stream.write(STAT_V2.pack(ident, 0, 1, abs(hash(fs.normalize(path))) & 0xFFFFFFFF,
                                        node.mode, 1, 2000, 2000, node.size,
                                        node.mtime, node.mtime, node.mtime))


async def _list(stream: AdbStream, fs: VirtualFS, path: str) -> None:
    out = bytearray()
    if fs.is_dir(path):
        for name in [".", ".."] + fs.listdir(path):
            node = fs.stat(posixpath.join(path, name)) if name not in (".", "..") else fs.stat(path)
            if node is None:
                continue
            raw = name.encode()
            out += DENT.pack(b"DENT", node.mode, node.size & 0xFFFFFFFF, node.mtime, len(raw)) + raw
    out += DENT.pack(b"DONE", 0, 0, 0, 0)
    await stream.write(bytes(out))


async def _send(stream: AdbStream, fs: VirtualFS, spec: str, serial: str) -> None:
    path, _, mode_text = spec.rpartition(",")
    if not path:
        path, mode_text = spec, "33188"
    try:
        mode = int(mode_text)
    except ValueError:
        mode = 0o100644
    data = bytearray()
    mtime = 0
    while True:
        ident, length = REQ.unpack(await stream.read_exactly(REQ.size))
        if ident == b"DATA":
            if length > SYNC_DATA_MAX:
                await _fail(stream, f"DATA chunk of {length} bytes exceeds {SYNC_DATA_MAX}")
                return
            data += await stream.read_exactly(length)
        elif ident == b"DONE":
            mtime = length
            break
        else:
            await _fail(stream, f"expected DATA or DONE during SEND, got {ident!r}")
            return
    try:
        parent = posixpath.dirname(fs.normalize(path))
        fs.mkdir(parent, parents=True)
        fs.write(path, bytes(data), mode=stat.S_IMODE(mode) or 0o644, mtime=mtime or None)
    except FsError as exc:
        await _fail(stream, f"couldn't create file: {exc.strerror}")
        return
    log.debug("phone=%s received %s (%d bytes)", serial, path, len(data))
    await stream.write(REQ.pack(b"OKAY", 0))


async def _recv(stream: AdbStream, fs: VirtualFS, path: str) -> None:
    try:
        data = fs.read(path)
    except FsError as exc:
        await _fail(stream, exc.strerror or "No such file or directory")
        return
    out = bytearray()
    for off in range(0, len(data), SYNC_DATA_MAX):
        chunk = data[off:off + SYNC_DATA_MAX]
        out += REQ.pack(b"DATA", len(chunk)) + chunk
    out += REQ.pack(b"DONE", 0)
    await stream.write(bytes(out))
