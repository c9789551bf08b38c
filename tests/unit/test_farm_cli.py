"""The `farm` CLI against a real aiohttp control endpoint (fake hub, ephemeral port).

`main(argv)` runs in a worker thread (it uses blocking urllib) while the server runs on the
test's event loop; one test runs the real `bin/farm` launcher as a subprocess."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.control.app import make_app  # noqa: E402
from actors.control.cli import main  # noqa: E402
from actors.control.cli.format import format_event, phones_table  # noqa: E402
from fake_hub import FakeHub  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "cli-token"


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PHONEFARM_URL", raising=False)
    monkeypatch.delenv("PHONEFARM_TOKEN", raising=False)
    # No stored `farm login` and no local demo token: the CLI sends only what a test gives.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PHONEFARM_DATA", str(tmp_path / "farm-data"))


@pytest.fixture
async def url(hub: FakeHub):
    server = TestServer(make_app(hub, heartbeat_s=0.05))
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def auth_url(hub: FakeHub):
    server = TestServer(make_app(hub, token=TOKEN))
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def farm(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_phones_table(url: str, capsys: pytest.CaptureFixture) -> None:
    assert await farm("--url", url, "phones") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SERIAL", "NODE", "STATE", "LOCK", "APP", "SCREEN", "IO"]
    assert lines[1].split() == ["127.0.0.1:40123", "rack1", "online", "exec-7", "com.example.demo", "demo.home", "-"]
    assert lines[3].split() == ["R58M123ABC", "rack2", "paused", "-", "-", "-", "-"]
    assert len(lines) == 4


async def test_phones_table_shows_the_io_path_and_why_phones_are_on_the_shell_path(
        capsys: pytest.CaptureFixture) -> None:
    phones = [{"serial": s, "node": "rack1", "state": "online", "lock_holder": None,
               "active_app": None, "active_account": {}, "last_screen": None, "tags": [],
               "screen_ts": None, "io": io, "io_reason": reason}
              for s, io, reason in (("A1", "agent", None), ("B2", "shell", "no jar given"),
                                    ("C3", "shell", "no jar given"),
                                    ("D4", "shell", "Android API 19 is too old"))]
    server = TestServer(make_app(FakeHub(phones)))
    await server.start_server()
    try:
        assert await farm("--url", str(server.make_url("")).rstrip("/"), "phones") == 0
    finally:
        await server.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "IO"
    assert [line.split()[-1] for line in lines[1:5]] == ["agent", "shell", "shell", "shell"]
    assert lines[5:] == ["IO shell (B2, C3): no jar given", "IO shell (D4): Android API 19 is too old"]


async def test_phones_json_and_url_from_env(url: str, hub: FakeHub, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PHONEFARM_URL", url)
    assert await farm("phones", "--json") == 0
    import json
    assert json.loads(capsys.readouterr().out) == hub.phones()


async def test_url_option_after_command(url: str, capsys) -> None:
    assert await farm("phones", "--url", url) == 0
    assert "R58M123ABC" in capsys.readouterr().out


@pytest.mark.parametrize("argv, action", [
    (["tap", "phone:phone3", "540", "1200"], {"type": "tap", "x": 540, "y": 1200}),
    (["long-tap", "phone:phone3", "5", "6", "--ms", "1500"],
     {"type": "long_tap", "x": 5, "y": 6, "duration_ms": 1500}),
    (["long-tap", "phone:phone3", "5", "6"], {"type": "long_tap", "x": 5, "y": 6, "duration_ms": 800}),
    (["swipe", "phone:phone3", "1", "2", "3", "4"],
     {"type": "swipe", "x1": 1, "y1": 2, "x2": 3, "y2": 4, "duration_ms": 300}),
    (["swipe", "phone:phone3", "1", "2", "3", "4", "--ms", "50"],
     {"type": "swipe", "x1": 1, "y1": 2, "x2": 3, "y2": 4, "duration_ms": 50}),
    (["text", "phone:phone3", "hello world & more"], {"type": "text", "text": "hello world & more"}),
    (["key", "phone:phone3", "4"], {"type": "key", "key": 4, "repeat": 1}),
    (["key", "phone:phone3", "DEL", "--repeat", "30"], {"type": "key", "key": "DEL", "repeat": 30}),
    (["launch", "phone:phone3", "com.example.demo"],
     {"type": "launch_app", "package": "com.example.demo", "activity": None}),
    (["launch", "phone:phone3", "com.example.demo", "--activity", ".Main"],
     {"type": "launch_app", "package": "com.example.demo", "activity": ".Main"}),
    (["stop", "phone:phone3", "com.example.demo"], {"type": "stop_app", "package": "com.example.demo"}),
])
async def test_action_commands(url: str, hub: FakeHub, capsys, argv: list[str], action: dict) -> None:
    assert await farm("--url", url, *argv) == 0
    assert hub.calls == [("R58M123ABC", action, None)]
    assert capsys.readouterr().out == "R58M123ABC ok\n"


async def test_action_on_all_prints_one_line_per_phone(url: str, capsys) -> None:
    assert await farm("--url", url, "tap", "phone:all", "1", "2") == 0
    assert capsys.readouterr().out.splitlines() == [
        "127.0.0.1:40123 ok", "127.0.0.1:40124 ok", "R58M123ABC ok"]


async def test_failed_phone_makes_exit_nonzero(url: str, hub: FakeHub, capsys) -> None:
    hub.results["127.0.0.1:40123"] = {"status": "locked", "error": "held by exec-7"}
    hub.results["127.0.0.1:40124"] = {"status": "error", "error": "input tap failed"}
    assert await farm("--url", url, "tap", "phone:all", "1", "2") == 1
    assert capsys.readouterr().out.splitlines() == [
        "127.0.0.1:40123 locked: held by exec-7", "127.0.0.1:40124 error: input tap failed",
        "R58M123ABC ok"]


async def test_bad_scope_is_rejected_with_offset(url: str, hub: FakeHub, capsys) -> None:
    assert await farm("--url", url, "tap", "phone:a,,b", "1", "2") == 2
    err = capsys.readouterr().err
    assert "HTTP 400" in err and "offset 8: empty phone name" in err
    assert hub.calls == []


async def test_bad_action_field_is_named(url: str, capsys) -> None:
    assert await farm("--url", url, "key", "phone:all", "NOT_A_KEY") == 2
    assert "$.action.key" in capsys.readouterr().err


async def test_scope_matching_nothing(url: str, capsys) -> None:
    assert await farm("--url", url, "tap", "phone:all-phone1,phone2,phone3", "1", "2") == 1
    assert "matched no phone" in capsys.readouterr().err


async def test_screenshot_png(url: str, hub: FakeHub, tmp_path: Path, capsys) -> None:
    out = tmp_path / "shot.png"
    assert await farm("--url", url, "screenshot", "127.0.0.1:40123", "-o", str(out)) == 0
    assert np.array_equal(cv2.imread(str(out)), hub.frame)
    assert "image/png" in capsys.readouterr().out


async def test_screenshot_thumbnail(url: str, tmp_path: Path) -> None:
    out = tmp_path / "thumb.jpg"
    assert await farm("--url", url, "screenshot", "R58M123ABC", "-o", str(out), "--width", "54") == 0
    assert cv2.imread(str(out)).shape == (120, 54, 3)


async def test_screenshot_unknown_serial(url: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.png"
    assert await farm("--url", url, "screenshot", "10.0.0.1:5555", "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert "HTTP 404" in err and "10.0.0.1:5555" in err
    assert not out.exists()


async def test_screenshot_bad_width(url: str, tmp_path: Path, capsys) -> None:
    assert await farm("--url", url, "screenshot", "R58M123ABC", "-o", str(tmp_path / "x"), "--width", "5") == 2
    assert "16..2000" in capsys.readouterr().err


async def test_watch_prints_events(url: str, hub: FakeHub, capsys) -> None:
    watcher = asyncio.create_task(farm("--url", url, "watch", "--count", "3"))

    async def subscribed() -> None:
        while not hub.subscribers:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(subscribed(), 5)
    ts = 1700000000.0  # 22:13:20 UTC
    hub.publish("lock_taken", serial="R58M123ABC", node="rack2", ts=ts, execution_id="e1")
    hub.publish("node_down", node="rack2", ts=ts + 1)
    hub.publish("app_changed", serial="127.0.0.1:40123", ts=ts + 2, app="com.x", note="two words")
    assert await asyncio.wait_for(watcher, 10) == 0
    assert capsys.readouterr().out.splitlines() == [
        "22:13:20 lock_taken R58M123ABC node=rack2 execution_id=e1",
        "22:13:21 node_down - node=rack2",
        '22:13:22 app_changed 127.0.0.1:40123 app=com.x note="two words"',
    ]


def test_format_event_values() -> None:
    line = format_event("account_changed", {"ts": 0, "serial": "s", "node": None,
                                            "data": {"account": {"demo": "bob"}, "n": 3, "x": None}})
    assert line == '00:00:00 account_changed s account={"demo":"bob"} n=3 x=null'


def test_phones_table_alignment() -> None:
    table = phones_table([{"serial": "a", "node": "n", "state": "online"},
                          {"serial": "longer-serial", "node": "n", "state": "offline"}])
    lines = table.splitlines()
    assert lines[1].index("n ") == lines[2].index("n ") == lines[0].index("NODE")


async def test_token_from_a_file_the_env_or_the_local_demo(auth_url: str, capsys, monkeypatch,
                                                            tmp_path: Path) -> None:
    assert await farm("--url", auth_url, "phones") == 2
    assert "HTTP 401" in capsys.readouterr().err
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert await farm("--url", auth_url, "--token-file", str(token_file), "phones") == 0
    monkeypatch.setenv("PHONEFARM_TOKEN", TOKEN)
    assert await farm("--url", auth_url, "tap", "phone:phone1", "1", "1") == 0
    monkeypatch.delenv("PHONEFARM_TOKEN")
    (tmp_path / "farm-data").mkdir()  # the local demo's data folder (PHONEFARM_DATA), its token
    (tmp_path / "farm-data" / "admin.token").write_text(TOKEN + "\n")
    assert await farm("--url", auth_url, "phones") == 0


async def test_unreachable_endpoint(capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert await farm("--url", f"http://127.0.0.1:{port}", "phones") == 3
    assert "cannot reach" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["tap", "phone:all", "x", "1"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main([])


async def test_bin_farm_launcher(url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bin" / "farm"), "--url", url, "stop", "phone:all", "com.example.demo",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines()[-1] == "R58M123ABC ok"


async def test_run_prints_one_line_per_phone(url: str, hub: FakeHub, capsys) -> None:
    assert await farm("--url", url, "run", "clipshare/login", "phone:phone1,phone2",
                      "--var", "tag=x") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "run run-1: clipshare/login on 2 phone(s)"
    assert lines[1:] == ["127.0.0.1:40123 ex-1-0 pending", "127.0.0.1:40124 ex-1-1 pending"]
    assert hub.run_calls == [("clipshare/login", "phone:phone1,phone2", {"tag": "x"})]


async def test_run_wait_follows_steps_and_fails_if_a_phone_failed(url: str, hub: FakeHub,
                                                                  capsys) -> None:
    async def finish() -> None:
        while not hub.runs:
            await asyncio.sleep(0.01)
        run = hub.runs["run-1"]
        ok, bad = run["executions"]
        ok["steps"] = [{"index": 0, "path": "steps[0]", "type": "launch_app", "status": "success",
                        "screen": "clipshare/feed", "error": None}]
        ok["status"] = "completed"
        bad["steps"] = [{"index": 0, "path": "steps[0]", "type": "launch_app", "status": "failed",
                         "screen": "launcher/home", "error": "app not in front"}]
        bad["status"], bad["error"] = "failed", "app not in front"
        run["status"] = "failed"

    task = asyncio.create_task(finish())
    code = await farm("--url", url, "run", "clipshare/login", "phone:phone1,phone2", "--wait",
                      "--poll", "0.02")
    await task
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert "127.0.0.1:40123 steps[0] launch_app success screen=clipshare/feed" in out
    assert ('127.0.0.1:40124 steps[0] launch_app failed screen=launcher/home '
            'error="app not in front"') in out
    assert "127.0.0.1:40124 ex-1-1 failed: app not in front" in out
    assert out[-1] == "run run-1: failed"


async def test_run_unknown_sequence_is_rejected(url: str, capsys) -> None:
    assert await farm("--url", url, "run", "clipshare/nope", "phone:all") == 2
    assert "HTTP 404" in capsys.readouterr().err


async def test_schedule_window_takes_minutes_only_and_the_past_only_when_allowed(
        url: str, hub: FakeHub, capsys) -> None:
    assert await farm("--url", url, "schedule", "add", "clipshare/post_clip", "phone:all",
                      "--window", "2030-12-01T09:00Z", "2030-12-01T12:00+02:00", "--count", "2",
                      "--id", "w") == 0, capsys.readouterr().err
    view = {v["id"]: v for v in hub.list_schedules()}["w"]
    assert (view["window_start"], view["window_end"]) == ("2030-12-01T09:00:00Z",
                                                          "2030-12-01T10:00:00Z")
    past = ["--window", "2020-12-01T09:00Z", "2020-12-01T12:00Z"]
    assert await farm("--url", url, "schedule", "add", "x", "phone:all", *past) == 2
    assert "$.window_end" in capsys.readouterr().err
    assert await farm("--url", url, "schedule", "add", "x", "phone:all", *past,
                      "--allow-past", "--id", "old") == 0, capsys.readouterr().err
    assert {v["id"]: v for v in hub.list_schedules()}["old"]["allow_past"] is True


async def test_schedule_add_list_pause_cancel_and_runs(url: str, hub: FakeHub, capsys) -> None:
    assert await farm("--url", url, "schedule", "add", "clipshare/post_clip", "phone:all",
                      "--cron", "0 9 * * *", "--grace", "600", "--id", "daily") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ID", "TYPE", "STATUS", "NEXT", "SEQUENCE", "TARGET", "JOBS"]
    assert out[1].split()[:3] == ["daily", "recurring", "pending"]
    view = hub.list_schedules()[0]
    assert view["cron"] == "0 9 * * *" and view["misfire"] == {"grace_s": 600.0}
    assert await farm("--url", url, "schedule", "add", "clipshare/post_clip", "phone:all",
                      "--window", "2030-01-01T09:00:00Z", "2030-01-01T12:00:00Z",
                      "--count", "3", "--depends-on", "daily") == 0
    assert "window" in capsys.readouterr().out
    assert await farm("--url", url, "schedule", "pause", "daily") == 0
    assert "paused" in capsys.readouterr().out
    assert await farm("--url", url, "schedule", "cancel", "daily") == 0
    assert await farm("--url", url, "schedule", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 3 and any(  # cancel's table, then the list's
        l.split()[:3] == ["daily", "recurring", "cancelled"]
        for l in lines)
    # Rejected: bad time, unknown id, two timing options.
    assert await farm("--url", url, "schedule", "add", "x", "phone:all", "--at", "soon") == 2
    assert "$.at" in capsys.readouterr().err
    assert await farm("--url", url, "schedule", "resume", "ghost") == 2
    assert await farm("--url", url, "schedule", "add", "x", "phone:all", "--at",
                      "2030-01-01T00:00:00Z", "--cron", "* * * * *") == 2
    capsys.readouterr()
    # A schedule of a workflow: --workflow instead of the sequence.
    hub.schedule_service.db.workflows["morning"] = {"workflow_def_id": 1, "sequences": []}
    assert await farm("--url", url, "schedule", "add", "--workflow", "morning", "phone:all",
                      "--cron", "0 7 * * *", "--id", "wf") == 0
    assert "workflow:morning" in capsys.readouterr().out
    assert {v["id"]: v for v in hub.list_schedules()}["wf"]["workflow"] == "morning"
    assert await farm("--url", url, "schedule", "add", "--workflow", "nope", "phone:all") == 2
    assert "$.workflow" in capsys.readouterr().err
    assert await farm("--url", url, "schedule", "add", "x", "phone:all",
                      "--workflow", "morning") == 2
    assert "not both" in capsys.readouterr().err
    await farm("--url", url, "run", "clipshare/post_clip", "phone:all")
    capsys.readouterr()
    assert await farm("--url", url, "runs", "--limit", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:6] == ["EXECUTION", "RUN", "SERIAL", "SEQUENCE", "ACCOUNT", "STATUS"]
    assert len(lines) == 3 and lines[1].split()[0] == "ex-1-2"
