"""A run's media (issue 21.4), coordinator side: which files a run's texts named (the phone's
paths in the text, one entry per content), and their trip to each node once by hash (the
APK path's ApkHave/ApkPut into the node's real cache); node side: the files pushed and
scanned, a file the cache lacks refused before the phone is touched."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from actors.coordinator.apps import AppService
from actors.coordinator.media_push import (PHONE_MEDIA_DIR, MediaCollector, MediaShipError,
                                           phone_name, ship)
from actors.node.apk_cache import ApkCache
from actors.node.media_push import MediaPushError, push_media
from protocol.messages import ApkHave, ApkPut, CommandResult, MediaFile
from sequences.variables import MemoryMedia, VariableContext, resolve


class Link:
    """The link to nodes: ApkHave / ApkPut answered by each node's real ApkCache."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.caches: dict[str, ApkCache] = {}
        self.puts: list[tuple[str, str]] = []  # (node, sha256) of every chunk

    async def send_command(self, node: str, command, deadline: float) -> CommandResult:
        cache = self.caches.setdefault(node, ApkCache(self.root / node))
        action = command.action
        if isinstance(action, ApkHave):
            data = {"missing": cache.missing(action.sha256s)}
        else:
            assert isinstance(action, ApkPut)
            self.puts.append((node, action.sha256))
            data = cache.put(action)
        return CommandResult(command_id=command.command_id, serial="", status="ok", data=data)


class Hub:
    def __init__(self, root: Path) -> None:
        self.link = Link(root)
        self.phone_rows = {"p1": {"node": "rack-a"}, "p2": {"node": "rack-a"},
                           "p3": {"node": "rack-b"}}
        self.apps = AppService(self, db=None, chunk=1000)


def media_file(folder: Path, name: str, body: bytes) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(body)
    return str(path)


def test_a_runs_texts_resolve_to_phone_paths_and_name_each_content_once(tmp_path):
    library = tmp_path / "media"
    beach = b"\x89PNG\r\n\x1a\n" + b"beach" * 100
    sha = hashlib.sha256(beach).hexdigest()
    lib_file = media_file(library, f"{sha}.png", beach)
    other = media_file(tmp_path / "promo", "Spring Sale!.mp4", b"video" * 50)
    twin = media_file(tmp_path / "promo2", "copy.png", beach)  # same bytes, another name
    collector = MediaCollector()
    ctx = collector.wrap(VariableContext(serial="p1", media=MemoryMedia(
        {str(library): [lib_file], "promo": [other], "promo2": [twin]}, str(library))))
    rng = random.Random(1)

    first = resolve("look ${content.media.next}", ctx, rng)
    assert first == f"look {PHONE_MEDIA_DIR}/{sha}.png"  # a library file keeps its name
    again = resolve("${content.media.next}", ctx, rng)
    promo = resolve("${content.media.folder(promo)}", ctx, rng)
    same = resolve("${content.media.folder(promo2)}", ctx, rng)
    assert again == first.split()[1] and same == again  # one content, one phone file
    other_sha = hashlib.sha256(b"video" * 50).hexdigest()
    assert promo == f"{PHONE_MEDIA_DIR}/{other_sha[:12]}-Spring_Sale_.mp4"  # shell-safe name
    sent = collector.media_files()
    assert [(m.sha256, m.path, m.size) for m in sent] == [
        (sha, f"{PHONE_MEDIA_DIR}/{sha}.png", len(beach)),
        (other_sha, promo, 250)]
    assert phone_name("/x/a b.jpg", "f" * 64) == "ffffffffffff-a_b.jpg"


def test_without_a_media_source_nothing_is_wrapped():
    collector = MediaCollector()
    ctx = collector.wrap(VariableContext(serial="p1"))
    assert ctx.media is None and collector.media_files() == []


async def test_media_goes_to_each_node_once_by_hash(tmp_path):
    hub = Hub(tmp_path / "nodes")
    collector = MediaCollector(MemoryMedia({"m": [media_file(tmp_path / "m", "a.jpg",
                                                            b"\xff\xd8\xff" + b"j" * 2500)]},
                                           "m"))
    collector.next()
    files = list(collector.files.values())
    sha = files[0].sha256

    assert await ship(hub, "p1", files) == 2503  # three chunks of at most 1000 bytes
    assert hub.link.puts == [("rack-a", sha)] * 3
    assert hub.link.caches["rack-a"].path(sha).read_bytes() == b"\xff\xd8\xff" + b"j" * 2500
    assert await ship(hub, "p2", files) == 0  # same node: its cache has it (ApkHave only)
    assert await ship(hub, "p1", files) == 0
    assert len(hub.link.puts) == 3
    assert await ship(hub, "p3", files) == 2503  # another node gets its own copy
    assert [n for n, _ in hub.link.puts].count("rack-b") == 3
    assert await ship(hub, "p3", []) == 0

    with pytest.raises(MediaShipError, match="phone p9 is on no node"):
        await ship(hub, "p9", files)
    hub.apps = None
    with pytest.raises(MediaShipError, match="apps service"):
        await ship(hub, "p1", files)


class Driver:
    serial = "p1"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def push(self, local, remote) -> None:
        self.calls.append(("push", Path(local).read_bytes(), remote))

    def shell(self, command) -> None:
        self.calls.append(("shell", command))


def test_the_node_pushes_and_scans_from_its_cache(tmp_path):
    cache = ApkCache(tmp_path / "cache")
    body = b"\x89PNG\r\n\x1a\n" + b"x" * 10
    sha = hashlib.sha256(body).hexdigest()
    cache.put(ApkPut(sha256=sha, size=len(body), offset=0, data=body, last=True))
    path = f"{PHONE_MEDIA_DIR}/{sha}.png"
    driver, done = Driver(), set()
    push_media(driver, cache, [MediaFile(sha256=sha, path=path, size=len(body))], done)
    assert driver.calls == [
        ("push", body, path),
        ("shell", ["am", "broadcast", "-a", "android.intent.action.MEDIA_SCANNER_SCAN_FILE",
                   "-d", f"file://{path}"])]
    push_media(driver, cache, [MediaFile(sha256=sha, path=path, size=len(body))], done)
    assert len(driver.calls) == 2  # a retry does not push what is there

    missing = MediaFile(sha256="0" * 64, path=f"{PHONE_MEDIA_DIR}/x.png", size=3)
    with pytest.raises(MediaPushError, match="cache has no file"):
        push_media(driver, cache, [missing])
    for bad in ("/sdcard/x.png", f"{PHONE_MEDIA_DIR}/a;rm -rf.png", f"{PHONE_MEDIA_DIR}/../x"):
        with pytest.raises(MediaPushError, match="not a plain file name"):
            push_media(driver, cache, [MediaFile(sha256=sha, path=bad, size=1)])
    assert len(driver.calls) == 2
