"""POST/GET/DELETE /api/apks and `farm apks` against a real aiohttp server over a real
FarmDB and DATA/apks folder (both engines): uploads streamed as octet-stream and multipart,
the bad inputs of issue 20 (not an APK, no package, truncated, path traversal, too large),
the policy (every user reads, super users change) and the registry app link."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.access.policy import refusal  # noqa: E402
from actors.access.principal import Principal  # noqa: E402
from actors.apps.library import ApkLibrary  # noqa: E402
from actors.control.apks import APKS  # noqa: E402
from actors.control.app import make_app  # noqa: E402
from actors.control.cli import main as farm_main  # noqa: E402
from actors.control.openapi import openapi_document  # noqa: E402
from fake_hub import FakeHub  # noqa: E402
from registry.load import load_registry  # noqa: E402
from tests.apk_factory import make_apk, make_xapk  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLIP = "com.phonefarm.clipshare"  # the demo registry's clipshare app

pytestmark = pytest.mark.usefixtures("engine")


class _Store:
    registry = load_registry(ROOT / "registry" / "apps")


@pytest.fixture
async def client(db, tmp_path):
    hub = FakeHub()
    hub.db = db
    hub.registry_store = _Store()
    app = make_app(hub)
    app[APKS] = ApkLibrary(tmp_path / "apks", db, max_bytes=200_000)
    async with TestClient(TestServer(app)) as c:
        yield c


def _bundle(code: int = 420) -> bytes:
    splits = {"config.arm64_v8a": make_apk(CLIP, code, split="config.arm64_v8a",
                                           abis=("arm64-v8a",)),
              "config.x86_64": make_apk(CLIP, code, split="config.x86_64", abis=("x86_64",))}
    return make_xapk(make_apk(CLIP, code, "4.2.0"), splits, CLIP, code, version_name="4.2.0")


async def _post(client, data: bytes, ctype: str = "application/octet-stream"):
    resp = await client.post("/api/apks?name=x.xapk", data=data,
                             headers={"Content-Type": ctype})
    return resp.status, await resp.json()


async def test_upload_list_remove(client, tmp_path):
    status, body = await _post(client, _bundle())
    assert status == 201, body
    assert (body["app"], body["package"], body["version_name"], body["added"]) == (
        "clipshare", CLIP, "4.2.0", 3)
    status, again = await _post(client, _bundle())
    assert status == 200 and again["added"] == 0
    # Multipart works the same (a browser's form).
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(make_apk(CLIP, 430, "4.3.0")), filename="clip.apk",
                   content_type="application/vnd.android.package-archive")
    resp = await client.post("/api/apks", data=form)
    assert resp.status == 201, await resp.text()
    listed = (await (await client.get("/api/apks?app=clipshare")).json())["apks"]
    assert [(f["version_code"], f["split"]) for f in listed] == [
        (430, None), (420, None), (420, "config.arm64_v8a"), (420, "config.x86_64")]
    resp = await client.delete(f"/api/apks/{listed[0]['apk_id']}")
    assert resp.status == 200 and (await resp.json())["removed"]["version_code"] == 430
    resp = await client.delete(f"/api/apks/{listed[0]['apk_id']}")
    assert resp.status == 404
    assert (await client.delete("/api/apks/abc")).status == 400


@pytest.mark.parametrize("data, where, why", [
    (b"PK\x05\x06" + b"\0" * 18 + b"junk", "x.xapk", "holds no .apk entry"),
    (b"just some bytes", "x.xapk", "not a zip"),
    (make_apk(None, 3), "x.xapk", "manifest has no package"),
    (make_xapk(make_apk(CLIP, 1), {}, CLIP, 1, extra={"../../x": b"x"}),
     "x.xapk: entry '../../x'", "path traversal"),
])
async def test_bad_uploads_are_400_naming_the_file(client, tmp_path, data, where, why):
    status, body = await _post(client, data)
    assert status == 400 and body["field"] == "body", body
    assert body["where"] == where and why in body["error"]
    assert list((tmp_path / "apks" / "incoming").iterdir()) == []
    assert (await (await client.get("/api/apks")).json())["apks"] == []


async def test_too_large_is_413_and_wrong_type_is_400(client, tmp_path):
    status, body = await _post(client, make_apk(CLIP, 1, size_pad=300_000))
    assert status == 413 and body["limit"] == 200_000
    big = make_apk(CLIP, 1, size_pad=300_000)

    async def chunked():  # no Content-Length: refused once the limit is passed
        for i in range(0, len(big), 16_384):
            yield big[i:i + 16_384]
    resp = await client.post("/api/apks", data=chunked(),
                             headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 413
    status, body = await _post(client, make_apk(CLIP, 1), "application/json")
    assert status == 400 and body["field"] == "Content-Type"
    status, body = await _post(client, b"--x\r\n", "multipart/form-data")  # no boundary
    assert status == 400 and body["field"] == "body"
    assert list((tmp_path / "apks").rglob("*.part")) == []


async def test_a_truncated_upload_keeps_nothing(client, tmp_path):
    """A client that promises more bytes than it sends and hangs up: nothing stays."""
    data = make_apk(CLIP, 7, size_pad=50_000)
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"POST /api/apks HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                 f"application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                 + data[:20_000])
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()
    for _ in range(100):  # the server notices the hang-up and deletes the part file
        if not any((tmp_path / "apks" / "incoming").glob("*")):
            break
        await asyncio.sleep(0.05)
    assert list((tmp_path / "apks" / "incoming").glob("*")) == []
    assert (await (await client.get("/api/apks")).json())["apks"] == []


@pytest.mark.parametrize("engine", ["sqlite"])
def test_policy_and_openapi(engine):
    viewer = Principal(user_id=5, name="v", role="viewer", client_ids=frozenset({1}))
    client = Principal(user_id=6, name="c", role="client", client_ids=frozenset({1}))
    assert refusal(viewer, "GET", "/api/apks") is None
    assert refusal(client, "POST", "/api/apks") is not None
    assert refusal(client, "DELETE", "/api/apks/{id}") is not None
    paths = openapi_document()["paths"]
    assert set(paths["/api/apks"]) == {"get", "post"}
    assert "application/octet-stream" in paths["/api/apks"]["post"]["requestBody"]["content"]


async def test_farm_apks_cli(client, tmp_path, capsys):
    url = str(client.make_url("")).rstrip("/")
    path = tmp_path / "clip-whatever.xapk"
    path.write_bytes(_bundle())
    code = await asyncio.to_thread(farm_main, ["--url", url, "apks", "add", str(path)])
    out = capsys.readouterr().out
    assert code == 0 and "clipshare (com.phonefarm.clipshare) 4.2.0 [420]: added 3" in out
    code = await asyncio.to_thread(farm_main, ["--url", url, "apks", "list", "--app", CLIP])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["ID", "APP", "VERSION"] and len(lines) == 4
    bad = tmp_path / "bad.apk"
    bad.write_bytes(b"not an apk")
    code = await asyncio.to_thread(farm_main, ["--url", url, "apks", "add", str(bad)])
    assert code == 2 and "bad.apk: not a zip" in capsys.readouterr().err
    apk_id = lines[1].split()[0]
    code = await asyncio.to_thread(farm_main, ["--url", url, "apks", "remove", apk_id])
    assert code == 0 and f"removed {apk_id}" in capsys.readouterr().out
