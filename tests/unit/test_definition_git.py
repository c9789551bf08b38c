"""Definitions exported to and imported from Git (issue 23.2), through `farm export --git` and
`farm import --git` against a real aiohttp server over a real FarmDB (SQLite and
PostgreSQL), a real registry folder and real sequence files, with the real git program:
one commit per changed definition with its version's author and reason; an import loads
edited files as new versions; a bad file names its path and JSON pointer and nothing of the
import is saved."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.access.principal import Principal  # noqa: E402
from actors.control import content, definitions, registry, workflows  # noqa: E402
from actors.control.cli import main as farm_main  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from test_definition_history import definitions_hub  # noqa: E402
from tests.api_call import app_as, call  # noqa: E402

pytestmark = pytest.mark.usefixtures("engine")

SUPER = Principal(user_id=1, name="admin", role="super", client_ids=None)


@pytest.fixture
async def farm(db: FarmDB, tmp_path: Path):
    hub = definitions_hub(db, tmp_path)
    client = TestClient(TestServer(app_as(hub, SUPER, (registry, workflows, content,
                                                       definitions))))
    await client.start_server()
    assert (await call(client, "POST", "/api/clients", {"name": "Acme"}))[0] == 201
    for name in ("clipshare/login", "clipshare/post_clip"):
        assert (await call(client, "POST", "/api/sequences", {"name": name}))[0] == 201
    assert (await call(client, "POST", "/api/workflows", {
        "name": "daily", "client": "Acme", "reason": "first cut",
        "sequences": [{"sequence": "clipshare/login"}]}))[0] == 201
    yield hub, client
    await client.close()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout


async def farm_cli(client: TestClient, *argv: str) -> int:
    url = str(client.make_url("")).rstrip("/")
    return await asyncio.to_thread(farm_main, ["--url", url, *argv])


async def test_an_export_commits_each_changed_definition_with_its_author_and_reason(
        farm, tmp_path: Path, capsys) -> None:
    hub, client = farm
    repo = tmp_path / "defs"
    assert await farm_cli(client, "export", "--git", str(repo)) == 0
    first = capsys.readouterr().out
    assert (repo / "sequences/clipshare/post_clip.json").is_file()
    assert json.loads((repo / "workflows/Acme/daily.json").read_text())["sequences"] == [
        {"sequence": "clipshare/login", "depends_on": [], "retry": {"attempts": 0, "delay_s": 60.0}}]
    screen = json.loads((repo / "registry/clipshare/feed.json").read_text())
    assert screen["kind"] == "state"
    crop = screen["screen"]["validation_regions"][0]["reference"]
    assert (repo / "registry" / crop).read_bytes() == hub.registry_store.file("clipshare", crop)
    commits = git(repo, "log", "--format=%an|%s").splitlines()
    assert len(commits) == int(first.splitlines()[-1].split()[0])
    assert "admin|workflow daily (Acme): version 1" in commits
    assert git(repo, "log", "-1", "--format=%b", "--", "workflows/Acme/daily.json").startswith(
        "first cut")

    assert await farm_cli(client, "export", "--git", str(repo)) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("0 commit(s)")

    assert (await call(client, "PUT", "/api/workflows/daily", {
        "client": "Acme", "reason": "post too",
        "sequences": [{"sequence": "clipshare/login"}, {"sequence": "clipshare/post_clip"}]}
    ))[0] == 200
    assert await farm_cli(client, "export", "--git", str(repo)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("1 commit(s)") and "workflow daily (Acme): version 2" in out[0]
    assert git(repo, "log", "-1", "--format=%an|%s|%b").startswith(
        "admin|workflow daily (Acme): version 2|post too")


async def test_an_export_folder_inside_another_repository_is_a_repository_of_its_own(
        farm, tmp_path: Path, capsys) -> None:
    _, client = farm
    outer = tmp_path / "checkout"
    outer.mkdir()
    git(outer, "init", "-q")
    git(outer, "-c", "user.name=x", "-c", "user.email=x@y", "commit", "-q", "--allow-empty",
        "-m", "outer")
    assert await farm_cli(client, "export", "--git", str(outer / "defs")) == 0
    assert git(outer, "rev-list", "--count", "HEAD").strip() == "1"
    assert (outer / "defs" / ".git").is_dir()
    assert int(git(outer / "defs", "rev-list", "--count", "HEAD")) > 1


async def test_an_import_loads_edited_files_as_new_versions(farm, tmp_path: Path,
                                                            capsys) -> None:
    hub, client = farm
    repo = tmp_path / "defs"
    assert await farm_cli(client, "export", "--git", str(repo)) == 0
    wf = repo / "workflows/Acme/daily.json"
    data = json.loads(wf.read_text())
    data["sequences"].append({"sequence": "clipshare/post_clip", "depends_on": [0],
                              "retry": {}})
    wf.write_text(json.dumps(data))
    feed = repo / "registry/clipshare/feed.json"
    screen = json.loads(feed.read_text())
    screen["screen"]["validation_regions"][1]["coordinates"] = [40, 1850, 1040, 1950]
    feed.write_text(json.dumps(screen))
    capsys.readouterr()

    assert await farm_cli(client, "import", "--git", str(repo), "--reason", "from review") == 0
    out = capsys.readouterr().out.splitlines()
    assert sorted(out[:-1]) == ["saved screen clipshare/feed", "saved workflow daily (Acme)"]
    assert out[-1].startswith("2 saved as new versions")
    now = (await call(client, "GET", "/api/workflows/daily"))[1]
    assert [s["sequence"] for s in now["sequences"]] == ["clipshare/login",
                                                         "clipshare/post_clip"]
    _, back = hub.registry_store.screen("clipshare", "feed")
    assert list(back.validation_regions[1].coordinates) == [40, 1850, 1040, 1950]
    status, history = await call(client, "GET", "/api/definitions/workflow/daily/versions")
    assert history["versions"][0]["reason"] == "imported from Git: from review"


async def test_a_bad_file_names_its_path_and_pointer_and_nothing_is_imported(
        farm, tmp_path: Path, capsys) -> None:
    hub, client = farm
    repo = tmp_path / "defs"
    assert await farm_cli(client, "export", "--git", str(repo)) == 0
    registry_version = hub.registry_store.version
    before = await call(client, "GET", "/api/definitions/workflow/daily/versions")

    wf = repo / "workflows/Acme/daily.json"
    data = json.loads(wf.read_text())
    data["description"] = "changed in the same import"
    wf.write_text(json.dumps(data))
    feed = repo / "registry/clipshare/feed.json"
    screen = json.loads(feed.read_text())
    screen["screen"]["validation_regions"][0]["coordinates"] = [8, 88, 1072, 3000]
    feed.write_text(json.dumps(screen))
    seq = repo / "sequences/clipshare/check_stats.json"
    steps = json.loads(seq.read_text())
    steps["steps"][0]["screen"] = "clipshare/no_such_screen"
    seq.write_text(json.dumps(steps))
    capsys.readouterr()

    assert await farm_cli(client, "import", "--git", str(repo)) == 2
    err = capsys.readouterr().err
    assert "sequences/clipshare/check_stats.json#/steps/0/screen" in err
    assert "no_such_screen" in err
    assert "registry/clipshare/feed.json#/screen/validation_regions/0/coordinates" in err
    assert "nothing was imported" in err
    assert await call(client, "GET", "/api/definitions/workflow/daily/versions") == before
    assert hub.registry_store.version == registry_version
    assert not (tmp_path / "sequences/clipshare/check_stats.json").exists()

    wf.write_text('{"sequences": [')  # does not parse: named before anything is sent
    assert await farm_cli(client, "import", "--git", str(repo)) == 2
    err = capsys.readouterr().err
    assert "workflows/Acme/daily.json: not JSON: line 1 column" in err


async def first_event(events: list) -> None:
    for _ in range(600):  # 30 s
        if events:
            return
        await asyncio.sleep(0.05)


async def test_the_coordinator_s_own_export_reports_on_the_stream(farm, tmp_path: Path) -> None:
    from datetime import timedelta

    from actors.coordinator.definitions.exporter import GitExporter

    hub, _ = farm
    events: list[tuple] = []
    hub.emit = lambda event, node, serial, data: events.append((event, data))
    repo = tmp_path / "defs"
    task = asyncio.create_task(GitExporter(hub, hub.db, repo, timedelta(hours=1)).loop())
    try:
        await first_event(events)
    finally:
        task.cancel()
    (event, data), = events
    assert event == "definitions_exported" and data["commits"]
    assert {"kind": "workflow", "name": "daily", "client": "Acme", "version": 1} in [
        {k: v for k, v in c.items() if k != "commit"} for c in data["commits"]]
    assert git(repo, "rev-list", "--count", "HEAD").strip() == str(len(data["commits"]))

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    events.clear()
    task = asyncio.create_task(GitExporter(hub, hub.db, blocked, timedelta(hours=1)).loop())
    try:
        await first_event(events)
    finally:
        task.cancel()
    (event, data), = events
    assert event == "definitions_export_failed" and "a-file" in data["error"] + data["folder"]
