"""Groups: rules enforced on every change (exact messages), hierarchy, smart and system
groups over rows, set algebra, ``${group...}`` variables and ``group:`` scopes."""

from __future__ import annotations

import random
import sqlite3

import pytest

from protocol.errors import ScopeError, ValidationError, VariableError
from actors.store.migrations import SCHEMA_DIR
from sequences.groups import GroupBook, Rule
from sequences.scopes import targets
from sequences.variables import VariableContext, resolve

PHONES = [
    {"serial": "p1", "node": "rack1", "tags": ["phone1"], "client": "acme", "model": "A52"},
    {"serial": "p2", "node": "rack1", "tags": ["phone2"], "client": "acme", "model": "S10"},
    {"serial": "p3", "node": "rack2", "tags": ["phone3"], "client": "beta", "model": "A52"},
]
ACCOUNTS = [
    {"platform": "clipshare", "account_number": "account1", "serial": "p1", "status": "active"},
    {"platform": "clipshare", "account_number": "account2", "serial": "p1", "status": "warming"},
    {"platform": "tiktok", "account_number": "account1", "serial": "p2", "status": "active"},
    {"platform": "clipshare", "account_number": "account1", "serial": "p3", "status": "active"},
]
A1 = "clipshare.account1@p1"
A2 = "clipshare.account2@p1"
T1 = "tiktok.account1@p2"
A3 = "clipshare.account1@p3"


def error(call, *args) -> str:
    with pytest.raises(ValidationError) as info:
        call(*args)
    return str(info.value)


@pytest.fixture
def book() -> GroupBook:
    book = GroupBook()
    book.create("active", "account", type="system")
    book.create("warming", "account", type="system")
    book.exclusivity_set("lifecycle", ["active", "warming"])
    return book


# --- rules on membership changes ------------------------------------------------------


def test_exclusivity_set_refuses_second_group(book: GroupBook) -> None:
    book.add_member("active", A1)
    assert error(book.add_member, "warming", A1) == (
        "group 'warming': account clipshare.account1@p1 is already in 'active' "
        "(exclusivity set 'lifecycle')")
    book.remove_member("active", A1)
    book.add_member("warming", A1)
    assert book.members("warming") == [A1]


def test_requires_on_add_and_blocks_removal(book: GroupBook) -> None:
    book.create("premium_content", "account")
    book.requires("premium_content", "active")
    assert error(book.add_member, "premium_content", A1) == (
        "group 'premium_content': account clipshare.account1@p1 is not in 'active' "
        "(rule requires('premium_content', 'active'))")
    book.add_member("active", A1)
    book.add_member("premium_content", A1)
    assert error(book.remove_member, "active", A1) == (
        "group 'active': cannot remove account clipshare.account1@p1: it is in "
        "'premium_content' (rule requires('premium_content', 'active'))")


def test_excludes_both_directions(book: GroupBook) -> None:
    book.create("family_friendly", "account")
    book.create("adult_content", "account")
    book.excludes("family_friendly", "adult_content")
    book.add_member("family_friendly", A1)
    book.add_member("adult_content", A2)
    assert error(book.add_member, "adult_content", A1) == (
        "group 'adult_content': account clipshare.account1@p1 is in 'family_friendly' "
        "(rule excludes('family_friendly', 'adult_content'))")
    assert error(book.add_member, "family_friendly", A2) == (
        "group 'family_friendly': account clipshare.account2@p1 is in 'adult_content' "
        "(rule excludes('family_friendly', 'adult_content'))")


# --- rules refused at creation when members already violate them ----------------------


def test_new_exclusivity_set_names_first_violation() -> None:
    book = GroupBook()
    for name in ("active", "warming", "retired"):
        book.create(name, "account")
    book.add_member("active", A1)
    book.add_member("warming", A2)
    book.add_member("retired", A2)
    assert error(book.exclusivity_set, "lifecycle", ["active", "warming", "retired"]) == (
        "group 'retired': account clipshare.account2@p1 is already in 'warming' "
        "(exclusivity set 'lifecycle')")
    assert book.rules == []


def test_new_requires_and_excludes_refused(book: GroupBook) -> None:
    book.create("premium_content", "account")
    book.create("adult_content", "account")
    book.add_member("premium_content", A1)
    book.add_member("adult_content", A1)
    assert error(book.requires, "premium_content", "active") == (
        "group 'premium_content': account clipshare.account1@p1 is not in 'active' "
        "(rule requires('premium_content', 'active'))")
    assert error(book.excludes, "premium_content", "adult_content") == (
        "group 'premium_content': account clipshare.account1@p1 is in 'adult_content' "
        "(rule excludes('premium_content', 'adult_content'))")
    book.add_member("active", A1)
    assert book.requires("premium_content", "active") == Rule(
        "requires", ("premium_content", "active"))


def test_rule_shape_errors(book: GroupBook) -> None:
    book.create("phones_a", "phone")
    book.create("smart", "account", type="smart", filter="filter.accounts where status=active")
    assert "mixes phone groups and account groups" in error(book.excludes, "active", "phones_a")
    assert "is a smart group" in error(book.requires, "active", "smart")
    assert "no such group" in error(book.requires, "active", "nope")
    assert "exists" in error(book.exclusivity_set, "lifecycle", ["active", "phones_a"])


def test_member_format_checked(book: GroupBook) -> None:
    assert error(book.add_member, "active", "p1") == (
        "group 'active': an account member is written PLATFORM.ACCOUNT_NUMBER@SERIAL, "
        "not 'p1'")
    book.create("rack", "phone")
    assert "a phone member is a serial" in error(book.add_member, "rack", A1)


# --- hierarchy ------------------------------------------------------------------------


def test_child_is_subset_of_parent(book: GroupBook) -> None:
    book.create("active_vip", "account", parent="active")
    assert error(book.add_member, "active_vip", A1) == (
        "group 'active_vip': account clipshare.account1@p1 is not in parent group 'active' "
        "(a child's members are a subset of its parent's)")
    book.add_member("active", A1)
    book.add_member("active_vip", A1)
    assert error(book.remove_member, "active", A1) == (
        "group 'active': cannot remove account clipshare.account1@p1: it is in child group "
        "'active_vip' (a child's members are a subset of its parent's)")
    # A parent's rules hold for its branch: the child's member is the parent's member.
    assert "already in 'active'" in error(book.add_member, "warming", A1)
    assert book.branch("active") == ["active", "active_vip"]


def test_set_parent_checks_members_cycles_and_kind(book: GroupBook) -> None:
    book.create("a", "account")
    book.create("b", "account", parent="a")
    book.add_member("active", A1)
    book.create("loose", "account")
    book.add_member("loose", A2)
    assert error(book.set_parent, "loose", "active") == (
        "group 'loose': account clipshare.account2@p1 is not in parent group 'active' "
        "(a child's members are a subset of its parent's)")
    assert error(book.set_parent, "a", "b") == (
        "group 'a': parent 'b' would make a cycle (a -> b -> a)")
    book.create("rack", "phone")
    assert "holds accounts" in error(book.set_parent, "rack", "a")
    assert "it has child groups: b" in error(book.delete, "a")


def test_smart_parent_cuts_child_at_evaluation() -> None:
    book = GroupBook()
    book.create("on_p1", "account", type="smart", filter="filter.accounts where serial=p1")
    book.create("picked", "account", parent="on_p1")
    book.add_member("picked", A1)
    book.add_member("picked", T1)
    assert book.members("picked", PHONES, ACCOUNTS) == [A1]
    book.create("clip", "account")
    book.add_member("clip", A3)
    book.add_member("clip", A2)
    book.create("clip_active", "account", type="smart", parent="clip",
                filter="filter.accounts where status=active")
    assert book.members("clip_active", PHONES, ACCOUNTS) == [A3]


# --- smart and system groups ----------------------------------------------------------


def test_smart_groups_follow_rows() -> None:
    book = GroupBook()
    book.create("a52", "phone", type="smart", filter="filter.phones where model=a52")
    book.create("live", "account", type="smart",
                filter="filter.accounts where status=active and platform!=tiktok")
    assert book.members("a52", PHONES, ACCOUNTS) == ["p1", "p3"]
    assert book.members("live", PHONES, ACCOUNTS) == [A1, A3]
    changed = [dict(r, status="banned") if r["serial"] == "p3" else r for r in ACCOUNTS]
    assert book.members("live", PHONES, changed) == [A1]
    assert "a smart group's members come from its filter" in error(book.add_member, "live", A1)


def test_smart_filter_errors() -> None:
    book = GroupBook()
    with pytest.raises(ScopeError) as info:
        book.create("x", "phone", type="smart", filter="filter.phones where model")
    assert info.value.offset == 20
    with pytest.raises(ValidationError) as err:
        book.create("y", "phone", type="smart", filter="filter.accounts where status=active")
    assert str(err.value) == "group 'y': a phone group filters with 'filter.phones where ...'"
    book.create("z", "account", type="smart", filter="filter.accounts where stauts=active")
    with pytest.raises(ScopeError) as info:
        book.members("z", PHONES, ACCOUNTS)
    assert info.value.reason == "no account has field 'stauts'"
    assert info.value.offset == 22


def test_system_groups_from_rows() -> None:
    book = GroupBook.with_defaults()
    assert book.members("all_phones", PHONES, ACCOUNTS) == ["p1", "p2", "p3"]
    assert book.members("all_accounts", PHONES, ACCOUNTS) == [A1, A2, T1, A3]
    assert book.members("platform:ClipShare", PHONES, ACCOUNTS) == [A1, A2, A3]
    assert "a system group cannot be deleted" in error(book.delete, "active")
    book.add_member("active", A1)
    assert "already in 'active' (exclusivity set 'account_status')" in error(
        book.add_member, "warming", A1)
    assert "computed system group" in error(book.add_member, "all_accounts", A1)


def test_group_names() -> None:
    book = GroupBook()
    assert "'-' is the difference operator" in error(book.create, "a-b", "phone")
    book.create("x", "phone")
    assert error(book.create, "x", "phone") == "group 'x': a group with this name exists"


# --- set algebra ----------------------------------------------------------------------


def test_intersection_difference_union() -> None:
    book = GroupBook()
    book.create("mine", "account")
    for m in (A3, T1, A1):
        book.add_member("mine", m)
    args = (PHONES, ACCOUNTS)
    assert book.intersection("mine", "platform:clipshare", *args) == [A3, A1]
    assert book.difference("mine", "platform:clipshare", *args) == [T1]
    assert book.union("platform:tiktok", "mine", *args) == [T1, A3, A1]
    assert book.evaluate("all_accounts - mine & platform:clipshare", *args) == [A2]
    with pytest.raises(ScopeError) as info:
        book.evaluate("mine&all_phones", *args)
    assert info.value.offset == 4
    assert "cannot combine account group(s) with phone group 'all_phones'" in info.value.reason


# --- variables ------------------------------------------------------------------------


def ctx(book: GroupBook | None) -> VariableContext:
    return VariableContext(serial="p1", phones=PHONES, farm_accounts=ACCOUNTS, groups=book)


def test_group_variables() -> None:
    book = GroupBook.with_defaults()
    book.add_member("active", A1)
    book.add_member("active", T1)
    book.add_member("warming", A2)
    book.create("rack", "phone")
    book.add_member("rack", "p3")
    book.add_member("rack", "p1")
    c = ctx(book)
    assert resolve("${group.active.count}/${group.rack.members}", c, random.Random(1)) == (
        "2/p3,p1")
    picks = {resolve("${group.active.random}", c, random.Random(seed)) for seed in range(20)}
    assert picks == {A1, T1}
    assert resolve("${group.random(active)}", c, random.Random(3)) == random.Random(3).choice(
        [A1, T1])
    assert resolve("${group.count(active&platform:clipshare)}", c, random.Random(0)) == "1"
    assert resolve("${group.count(all_accounts-active)}", c, random.Random(0)) == "2"
    assert resolve("${group.intersection(active,platform:tiktok)}", c,
                   random.Random(0)) == T1
    assert resolve("${group.difference(all_accounts,active,warming)}", c,
                   random.Random(0)) == A3
    assert resolve("${group.filter(all_phones,client=acme and model=s10)}", c,
                   random.Random(0)) == "p2"


def test_group_variable_errors() -> None:
    book = GroupBook.with_defaults()
    with pytest.raises(VariableError) as info:
        resolve("hi ${group.nope.count}", ctx(book), random.Random(0))
    assert info.value.offset == 3
    assert info.value.reason.startswith("${group.nope.count}: in 'nope' at offset 0: unknown "
                                        "group 'nope' (groups: active, warming, all_phones")
    with pytest.raises(VariableError) as info:
        resolve("${group.warming.random}", ctx(book), random.Random(0))
    assert info.value.reason == ("${group.warming.random}: group 'warming' has no members, so "
                                 "there is none to pick")
    with pytest.raises(VariableError) as info:
        resolve("${group.active.count}", ctx(None), random.Random(0))
    assert info.value.reason == "${group.active.count}: no groups configured"


# --- scopes ---------------------------------------------------------------------------


def test_group_scopes() -> None:
    book = GroupBook.with_defaults()
    book.add_member("active", A3)
    book.add_member("active", A1)
    book.create("rack", "phone")
    book.add_member("rack", "p2")
    book.add_member("rack", "p1")
    assert targets("group:rack", PHONES, ACCOUNTS, book) == [("p2", None), ("p1", None)]
    assert targets("group:active", PHONES, ACCOUNTS, book) == [
        ("p3", "clipshare.account1"), ("p1", "clipshare.account1")]
    assert targets("group:all_phones-rack", PHONES, ACCOUNTS, book) == [("p3", None)]
    assert targets(" group:platform:clipshare & active", PHONES, ACCOUNTS, book) == [
        ("p1", "clipshare.account1"), ("p3", "clipshare.account1")]
    # Without a book nothing changes: phone scopes as before, group: unknown.
    assert targets("phone:p1", PHONES, ACCOUNTS, book) == [("p1", None)]
    with pytest.raises(ScopeError):
        targets("group:rack", PHONES, ACCOUNTS)


def test_unknown_group_in_scope_has_offset() -> None:
    book = GroupBook.with_defaults()
    with pytest.raises(ScopeError) as info:
        targets("group:active&ghost", PHONES, ACCOUNTS, book)
    assert info.value.offset == 13
    assert info.value.reason.startswith("unknown group 'ghost'")
    with pytest.raises(ScopeError) as info:
        targets("group:active&", PHONES, ACCOUNTS, book)
    assert (info.value.offset, info.value.reason) == (13, "expected a group name, found the end")
    with pytest.raises(ScopeError) as info:
        targets("group:active warming", PHONES, ACCOUNTS, book)
    assert info.value.offset == 13


def test_schema_is_valid_sqlite() -> None:
    db = sqlite3.connect(":memory:")
    db.executescript("CREATE TABLE clients (client_id INTEGER PRIMARY KEY);"
                     + (SCHEMA_DIR / "v4.sql").read_text())
    assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")} >= {
        "groups", "group_memberships", "group_relationships"}


async def test_a_book_is_read_back_as_saved(tmp_path, engine) -> None:
    """The group tables (v4, v13) on either database engine: a book with a hierarchy,
    members in their order and rules comes back as it was saved, and a client's book is
    its own."""
    from actors.store.farm_db import FarmDB

    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    try:
        book = GroupBook.with_defaults()
        book.create("vip", "phone")
        for serial in ("p2", "p1"):
            book.add_member("vip", serial)
        book.create("front", "phone", parent="vip")
        book.add_member("front", "p1")
        book.create("banned", "phone")
        book.excludes("vip", "banned")
        await db.save_group_book(book)
        back = await db.group_book()
        assert back.groups["vip"].members == ["p2", "p1"]
        assert back.groups["front"].parent == "vip" and back.groups["front"].members == ["p1"]
        assert [str(r) for r in back.rules] == [str(r) for r in book.rules]
        acme = await db.upsert_client("Acme")
        assert "vip" not in (await db.group_book(acme)).groups
    finally:
        await db.close()
