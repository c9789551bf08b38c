"""Issue 21.4 end to end: a picture uploaded to the media library (POST /api/content/media)
reaches a virtual phone's gallery when a sequence names ``${content.media.next}``: the real
`farm-coordinator --demo` sends it to the phone's node (the APK path's ApkHave/ApkPut), the
node pushes it to /sdcard/DCIM/PhoneFarm over the real adb server and asks the media scanner
to index it before the steps play, and the run's text is the phone's path (the post it
records names it). Checked on the phone through adb: ``ls``, the media store's rows
(``content query``) and the file's bytes."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from typing import Any

import cv2
import numpy as np
import pytest

from actors.node.device.adb_server import AdbServer
from actors.node.device.driver import DeviceDriver
from tests.e2e.demo_farm import DemoFarm, call

GALLERY = "/sdcard/DCIM/PhoneFarm"


@pytest.fixture(scope="module")
def farm(tmp_path_factory) -> DemoFarm:
    farm = DemoFarm(tmp_path_factory.mktemp("media"), phones=2)
    yield farm
    farm.stop()


def api(farm: DemoFarm, method: str, path: str, body: dict | None = None) -> Any:
    status, answer = call(farm.base, method, path, farm.admin_token, body)
    assert status in (200, 201, 202), (method, path, status, answer)
    return answer


def upload(farm: DemoFarm, name: str, data: bytes) -> dict:
    req = urllib.request.Request(f"{farm.base}/api/content/media?name={name}", data=data,
                                 method="POST",
                                 headers={"Authorization": f"Bearer {farm.admin_token}",
                                          "Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201
        return json.loads(resp.read())


def run(farm: DemoFarm, sequence: dict, serial: str, timeout: float = 120) -> dict:
    started = api(farm, "POST", "/api/runs", {"sequence": sequence, "scope": f"phone:{serial}"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = api(farm, "GET", f"/api/runs/{started['run_id']}")
        if view["status"] != "running":
            return view
        time.sleep(0.3)
    raise AssertionError(f"{sequence['name']} on {serial} still running after {timeout} s")


# post_clip with the post's media drawn from the library.
POST_WITH_MEDIA = {
    "name": "post_with_media", "app": "clipshare", "account": "clipshare",
    "steps": [
        {"type": "go_to", "screen": "clipshare/feed"},
        {"type": "tap", "action": "feed.go_to_upload"},
        {"type": "wait_for_screen", "screen": "clipshare/upload", "timeout_s": 10},
        {"type": "tap", "action": "upload.pick_clip_1"},
        {"type": "tap", "action": "upload.caption_field"},
        {"type": "type", "label": "caption", "text": "Beach day #sun"},
        {"type": "tap", "action": "upload.post"},
        {"type": "wait_for_screen", "screen": "clipshare/profile", "timeout_s": 15},
        {"type": "record_post", "caption_step": "caption", "media": "${content.media.next}"},
    ]}


def test_an_uploaded_picture_reaches_the_phones_gallery(farm: DemoFarm, tmp_path) -> None:
    ok, png = cv2.imencode(".png", np.full((64, 96, 3), (40, 160, 220), np.uint8))
    assert ok
    data = png.tobytes()
    sha = hashlib.sha256(data).hexdigest()
    item = upload(farm, "beach", data)
    assert item["sha256"] == sha
    serial = next(p["serial"] for p in farm.phone_rows if p.get("client") != "Acme")
    phone = DeviceDriver(serial, AdbServer(port=farm.adb_port))
    path = f"{GALLERY}/{sha}.png"
    assert phone.shell(f"ls {GALLERY}", check=False).exit_code != 0  # nothing there yet

    view = run(farm, POST_WITH_MEDIA, serial)
    assert view["status"] == "completed", view

    listed = phone.shell(f"ls {GALLERY}").stdout.decode().split()
    assert listed == [f"{sha}.png"]
    rows = phone.shell(["content", "query", "--uri", "content://media/external/images/media",
                        "--projection", "_data"]).stdout.decode()
    assert f"_data={path}" in rows  # the media scanner indexed it: the picker shows it
    phone.pull(path, tmp_path / "back.png")
    assert (tmp_path / "back.png").read_bytes() == data

    # The text the run resolved is the phone's path: the post it recorded names it.
    account = view["executions"][0]["account"]
    deadline = time.monotonic() + 15
    while True:
        posts = api(farm, "GET", f"/api/posts?account={account}")["posts"]
        if any(p["media"] == path for p in posts) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert any(p["media"] == path for p in posts), posts

    # Again on the same phone: the node has the file (sent once), the gallery one file.
    view = run(farm, POST_WITH_MEDIA, serial)
    assert view["status"] == "completed", view
    assert phone.shell(f"ls {GALLERY}").stdout.decode().split() == [f"{sha}.png"]


def test_a_push_the_phone_refuses_fails_the_run_with_its_reason(farm: DemoFarm) -> None:
    serial = next(p["serial"] for p in farm.phone_rows if p.get("client") == "Acme")
    phone = DeviceDriver(serial, AdbServer(port=farm.adb_port))
    phone.shell(f"touch {GALLERY}")  # a file where the gallery's folder goes: push fails
    try:
        view = run(farm, {**POST_WITH_MEDIA, "name": "post_refused",
                          "retry": {"immediate": 0, "short": 0}}, serial)
    finally:
        phone.shell(f"rm {GALLERY}")
    ex = view["executions"][0]
    assert view["status"] == "failed" and ex["reason"] == "media_push_failed", ex
    assert GALLERY in ex["error"]
    step = next(s for s in ex["steps"] if s["path"] == "media_push")
    assert step["status"] == "failed" and step["screenshot"], step  # kept like any failure
    assert not any(s["path"].startswith("steps[") for s in ex["steps"])  # nothing played
