"""Android key codes (android.view.KeyEvent) by name, and name<->code lookup.

Owns the one table used by the device driver (``key("HOME")``) and by virtual phones
(``input keyevent KEYCODE_HOME``).
"""

from __future__ import annotations

KEYCODES: dict[str, int] = {
    "UNKNOWN": 0, "SOFT_LEFT": 1, "SOFT_RIGHT": 2, "HOME": 3, "BACK": 4, "CALL": 5,
    "ENDCALL": 6, "STAR": 17, "POUND": 18, "DPAD_UP": 19, "DPAD_DOWN": 20, "DPAD_LEFT": 21,
    "DPAD_RIGHT": 22, "DPAD_CENTER": 23, "VOLUME_UP": 24, "VOLUME_DOWN": 25, "POWER": 26,
    "CAMERA": 27, "CLEAR": 28, "COMMA": 55, "PERIOD": 56, "ALT_LEFT": 57, "ALT_RIGHT": 58,
    "SHIFT_LEFT": 59, "SHIFT_RIGHT": 60, "TAB": 61, "SPACE": 62, "SYM": 63, "EXPLORER": 64,
    "ENVELOPE": 65, "ENTER": 66, "DEL": 67, "GRAVE": 68, "MINUS": 69, "EQUALS": 70,
    "LEFT_BRACKET": 71, "RIGHT_BRACKET": 72, "BACKSLASH": 73, "SEMICOLON": 74,
    "APOSTROPHE": 75, "SLASH": 76, "AT": 77, "NUM": 78, "HEADSETHOOK": 79, "FOCUS": 80,
    "PLUS": 81, "MENU": 82, "NOTIFICATION": 83, "SEARCH": 84, "MEDIA_PLAY_PAUSE": 85,
    "MEDIA_STOP": 86, "MEDIA_NEXT": 87, "MEDIA_PREVIOUS": 88, "PAGE_UP": 92,
    "PAGE_DOWN": 93, "ESCAPE": 111, "FORWARD_DEL": 112, "CTRL_LEFT": 113,
    "CTRL_RIGHT": 114, "MOVE_HOME": 122, "MOVE_END": 123, "INSERT": 124, "VOLUME_MUTE": 164,
    "APP_SWITCH": 187, "SLEEP": 223, "WAKEUP": 224, "CUT": 277, "COPY": 278, "PASTE": 279,
}
KEYCODES.update({str(d): 7 + d for d in range(10)} | {f"NUM_{d}": 7 + d for d in range(10)})
KEYCODES.update({chr(c): 29 + c - ord("A") for c in range(ord("A"), ord("Z") + 1)})
# digits as names ("KEYCODE_0") must not shadow numeric codes ("3" == HOME), see key_code().
_DIGIT_NAMES = {f"KEYCODE_{d}": 7 + d for d in range(10)}

KEY_NAMES: dict[int, str] = {}
for _name, _code in KEYCODES.items():
    if not _name.isdigit() and not _name.startswith("NUM_"):
        KEY_NAMES.setdefault(_code, f"KEYCODE_{_name}")


def key_code(key: int | str) -> int:
    """Code for 3, "3", "HOME", "KEYCODE_HOME" or "home"; ValueError for an unknown key."""
    if isinstance(key, int):
        if key < 0:
            raise ValueError(f"key code {key} is negative")
        return key
    text = key.strip()
    if text.isdigit():
        return int(text)
    upper = text.upper()
    if upper in _DIGIT_NAMES:
        return _DIGIT_NAMES[upper]
    name = upper[len("KEYCODE_"):] if upper.startswith("KEYCODE_") else upper
    if name in KEYCODES and not name.isdigit():
        return KEYCODES[name]
    raise ValueError(f"unknown key {key!r}: use a number or a name such as HOME, BACK, ENTER")


def key_name(code: int) -> str:
    return KEY_NAMES.get(code, f"KEYCODE_{code}")
