"""People, roles and tokens over the control endpoint (issue 17.1-17.3), on a real FarmDB
in a temp dir behind a real aiohttp server with access control on: logging in and out,
tokens that expire, are revoked or belong to a disabled or deleted user, the back-off after
wrong passwords, roles that cannot grant above themselves or reach outside their clients,
viewers that cannot change anything, the browser rules (foreign Origin or Host), the audit
of every change and refusal, and the `farm` CLI's login and token handling."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from actors.access.service import Access  # noqa: E402
from actors.access.throttle import FREE_ATTEMPTS, LoginThrottle  # noqa: E402
from actors.access.bootstrap import SYSTEM, ensure_admin  # noqa: E402
from actors.control.app import make_app  # noqa: E402
from actors.control.cli import main as farm_main  # noqa: E402
from actors.store.farm_db import FarmDB  # noqa: E402
from fake_hub import FakeHub  # noqa: E402

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
pytestmark = pytest.mark.usefixtures("engine")

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def farm(db: FarmDB, tmp_path: Path, clock: Clock):
    """(client, access, admin token) of an endpoint with access control over ``db``, with
    an organization "Agency" over clients Acme and Zeta and a client "Other" outside it."""
    hub = FakeHub()
    hub.db = db
    access = Access.over(db)
    access.throttle = LoginThrottle(clock=clock)
    await ensure_admin(access, tmp_path)
    admin_token = (tmp_path / "admin.token").read_text().strip()
    org = await db.upsert_organization("Agency")
    for name in ("Acme", "Zeta", "Other"):
        await db.upsert_client(name)
    for name in ("Acme", "Zeta"):
        await db.set_client_organization(name, org)
    async with TestClient(TestServer(make_app(hub, access=access))) as client:
        yield client, access, admin_token


async def req(client: TestClient, method: str, path: str, token: str | None = None,
              body=None, **headers: str) -> tuple[int, dict]:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    resp = await client.request(method, path, json=body, headers=headers)
    return resp.status, await resp.json()


async def add_user(client, admin: str, name: str, role: str, **extra) -> dict:
    status, body = await req(client, "POST", "/api/users", admin,
                             {"name": name, "password": PASSWORD, "role": role, **extra})
    assert status == 201, body
    return body


async def login(client, name: str, password: str = PASSWORD) -> str:
    status, body = await req(client, "POST", "/api/login", None,
                             {"user": name, "password": password})
    assert status == 200, body
    return body["token"]


async def test_everything_but_login_needs_a_token(farm) -> None:
    client, _, _ = farm
    for path in ("/api/phones", "/api/users", "/api/me", "/api/tokens"):
        status, body = await req(client, "GET", path)
        assert status == 401 and "token" in body["error"], (path, body)
    assert (await req(client, "GET", "/api/health"))[0] == 200


async def test_login_me_logout(farm) -> None:
    client, access, admin = farm
    await add_user(client, admin, "ann", "client", clients=["Acme"])
    token = await login(client, "ann")
    status, me = await req(client, "GET", "/api/me", token)
    assert status == 200 and me["name"] == "ann" and me["clients"] == ["Acme"]
    assert "password_hash" not in me
    assert (await req(client, "POST", "/api/logout", token))[0] == 200
    status, body = await req(client, "GET", "/api/me", token)
    assert status == 401 and "revoked" in body["error"]
    row = await access.users.user_row("ann")
    assert row["password_hash"].startswith("$argon2id$")


async def test_password_hashing_runs_off_the_event_loop(farm, monkeypatch) -> None:
    # argon2 is memory-hard on purpose (~0.1 s of CPU a hash): on the loop, every login
    # and password change stalled each phone's stream and every other request.
    import threading

    from actors.access import users

    client, _, admin = farm
    threads: list[threading.Thread] = []

    def recording(real):
        def call(*args):
            threads.append(threading.current_thread())
            return real(*args)
        return call

    monkeypatch.setattr(users, "hash_password", recording(users.hash_password))
    monkeypatch.setattr(users, "verify_password", recording(users.verify_password))
    await add_user(client, admin, "ann", "client", clients=["Acme"])
    await login(client, "ann")
    assert (await req(client, "POST", "/api/login", None,
                      {"user": "zed", "password": "nope nope"}))[0] == 401
    assert len(threads) == 3 and threading.main_thread() not in threads


async def test_wrong_password_and_unknown_user_read_the_same(farm) -> None:
    client, access, admin = farm
    await add_user(client, admin, "ann", "client", clients=["Acme"])
    wrong = await req(client, "POST", "/api/login", None, {"user": "ann", "password": "nope nope"})
    nobody = await req(client, "POST", "/api/login", None, {"user": "zed", "password": "nope nope"})
    assert wrong == nobody == (401, {"error": "wrong user name or password"})
    trail = await access.users.db.audit_trail("login")
    assert {t["entity_id"] for t in trail} == {"ann", "zed"}


async def test_five_wrong_passwords_slow_that_user(farm, clock: Clock) -> None:
    client, _, admin = farm
    await add_user(client, admin, "ann", "client", clients=["Acme"])
    await add_user(client, admin, "bob", "client", clients=["Acme"])
    for _ in range(FREE_ATTEMPTS):
        status, _ = await req(client, "POST", "/api/login", None,
                              {"user": "ann", "password": "wrong wrong"})
        assert status == 401
    status, body = await req(client, "POST", "/api/login", None,
                             {"user": "ann", "password": PASSWORD})
    assert status == 429 and body["retry_after_s"] > 0, body
    await login(client, "bob")  # another user is not slowed
    clock.now += 2
    await login(client, "ann")  # after the pause the right password works and clears it
    status, _ = await req(client, "POST", "/api/login", None,
                          {"user": "ann", "password": "wrong wrong"})
    assert status == 401


async def test_expired_revoked_disabled_and_deleted(farm) -> None:
    client, access, admin = farm
    await add_user(client, admin, "ann", "client", clients=["Acme"])
    token = await login(client, "ann")
    db = access.users.db
    await db._write("UPDATE auth_tokens SET expires_at = '2000-01-01 00:00:00'"
                    " WHERE user_id = (SELECT user_id FROM users WHERE username = 'ann')")
    status, body = await req(client, "GET", "/api/me", token)
    assert status == 401 and "expired" in body["error"]

    token = await login(client, "ann")
    status, body = await req(client, "POST", "/api/users/ann/disable", admin)
    assert status == 200 and body["status"] == "disabled"
    status, body = await req(client, "GET", "/api/me", token)
    assert status == 401 and "revoked" in body["error"]  # disabling revokes its tokens
    status, body = await req(client, "POST", "/api/login", None,
                             {"user": "ann", "password": PASSWORD})
    assert status == 401 and "disabled" in body["error"]
    assert (await req(client, "POST", "/api/users/ann/enable", admin))[0] == 200

    token = await login(client, "ann")
    await db._write("UPDATE users SET status = 'disabled' WHERE username = 'ann'")
    status, body = await req(client, "GET", "/api/me", token)
    assert status == 401 and "disabled" in body["error"]
    if db.target.is_postgresql:
        return  # its foreign keys never let a user with tokens be deleted behind its back
    # No route deletes a user; delete it behind the farm's back (foreign keys off).
    with sqlite3.connect(db.path) as raw:
        raw.execute("DELETE FROM user_client_access WHERE user_id ="
                    " (SELECT user_id FROM users WHERE username = 'ann')")
        raw.execute("DELETE FROM users WHERE username = 'ann'")
    status, body = await req(client, "GET", "/api/me", token)
    assert status == 401 and "no longer exists" in body["error"], body


async def test_api_tokens_expire_list_and_revoke(farm) -> None:
    client, access, admin = farm
    await add_user(client, admin, "ann", "admin", organization="Agency")
    token = await login(client, "ann")
    status, made = await req(client, "POST", "/api/tokens", token, {"name": "ci", "expires": "30d"})
    assert status == 201 and made["token"].startswith("pf_") and made["expires_at"]
    assert (await req(client, "GET", "/api/me", made["token"]))[0] == 200
    status, listed = await req(client, "GET", "/api/tokens", token)
    assert status == 200 and all("token" not in t and "token_hash" not in t
                                 for t in listed["tokens"])
    assert {t["name"] for t in listed["tokens"]} >= {"ci"}
    status, body = await req(client, "POST", "/api/tokens", token, {"name": "x", "expires": "soon"})
    assert status == 400 and body["field"] == "expires"
    status, _ = await req(client, "DELETE", f"/api/tokens/{made['token_id']}", token)
    assert status == 200
    assert (await req(client, "GET", "/api/me", made["token"]))[0] == 401
    # Another user's token is not there for ann; the admin (super) may revoke any.
    admin_tokens = (await req(client, "GET", "/api/tokens", admin))[1]["tokens"]
    status, _ = await req(client, "DELETE", f"/api/tokens/{admin_tokens[0]['token_id']}", token)
    assert status == 404
    stored = await access.users.db._all("SELECT token_hash FROM auth_tokens")
    assert all(len(r[0]) == 64 and not r[0].startswith("pf_") for r in stored)


async def test_roles_cannot_grant_above_themselves_or_reach_outside(farm) -> None:
    client, access, admin = farm
    await add_user(client, admin, "ada", "admin", organization="Agency")
    ada = await login(client, "ada")
    before = await access.users.count_users()
    cases = [
        ({"name": "x1", "password": PASSWORD, "role": "super"}, "may not create a super"),
        ({"name": "x2", "password": PASSWORD, "role": "client", "clients": ["Other"]},
         "not one of yours"),
        ({"name": "x3", "password": PASSWORD, "role": "client", "clients": ["Nope"]},
         "not one of yours"),  # the same answer for a client that does not exist
    ]
    for body, reason in cases:
        status, answer = await req(client, "POST", "/api/users", ada, body)
        assert status == 403 and reason in answer["error"], (body, answer)
    status, answer = await req(client, "POST", "/api/clients", ada,
                               {"name": "NewCo", "organization": "Elsewhere"})
    assert status == 403 and "not yours" in answer["error"]
    assert await access.users.db.client_row("NewCo") is None  # nothing written
    assert await access.users.count_users() == before
    refused = await access.users.db.audit_trail("refused")
    assert len(refused) == 4 and all(r["actor"].endswith(":ada") for r in refused)
    # Within its reach it works, and the organization's new client is its own.
    await add_user(client, ada, "cleo", "client", clients=["Zeta"])
    status, answer = await req(client, "POST", "/api/clients", ada,
                               {"name": "NewCo", "organization": "Agency"})
    assert status == 201, answer
    created = await access.users.db.audit_trail("user")
    assert any(e["actor"].endswith(":ada") and e["after"]["name"] == "cleo" for e in created)
    # A client user manages nobody.
    cleo = await login(client, "cleo")
    status, answer = await req(client, "GET", "/api/users", cleo)
    assert status == 403


async def test_a_viewer_changes_nothing(farm) -> None:
    client, _, admin = farm
    await add_user(client, admin, "vic", "viewer", clients=["Acme"])
    vic = await login(client, "vic")
    assert (await req(client, "GET", "/api/phones", vic))[0] == 200
    for method, path, body in (("POST", "/api/actions", {"scope": "phone:all",
                                                         "action": {"type": "screenshot"}}),
                               ("POST", "/api/profiles", {"client": "Acme"}),
                               ("POST", "/api/clients", {"name": "Acme"})):
        status, answer = await req(client, method, path, vic, body)
        assert status == 403 and "viewer" in answer["error"], (path, answer)
    # Its own password and session are its own.
    assert (await req(client, "POST", "/api/users/vic/password", vic,
                      {"password": "another long one"}))[0] == 200


async def test_foreign_origin_and_host_are_refused(farm) -> None:
    client, _, admin = farm
    body = {"scope": "phone:all", "action": {"type": "screenshot"}}
    status, answer = await req(client, "POST", "/api/actions", admin, body,
                               Origin="http://evil.example")
    assert status == 403 and "cross-origin" in answer["error"]
    status, answer = await req(client, "GET", "/api/phones", admin, Host="evil.example:8470")
    assert status == 403 and "Host" in answer["error"]
    host = f"{client.server.host}:{client.server.port}"
    status, _ = await req(client, "POST", "/api/actions", admin, body, Origin=f"http://{host}")
    assert status == 200
    # A cross-site form post carries no bearer header: 401, never executed.
    resp = await client.post("/api/actions", data=b'{"scope":"phone:all"}',
                             headers={"Content-Type": "text/plain"})
    assert resp.status == 401


async def test_admin_token_file_is_private_and_kept(farm, tmp_path: Path) -> None:
    client, access, admin = farm
    path = tmp_path / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    await ensure_admin(access, tmp_path)  # a restart keeps a token that still works
    assert path.read_text().strip() == admin
    assert SYSTEM.is_super


async def test_farm_login_keeps_the_token_privately(farm, tmp_path: Path, monkeypatch) -> None:
    client, _, admin = farm
    await add_user(client, admin, "ann", "admin", organization="Agency")
    url = str(client.make_url("")).rstrip("/")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("PHONEFARM_TOKEN", raising=False)
    monkeypatch.setenv("PHONEFARM_DATA", str(tmp_path / "nowhere"))
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    code = await asyncio.to_thread(farm_main, ["--url", url, "login", "ann",
                                               "--password-file", str(secret)])
    assert code == 0
    kept = tmp_path / "config" / "phonefarm" / "token"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert await asyncio.to_thread(farm_main, ["--url", url, "whoami"]) == 0
    code = await asyncio.to_thread(farm_main, ["--url", url, "users", "add", "cy", "--role",
                                               "client", "--client", "Acme",
                                               "--password-file", str(secret)])
    assert code == 0
    assert await asyncio.to_thread(farm_main, ["--url", url, "logout"]) == 0
    assert not kept.exists()
    # Nothing left: the local data dir's admin token is the next fallback, absent here.
    assert await asyncio.to_thread(farm_main, ["--url", url, "whoami"]) == 2
    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere" / "admin.token").write_text(admin)
    assert await asyncio.to_thread(farm_main, ["--url", url, "whoami"]) == 0
    assert os.environ.get("PHONEFARM_TOKEN") is None


def test_a_token_on_the_command_line_is_refused_and_not_echoed(capsys) -> None:
    for argv in (["--token", "s3cret-value", "phones"], ["phones", "--token", "s3cret-value"],
                 ["phones", "--tok", "s3cret-value"]):
        with pytest.raises(SystemExit) as info:
            farm_main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "--token-file" in err and "s3cret-value" not in err, err


async def test_a_change_the_route_policy_refuses_is_audited(farm) -> None:
    client, access, admin = farm
    await add_user(client, admin, "vic", "viewer", clients=["Acme"])
    vic = await login(client, "vic")
    status, _ = await req(client, "POST", "/api/schedules", vic, {"sequence": "x"})
    assert status == 403
    assert (await req(client, "GET", "/api/nodes/keys", vic))[0] == 403  # a read: logged only
    refused = await access.users.db.audit_trail("refused")
    assert [(r["entity_id"], r["actor"].endswith(":vic")) for r in refused] == \
        [("POST /api/schedules", True)]
