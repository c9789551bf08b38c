"""Conversations, messages, links in bio and their clicks in the farm database (issue 21.6),
on both engines (the `engine` fixture): the new-tail rule, the ingest of messages_read
events (replays add nothing), link codes, click upserts and per-client reads."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import pytest

from actors.coordinator.engagement.accounts import account_of_event, find_accounts
from actors.coordinator.engagement.clicks import MAX_SOURCES, OTHER
from actors.coordinator.engagement.conversations import ConversationStore, new_tail
from actors.coordinator.engagement.ingest import MessageIngest
from actors.coordinator.engagement.links import (CODE, LinkStore, check_day, check_source,
                                                 check_url, click_source)
from protocol.errors import ValidationError

pytestmark = pytest.mark.usefixtures("engine")

T, U = "them", "us"


def test_new_tail_appends_only_what_a_read_adds() -> None:
    stored = [(T, "hi"), (U, "hello"), (T, "price?"), (U, "10")]
    assert new_tail([], [(T, "hi")]) == [(T, "hi")]
    assert new_tail(stored, stored) == []                       # the same screen again
    assert new_tail(stored, stored[1:3]) == []                  # an older part of it
    assert new_tail(stored, [(T, "price?"), (U, "10"), (T, "ok"), (T, "thx")]) == [
        (T, "ok"), (T, "thx")]                                   # overlap, then new
    assert new_tail(stored, [(T, "new")]) == [(T, "new")]
    assert new_tail(stored, [(T, "x"), (U, "y")]) == [(T, "x"), (U, "y")]  # no overlap
    # A message repeated: the whole overlap decides, not its last line.
    assert new_tail([(T, "ok"), (U, "a")], [(U, "a"), (T, "ok")]) == [(T, "ok")]
    assert new_tail(stored, []) == []


async def _two_clients(db) -> dict[str, int]:
    ids = {}
    for name, serial in (("acme", "A1"), ("globex", "B1")):
        client = await db.upsert_client(name)
        await db.upsert_phone(serial, client=client)
        await db.upsert_account(serial, "clipshare", "account1", username=f"{serial}-user")
        ids[name] = client
    return ids


async def _account(db, serial: str) -> int:
    return next(a["account_id"] for a in await db.account_rows(serial))


async def test_ingest_of_messages_read_is_deduplicated_and_idempotent(db) -> None:
    await _two_clients(db)
    hub = SimpleNamespace(event_observers=[])  # what MessageIngest needs of the hub
    ingest = MessageIngest(hub, db).start()
    try:
        event = {"execution_id": 7, "seq": 3, "serial": "A1", "account": "clipshare.account1",
                 "app": "clipshare", "at": 1_800_000_000.0, "partner": "Dana",
                 "messages": [{"sender": "them", "text": "Hi!"},
                              {"sender": "us", "text": "Hello Dana"}]}
        hub.event_observers[0]({"event": "messages_read", "serial": "A1", "data": event})
        hub.event_observers[0]({"event": "messages_read", "serial": "A1", "data": event})
        await ingest.drain()
        # A later read overlapping the stored tail: only the new message is added.
        later = {**event, "seq": 9, "messages": [
            {"sender": "us", "text": "Hello Dana"}, {"sender": "them", "text": "Price?"},
            {"sender": "robot", "text": "dropped"}, {"sender": "them", "text": " "}]}
        hub.event_observers[0]({"event": "messages_read", "serial": "A1", "data": later})
        await ingest.drain()
        # After a restart (nothing remembered), a replay of both adds nothing either.
        assert await MessageIngest(hub, db).take(event) == 0
        assert await MessageIngest(hub, db).take(later) == 0
        # Another partner is another conversation; an unknown account is ignored.
        assert await ingest.take({**event, "seq": 10, "partner": "Eli"}) == 2
        assert await ingest.take({**event, "seq": 11, "serial": "ZZ", "execution_id": None}) == 0
    finally:
        await ingest.close()
    assert hub.event_observers == []
    store = ConversationStore(db)
    convs = await store.list()
    assert [(c["partner"], c["message_count"]) for c in convs] == [("Eli", 2), ("Dana", 3)]
    dana = next(c for c in convs if c["partner"] == "Dana")
    assert dana["account"] == "clipshare.account1" and dana["serial"] == "A1"
    assert dana["last_message"] == {"sender": "them", "text": "Price?"}
    assert dana["last_message_at"] == "2027-01-15T08:00:00Z"
    got = await store.get(dana["conversation_id"])
    assert [(m["sender"], m["text"]) for m in got["messages"]] == [
        (T, "Hi!"), (U, "Hello Dana"), (T, "Price?")]


async def test_reads_keep_to_the_callers_clients(db) -> None:
    clients = await _two_clients(db)
    a1, b1 = await _account(db, "A1"), await _account(db, "B1")
    store = ConversationStore(db)
    (ca, _), (cb, _) = [await store.add_read(acc, "clipshare", "Pat", [(T, "yo")])
                        for acc in (a1, b1)]
    acme = frozenset({clients["acme"]})
    assert [c["conversation_id"] for c in await store.list(acme)] == [ca]
    assert await store.get(cb, acme) is None and (await store.get(ca, acme)) is not None
    assert await store.list(frozenset()) == []
    assert [c["conversation_id"] for c in await store.list(account_ids=[b1])] == [cb]
    # Accounts by id or platform.number, within the caller's clients.
    assert [a["account_id"] for a in await find_accounts(db, "clipshare.account1", None)] \
        == [a1, b1]
    assert [a["account_id"] for a in await find_accounts(db, "clipshare.account1", acme)] \
        == [a1]
    assert await find_accounts(db, str(b1), acme) == []
    assert await find_accounts(db, "nodot", None) == []
    # An event's account: its execution's (named by key), else its reference on its phone.
    execution = await db.create_execution("ex-b", serial="B1", account_id=b1)
    assert (await account_of_event(db, {"execution_id": "ex-b", "account": None,
                                        "serial": "B1"}))["account_id"] == b1
    # The executions row id is no name for it: a node could name any client's row.
    assert await account_of_event(db, {"execution_id": execution, "account": None,
                                       "serial": "B1"}) is None
    assert await account_of_event(db, {"execution_id": str(execution), "account": None,
                                       "serial": "B1"}) is None
    # Another phone's execution is refused, even with an account reference on the sender's.
    assert await account_of_event(db, {"execution_id": "ex-b", "serial": "A1",
                                       "account": "clipshare.account1"}) is None
    assert await account_of_event(db, {"execution_id": "ex-b", "account": None},
                                  "A1") is None
    assert (await account_of_event(db, {"execution_id": "ex-other", "serial": "A1",
                                        "account": "clipshare.account1"}))["account_id"] == a1
    assert await account_of_event(db, {"execution_id": "ex-none", "serial": "B1"}) is None
    assert await account_of_event(db, {"execution_id": 2**70, "serial": "B1"}) is None


async def test_links_codes_clicks_and_removal(db) -> None:
    clients = await _two_clients(db)
    a1, b1 = await _account(db, "A1"), await _account(db, "B1")
    links = LinkStore(db)
    la = await links.add(a1, "https://example.com/shop?x=1", "Shop")
    lb = await links.add(b1, "http://example.org/", None)
    view = await links.get(la)
    assert CODE.fullmatch(view["code"]) and len(view["code"]) == 8
    assert view["path"] == f"/l/{view['code']}" and view["clicks"] == 0
    assert (await links.by_code(view["code"]))["url"] == "https://example.com/shop?x=1"
    assert await links.by_code("nope-nope") is None and await links.by_code("../x") is None
    # Clicks upsert one row per link, day and source.
    for source in ("direct", "direct", "ig"):
        await links.count(la, "2026-12-06", source)
    await links.count(la, "2026-12-05", "ig", 40)
    view = await links.get(la)
    assert view["clicks"] == 43 and view["clicks_by_source"] == {"direct": 2, "ig": 41}
    rows = await db._all("SELECT click_date, source, click_count FROM link_clicks"
                         " WHERE link_id = ? ORDER BY click_date, source", (la,))
    assert [(str(r[0]), r[1], r[2]) for r in rows] == [
        ("2026-12-05", "ig", 40), ("2026-12-06", "direct", 2), ("2026-12-06", "ig", 1)]
    # Per client.
    acme = frozenset({clients["acme"]})
    assert [v["link_id"] for v in await links.list(acme)] == [la]
    assert [v["link_id"] for v in await links.list()] == [lb, la]
    assert await links.get(lb, acme) is None
    assert await links.by_code((await links.get(lb))["code"], acme) is None
    # Removing ends it: the code leads nowhere, its clicks stay.
    code = view["code"]
    assert await links.remove(la) is True and await links.remove(la) is False
    assert await links.by_code(code) is None and await links.get(la) is None
    assert (await links.get(la, removed=True))["clicks"] == 43


async def test_redirect_clicks_keep_at_most_max_sources_a_link_a_day(db) -> None:
    """LinkStore.add_clicks (the public redirect's batches): the rows already stored count
    towards a day's sources, a source new to a full day counts as OTHER, another day or
    another link has its own places, and a link gone meanwhile is skipped."""
    await _two_clients(db)
    links = LinkStore(db)
    la = await links.add(await _account(db, "A1"), "https://example.com/", None)
    lb = await links.add(await _account(db, "B1"), "https://example.org/", None)
    day = "2026-12-06"
    for i in range(MAX_SOURCES - 1):   # an import's sources are rows of the day too
        await links.count(la, day, f"s{i:02d}")
    await links.add_clicks({
        (la, day): {"s00": 2, "busy": 5, "quiet": 1, OTHER: 1},   # one place left: busy's
        (la, "2026-12-05"): {"quiet": 1},
        (lb, day): {f"b{i:02d}": 1 for i in range(MAX_SOURCES + 3)},
        (987654, day): {"x": 1}})
    a_all = (await links.get(la))["clicks_by_source"]  # both days
    assert a_all["busy"] == 5 and a_all["quiet"] == 1 and a_all[OTHER] == 2
    assert a_all["s00"] == 3 and len(a_all) == MAX_SOURCES + 2
    rows = await db._all("SELECT source FROM link_clicks WHERE link_id = ? AND click_date = ?",
                         (la, day))
    assert "quiet" not in {r[0] for r in rows} and len(rows) == MAX_SOURCES + 1
    b_day = (await links.get(lb))["clicks_by_source"]
    assert len(b_day) == MAX_SOURCES + 1 and b_day[OTHER] == 3
    await links.add_clicks({(lb, day): {"b00": 1, "new": 4}})
    b_day = (await links.get(lb))["clicks_by_source"]
    assert b_day["b00"] == 2 and b_day[OTHER] == 7 and "new" not in b_day
    assert (await db._one("SELECT COUNT(*) FROM link_clicks WHERE link_id = 987654"))[0] == 0


def test_link_values_are_checked() -> None:
    assert check_url("https://example.com/a b".replace(" ", "")) == "https://example.com/ab"
    for bad, words in (("ftp://example.com", "http"), ("javascript:alert(1)", "http"),
                       ("https://", "no host"), ("https://u:p@example.com", "user name"),
                       ("https://example.com/a b", "spaces"), ("http://x:99999/", "not a URL"),
                       ("https://x/" + "a" * 3000, "at most")):
        with pytest.raises(ValidationError, match=words) as caught:
            check_url(bad)
        assert caught.value.where == "$.url"
    assert click_source("IG", "https://t.co/x") == "ig"
    assert click_source(None, "https://www.Example.com/p") == "www.example.com"
    assert click_source("bad source!", None) == "direct"
    assert click_source(None, "not a url") == "direct"
    assert check_source("newsletter") == "newsletter"
    with pytest.raises(ValidationError):
        check_source("Bad Source")
    assert check_day("2026-12-01", today=date(2026, 12, 7)) == "2026-12-01"
    for bad in ("2026-12-08", "2026-13-01", "yesterday", "2026-1-1"):
        with pytest.raises(ValidationError, match=r"\$.date"):
            check_day(bad, today=date(2026, 12, 7))
