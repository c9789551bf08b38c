"""Phone scopes: parsing (with error offsets) and resolution against a phone list."""

from __future__ import annotations

import pytest

from protocol.errors import ScopeError, ValidationError
from sequences.scopes import PhoneScope, ScopeItem, parse_phone_scope

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
