"""The coordinator's registry store (actors.coordinator.registry_store) on a copy of the demo registry and
a real FarmDB: a screen saved from a frame is valid, audited and versioned; a bad edit names
the request's field and writes nothing; a crash mid-save leaves the old registry intact."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from actors.store.farm_db import FarmDB
from actors.coordinator.registry_store import RegistryNotFound, RegistryStore, ScreenEdit
from protocol.errors import ValidationErrors
from registry.load import DEMO_REGISTRY, load_registry, registry_version
from registry.match import Matcher
from registry.model import ScreenRef


@pytest.fixture
def store(tmp_path: Path, db: FarmDB) -> RegistryStore:
    s = RegistryStore.open(tmp_path / "registry", db)
    s.changes = []
    s.on_change = s.changes.append
    return s


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def frame_png(text: str = "Bookmarks", size=(1080, 2400)) -> bytes:
    frame = np.full((size[1], size[0], 3), 245, np.uint8)
    cv2.rectangle(frame, (0, 0), (size[0], 240), (90, 60, 20), -1)
    cv2.putText(frame, text, (60, 170), cv2.FONT_HERSHEY_SIMPLEX, 3.0, (255, 255, 255), 6)
    cv2.putText(frame, "Close", (400, 2250), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (20, 20, 20), 4)
    return cv2.imencode(".png", frame)[1].tobytes()


def edit(**over) -> ScreenEdit:
    body = dict(kind="state", description="Chrome bookmarks", reason="test",
                regions=[{"name": "title", "coordinates": [0, 0, 1080, 240]}],
                actions=[{"name": "close", "coordinates": [380, 2180, 760, 2300]}])
    body.update(over)
    import msgspec
    return msgspec.convert(body, ScreenEdit)


async def test_first_open_copies_the_demo_and_leaves_it_alone(tmp_path, store):
    assert store.version == registry_version(DEMO_REGISTRY)
    assert snapshot(tmp_path / "registry") == snapshot(DEMO_REGISTRY)
    summary = store.summary()
    assert summary["version"] == store.version
    launcher = next(a for a in summary["apps"] if a["name"] == "launcher")
    assert launcher["package"] == "com.android.launcher3" and "home" in launcher["states"]


async def test_save_a_new_screen_audited_versioned_and_matchable(tmp_path, store, db):
    demo_before = snapshot(DEMO_REGISTRY)
    old_version = store.version
    out = await store.save_screen("launcher", "bookmarks", edit(), frame_png(), actor="ops")
    assert out["action"] == "create" and out["version"] != old_version
    assert out["version"] == store.version == registry_version(tmp_path / "registry")
    assert store.changes == [out]
    registry = load_registry(tmp_path / "registry")  # valid on disk
    screen = registry.apps["launcher"].states["bookmarks"]
    assert screen.validation_regions[0].reference.startswith("launcher/bookmarks.title.")
    assert screen.actions[0].name == "close"
    frame = cv2.cvtColor(cv2.imdecode(np.frombuffer(frame_png(), np.uint8), cv2.IMREAD_COLOR),
                         cv2.COLOR_BGR2RGB)
    assert Matcher(registry).identify(frame, None).ref == ScreenRef("launcher", "state", "bookmarks")
    trail = await db.audit_trail("registry_screen", "launcher/bookmarks")
    assert trail[0]["action"] == "create" and trail[0]["actor"] == "ops"
    assert trail[0]["reason"] == "test" and trail[0]["before"] is None
    assert trail[0]["after"]["version"] == out["version"]
    assert trail[0]["after"]["validation_regions"][0]["name"] == "title"
    assert snapshot(DEMO_REGISTRY) == demo_before

    # A second save replaces the screen: update, before/after, old crops dropped.
    again = await store.save_screen("launcher", "bookmarks", edit(
        regions=[{"name": "title", "coordinates": [0, 0, 1080, 200]}]), frame_png("Saved"))
    assert again["action"] == "update"
    trail = await db.audit_trail("registry_screen", "launcher/bookmarks")
    assert trail[0]["before"]["validation_regions"][0]["coordinates"] == [0, 0, 1080, 240]
    files = sorted(p.name for p in (tmp_path / "registry/launcher").glob("bookmarks.*"))
    assert len(files) == 2, files  # one crop, one screenshot: the first save's are gone

    deleted = await store.delete_screen("launcher", "bookmarks", actor="ops", reason="gone")
    assert deleted["action"] == "delete" and "bookmarks" not in store.registry.apps["launcher"].states
    assert (await db.audit_trail("registry_screen", "launcher/bookmarks"))[0]["after"] is None


async def test_bad_edits_name_the_field_and_write_nothing(tmp_path, store, db):
    before, version = snapshot(tmp_path / "registry"), store.version
    cases = [
        (edit(regions=[{"name": "t", "coordinates": [0, 0, 2000, 240]}]), "$.regions[0].coordinates"),
        (edit(actions=[{"name": "a", "coordinates": [0, 0, 10, 10], "linked_state": "nowhere"}]),
         "$.actions[0].linked_state"),
        (edit(handler="missing"), "$.handler"),
        (edit(regions=[{"name": "t", "coordinates": [0, 0, 100, 100]},
                       {"name": "t", "coordinates": [0, 100, 100, 200]}]), "$.regions[1].name"),
        (edit(regions=[{"name": "t", "coordinates": [0, 0, 100, 100], "expected_text": "x"}]),
         "$.regions[0].expected_text"),
    ]
    for body, field in cases:
        with pytest.raises(ValidationErrors) as info:
            await store.save_screen("launcher", "bookmarks", body, frame_png())
        assert field in [p.where for p in info.value.problems], (field, str(info.value))
    with pytest.raises(ValidationErrors) as info:
        await store.save_screen("launcher", "bookmarks", edit(), frame_png(size=(1080, 1080)))
    assert info.value.problems[0].where == "$.frame" or "frame" in str(info.value)
    with pytest.raises(ValidationErrors) as info:
        await store.save_screen("launcher", "Bad Key", edit(), frame_png())
    assert info.value.problems[0].where == "screen"
    with pytest.raises(RegistryNotFound):
        await store.save_screen("nosuchapp", "x", edit(), frame_png())
    with pytest.raises(RegistryNotFound):
        await store.delete_screen("launcher", "nosuch")
    assert snapshot(tmp_path / "registry") == before and store.version == version
    assert store.changes == [] and await db.audit_trail("registry_screen") == []


async def test_a_crash_before_the_json_is_written_leaves_the_old_registry(tmp_path, store,
                                                                           monkeypatch):
    import registry.load as load

    version = store.version
    real = load.write_atomic

    def crash_on_json(path, data):
        if str(path).endswith(".json"):
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(load, "write_atomic", crash_on_json)
    with pytest.raises(OSError):
        await store.save_screen("launcher", "home", edit(), frame_png())
    monkeypatch.setattr(load, "write_atomic", real)
    assert registry_version(tmp_path / "registry") == version
    home = load_registry(tmp_path / "registry").apps["launcher"].states["home"]
    assert home.validation_regions[0].reference == "launcher/home.heading.png"  # untouched


async def test_a_new_app_needs_its_package(tmp_path, store):
    out = await store.save_screen("chrome", "new_tab", edit(package="com.android.chrome"),
                                  frame_png())
    assert store.registry.apps["chrome"].package == "com.android.chrome"
    assert out["action"] == "create"
    raw, files = store.app_payload("chrome")
    assert raw == (tmp_path / "registry/chrome.json").read_bytes()
    assert all(rel.startswith("chrome/") for rel in files) and len(files) == 2


class _Link:
    """The coordinator link's surface RegistrySync uses: connected nodes and send."""

    def __init__(self, limit: int | None = None) -> None:
        self.nodes = {"n1": object()}
        self.sent: list[tuple[str, object]] = []
        self.limit = limit

    async def send(self, node, body):
        from protocol.codec import encode, make_envelope

        env = make_envelope(body, "coordinator", node)
        if self.limit is not None:
            encode(env, max_bytes=self.limit)  # the link's real size check
        self.sent.append((node, body))
        return env


class _Hub:
    def __init__(self, link: _Link) -> None:
        self.link, self.events, self.node_rows, self.tasks = link, [], {"n1": {}}, []

    def emit(self, event, node, serial, data):
        self.events.append((event, node, data))

    def _background(self, work):
        import asyncio
        self.tasks.append(asyncio.get_running_loop().create_task(work))


async def test_sync_pushes_every_app_to_a_stale_node_and_again_when_it_stays_stale(store):
    import asyncio

    from actors.coordinator.registry_sync import RegistrySync
    from protocol.messages import RegistryApplied

    hub = _Hub(_Link())
    sync = RegistrySync(hub, store)
    sync.verify_after_s = 0  # the check after a push is awaited below, step by step
    sync.node_up("n1", store.version)  # up to date: nothing sent
    assert hub.tasks == [] and hub.link.sent == []
    sync.node_up("n1", "stale")
    await hub.tasks[0]  # the push; it started the check (tasks[1])
    pushed = [body.app for _, body in hub.link.sent]
    assert pushed == sorted(store.registry.apps)
    first = hub.link.sent[0][1]
    assert first.version == store.version and first.apps == sorted(store.registry.apps)
    assert first.app_json == (store.root / f"{first.app}.json").read_bytes()
    await hub.tasks[1]  # no registry_applied came: everything is sent again, checked again
    assert len(hub.link.sent) == 2 * len(pushed) and len(hub.tasks) == 3
    sync.applied("n1", RegistryApplied(app="launcher", version=store.version))
    await hub.tasks[2]  # now current: nothing more
    assert len(hub.link.sent) == 2 * len(pushed)
    sync.verify_after_s = 3600
    assert hub.node_rows["n1"]["registry_version"] == store.version
    assert hub.events[-1][0] == "registry_applied" and hub.events[-1][2]["current"]

    # A save: registry_changed on the stream, the app pushed to every connected node.
    out = await store.save_screen("launcher", "bookmarks", edit(), frame_png())
    await asyncio.gather(*hub.tasks)
    assert ("registry_changed", None, out) in hub.events
    assert hub.link.sent[-1][1].app == "launcher" and hub.link.sent[-1][1].version == out["version"]
    for task in hub.tasks:
        task.cancel()


async def test_sync_reports_an_app_over_the_message_limit(store):
    import asyncio

    from actors.coordinator.registry_sync import RegistrySync

    hub = _Hub(_Link(limit=500_000))  # clipshare's push is ~1 MB, the others ~0.2 MB
    RegistrySync(hub, store).node_up("n1", None)
    await hub.tasks[0]
    hub.tasks[1].cancel()  # the later check is not this test's business
    failed = [e for e in hub.events if e[0] == "registry_push_failed"]
    assert [e[2]["app"] for e in failed] == ["clipshare"]  # the big one; the others went
    assert "over the limit of 500000 bytes" in failed[0][2]["error"]
    assert sorted(body.app for _, body in hub.link.sent) == ["global", "launcher"]


async def test_an_actions_navigation_flag_is_saved_and_kept_when_an_edit_omits_it(tmp_path, store):
    # The upload screen's Post is navigation: false (go_to never posts on its way somewhere);
    # a client that knows nothing of the flag must not turn it back on by saving the screen.
    upload = store.registry.apps["clipshare"].states["upload"]
    actions = [{"name": a.name, "coordinates": list(a.coordinates),
                "linked_state": a.linked_state} for a in upload.actions]
    await store.save_screen("clipshare", "upload", edit(actions=actions), frame_png())
    saved = {a.name: a.navigation for a in
             load_registry(tmp_path / "registry").apps["clipshare"].states["upload"].actions}
    assert saved["post"] is False and saved["cancel"] is True
    actions[0]["navigation"] = False  # pick_clip_1, said explicitly
    actions[4]["navigation"] = True   # post, said explicitly
    await store.save_screen("clipshare", "upload", edit(actions=actions), frame_png())
    saved = {a.name: a.navigation for a in
             load_registry(tmp_path / "registry").apps["clipshare"].states["upload"].actions}
    assert saved["pick_clip_1"] is False and saved["post"] is True
