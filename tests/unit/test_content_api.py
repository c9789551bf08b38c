"""Content management (issue 21.4) on both engines: the store behind /api/content/* and
the routes themselves over a real aiohttp server and FarmDB (caption templates checked
with the parser's offsets, hashtag sets, custom variables per client and per account as
${custom.NAME} resolves them, the media library's files by content hash and real magic
bytes), tenants kept to their clients, every change audited, bad input naming its field
and storing nothing."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from actors.access.principal import Principal
from actors.control import content as content_api
from actors.control.auth import PRINCIPAL_KEY
from actors.control.app import json_errors
from actors.control.http import HUB
from actors.coordinator.content_store import ContentStore, media_kind
from protocol.errors import ValidationError
from sequences.variables import resolve

pytestmark = pytest.mark.usefixtures("engine")

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
MP4 = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64


@pytest.fixture
async def farm(db, tmp_path):
    acme = await db.upsert_client("Acme")
    globex = await db.upsert_client("Globex")
    await db.upsert_phone("A1", client="Acme")
    await db.upsert_phone("G1", client="Globex")
    await db.upsert_account("A1", "clipshare", "account1", username="ann")
    hub = SimpleNamespace(farm_db=lambda: db)
    yield SimpleNamespace(db=db, hub=hub, acme=acme, globex=globex, media=tmp_path / "media")


def _client(farm, principal: Principal) -> TestClient:
    @web.middleware
    async def caller(request: web.Request, handler):
        request[PRINCIPAL_KEY] = principal
        return await handler(request)

    app = web.Application(middlewares=[json_errors, caller])
    app[HUB] = farm.hub
    content_api.add_routes(app)
    return TestClient(TestServer(app))


ROOT = Principal(user_id=1, name="root", role="super")


def _acme(farm) -> Principal:
    return Principal(user_id=2, name="acme", role="client", client_ids=frozenset({farm.acme}))


async def test_captions_and_hashtags_resolve_per_client(farm) -> None:
    async with _client(farm, ROOT) as c:
        r = await c.put("/api/content/hashtags/daily", json={"tags": ["sun", "#sea"],
                                                               "client": "Acme"})
        assert r.status == 201, await r.text()
        r = await c.put("/api/content/captions/daily", json={
            "template": "{Loving|Enjoying} this ${content.hashtags.daily}", "client": "Acme"})
        assert r.status == 201, await r.text()
        # Globex may have a "daily" of its own: names are unique per client.
        r = await c.put("/api/content/captions/daily", json={"template": "Globex day",
                                                               "client": "Globex"})
        assert r.status == 201
        r = await c.put("/api/content/captions/daily", json={"template": "Loving it",
                                                               "client": "Globex"})
        assert r.status == 200
        listed = (await (await c.get("/api/content/captions")).json())["captions"]
        assert [(x["client"], x["template"]) for x in listed] == [
            ("Acme", "{Loving|Enjoying} this ${content.hashtags.daily}"),
            ("Globex", "Loving it")]
        # Acme's caption names Acme's hashtag set: the set stays while it does (409).
        r = await c.delete("/api/content/hashtags/daily?client=Acme")
        assert r.status == 409 and "daily" in (await r.json())["error"]
    ctx = await farm.db.variable_context("A1")
    assert resolve("${content.caption.daily}", ctx, random.Random(1)) in (
        "Loving this #sun #sea", "Enjoying this #sun #sea")
    ctx = await farm.db.variable_context("G1")
    assert resolve("${content.caption.daily}", ctx, random.Random(1)) == "Loving it"
    trail = await farm.db.audit_trail("caption_template")
    assert [(t["action"], t["after"]["template"] if t["after"] else None) for t in trail][:2] \
        == [("update", "Loving it"), ("create", "Globex day")]


async def test_bad_templates_name_the_field_and_offset_and_store_nothing(farm) -> None:
    async with _client(farm, ROOT) as c:
        for template, offset, words in (
                ("Hi {a|b", 3, "unterminated"), ("Hi ${content.caption.nope}", 3, "nope"),
                ("x ${content.hashtags.none} y", 2, "no hashtag set"),
                ("${content.caption.self}", 0, "names itself")):
            r = await c.put("/api/content/captions/self", json={"template": template})
            body = await r.json()
            assert r.status == 400, body
            assert (body["field"], body["offset"]) == ("template", offset), body
            assert words in body["reason"].lower() or words in body["error"].lower(), body
        bad = await c.put("/api/content/captions/bad name", json={"template": "x"})
        assert bad.status == 400 and (await bad.json())["field"] == "name"
        bad = await c.put("/api/content/captions/x", json={"template": "x", "extra": 1})
        assert bad.status == 400 and "extra" in (await bad.json())["error"]
        bad = await c.put("/api/content/hashtags/x", json={"tags": ["ok", "two words"]})
        assert bad.status == 400 and (await bad.json())["field"] == "tags[1]"
        bad = await c.put("/api/content/hashtags/x", json={"tags": ["a"], "client": "Nope"})
        assert bad.status == 400 and (await bad.json())["field"] == "client"
        assert (await (await c.get("/api/content/captions")).json())["captions"] == []
        assert (await (await c.get("/api/content/hashtags")).json())["hashtags"] == []
    assert await farm.db.audit_trail("caption_template") == []


async def test_custom_variables_per_client_and_per_account(farm) -> None:
    async with _client(farm, ROOT) as c:
        assert (await c.put("/api/content/vars/city", json={"value": "Paris"})).status == 201
        assert (await c.put("/api/content/vars/city", json={"value": "Berlin",
                                                             "client": "Acme"})).status == 201
        r = await c.put("/api/content/vars/city", json={"value": "Rome",
                                                         "account": "clipshare.account1"})
        assert r.status == 201, await r.text()
        bad = await c.put("/api/content/vars/city", json={"value": "x",
                                                           "account": "clipshare.nope"})
        assert bad.status == 400 and (await bad.json())["field"] == "account"
        listed = (await (await c.get("/api/content/vars")).json())["vars"]
        assert {(v["client"], v["account"], v["value"]) for v in listed} == {
            (None, None, "Paris"), ("Acme", None, "Berlin"),
            ("Acme", "clipshare.account1", "Rome")}
    rng = random.Random(0)
    assert resolve("${custom.city}", await farm.db.variable_context("G1"), rng) == "Paris"
    assert resolve("${custom.city}", await farm.db.variable_context("A1"), rng) == "Berlin"
    assert resolve("${custom.city}", await farm.db.variable_context(
        "A1", "clipshare.account1"), rng) == "Rome"
    async with _client(farm, ROOT) as c:
        r = await c.delete("/api/content/vars/city?account=clipshare.account1")
        assert r.status == 200
        assert (await c.delete("/api/content/vars/city?account=clipshare.account1")).status \
            == 404
    assert resolve("${custom.city}", await farm.db.variable_context(
        "A1", "clipshare.account1"), rng) == "Berlin"
    assert [t["action"] for t in await farm.db.audit_trail("custom_variable")] == [
        "delete", "create", "create", "create"]


async def test_an_account_variable_goes_to_the_callers_account_or_asks_for_the_id(farm) -> None:
    """Two clients' phones both have clipshare.account1 (as the demo has on every phone): a
    tenant's name means its own; a super user's is ambiguous (400 asking for the id, nothing
    stored); the id works for both, and DELETE ?account= resolves the same way."""
    await farm.db.upsert_account("G1", "clipshare", "account1", username="gus")
    ids = {r[1]: r[0] for r in await farm.db._all(
        "SELECT a.account_id, p.serial_number FROM accounts a JOIN phones p"
        " ON p.phone_id = a.phone_id WHERE a.account_number = 'account1'")}
    globex = Principal(user_id=3, name="globex", role="client",
                       client_ids=frozenset({farm.globex}))
    for principal, serial in ((_acme(farm), "A1"), (globex, "G1")):
        async with _client(farm, principal) as c:
            r = await c.put("/api/content/vars/city", json={"value": f"{serial} town",
                                                             "account": "clipshare.account1"})
            assert r.status == 201, await r.text()
            assert (await r.json())["account_id"] == ids[serial]
    async with _client(farm, ROOT) as c:
        r = await c.put("/api/content/vars/city", json={"value": "x",
                                                         "account": "clipshare.account1"})
        body = await r.json()
        assert r.status == 400 and body["field"] == "account", body
        assert "id" in body["error"] and str(ids["A1"]) in body["error"], body
        r = await c.delete("/api/content/vars/city?account=clipshare.account1")
        assert r.status == 400 and (await r.json())["field"] == "account"
        r = await c.put("/api/content/vars/city", json={"value": "Rome",
                                                         "account": str(ids["G1"])})
        assert r.status == 200, await r.text()
        assert (await r.json())["account_id"] == ids["G1"]
    rng = random.Random(0)
    for serial, value in (("A1", "A1 town"), ("G1", "Rome")):
        ctx = await farm.db.variable_context(serial, "clipshare.account1")
        assert resolve("${custom.city}", ctx, rng) == value
    async with _client(farm, _acme(farm)) as c:
        # Globex's account is no account of Acme's, by id or by name.
        r = await c.delete(f"/api/content/vars/city?account={ids['G1']}")
        assert r.status == 400 and (await r.json())["field"] == "account"
        assert (await c.delete("/api/content/vars/city?account=clipshare.account1")).status \
            == 200
    rows = await farm.db._all("SELECT account_id, value FROM custom_variables")
    assert [tuple(r) for r in rows] == [(ids["G1"], "Rome")]


async def test_caption_templates_name_only_known_variables(farm) -> None:
    """Unknown categories, fields and forms are refused on save at their offset (what
    sequence texts are checked with), not left to fail on a phone; what depends on the
    phone (its accounts, custom variables) is left to the run."""
    async with _client(farm, ROOT) as c:
        for template, offset, words in (
                ("Hi ${foo.bar}", 3, "unknown variable category 'foo'"),
                ("ok {a|${account.nope}}", 6, "unknown account field 'nope'"),
                ("${client.phone}", 0, "unknown client field 'phone'"),
                ("x ${profile.nick}", 2, "unknown profile field 'nick'"),
                ("${content.video}", 0, "unknown content variable"),
                ("${account.clipshare.account1.karma}", 0, "unknown account field 'karma'"),
                ("${dynamic.counter}", 0, "usage"),
                ("${read.X}", 0, "a read variable is")):
            r = await c.put("/api/content/captions/c", json={"template": template})
            body = await r.json()
            assert r.status == 400, (template, body)
            assert (body["field"], body["offset"]) == ("template", offset), body
            assert words in body["reason"], body
        assert (await (await c.get("/api/content/captions")).json())["captions"] == []
        r = await c.put("/api/content/captions/c", json={"template": (
            "{Hi|Hey} ${account.username} from ${client.contact.email} "
            "${account.clipshare.account9.bio} ${custom.whatever} ${profile.first_name} "
            "${dynamic.random.number(${custom.lo}-9)} ${dynamic.date.format(%d)}")})
        assert r.status == 201, await r.text()


async def test_a_tenant_sees_and_changes_only_its_clients_content(farm) -> None:
    async with _client(farm, ROOT) as c:
        await c.put("/api/content/hashtags/shared", json={"tags": ["farm"]})
        await c.put("/api/content/hashtags/g", json={"tags": ["globex"], "client": "Globex"})
    async with _client(farm, _acme(farm)) as c:
        r = await c.put("/api/content/hashtags/mine", json={"tags": ["acme"]})  # inferred
        assert r.status == 201 and (await r.json())["client_id"] == farm.acme
        # A caption of Acme may name the farm's shared set, not Globex's.
        ok = await c.put("/api/content/captions/c", json={"template": "${content.hashtags.shared}"})
        assert ok.status == 201
        no = await c.put("/api/content/captions/c2", json={"template": "${content.hashtags.g}"})
        assert no.status == 400 and (await no.json())["field"] == "template"
        other = await c.put("/api/content/hashtags/x", json={"tags": ["a"], "client": "Globex"})
        assert other.status == 400 and (await other.json())["field"] == "client"
        listed = (await (await c.get("/api/content/hashtags")).json())["hashtags"]
        assert sorted(x["name"] for x in listed) == ["mine", "shared"]
        assert (await c.delete("/api/content/hashtags/g?client=Globex")).status == 400
        listed = (await (await c.get("/api/content/hashtags")).json())["hashtags"]
        assert len(listed) == 2
    rows = await farm.db._all("SELECT name FROM hashtag_sets ORDER BY name")
    assert [r[0] for r in rows] == ["g", "mine", "shared"]
    # Acme's callers read the audit entries of Acme's content only (not Globex's, nor the
    # farm's shared rows').
    seen = await farm.db.audit_trail(client_ids=[farm.acme])
    assert sorted((t["entity_type"], (t["after"] or {}).get("name")) for t in seen) == [
        ("caption_template", "c"), ("hashtag_set", "mine")]


async def test_media_library_upload_list_delete(farm) -> None:
    store = ContentStore(farm.db)
    async with _client(farm, ROOT) as c:
        r = await c.post("/api/content/media?name=beach&client=Acme", data=PNG)
        item = await r.json()
        assert r.status == 201, item
        assert (item["kind"], item["mime"], item["size"]) == ("image", "image/png", len(PNG))
        path = store.media_root / item["file"]
        assert path.read_bytes() == PNG and item["file"] == item["sha256"] + ".png"
        r = await c.post("/api/content/media?name=clip", data=MP4)
        assert r.status == 201 and (await r.json())["kind"] == "video"
        # Not an image or video by its bytes (whatever it is called): nothing kept.
        bad = await c.post("/api/content/media?name=evil", data=b"<html>" + b"x" * 64)
        assert bad.status == 400 and (await bad.json())["field"] == "body"
        bad = await c.post("/api/content/media?name=beach&client=Acme", data=PNG)
        assert bad.status == 400 and (await bad.json())["field"] == "name"
        bad = await c.post("/api/content/media?name=", data=PNG)
        assert bad.status == 400 and (await bad.json())["field"] == "name"
        listed = (await (await c.get("/api/content/media")).json())["media"]
        assert sorted(m["name"] for m in listed) == ["beach", "clip"]
        assert sorted(p.name for p in store.media_root.iterdir() if p.is_file()) == sorted(
            m["file"] for m in listed)
        assert not list((store.media_root / ".incoming").iterdir())
    # ${content.media.next} draws from the library's folder, as before.
    picked = await farm.db.resolve_text("${content.media.next}", "A1")
    assert picked.endswith((".png", ".mp4"))
    async with _client(farm, _acme(farm)) as c:
        mine = (await (await c.get("/api/content/media")).json())["media"]
        assert [m["name"] for m in mine] == ["beach", "clip"]  # its own and the farm's
        shared = next(m for m in mine if m["name"] == "clip")
        assert (await c.delete(f"/api/content/media/{shared['id']}")).status == 403
        beach = next(m for m in mine if m["name"] == "beach")
        assert (await c.delete(f"/api/content/media/{beach['id']}")).status == 200
    assert not path.exists()
    assert [t["action"] for t in await farm.db.audit_trail("media")] == [
        "delete", "create", "create"]


async def test_the_media_library_draws_a_clients_uploads_for_its_own_phones_only(farm) -> None:
    store = ContentStore(farm.db)
    beach = await store.add_media("beach", _chunks(PNG), farm.acme, None, "root")
    # Only Acme's file, and a Globex phone: nothing this client may use (not Acme's file).
    with pytest.raises(ValidationError, match="this phone's client may use"):
        await farm.db.resolve_text("${content.media.next}", "G1")
    clip = await store.add_media("clip", _chunks(MP4), None, None, "root")  # the farm's
    hand = store.media_root / "by-hand.jpg"   # put in the folder by hand: the farm's too
    hand.write_bytes(b"\xff\xd8\xff" + b"\x00" * 16)
    globex = {Path(await farm.db.resolve_text("${content.media.next}", "G1")).name
              for _ in range(6)}
    assert globex == {clip["file"], hand.name}
    acme = {Path(await farm.db.resolve_text("${content.media.next}", "A1")).name
            for _ in range(6)}
    assert acme == {beach["file"], clip["file"], hand.name}


async def test_a_media_upload_that_loses_a_name_race_keeps_no_file(farm) -> None:
    """Two uploads of one name both pass the first check; the one that reaches the unique
    index second fails naming the field, leaves no file of its own and never removes a file
    another row uses."""
    store = ContentStore(farm.db, farm.media)
    keep = await store.add_media("keep", _chunks(PNG), None, None, "root")
    other_png = PNG[:-1] + b"\x01"

    for loser_bytes in (other_png, PNG):  # its own content, then content "keep" uses
        name = f"race{len(loser_bytes)}{loser_bytes[-1]}"

        async def racing() -> object:
            yield loser_bytes[:32]
            # The other upload of the same name lands while this one is still coming in.
            await store.add_media(name, _chunks(MP4), None, None, "root")
            yield loser_bytes[32:]

        with pytest.raises(ValidationError) as lost:
            await store.add_media(name, racing(), None, None, "root")
        assert lost.value.where == "name" and "already" in str(lost.value)
        await farm.db._write("DELETE FROM media_items WHERE name = ?", (name,))
    files = sorted(p.name for p in farm.media.iterdir() if p.is_file())
    assert files == sorted({keep["file"], (await store.add_media(
        "clip", _chunks(MP4), None, None, "root"))["file"]})
    assert (farm.media / keep["file"]).read_bytes() == PNG
    assert not list((farm.media / ".incoming").iterdir())
    rows = await farm.db._all("SELECT name FROM media_items ORDER BY name")
    assert [r[0] for r in rows] == ["clip", "keep"]


async def _chunks(data: bytes):
    yield data


def test_media_kind_reads_magic_bytes_not_names() -> None:
    assert media_kind(b"\xff\xd8\xff\xe0" + b"\x00" * 12)[1] == "image/jpeg"
    assert media_kind(b"RIFF\x00\x00\x00\x00WEBPVP8 ")[2] == ".webp"
    assert media_kind(b"\x00\x00\x00\x14ftypqt  \x00\x00")[1] == "video/quicktime"
    assert media_kind(b"\x1a\x45\xdf\xa3" + b"\x00" * 12)[0] == "video"
    assert media_kind(b"\x00\x00\x00\x18ftypheic\x00\x00") is None
    assert media_kind(b"GIF89a" + b"\x00" * 10)[0] == "image"
    assert media_kind(b"%PDF-1.4" + b"\x00" * 8) is None


async def test_farm_content_cli(farm, tmp_path, capsys) -> None:
    import asyncio

    from actors.control.cli import main as farm_main

    async with _client(farm, ROOT) as c:
        url = str(c.make_url("")).rstrip("/")

        async def farm_cmd(*argv: str) -> int:
            return await asyncio.to_thread(farm_main, ["--url", url, "content", *argv])

        assert await farm_cmd("hashtags", "set", "daily", "sun", "#sea") == 0
        assert await farm_cmd("captions", "set", "daily", "{Hi|Hey} ${content.hashtags.daily}",
                              "--client", "Acme") == 0
        capsys.readouterr()
        assert await farm_cmd("captions", "set", "bad", "Hi ${content.caption.nope}") == 2
        err = capsys.readouterr().err
        assert "offset 3" in err and "no caption template 'nope'" in err
        assert err.splitlines()[-1] == "     ^"  # the caret under the offset
        assert await farm_cmd("vars", "set", "city", "Rome", "--account",
                              "clipshare.account1") == 0
        capsys.readouterr()
        assert await farm_cmd("captions") == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].split() == ["NAME", "OWNER", "TEMPLATE"] and "Acme" in out[1]
        clip = tmp_path / "my clip.mp4"
        clip.write_bytes(MP4)
        assert await farm_cmd("media", "add", str(clip), "--client", "Acme") == 0
        assert "my_clip: video/mp4" in capsys.readouterr().out
        assert await farm_cmd("media") == 0
        media_id = capsys.readouterr().out.splitlines()[1].split()[0]
        assert await farm_cmd("media", "remove", media_id) == 0
        assert await farm_cmd("vars", "remove", "city", "--account", "clipshare.account1") == 0
        assert await farm_cmd("hashtags", "remove", "nope") == 2


async def test_a_text_action_carries_its_template_which_a_recording_keeps(tmp_path) -> None:
    """Issue 21.5: the text dialog's action has the phone's text and the operator's
    template; the template must parse (400 naming it, nothing sent), and the recorder saves
    it instead of the text."""
    import json as _json
    import sys
    from pathlib import Path as _Path

    sys.path.insert(0, str(_Path(__file__).resolve().parent))
    from fake_hub import FakeHub

    from actors.control.app import make_app
    from actors.coordinator.recorder import Recorder

    hub = FakeHub()
    async with TestClient(TestServer(make_app(hub))) as c:
        r = await c.post("/api/actions", json={"scope": "phone:R58M123ABC", "action": {
            "type": "text", "text": "Hi", "template": "{Hi|Hey"}})
        body = await r.json()
        assert r.status == 400 and (body["field"], body["offset"]) == ("$.action.template", 0)
        assert "unterminated" in body["reason"] and hub.calls == []
        r = await c.post("/api/actions", json={"scope": "phone:R58M123ABC", "action": {
            "type": "text", "text": "Hey you", "template": "{Hi|Hey} ${custom.who}"}})
        assert r.status == 200
        assert hub.calls[0][1] == {"type": "text", "text": "Hey you",
                                   "template": "{Hi|Hey} ${custom.who}"}
    recorder = Recorder(tmp_path, lambda serial: "launcher/home")
    rec = recorder.start("greet", None, ["P1"])
    recorder.observe("P1", hub.calls[0][1])
    recorder.observe("P1", {"type": "text", "text": "plain"})
    path, _ = recorder.stop(rec.recording_id)
    typed = [s["text"] for s in _json.loads(path.read_text())["steps"] if s["type"] == "type"]
    assert typed == ["{Hi|Hey} ${custom.who}", "plain"]
