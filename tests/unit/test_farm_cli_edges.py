"""The `farm` CLI at its edges, against a real aiohttp control endpoint on an ephemeral port
(fake hub; a real FarmDB for groups): a reader that closes stdout early (`farm ... | head`),
a coordinator restarting under `farm run --wait`, and group members that do not exist."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.control.app import make_app  # noqa: E402
from actors.control.cli import main  # noqa: E402
from actors.node.device.adb_server import free_port  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from fake_hub import FakeHub, default_phones  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHONEFARM_URL", raising=False)
    monkeypatch.delenv("PHONEFARM_TOKEN", raising=False)


async def serve(hub: FakeHub, port: int = 0) -> TestServer:
    server = TestServer(make_app(hub, heartbeat_s=0.05), port=port)
    await server.start_server()
    return server


def url_of(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


# --- stdout closed by the reader ---------------------------------------------------------------


def many_phones(count: int) -> list[dict]:
    template = default_phones()[1]
    return [{**template, "serial": f"127.0.0.1:{41000 + i}"} for i in range(count)]


async def run_with_closed_stdout(*argv: str) -> subprocess.CompletedProcess:
    """Run `python -m actors.control.cli ARGV` whose stdout pipe has no reader left."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (head) is gone before farm writes anything
    try:
        return await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "actors.control.cli", *argv], cwd=ROOT,
            stdout=write_end, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("phones", [3, 2000])  # within the stdout buffer, and beyond it
async def test_closed_stdout_ends_quietly(phones: int) -> None:
    server = await serve(FakeHub(many_phones(phones)))
    try:
        done = await run_with_closed_stdout("--url", url_of(server), "phones")
    finally:
        await server.close()
    assert done.stderr == b"", done.stderr.decode()
    assert done.returncode == 141


# --- `farm run --wait` across a coordinator restart --------------------------------------------


def started_run(hub: FakeHub, status: str) -> dict:
    execution = {"execution_id": "ex-1", "serial": "127.0.0.1:40123", "status": status,
                 "error": None, "steps": []}
    hub.runs["run-1"] = {"run_id": "run-1", "sequence": "inline/x",
                         "status": "running" if status == "running" else status,
                         "executions": [execution]}
    return {"run_id": "run-1", "sequence": "inline/x",
            "executions": {"127.0.0.1:40123": {"execution_id": "ex-1", "status": "pending"}}}


async def test_run_wait_reconnects_after_a_coordinator_restart(capsys) -> None:
    port = free_port()
    first = FakeHub()
    answer = started_run(first, "running")

    async def start_run(sequence, scope, variables=None):
        return answer
    first.start_run = start_run
    server = await serve(first, port)
    waiting = asyncio.create_task(asyncio.to_thread(
        main, ["--url", f"http://127.0.0.1:{port}", "run", "clipshare/post_clip", "phone:all",
               "--wait", "--poll", "0.1"]))
    await asyncio.sleep(0.5)
    await server.close()  # the coordinator goes away while the run goes on
    await asyncio.sleep(1.5)
    second = FakeHub()
    started_run(second, "completed")
    second.runs["run-1"]["executions"][0]["status"] = "completed"
    server = await serve(second, port)
    try:
        code = await asyncio.wait_for(waiting, 30)
    finally:
        await server.close()
    out, err = capsys.readouterr()
    assert code == 0, (out, err)
    assert "run run-1: completed" in out
    assert err.count("reconnecting") == 1, err


async def test_run_wait_gives_up_after_the_reconnect_window(capsys, monkeypatch) -> None:
    import actors.control.cli.runs as cli

    monkeypatch.setattr(cli, "RECONNECT_S", 1.0)
    port = free_port()
    hub = FakeHub()
    answer = started_run(hub, "running")

    async def start_run(sequence, scope, variables=None):
        return answer
    hub.start_run = start_run
    server = await serve(hub, port)
    waiting = asyncio.create_task(asyncio.to_thread(
        main, ["--url", f"http://127.0.0.1:{port}", "run", "clipshare/post_clip", "phone:all",
               "--wait", "--poll", "0.1"]))
    await asyncio.sleep(0.5)
    await server.close()
    began = time.monotonic()
    code = await asyncio.wait_for(waiting, 30)
    assert code == 3
    assert time.monotonic() - began < 20  # gave up, did not wait for ever
    err = capsys.readouterr().err
    assert "reconnecting" in err and "cannot reach" in err


# --- group members must exist ------------------------------------------------------------------


@pytest.fixture
async def group_server(db: FarmDB):
    hub = FakeHub()
    hub.db = db
    await db.upsert_phone("R58M123ABC")
    await db.upsert_account("R58M123ABC", "clipshare", "account1")
    server = await serve(hub)
    yield url_of(server)
    await server.close()


async def test_group_member_that_does_not_exist_is_refused(group_server: str, capsys) -> None:
    url = group_server
    assert await asyncio.to_thread(main, ["--url", url, "groups", "add", "creators", "account"]) == 0
    code = await asyncio.to_thread(
        main, ["--url", url, "groups", "member", "add", "creators", "clipshare.account1@SERIAL"])
    err = capsys.readouterr().err
    assert code == 2
    assert "clipshare.account1@SERIAL" in err and "no such account" in err, err
    # the one that exists is taken
    assert await asyncio.to_thread(
        main, ["--url", url, "groups", "member", "add", "creators",
               "clipshare.account1@R58M123ABC"]) == 0


async def test_group_member_api_names_the_missing_member(group_server: str) -> None:
    async with aiohttp.ClientSession(group_server) as session:
        async def post(path: str, body: dict) -> tuple[int, dict]:
            async with session.post(path, json=body) as resp:
                return resp.status, await resp.json()

        assert (await post("/api/groups", {"name": "rack", "kind": "phone"}))[0] == 201
        status, body = await post("/api/groups/rack/members", {"member": "NOPE123"})
        assert status == 400 and body["field"] == "$.member" and "NOPE123" in body["error"], body
        # a live phone the phone registry does not list (yet) is a phone too
        status, body = await post("/api/groups/rack/members", {"member": "127.0.0.1:40124"})
        assert status == 200 and body["members"] == ["127.0.0.1:40124"], body
