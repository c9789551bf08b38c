"""A virtual phone's filesystem: an in-memory tree of files and directories.

Owns the bytes, modes and mtimes that `adb push`/`pull`, `ls`, `cat`, `rm` and `pm install`
see. Paths are absolute POSIX paths; there are no symlinks.
"""

from __future__ import annotations

import posixpath
import stat
import threading
import time
from dataclasses import dataclass, field

DEFAULT_DIRS = (
    "/sdcard", "/sdcard/DCIM", "/sdcard/Download", "/sdcard/Pictures", "/sdcard/Movies",
    "/data", "/data/local", "/data/local/tmp", "/data/app", "/system", "/system/bin",
    "/storage", "/storage/emulated", "/storage/emulated/0", "/proc", "/dev",
)


class FsError(OSError):
    """A filesystem call failed; ``strerror`` reads like the device's own messages."""


@dataclass
class Node:
    """One file or directory entry."""

    mode: int
    mtime: int
    data: bytearray = field(default_factory=bytearray)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def size(self) -> int:
        return 4096 if self.is_dir else len(self.data)


class VirtualFS:
    """Owns one phone's files. Thread-safe: sync transfers and shell commands may interleave."""

    def __init__(self, clock=time.time) -> None:
        self._clock = clock
        self._nodes: dict[str, Node] = {"/": Node(stat.S_IFDIR | 0o755, int(clock()))}
        self._lock = threading.Lock()
        for d in DEFAULT_DIRS:
            self.mkdir(d, parents=True)
        self.write("/proc/version", b"Linux version 5.10.0-virtual (phonefarm) #1 SMP PREEMPT\n")

    @staticmethod
    def normalize(path: str) -> str:
        if not path.startswith("/"):
            path = "/" + path
        norm = posixpath.normpath(path)
        return "/" if norm in ("", "//") else norm

    def stat(self, path: str) -> Node | None:
        return self._nodes.get(self.normalize(path))

    def exists(self, path: str) -> bool:
        return self.normalize(path) in self._nodes

    def is_dir(self, path: str) -> bool:
        node = self.stat(path)
        return node is not None and node.is_dir

    def mkdir(self, path: str, parents: bool = False) -> None:
        path = self.normalize(path)
        with self._lock:
            if path in self._nodes:
                if self._nodes[path].is_dir:
                    return
                raise FsError(17, f"{path}: File exists")
            parent = posixpath.dirname(path)
            if parent not in self._nodes:
                if not parents:
                    raise FsError(2, f"{path}: No such file or directory")
                self._lock.release()
                try:
                    self.mkdir(parent, parents=True)
                finally:
                    self._lock.acquire()
            self._nodes[path] = Node(stat.S_IFDIR | 0o771, int(self._clock()))

    def read(self, path: str) -> bytes:
        node = self.stat(path)
        if node is None:
            raise FsError(2, f"{path}: No such file or directory")
        if node.is_dir:
            raise FsError(21, f"{path}: Is a directory")
        return bytes(node.data)

    def write(self, path: str, data: bytes, mode: int = 0o644, mtime: int | None = None,
              append: bool = False) -> None:
        path = self.normalize(path)
        parent = posixpath.dirname(path)
        with self._lock:
            pnode = self._nodes.get(parent)
            if pnode is None or not pnode.is_dir:
                raise FsError(2, f"{path}: No such file or directory")
            existing = self._nodes.get(path)
            if existing is not None and existing.is_dir:
                raise FsError(21, f"{path}: Is a directory")
            now = int(self._clock()) if mtime is None else mtime
            if append and existing is not None:
                existing.data.extend(data)
                existing.mtime = now
            else:
                self._nodes[path] = Node(stat.S_IFREG | (mode & 0o7777), now, bytearray(data))

    def listdir(self, path: str) -> list[str]:
        path = self.normalize(path)
        node = self._nodes.get(path)
        if node is None:
            raise FsError(2, f"{path}: No such file or directory")
        if not node.is_dir:
            return [posixpath.basename(path)]
        prefix = path.rstrip("/") + "/"
        with self._lock:
            return sorted(p[len(prefix):] for p in self._nodes
                          if p.startswith(prefix) and "/" not in p[len(prefix):] and p != path)

    def remove(self, path: str, recursive: bool = False) -> None:
        path = self.normalize(path)
        with self._lock:
            node = self._nodes.get(path)
            if node is None:
                raise FsError(2, f"{path}: No such file or directory")
            if node.is_dir:
                if not recursive:
                    raise FsError(21, f"{path}: Is a directory")
                prefix = path.rstrip("/") + "/"
                for p in [p for p in self._nodes if p.startswith(prefix)]:
                    del self._nodes[p]
            if path != "/":
                del self._nodes[path]
