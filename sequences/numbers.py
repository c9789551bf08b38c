"""Counts as apps show them, read back to integers: ``1,234``, ``1.2K``, ``3,4 M``, ``12.5万``.

Owns `parse_count`, what a ``read_number`` step does with the text OCR read off a profile or
post screen. A count is a number with optional grouping and decimals, then optionally a
multiplier (``K``, ``M``, ``B``, ``Mio.``, ``mil``, ``万``, ``亿``, ``만`` ...), then optionally
words, which are dropped (``12K followers``). Which mark is the decimal one depends on the
locale: ``.`` for en, ja, zh, ko; ``,`` for fr, de, es, pt, it (``3,4 M`` is 3 400 000 there,
``1.234`` is 1234 in de). Grouping marks (``,``/``.``, a space, a no-break or narrow no-break
space, ``'``) must separate groups of three digits; the result must be a whole number
(``1.5`` with no multiplier is not a count). Anything else raises
``ValidationError("count", "'...' is not a count")``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from protocol.errors import ValidationError

# Locales whose decimal mark is a comma; every other known one uses a dot.
_COMMA_DECIMAL = frozenset({"fr", "de", "es", "pt", "it"})
LOCALES = ("en", "fr", "de", "es", "pt", "it", "ja", "zh", "ko")

# Multipliers, compared case-insensitively for Latin ones. Longest first so "Mrd" wins over
# "M". A Latin multiplier must not run on into a letter ("987 Mitglieder" is 987).
_MULTIPLIERS: dict[str, int] = {
    "k": 10**3, "m": 10**6, "b": 10**9, "bn": 10**9,
    "tsd": 10**3, "mio": 10**6, "mrd": 10**9, "md": 10**9, "mds": 10**9,   # de, fr
    "mil": 10**3, "mi": 10**6, "bi": 10**9, "mln": 10**6, "mld": 10**9,     # es/pt, it
    "千": 10**3, "万": 10**4, "萬": 10**4, "亿": 10**8, "億": 10**8,         # zh, ja
    "천": 10**3, "만": 10**4, "억": 10**8,                                    # ko
}
_SUFFIX = re.compile("(?i)(" + "|".join(sorted(map(re.escape, _MULTIPLIERS), key=len,
                                              reverse=True)) + r")\.?")
# Spaces apps put between groups or before a multiplier: space, no-break, narrow no-break, thin.
_SPACES = "\u0020\u00a0\u202f\u2009"
_NUMBER = re.compile(rf"[0-9][0-9.,'’{_SPACES}]*")


def _fail(text: str) -> ValidationError:
    return ValidationError("count", f"{text!r} is not a count")


def check_locale(locale: str) -> str:
    """The language of ``locale`` (``pt-BR`` and ``pt_BR`` are ``pt``); ValidationError for
    one this module does not know."""
    lang = re.split(r"[-_]", locale.strip(), maxsplit=1)[0].lower() if isinstance(locale, str) else ""
    if lang not in LOCALES:
        raise ValidationError("locale", f"unknown locale {locale!r} (known: {', '.join(LOCALES)})")
    return lang


def _grouped(digits: str, group: str) -> str | None:
    """``digits`` with its grouping marks removed, or None when they do not separate groups
    of three (``1,23`` is no grouped number)."""
    parts = re.split(f"[{re.escape(group)}]", digits)
    if len(parts) == 1:
        return digits if digits.isdigit() else None
    if not (1 <= len(parts[0]) <= 3 and parts[0].isdigit()
            and all(len(p) == 3 and p.isdigit() for p in parts[1:])):
        return None
    return "".join(parts)


def parse_count(text: str, locale: str = "en") -> int:
    """The whole number ``text`` shows (see the module's docstring for the forms)."""
    lang = check_locale(locale)
    if not isinstance(text, str):
        raise _fail(repr(text))
    s = text.strip(_SPACES + "\t\r\n")
    m = _NUMBER.match(s)
    if m is None:
        raise _fail(text)
    raw = m.group().rstrip(_SPACES + "'’")
    rest = s[len(raw):]
    decimal, group = ((",", "." + _SPACES + "'’") if lang in _COMMA_DECIMAL
                      else (".", "," + _SPACES + "'’"))
    if raw[-1] in ".,":   # "987." / "1,": a sentence's punctuation, not a decimal
        rest, raw = raw[-1] + rest, raw[:-1]
    whole, _, fraction = raw.rpartition(decimal) if decimal in raw else (raw, "", "")
    if decimal in raw and not fraction.isdigit():
        raise _fail(text)
    digits = _grouped(whole, group)
    if digits is None:
        raise _fail(text)
    multiplier = 1
    tail = rest.lstrip(_SPACES)
    if (sm := _SUFFIX.match(tail)) is not None:
        after = tail[sm.end():]
        latin = sm.group(1).isascii()
        if not (latin and after[:1].isalpha()):
            multiplier = _MULTIPLIERS[sm.group(1).lower()]
            tail = after
    elif tail[:1].isdigit():
        raise _fail(text)
    # What follows must be words, not more of a number ("12 34", "1.2K5").
    if tail[:1].isdigit() or (tail and rest[:1] not in _SPACES and multiplier == 1
                              and tail[:1].isalnum()):
        raise _fail(text)
    try:
        value = Decimal(f"{digits}.{fraction or '0'}") * multiplier
    except InvalidOperation:
        raise _fail(text) from None
    if value != value.to_integral_value():
        raise _fail(text)
    return int(value)
