"""Scopes: phone and account selectors parsed (with error offsets) and resolved against phone
and account rows; the scope-aware functions over the same rows."""

from __future__ import annotations

import random

import pytest

from protocol.errors import ScopeError, ValidationError
from sequences.scope_functions import evaluate_function, is_scope_function
from sequences.scopes import (
    AccountItem,
    AccountScope,
    AccountTarget,
    PhoneScope,
    ScopeItem,
    parse_phone_scope,
    parse_scope,
    targets,
)

PHONES = [
    {"serial": "127.0.0.1:40123", "node": "rack1", "tags": ["phone1"]},
    {"serial": "127.0.0.1:40124", "node": "rack1", "tags": ["phone2", "front"]},
    {"serial": "R58M123ABC", "node": "rack2", "tags": ["phone3", "front"]},
    {"serial": "emulator-5554", "node": "rack2", "tags": []},
]
ALL = [p["serial"] for p in PHONES]


def resolve(text: str) -> list[str]:
    return parse_phone_scope(text).resolve(PHONES)


def scope_error(text: str, phones: list[dict] | None = None) -> ScopeError:
    with pytest.raises(ScopeError) as info:
        parse_phone_scope(text).resolve(PHONES if phones is None else phones)
    return info.value


# --- resolution -----------------------------------------------------------------------


def test_all_keeps_phone_list_order() -> None:
    assert resolve("phone:all") == ALL


def test_single_serial_with_colon_and_dots() -> None:
    assert resolve("phone:127.0.0.1:40124") == ["127.0.0.1:40124"]


def test_list_keeps_written_order_and_drops_duplicates() -> None:
    assert resolve("phone:R58M123ABC,127.0.0.1:40123,R58M123ABC") == ["R58M123ABC", "127.0.0.1:40123"]


def test_all_except() -> None:
    assert resolve("phone:all-127.0.0.1:40123,emulator-5554") == ["127.0.0.1:40124", "R58M123ABC"]


def test_alias_tag_matches() -> None:
    assert resolve("phone:phone3,phone1") == ["R58M123ABC", "127.0.0.1:40123"]


def test_tag_may_match_several_phones() -> None:
    assert resolve("phone:front") == ["127.0.0.1:40124", "R58M123ABC"]
    assert resolve("phone:all-front") == ["127.0.0.1:40123", "emulator-5554"]


def test_serial_wins_over_a_tag_of_the_same_name() -> None:
    phones = [{"serial": "x", "node": "n", "tags": []}, {"serial": "y", "node": "n", "tags": ["x"]}]
    assert parse_phone_scope("phone:x").resolve(phones) == ["x"]


def test_node_and_nodes() -> None:
    assert resolve("node:rack2") == ["R58M123ABC", "emulator-5554"]
    assert resolve("node:rack2,rack1") == ALL  # phone-list order, not node order


def test_surrounding_and_item_spaces_are_ignored() -> None:
    assert resolve("  phone:phone1, phone2 ") == ["127.0.0.1:40123", "127.0.0.1:40124"]


def test_parse_result_is_plain_data() -> None:
    assert parse_phone_scope("phone:a,b") == PhoneScope(
        "phone:a,b", "phones", (ScopeItem("a", 6), ScopeItem("b", 8)))
    assert parse_phone_scope("phone:all").kind == "all"
    assert parse_phone_scope("node:n").items == (ScopeItem("n", 5),)


def test_resolve_on_empty_farm() -> None:
    assert parse_phone_scope("phone:all").resolve([]) == []


# --- errors ---------------------------------------------------------------------------


def test_empty_item_offset_and_message() -> None:
    err = scope_error("phone:a,,b")
    assert (err.offset, err.reason) == (8, "empty phone name")
    assert str(err) == "scope 'phone:a,,b': offset 8: empty phone name"
    assert isinstance(err, ValidationError)


def test_trailing_comma() -> None:
    assert scope_error("phone:phone1,").offset == 13


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_scope(text: str) -> None:
    err = scope_error(text)
    assert err.offset == 0 and "empty scope" in err.reason


def test_unknown_prefix() -> None:
    err = scope_error("group:x")
    assert err.offset == 0 and "unknown scope kind 'group'" in err.reason


def test_missing_prefix() -> None:
    err = scope_error("127.0.0.1:40123")  # looks like a prefix '127.0.0.1'
    assert err.offset == 0 and "unknown scope kind" in err.reason
    err = scope_error("all")
    assert err.offset == 0 and "missing scope kind" in err.reason


def test_empty_list_after_prefix() -> None:
    assert scope_error("phone:").offset == 6
    assert scope_error("node:").offset == 5


def test_unknown_serial_named_with_offset() -> None:
    err = scope_error("phone:phone1,NOPE,phone2")
    assert err.offset == 13 and "'NOPE'" in err.reason
    assert "offset 13" in str(err)


def test_unknown_serial_in_exclusion_is_an_error() -> None:
    err = scope_error("phone:all-phone1,typo")
    assert err.offset == 17 and "'typo'" in err.reason


def test_all_dash_with_nothing_after() -> None:
    err = scope_error("phone:all-")
    assert err.offset == 10 and "all-" in err.reason
    assert scope_error("phone:all-  ").offset == 10


def test_all_dash_with_empty_item() -> None:
    assert scope_error("phone:all-a,,b").offset == 12


def test_all_mixed_with_names() -> None:
    err = scope_error("phone:phone1,all")
    assert err.offset == 13 and "'all'" in err.reason


def test_unknown_node() -> None:
    err = scope_error("node:rack1,rack9")
    assert err.offset == 11 and "'rack9'" in err.reason


def test_space_inside_a_name() -> None:
    err = scope_error("phone:phone1 phone2")
    assert err.offset == 12


def test_offsets_count_leading_spaces() -> None:
    assert scope_error("  phone:a,,b").offset == 10
    assert scope_error("  bogus:x").offset == 2


def test_not_a_string() -> None:
    with pytest.raises(ScopeError):
        parse_phone_scope(None)  # type: ignore[arg-type]


# --- client selector ------------------------------------------------------------------

FARM = [
    {"serial": "S1", "node": "rack1", "tags": ["phone1"], "client": "FanVue",
     "profile": {"gender": "male"}},
    {"serial": "S2", "node": "rack1", "tags": ["phone2"], "client": "Acme",
     "profile": {"gender": "female"}},
    {"serial": "S3", "node": "rack2", "tags": ["phone3"], "client": "fanvue",
     "profile": {"gender": "Male"}},
    {"serial": "S5", "node": "rack2", "tags": ["phone5"]},
]
ACCOUNTS = [
    {"serial": "S1", "platform": "tiktok", "account_number": "account1", "username": "a"},
    {"serial": "S1", "platform": "instagram", "account_number": "account2", "username": "b"},
    {"serial": "S1", "platform": "tiktok", "account_number": "account3", "username": "c"},
    {"serial": "S3", "platform": "instagram", "account_number": "account1", "username": "d"},
    {"serial": "S5", "platform": "tiktok", "account_number": "account1", "username": "e"},
]


def farm_targets(text: str) -> list[tuple[str, str | None]]:
    return targets(text, FARM, ACCOUNTS)


def farm_error(text: str) -> ScopeError:
    with pytest.raises(ScopeError) as info:
        farm_targets(text)
    return info.value


def test_client_selector_is_case_insensitive() -> None:
    assert parse_phone_scope("phone:client:FanVue").resolve(FARM) == ["S1", "S3"]
    assert parse_phone_scope("phone:client:ACME").resolve(FARM) == ["S2"]


def test_client_combines_with_names_and_all_except() -> None:
    assert parse_phone_scope("phone:phone5,client:acme").resolve(FARM) == ["S5", "S2"]
    assert parse_phone_scope("phone:all-client:fanvue").resolve(FARM) == ["S2", "S5"]


def test_unknown_client_offset_points_at_the_name() -> None:
    with pytest.raises(ScopeError) as info:
        parse_phone_scope("phone:phone1,client:Nope").resolve(FARM)
    assert info.value.offset == 20 and "unknown client 'Nope'" in info.value.reason


def test_empty_client_name() -> None:
    with pytest.raises(ScopeError) as info:
        parse_phone_scope("phone:client:")
    assert info.value.offset == 13


# --- spec 15.2.1 / 15.2.2 examples -----------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("phone:phone1", [("S1", None)]),
    ("phone:all", [("S1", None), ("S2", None), ("S3", None), ("S5", None)]),
    ("phone:phone1,phone5,phone3", [("S1", None), ("S5", None), ("S3", None)]),
    ("phone:all-phone2,phone3", [("S1", None), ("S5", None)]),
    ("phone:client:FanVue", [("S1", None), ("S3", None)]),
    ("account:tiktok.account1@phone1", [("S1", "tiktok.account1")]),
    ("account:tiktok.all@phone1", [("S1", "tiktok.account1"), ("S1", "tiktok.account3")]),
    ("account:all@phone1",
     [("S1", "tiktok.account1"), ("S1", "instagram.account2"), ("S1", "tiktok.account3")]),
    ("account:tiktok.account1,instagram.account2@phone1",
     [("S1", "tiktok.account1"), ("S1", "instagram.account2")]),
    ("account:instagram.account2,tiktok.account1@phone1",  # written order on one phone
     [("S1", "instagram.account2"), ("S1", "tiktok.account1")]),
    ("account:all-tiktok.account3@phone1", [("S1", "tiktok.account1"), ("S1", "instagram.account2")]),
    ("account:all-tiktok.all@phone1,phone3",
     [("S1", "instagram.account2"), ("S3", "instagram.account1")]),
    ("account:tiktok.account1@all", [("S1", "tiktok.account1"), ("S5", "tiktok.account1")]),
    ("account:tiktok.all@phone1,phone5",
     [("S1", "tiktok.account1"), ("S1", "tiktok.account3"), ("S5", "tiktok.account1")]),
    ("account:tiktok.all@phone:all",
     [("S1", "tiktok.account1"), ("S1", "tiktok.account3"), ("S5", "tiktok.account1")]),
    ("account:instagram.all@phone:client:FanVue",
     [("S1", "instagram.account2"), ("S3", "instagram.account1")]),
    ("account:TikTok.all@node:rack2", [("S5", "tiktok.account1")]),
    ("account:tiktok.all@all-phone1", [("S5", "tiktok.account1")]),
    ("account:tiktok.all@phone2", []),  # the platform exists, just not on that phone
    (" account: tiktok.account1 , instagram.account2 @ phone1 ",
     [("S1", "tiktok.account1"), ("S1", "instagram.account2")]),
])
def test_spec_examples(text: str, expected: list) -> None:
    assert farm_targets(text) == expected


def test_account_scope_parses_to_plain_data() -> None:
    scope = parse_scope("account:tiktok.account1,instagram.all@phone1")
    assert isinstance(scope, AccountScope) and scope.kind == "accounts"
    assert scope.items == (AccountItem("tiktok", "account1", 8), AccountItem("instagram", None, 24))
    assert scope.phones == PhoneScope(scope.text, "phones", (ScopeItem("phone1", 38),))
    assert isinstance(parse_scope("phone:all"), PhoneScope)


def test_account_targets_carry_serial_platform_and_number() -> None:
    scope = parse_scope("account:tiktok.account1@phone5")
    assert isinstance(scope, AccountScope)
    [target] = scope.resolve(FARM, ACCOUNTS)
    assert target == AccountTarget("S5", "tiktok", "account1")
    assert (target.ref, str(target)) == ("tiktok.account1", "tiktok.account1@S5")


def test_account_on_a_phone_missing_from_the_farm_is_ignored() -> None:
    stray = ACCOUNTS + [{"serial": "GONE", "platform": "tiktok", "account_number": "account1"}]
    assert targets("account:tiktok.account1@all", FARM, stray) == [
        ("S1", "tiktok.account1"), ("S5", "tiktok.account1")]


# --- account scope errors ---------------------------------------------------------------


@pytest.mark.parametrize("text, offset, needle", [
    ("account:tiktok.account1", 23, "missing '@PHONES'"),
    ("account:@all", 8, "empty account list"),
    ("account:tiktok.account1@", 24, "empty phone list after '@'"),
    ("account:tiktok.account1@ ", 24, "empty phone list after '@'"),
    ("account:tiktok.account1,@phone1", 24, "empty account name"),
    ("account:tiktok.account1,,instagram.all@phone1", 24, "empty account name"),
    ("account:tiktok.account1@phone1,", 31, "empty phone name"),
    ("account:tiktok.all@phone1,,phone5", 26, "empty phone name"),
    ("account:tiktok@phone1", 8, "expected PLATFORM.ACCOUNT"),
    ("account:.account1@phone1", 8, "empty platform"),
    ("account:tiktok.@phone1", 15, "empty account"),
    ("account:all-@phone1", 12, "nothing after 'all-'"),
    ("account:tiktok.all,all@phone1", 19, "'all' cannot be combined"),
    ("account:tiktok.all@phone1@phone2", 25, "second '@'"),
    ("account:tiktok.all@account:all@x", 30, "second '@'"),
    ("account:tiktok.all@account:all", 19, "cannot be an account scope"),
    ("account:tiktok.all@phone:", 25, "empty phone list after 'phone:'"),
    ("account:tiktok.all@phone:client:", 32, "empty client name"),
    # resolution: unknown phone, platform, account, account not on the phone named
    ("account:tiktok.all@phone1,phone9", 26, "unknown phone 'phone9'"),
    ("account:tiktok.all@phone:client:Nope", 32, "unknown client 'Nope'"),
    ("account:tiktk.all@phone1", 8, "unknown platform 'tiktk'"),
    ("account:tiktok.account1,snapchat.account1@all", 24, "unknown platform 'snapchat'"),
    ("account:tiktok.account9@all", 15, "unknown account tiktok.account9"),
    ("account:all-tiktok.account9@all", 19, "unknown account tiktok.account9"),
    ("account:tiktok.account3@phone5", 8, "phone 'phone5' has no account tiktok.account3"),
    ("account:tiktok.account1,instagram.account2@phone1,phone5", 24,
     "phone 'phone5' has no account instagram.account2 (it has: tiktok.account1)"),
    ("account:tiktok.account3@phone2", 8, "(it has: no accounts)"),
    ("account:tiktok.account3@phone:client:Acme", 8,
     "no phone of client 'Acme' has account tiktok.account3 (it has: no accounts)"),
    ("account:instagram.account2@phone:client:FanVue,phone5", 8,
     "phone 'phone5' has no account instagram.account2"),
    ("account:tiktok.account3@node:rack2", 8,
     "none of the selected phones has account tiktok.account3 (it is on: S1)"),
    ("account:tiktok.account3@all-phone1", 8, "none of the selected phones"),
])
def test_account_scope_errors(text: str, offset: int, needle: str) -> None:
    err = farm_error(text)
    assert err.offset == offset, err
    assert needle in err.reason, err
    assert err.text == text


def test_account_scope_is_refused_where_phones_are_expected() -> None:
    with pytest.raises(ScopeError) as info:
        parse_phone_scope("  account:tiktok.all@phone1", why="actions take a phone scope")
    assert info.value.offset == 2
    assert info.value.reason == "account scopes select accounts; actions take a phone scope"


def test_unknown_kind_hint_lists_account() -> None:
    assert "'account:'" in scope_error("group:x").reason


# --- scope-aware functions (spec 15.2.3) ------------------------------------------------


def evaluate(text: str, seed: int = 7):
    return evaluate_function(text, FARM, ACCOUNTS, random.Random(seed))


def function_error(text: str) -> ScopeError:
    with pytest.raises(ScopeError) as info:
        evaluate(text)
    return info.value


def test_random_account_is_one_of_the_scope_and_follows_the_seed() -> None:
    text = "random.account from account:tiktok.all@phone:all"
    picks = {evaluate(text, seed) for seed in range(40)}
    assert picks == {"tiktok.account1@S1", "tiktok.account3@S1", "tiktok.account1@S5"}
    assert evaluate(text, 3) == evaluate(text, 3)
    expected = str(random.Random(3).choice(
        [AccountTarget("S1", "tiktok", "account1"), AccountTarget("S1", "tiktok", "account3"),
         AccountTarget("S5", "tiktok", "account1")]))
    assert evaluate(text, 3) == expected


def test_count_accounts() -> None:
    assert evaluate("count.accounts in account:instagram.all@phone:client:FanVue") == 2
    assert evaluate("count.accounts in account:all@all") == 5
    assert evaluate("count.accounts in account:tiktok.all@phone2") == 0


@pytest.mark.parametrize("text, serials", [
    ("filter.phones where profile.gender=male", ["S1", "S3"]),  # case-insensitive value
    ("filter.phones where profile.gender != male", ["S2", "S5"]),  # missing field: != holds
    ("filter.phones where profile.gender=male and client!=fanvue", []),
    ("filter.phones where profile.gender=male and node=rack2", ["S3"]),
    ("filter.phones where tags=phone2", ["S2"]),  # a list field matches on any element
    ("filter.phones where client == 'Acme'", ["S2"]),
    ("  filter.phones   where   node=rack1  ", ["S1", "S2"]),
])
def test_filter_phones(text: str, serials: list[str]) -> None:
    assert evaluate(text) == serials


@pytest.mark.parametrize("text, offset, needle", [
    ("bogus.fn from x", 0, "unknown function 'bogus.fn'"),
    ("  random.accounts from account:all@all", 2, "unknown function"),
    ("", 0, "empty function"),
    ("count.accounts of account:all@all", 15, "expected 'in'"),
    ("count.accounts", 14, "expected 'in'"),
    ("random.account from", 19, "nothing after 'from'"),
    ("random.account from phone:all", 20, "takes an account scope"),
    ("count.accounts in account:tiktok.account9@all", 33, "unknown account tiktok.account9"),
    ("count.accounts in account:tiktok.all@phone1,,phone5", 44, "empty phone name"),
    ("random.account from account:tiktok.all@phone2", 20, "no account matches"),
    ("random.account from account:tiktok.all", 38, "missing '@PHONES'"),
    ("filter.phones where profile.gendr=male", 20, "no phone has field 'profile.gendr'"),
    ("filter.phones where gender", 20, "expected FIELD=VALUE"),
    ("filter.phones where =male", 20, "missing field name"),
    ("filter.phones where node=", 25, "missing value"),
    ("filter.phones where node=rack1 and", 34, "empty condition"),
    ("filter.phones where node=rack1 and profile..x=1", 35, "empty key"),
])
def test_function_errors(text: str, offset: int, needle: str) -> None:
    err = function_error(text)
    assert err.offset == offset, err
    assert needle in err.reason, err
    assert err.text == text


def test_functions_are_recognized_by_name() -> None:
    assert is_scope_function("random.account from account:all@all")
    assert is_scope_function(" filter.phones where a=b")
    assert not is_scope_function("phone.serial")
    assert not is_scope_function("")


def test_account_named_for_a_shared_tag_needs_one_phone_with_it() -> None:
    phones = [{"serial": "A", "tags": ["front"]}, {"serial": "B", "tags": ["front"]}]
    rows = [{"serial": "B", "platform": "tiktok", "account_number": "account1"},
            {"serial": "A", "platform": "tiktok", "account_number": "account2"}]
    assert targets("account:tiktok.account1@front", phones, rows) == [("B", "tiktok.account1")]
    with pytest.raises(ScopeError) as info:
        targets("account:tiktok.account1,tiktok.account9@front", phones,
                rows + [{"serial": "X", "platform": "tiktok", "account_number": "account9"}])
    assert info.value.offset == 24
    assert info.value.reason.startswith("no phone tagged 'front' has account tiktok.account9")
