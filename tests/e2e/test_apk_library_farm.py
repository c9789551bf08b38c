"""The APK library on a real `farm-coordinator --demo` (issue 20.1), lean: `farm apks add` of a
generated .xapk streamed to the real endpoint (stored once under DATA/apks, linked to the
screen registry's clipshare), a tenant reads but may not upload, and an upload that breaks
off mid-body keeps nothing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.apk_factory import make_apk, make_xapk
from tests.e2e.demo_farm import DemoFarm, call
from tests.e2e.farm_auth import admin_token, farm_env

ROOT = Path(__file__).resolve().parents[2]
CLIP = "com.phonefarm.clipshare"


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("apks")
    demo = DemoFarm(tmp, phones=2)
    demo.data = tmp / "data"
    admin_token(demo.data, demo.base)  # for farm_env
    yield demo
    demo.stop()


def _farm(demo: DemoFarm, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "actors.control.cli", "--url", demo.base,
                           *args], cwd=ROOT, env=farm_env(demo.base), capture_output=True,
                          text=True, timeout=120)


def test_farm_apks_add_list_and_a_tenant_reads_only(farm, tmp_path):
    splits = {"config.arm64_v8a": make_apk(CLIP, 420, split="config.arm64_v8a",
                                           abis=("arm64-v8a",)),
              "config.x86_64": make_apk(CLIP, 420, split="config.x86_64", abis=("x86_64",))}
    bundle = tmp_path / "whatever-name.xapk"
    bundle.write_bytes(make_xapk(make_apk(CLIP, 420, "4.2.0", size_pad=2_000_000), splits,
                                 CLIP, 420, version_name="4.2.0"))
    done = _farm(farm, "apks", "add", str(bundle))
    assert done.returncode == 0, done.stderr
    assert "clipshare (com.phonefarm.clipshare) 4.2.0 [420]: added 3" in done.stdout
    stored = sorted(p.name for p in (farm.data / "apks").glob("*.apk"))
    assert len(stored) == 3
    listed = _farm(farm, "apks", "list", "--app", "clipshare")
    assert listed.returncode == 0 and "config.x86_64" in listed.stdout
    # Acme's user reads the library, but only a super user changes it.
    status, login = call(farm.base, "POST", "/api/login",
                         body={"user": "acme", "password": farm.passwords["acme"]})
    assert status == 200, login
    status, body = call(farm.base, "GET", "/api/apks", login["token"])
    assert status == 200 and len(body["apks"]) == 3
    request = urllib.request.Request(farm.base + "/api/apks", data=bundle.read_bytes(),
                                     method="POST", headers={
                                         "Authorization": f"Bearer {login['token']}",
                                         "Content-Type": "application/octet-stream"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403


def test_an_upload_that_breaks_off_keeps_nothing(farm):
    before = call(farm.base, "GET", "/api/apks", farm.admin_token)[1]["apks"]
    data = make_apk(CLIP, 430, "4.3.0", size_pad=3_000_000)
    host, port = farm.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"POST /api/apks HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                     f"{farm.admin_token}\r\nContent-Type: application/octet-stream\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode() + data[:1_000_000])
        time.sleep(0.3)
    incoming = farm.data / "apks" / "incoming"
    deadline = time.monotonic() + 10
    while any(incoming.glob("*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(incoming.glob("*")) == []
    assert call(farm.base, "GET", "/api/apks", farm.admin_token)[1]["apks"] == before
    assert not any(f["version_code"] == 430 for f in before)
    assert json.dumps(before)  # the library answers as before
