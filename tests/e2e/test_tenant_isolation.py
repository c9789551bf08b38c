"""Tenant isolation, generated from the OpenAPI document (issue 17.4), against a real
`farm-coordinator --demo` whose phones are split between two clients of one organization:
A ("Demo Farm") and B ("Acme").

For every operation the document lists, a client user of A and a viewer of A call it with
the ids and serials of B (a phone, its account and profile, a run and execution on it, a
schedule, an AI key, B's user and its token, and what B's client user made itself: a
schedule, a group, sequence and workflow definitions and a workflow execution). Each answer
must be 401/403/404 (or a 400 that says exactly what it says for an id that does not exist
at all: no existence leak), or a success that carries none of B's rows. Afterwards B's data
is unchanged, and B's user and token still work. The status stream and the live wall show
A's callers A's phones only. A's client user makes and runs its own: its phone:all schedule
and workflow, and its group, reach A's phones only.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any

import pytest

from tests.e2e.demo_farm import DemoFarm, call

A, B = "Demo Farm", "Acme"
GHOST_SERIAL = "127.0.0.1:1"
SEQUENCE = {"name": "iso_probe", "steps": [{"type": "key", "key": "HOME"}]}
# What B's client user defines for itself, and names of nothing at all in their place.
B_GROUP, B_SEQUENCE, B_WORKFLOW = "acme_vip", "clipshare/switch_account", "acme_flow"
GHOST_GROUP, GHOST_SEQUENCE, GHOST_WORKFLOW = "no_such_group", "clipshare/no_such", "no_such_flow"
# Operations a caller may use on itself whatever its role; checked apart.
OWN_OPERATIONS = {"login", "logout", "me", "listTokens", "addToken"}
# Public routes (no token: outside /api, like the console page); checked in
# tests/unit/test_engagement_api.py.
PUBLIC_OPERATIONS = {"followLink"}


@pytest.fixture(scope="module")
def farm(tmp_path_factory, module_engine):
    """A demo farm, once per database engine (on PostgreSQL with row-level security),
    making each client's daily report of yesterday when it starts (--report-at 00:00)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHONEFARM_REPORT_AT", "00:00")
        farm = DemoFarm(tmp_path_factory.mktemp("tenants"), phones=4)
    yield farm
    farm.stop()


def ok(status: int, answer: Any, what: str) -> Any:
    assert 200 <= status < 300, f"{what}: {status} {answer}"
    return answer


@pytest.fixture(scope="module")
def world(farm: DemoFarm) -> dict:
    """B's ids (made by the admin), and a client user and a viewer of A, logged in."""
    admin = farm.admin_token
    phones = ok(*call(farm.base, "GET", "/api/phones", admin), "phones")["phones"]
    b_serials = [p["serial"] for p in phones if p["client"] == B]
    a_serials = [p["serial"] for p in phones if p["client"] == A]
    b_serial = b_serials[0]
    run = ok(*call(farm.base, "POST", "/api/runs", admin,
                   {"sequence": SEQUENCE, "scope": f"phone:{b_serial}"}), "run on B")
    execution_id = run["executions"][b_serial]["execution_id"]
    accounts = ok(*call(farm.base, "GET", f"/api/accounts?serial={b_serial}", admin),
                  "B accounts")["accounts"]
    profile_id = next(a["profile"]["profile_id"] for a in accounts if a.get("profile"))
    key = ok(*call(farm.base, "POST", "/api/ai-keys", admin,
                   {"base_url": "http://127.0.0.1:9/v1", "model": "m", "key": "sk-b-secret",
                    "client": B}), "B's AI key")
    schedule = ok(*call(farm.base, "POST", "/api/schedules", admin,
                        {"sequence": "clipshare/post_clip", "target": f"phone:{b_serial}",
                         "type": "scheduled", "at": "2099-01-01T00:00:00Z"}), "B schedule")
    b_login = ok(*call(farm.base, "POST", "/api/login", None,
                       {"user": "acme", "password": farm.passwords["acme"]}), "acme login")
    b_own = b_makes_its_own(farm, b_login["token"], b_serial)
    # B's own alert rule, named like B: A's users must find no rule of that name.
    ok(*call(farm.base, "POST", "/api/alerts/rules", b_login["token"],
             {"name": B, "kind": "phone_paused"}), "B's alert rule")
    report = ok(*call(farm.base, "POST", "/api/reports", admin, {"client": B}), "B's report")
    # An install record of B's phone (an uninstall needs no APK in the library).
    install = ok(*call(farm.base, "POST", "/api/apps/uninstall", admin,
                       {"app": "com.example.nothing", "scope": f"phone:{b_serial}"}),
                 "B's uninstall")
    link = ok(*call(farm.base, "POST", "/api/links", admin, {  # a link in bio of B's account
        "account": accounts[0]["account_id"], "url": "https://acme.example/"}), "B's link")
    # A post of B's account if one was recorded (none: a post id of nothing at all).
    b_post_id = next((p["post_id"] for p in ok(*call(farm.base, "GET", "/api/posts", admin),
                                                "posts")["posts"]
                      if p["account_id"] in {a["account_id"] for a in accounts}), 987654)
    tokens = ok(*call(farm.base, "GET", "/api/tokens?all=1", admin), "tokens")["tokens"]
    b_token_id = next(t["token_id"] for t in tokens if t["user"] == "acme")
    callers = {}
    for name, role in (("iso-client", "client"), ("iso-viewer", "viewer")):
        ok(*call(farm.base, "POST", "/api/users", admin,
                 {"name": name, "password": "correct horse 1", "role": role, "clients": [A]}),
           f"user {name}")
        callers[role] = ok(*call(farm.base, "POST", "/api/login", None,
                                 {"user": name, "password": "correct horse 1"}),
                           f"login {name}")["token"]
    return {"b_serial": b_serial, "b_serials": b_serials, "a_serials": a_serials,
            "run_id": run["run_id"], "execution_id": execution_id,
            "account_id": accounts[0]["account_id"], "account_ids":
                {a["account_id"] for a in accounts}, "profile_id": profile_id,
            "key_id": key["id"], "schedule_id": schedule["id"], "b_token": b_login["token"],
            "b_token_id": b_token_id, "callers": callers, "b_report_id": report["id"], **b_own,
            "b_install_id": install["install_id"], "b_post_id": b_post_id,
            "b_link_id": link["link_id"], "b_link_code": link["code"],
            "before": b_state(farm, b_serial)}


def b_makes_its_own(farm: DemoFarm, token: str, b_serial: str) -> dict:
    """B's client user's own schedule, group, definitions and workflow execution."""
    post = lambda path, body: ok(*call(farm.base, "POST", path, token, body), path)  # noqa: E731
    schedule = post("/api/schedules", {"sequence": "clipshare/post_clip", "target": "phone:all",
                                       "type": "scheduled", "at": "2099-01-01T00:00:00Z"})
    post("/api/groups", {"name": B_GROUP, "kind": "phone"})
    post(f"/api/groups/{B_GROUP}/members", {"member": b_serial})
    sequence = post("/api/sequences", {"name": B_SEQUENCE})
    workflow = post("/api/workflows", {"name": B_WORKFLOW, "sequences": [
        {"sequence": B_SEQUENCE}]})
    run = post(f"/api/workflows/{B_WORKFLOW}/run", {"scope": f"phone:{b_serial}"})
    assert schedule["clients"] and sequence["client"] == workflow["client"] == B
    # Its first sequence's execution belongs to B's state before A's sweeps: wait until the
    # workflow's schedule has started it (the state was once read first and missed it).
    prefix = f"wfx-{run['workflow_execution_id']}."
    deadline = time.monotonic() + 60
    while not any(str(e.get("run_id", "")).startswith(prefix) for e in ok(*call(
            farm.base, "GET", "/api/executions?limit=500", token), "executions")["executions"]):
        assert time.monotonic() < deadline, f"workflow {prefix} started no execution"
        time.sleep(0.2)
    return {"b_schedule_id": schedule["id"], "b_sequence_def_id": sequence["sequence_def_id"],
            "b_workflow_def_id": workflow["workflow_def_id"],
            "b_workflow_execution_id": run["workflow_execution_id"]}


def b_state(farm: DemoFarm, serial: str) -> dict:
    """What A's callers must not be able to change about B, as the admin reads it."""
    admin = farm.admin_token
    get = lambda path: ok(*call(farm.base, "GET", path, admin), path)  # noqa: E731
    return {
        "accounts": get(f"/api/accounts?serial={serial}")["accounts"],
        "profiles": [p for p in get("/api/profiles")["profiles"] if p.get("client") == B],
        "client": [c for c in get("/api/clients")["clients"] if c["name"] == B],
        "phone": [p["client"] for p in get("/api/phones")["phones"] if p["serial"] == serial],
        "keys": [k for k in get("/api/ai-keys")["keys"] if k.get("client") == B],
        "users": [u for u in get("/api/users")["users"] if u["name"] == "acme"],
        # A workflow's own schedules (wfx-...) and the executions they start come and go as
        # it proceeds (one refused while the phone is locked is started again): its
        # execution is compared below instead.
        "executions": sorted(e["execution_id"] for e in get("/api/executions?limit=500")
                             ["executions"] if e.get("serial") == serial
                             and not str(e.get("run_id", "")).startswith("wfx-")),
        "schedules": sorted(s["id"] for s in get("/api/schedules")["schedules"]
                            if not s["id"].startswith("wfx-")),
        "schedule_states": sorted((s["id"], s["status"]) for s in get("/api/schedules")
                                  ["schedules"] if not s["id"].startswith("wfx-")),
        "groups": get(f"/api/groups?client={urllib.request.quote(B)}"),
        "sequences": [d for d in get("/api/sequences?retired=1")["sequences"]
                      if d["client"] == B],
        "workflows": [w for w in get("/api/workflows?retired=1")["workflows"]
                      if w["client"] == B],
        "workflow_executions": sorted(x["workflow_execution_id"] for x in get(
            "/api/workflow-executions")["workflow_executions"]),
    }


def params_for(world: dict, ghost: bool, schedule: str = "schedule_id") -> dict[str, str]:
    """Path parameter values: B's (ghost=False) or of nothing at all (ghost=True).
    ``schedule``: which of B's schedules (the admin's, or B's client user's own)."""
    if ghost:
        return {"serial": GHOST_SERIAL, "run_id": "run-000000000000",
                "execution_id": "ex-000000000000", "path": "0", "schedule_id": "no-such",
                "id": "987654", "name": "no-such-name", "member": GHOST_SERIAL, "tag": "x",
                "account_id": "987654", "app": "clipshare", "screen": "home",
                "key_id": "987654", "token_id": "987654", "group": GHOST_GROUP,
                "sequence": GHOST_SEQUENCE, "workflow": GHOST_WORKFLOW, "report": "987654",
                "alert_id": "987654", "install_id": "in-000000000000", "pin_id": "987654",
                "post_id": "987654",
                "link": "987654", "kind": "workflow", "n": "1"}
    return {"serial": world["b_serial"], "run_id": world["run_id"],
            "execution_id": world["execution_id"], "path": "0",
            "schedule_id": world[schedule], "id": str(world["b_workflow_execution_id"]),
            "name": B, "member": world["b_serial"],
            "tag": "x", "account_id": str(world["account_id"]), "app": "clipshare",
            "screen": "home", "key_id": str(world["key_id"]), "token_id": str(world["b_token_id"]),
            "group": B_GROUP, "sequence": B_SEQUENCE, "workflow": B_WORKFLOW,
            "report": str(world["b_report_id"]), "alert_id": "987654",
            "install_id": world["b_install_id"], "pin_id": "987654",
            "post_id": str(world["b_post_id"]),
            "link": str(world["b_link_id"]), "kind": "workflow", "n": "1"}


USER_PATHS = ("/api/users/{name}",)


def body_for(op_id: str, path: str, world: dict, ghost: bool) -> dict | None:
    serial = GHOST_SERIAL if ghost else world["b_serial"]
    client = "No Such Client" if ghost else B
    workflow = GHOST_WORKFLOW if ghost else B_WORKFLOW
    bodies = {
        "/api/actions": {"scope": f"phone:{serial}", "action": {"type": "key", "key": "HOME"}},
        "/api/record/start": {"scope": f"phone:{serial}", "name": "iso_rec"},
        "/api/record/stop": {"recording_id": "rec-none"},
        "/api/runs": {"sequence": SEQUENCE, "scope": f"phone:{serial}"},
        "/api/schedules": {"sequence": "clipshare/post_clip", "target": f"phone:{serial}",
                           "type": "scheduled", "at": "2099-01-01T00:00:00Z"},
        "/api/clients": {"name": client, "status": "retired"},
        "/api/profiles": {"profile_id": 987654 if ghost else world["profile_id"],
                          "first_name": "Hacked"},
        "/api/phones/registry": {"serial": serial, "client": A},
        "/api/phones/{serial}/tags": {"tag": "hacked"},
        "/api/accounts": {"serial": serial, "platform": "clipshare",
                          "account_number": "account1", "username": "hacked"},
        "/api/variables/preview": {"text": "${account.username}", "serials": [serial]},
        "/api/variables/resolve": {"text": "${account.username}", "serials": [serial]},
        "/api/ai-keys": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "key": "k",
                         "client": client},
        "/api/phones/{serial}/resume": {},
        "/api/users": {"name": "iso-evil", "password": "correct horse 2", "role": "client",
                       "clients": [client]},
        "/api/users/{name}/password": {"password": "correct horse 3"},
        "/api/organizations": {"name": "Evil Org"},
        "/api/phones/{serial}/client": {"client": A},
        "/api/groups": {"name": "iso_group", "kind": "phone",
                        "parent": GHOST_GROUP if ghost else B_GROUP},
        "/api/groups/rules": {"kind": "excludes",
                              "groups": [GHOST_GROUP if ghost else B_GROUP, "active"]},
        "/api/groups/{name}/members": {"member": serial},
        "/api/workflows/{name}/run": {"scope": f"phone:{serial}"},
        "/api/workflows": {"name": "iso_flow", "sequences": [
            {"sequence": GHOST_SEQUENCE if ghost else B_SEQUENCE}]},
        "/api/nodes/keys": {"node": "evil-node"},
        "/api/reports": {"client": client},
        "/api/apps/install": {"app": "clipshare", "version": "4.1.0",
                              "scope": f"phone:{serial}"},
        "/api/apps/uninstall": {"app": "clipshare", "scope": f"phone:{serial}"},
        "/api/apps/pins": {"app": "clipshare", "version": "4.1.0", "client": client},
        "/api/links": {"account": 987654 if ghost else world["account_id"],
                       "url": "https://evil.example/"},
        "/api/link-clicks": {"code": "nosuchcode0" if ghost else world["b_link_code"],
                             "date": datetime.now(timezone.utc).date().isoformat(), "count": 1},
        "/api/definitions/{kind}/{name}/revert": {"version": 1, "reason": "hacked"},
        "/api/templates": {"kind": "workflow", "name": workflow, "client": client},
        "/api/templates/copy": {"kind": "workflow", "name": workflow, "from_client": client,
                                "to_client": A},
        "/api/templates/update": {"kind": "workflow", "name": workflow, "client": client},
    }
    return bodies.get(path, {})


def fill(path: str, params: dict[str, str], op_path: str) -> str:
    if op_path.startswith("/api/users/"):
        params = {**params, "name": "no-such-user" if params["name"] == "no-such-name"
                  else "acme"}
    if op_path.startswith("/api/reports/"):  # B's report (or nothing at all's)
        params = {**params, "id": params["report"]}
    if op_path.startswith("/api/links/"):  # B's link in bio (or nothing at all's)
        params = {**params, "id": params["link"]}
    # A group, sequence or workflow URL names B's own (or nothing at all's).
    for prefix, key in (("/api/groups/", "group"), ("/api/sequences/", "sequence"),
                        ("/api/workflows/", "workflow"), ("/api/definitions/", "workflow"),
                        ("/api/templates/", "workflow")):
        if op_path.startswith(prefix):
            params = {**params, "name": params[key]}
    return re.sub(r"\{(\w+)\}", lambda m: urllib.request.quote(params[m.group(1)], safe=""),
                  path)


def leaks(answer: Any, world: dict) -> list[str]:
    """B's rows in an answer: anything carrying B's serial, client, account, run or
    execution."""
    found: list[str] = []
    schedules = {world["schedule_id"], world["b_schedule_id"]}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("serial") in world["b_serials"] or node.get("client") == B \
                    or node.get("account_id") in world["account_ids"] \
                    or node.get("execution_id") == world["execution_id"] \
                    or node.get("run_id") == world["run_id"] \
                    or str(node.get("id")) in schedules or node.get("name") == B_GROUP \
                    or node.get("sequence_def_id") == world["b_sequence_def_id"] \
                    or node.get("workflow_def_id") == world["b_workflow_def_id"] \
                    or node.get("workflow_execution_id") == world["b_workflow_execution_id"]:
                found.append(json.dumps(node)[:200])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(answer)
    return found


def operations(farm: DemoFarm) -> list[tuple[str, str, str]]:
    status, doc = call(farm.base, "GET", "/api/openapi.json")
    assert status == 200
    out = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method in ("get", "post", "put", "delete") and path not in (
                    "/api/stream", "/api/live"):  # streams: checked below
                out.append((method.upper(), path, op["operationId"]))
    return out


def masked(answer: Any, values: list[str]) -> str:
    """``answer`` with each of ``values`` standing alone replaced by <ID>: a short id such as
    a schedule's "4" must not be masked inside other text ("use 1-64 characters")."""
    text = json.dumps(answer, sort_keys=True)
    for value in values:
        for form in (value, json.dumps(value)[1:-1]):
            text = re.sub(rf"(?<![\w.-]){re.escape(form)}(?![\w-])", "<ID>", text)
    return text


@pytest.mark.parametrize("role,schedule", [("client", "schedule_id"), ("viewer", "schedule_id"),
                                           ("client", "b_schedule_id")])
def test_every_operation_keeps_b_from_a(farm: DemoFarm, world: dict, role: str,
                                        schedule: str) -> None:
    token = world["callers"][role]
    problems = []
    ops = operations(farm)
    assert len(ops) > 60, "the OpenAPI document lists every operation"
    for method, path, op_id in ops:
        if op_id in OWN_OPERATIONS:
            continue
        if op_id in PUBLIC_OPERATIONS:
            continue
        real = params_for(world, ghost=False, schedule=schedule)
        ghost = params_for(world, ghost=True)
        url = fill(path, real, path)
        body = body_for(op_id, path, world, ghost=False) if method in ("POST", "PUT") else None
        status, answer = call(farm.base, method, url, token, body)
        where = f"{role} {method} {url} ({op_id})"
        if status >= 500:
            problems.append(f"{where}: {status} {answer}")
            continue
        if status in (401, 403, 404):
            continue
        if status >= 400:
            # Any other refusal about B's id must read exactly as the one about an id of
            # nothing at all: no existence leak.
            ghost_url = fill(path, ghost, path)
            ghost_body = body_for(op_id, path, world, ghost=True) \
                if method in ("POST", "PUT") else None
            g_status, g_answer = call(farm.base, method, ghost_url, token, ghost_body)
            sent_b = [world["b_serial"], B, str(world["profile_id"]), B_GROUP, B_SEQUENCE,
                      B_WORKFLOW, world[schedule]]
            sent_g = [GHOST_SERIAL, "No Such Client", "987654", GHOST_GROUP, GHOST_SEQUENCE,
                      GHOST_WORKFLOW, "no-such"]
            if g_status != status or masked(answer, sent_b) != masked(g_answer, sent_g):
                problems.append(f"{where}: {status} differs from a missing id's: {answer} "
                                f"vs {g_status} {g_answer}")
            continue
        found = leaks(answer, world)
        if found:
            problems.append(f"{where}: B's rows in the answer: {found[:2]}")
        elif method != "GET":
            problems.append(f"{where}: a change with B's ids succeeded: {status} {answer}")
    assert not problems, "\n".join(problems)


def test_b_is_unchanged_and_still_works(farm: DemoFarm, world: dict) -> None:
    # Runs after the two generated sweeps above (pytest keeps the file's order).
    assert b_state(farm, world["b_serial"]) == world["before"]
    status, me = call(farm.base, "GET", "/api/me", world["b_token"])
    assert status == 200 and me["name"] == "acme"


def test_each_client_sees_its_own_daily_report_only(farm: DemoFarm, world: dict) -> None:
    admin = ok(*call(farm.base, "GET", "/api/reports", farm.admin_token), "reports")
    daily = sorted(r["client"] for r in admin["reports"] if r["kind"] == "daily")
    assert daily == sorted([A, B])  # made at start: the coordinator was "down" at 00:00
    for role in ("client", "viewer"):
        mine = ok(*call(farm.base, "GET", "/api/reports", world["callers"][role]), role)
        assert [(r["client"], r["kind"]) for r in mine["reports"]] == [(A, "daily")]
        report = ok(*call(farm.base, "GET", mine["reports"][0]["url"],
                          world["callers"][role]), "report")
        assert report["summary"]["client"] == A and "Success rate" in report["text"]
    # A report made now of today's real records: a failed run's screenshot link works.
    serial = world["a_serials"][-1]
    failing = {"name": "iso_fail", "retry": {"immediate": 0, "short": 0},
               "steps": [{"type": "expect_screen", "screen": "clipshare/settings"}]}
    deadline = time.monotonic() + 60
    while True:  # the phone may still be held by an earlier test's run
        run = ok(*call(farm.base, "POST", "/api/runs", farm.admin_token,
                       {"sequence": failing, "scope": f"phone:{serial}"}), "failing run")
        execution = run["executions"][serial]
        if execution["status"] != "locked" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    while ok(*call(farm.base, "GET", f"/api/runs/{run['run_id']}", farm.admin_token),
             "run")["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    today = datetime.now(timezone.utc).date().isoformat()
    made = ok(*call(farm.base, "POST", "/api/reports", farm.admin_token,
                    {"client": A, "day": today}), "A's report of today")
    summary = made["summary"]
    shots = [e["screenshot"] for f in summary["failures"] for e in f["examples"]
             if e["execution_id"] == execution["execution_id"]]
    assert summary["period"]["partial"] and shots, (execution, summary["failures"])
    assert shots[0].startswith(farm.base + "/api/executions/")
    req = urllib.request.Request(shots[0], headers={
        "Authorization": f"Bearer {farm.admin_token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers.get_content_type() == "image/png" and resp.read(8) == \
            b"\x89PNG\r\n\x1a\n"


def test_a_client_sees_only_its_phones_and_all_means_its_own(farm: DemoFarm, world: dict) -> None:
    token = world["callers"]["client"]
    phones = ok(*call(farm.base, "GET", "/api/phones", token), "phones")["phones"]
    assert sorted(p["serial"] for p in phones) == sorted(world["a_serials"])
    answer = ok(*call(farm.base, "POST", "/api/actions", token,
                      {"scope": "phone:all", "action": {"type": "key", "key": "HOME"}}),
                "phone:all")
    assert sorted(answer["results"]) == sorted(world["a_serials"])
    status, answer = call(farm.base, "POST", "/api/actions", token,
                          {"scope": f"phone:{world['b_serial']}",
                           "action": {"type": "key", "key": "HOME"}})
    g_status, g_answer = call(farm.base, "POST", "/api/actions", token,
                              {"scope": f"phone:{GHOST_SERIAL}",
                               "action": {"type": "key", "key": "HOME"}})
    assert (status, answer["error"].replace(world["b_serial"], "X")) == \
        (g_status, g_answer["error"].replace(GHOST_SERIAL, "X"))
    status, _ = call(farm.base, "POST", "/api/actions", world["callers"]["viewer"],
                     {"scope": "phone:all", "action": {"type": "key", "key": "HOME"}})
    assert status == 403


def test_the_stream_shows_a_only_its_phones(farm: DemoFarm, world: dict) -> None:
    token = world["callers"]["client"]
    seen: list[dict] = []
    stop = threading.Event()

    def follow() -> None:
        req = urllib.request.Request(farm.base + "/api/stream",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            for raw in resp:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                if stop.is_set():
                    return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    time.sleep(1.0)
    admin = farm.admin_token
    for serial in (world["b_serial"], world["a_serials"][0]):
        ok(*call(farm.base, "POST", "/api/runs", admin,
                 {"sequence": SEQUENCE, "scope": f"phone:{serial}"}), f"run on {serial}")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(
            e.get("serial") == world["a_serials"][0] for e in seen):
        time.sleep(0.2)
    time.sleep(1.0)  # B's events, had they leaked, would have come by now
    stop.set()
    assert any(e.get("serial") == world["a_serials"][0] for e in seen), seen[-5:]
    assert not [e for e in seen if e.get("serial") in world["b_serials"]]
    # Without a phone: node events, or A's own reports (the daily ones at 00:00 UTC).
    assert all(e.get("serial") or e.get("event") in ("node_up", "node_down", "overflow")
               or (e.get("event", "").startswith("report_") and e["data"].get("client") == A)
               for e in seen)


def test_the_live_wall_refuses_b_phones(farm: DemoFarm, world: dict) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    import asyncio

    async def watch() -> list[dict]:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(farm.base + "/api/live") as ws:
                await ws.send_json({"token": world["callers"]["client"]})
                await ws.send_json({"watch": {world["b_serial"]: 100}})
                first = await ws.receive_json(timeout=10)
                await ws.send_json({"watch": {world["a_serials"][0]: 100}})
                second = await ws.receive_json(timeout=10)
                return [first, second]

    refused, accepted = asyncio.run(watch())
    assert "error" in refused and world["b_serial"] in refused["error"], refused
    assert accepted == {"watching": {world["a_serials"][0]: 100}}, accepted


def queued_on(farm: DemoFarm, token: str, schedule_id: str) -> set[str]:
    """The phones a schedule's first occurrence queued jobs on, once it fired."""
    deadline = time.monotonic() + 30
    while True:
        events = ok(*call(farm.base, "GET", f"/api/schedules/{schedule_id}/events", token),
                    "events")["events"]
        if any(e["kind"] == "fired" for e in events) or time.monotonic() > deadline:
            return {e["serial"] for e in events if e["kind"] == "queued"}
        time.sleep(0.2)


def test_a_client_makes_and_runs_its_own(farm: DemoFarm, world: dict) -> None:
    from actors.coordinator.scheduling.workflows import schedule_id_of

    token = world["callers"]["client"]
    post = lambda path, body: ok(*call(farm.base, "POST", path, token, body), path)  # noqa: E731
    a_serials = set(world["a_serials"])
    # Its phone:all schedule fires on A's phones only.
    schedule = post("/api/schedules", {"sequence": "clipshare/login", "target": "phone:all",
                                       "type": "immediate"})
    assert queued_on(farm, token, schedule["id"]) == a_serials
    # Its group holds A's phones only; group: is its own book.
    post("/api/groups", {"name": "a_vip", "kind": "phone"})
    post("/api/groups/a_vip/members", {"member": world["a_serials"][0]})
    status, answer = call(farm.base, "POST", "/api/groups/a_vip/members", token,
                          {"member": world["b_serial"]})
    assert status == 400 and "no such phone" in answer["error"]
    run = post("/api/runs", {"sequence": SEQUENCE, "scope": "group:a_vip"})
    assert list(run["executions"]) == [world["a_serials"][0]]
    # Its own definitions and workflow run, on A's phones only.
    assert post("/api/sequences", {"name": "clipshare/login"})["client"] == A
    post("/api/workflows", {"name": "a_flow", "sequences": [{"sequence": "clipshare/login"}]})
    execution = post("/api/workflows/a_flow/run", {"scope": "phone:all"})
    wfx = execution["workflow_execution_id"]
    assert queued_on(farm, token, schedule_id_of(wfx, 0)) == a_serials
    # A lists its own; B's client user sees its own and none of A's.
    listed = ok(*call(farm.base, "GET", "/api/schedules", token), "A schedules")["schedules"]
    assert {s["id"] for s in listed if not s["id"].startswith("wfx-")} == {schedule["id"]}
    mine = ok(*call(farm.base, "GET", "/api/workflow-executions", token), "A wfx")
    assert [x["workflow_execution_id"] for x in mine["workflow_executions"]] == [wfx]
    b_listed = ok(*call(farm.base, "GET", "/api/schedules", world["b_token"]), "B schedules")
    assert {s["id"] for s in b_listed["schedules"] if not s["id"].startswith("wfx-")} == {
        world["b_schedule_id"]}
    b_groups = ok(*call(farm.base, "GET", "/api/groups", world["b_token"]), "B groups")
    assert "a_vip" not in {g["name"] for g in b_groups["groups"]}
