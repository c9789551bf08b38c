"""sequences.numbers.parse_count: counts as apps show them, per locale."""

from __future__ import annotations

import pytest

from protocol.errors import ValidationError
from sequences.numbers import LOCALES, check_locale, parse_count


@pytest.mark.parametrize("text, locale, expected", [
    ("987", "en", 987),
    ("0", "en", 0),
    ("1,234", "en", 1234),
    ("12,345,678", "en", 12_345_678),
    ("1 234", "en", 1234),
    ("1\u00a0234", "fr", 1234),
    ("1\u202f234", "fr", 1234),          # narrow no-break space (fr grouping)
    ("12\u202f345\u202f678", "fr", 12_345_678),
    ("1.234", "de", 1234),
    ("1'234", "de", 1234),
    ("1.2K", "en", 1200),
    ("1.2k", "en", 1200),
    ("12K", "en", 12_000),
    ("1.25K", "en", 1250),
    ("3.4M", "en", 3_400_000),
    ("1.2B", "en", 1_200_000_000),
    ("3,4 M", "fr", 3_400_000),
    ("3,4 M", "de", 3_400_000),
    ("3,4\u00a0M", "fr", 3_400_000),
    ("1,2 Mio.", "de", 1_200_000),
    ("2 Mrd.", "de", 2_000_000_000),
    ("12,5 k", "fr", 12_500),
    ("15 mil", "es", 15_000),
    ("1,5 mi", "pt", 1_500_000),
    ("2,3 Mln", "it", 2_300_000),
    ("12.5万", "zh", 125_000),
    ("3.1亿", "zh", 310_000_000),
    ("12.5萬", "zh", 125_000),
    ("1.2万", "ja", 12_000),
    ("2億", "ja", 200_000_000),
    ("3.5만", "ko", 35_000),
    ("1억", "ko", 100_000_000),
    ("12K followers", "en", 12_000),
    ("987 followers", "en", 987),
    ("1,234 likes", "en", 1234),
    ("12.5万粉丝", "zh", 125_000),
    ("987 Mitglieder", "de", 987),       # "Mi..." runs on into a word: no multiplier
    ("  42  ", "en", 42),
    ("987.", "en", 987),
    ("1.0K", "en", 1000),
])
def test_counts(text: str, locale: str, expected: int) -> None:
    assert parse_count(text, locale) == expected


@pytest.mark.parametrize("text, locale", [
    ("", "en"), ("   ", "en"), ("abc", "en"), ("followers 12", "en"), ("-5", "en"),
    ("1.5", "en"),            # not a whole number without a multiplier
    ("1,234", "fr"),          # fr: 1.234
    ("1,234", "pt-BR"),
    ("1,23", "en"),           # not groups of three
    ("1,2345", "en"),
    ("12 34", "en"),          # two numbers
    ("1.2.3", "en"),
    ("1.2345K", "en"),        # 1234.5
    ("12abc", "en"),
    ("1.2K5", "en"),
    ("K12", "en"),
    ("١٢٣", "en"),            # digits of another script: OCR of the demo never gives them
])
def test_not_counts(text: str, locale: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_count(text, locale)
    assert info.value.where == "count"
    assert info.value.reason == f"{text!r} is not a count"


def test_not_text() -> None:
    with pytest.raises(ValidationError):
        parse_count(None, "en")  # type: ignore[arg-type]


def test_locales() -> None:
    for locale in ("en", "fr", "de", "es", "pt", "it", "ja", "zh", "ko"):
        assert locale in LOCALES
    assert check_locale("pt_BR") == "pt" and check_locale("zh-Hans") == "zh"
    with pytest.raises(ValidationError) as info:
        parse_count("12", "xx")
    assert info.value.where == "locale" and "known: en" in info.value.reason
