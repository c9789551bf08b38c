"""A readable diff of two versions of one definition.

The changes are an RFC 6902 JSON Patch from the older content to the newer (jsonpatch: the
standard form, which a tool can apply), each ``replace``/``remove`` also naming the value it
replaces (``was``). A screen's files (its crops and screenshot, base64) are left out of the
patch and listed by name instead, and its regions that moved are listed with both boxes.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer


def diff_contents(kind: str, old: Any, new: Any) -> dict[str, Any]:
    """``{"changes": [...], "files"?: {"added", "removed"}, "regions"?: [...]}``."""
    if kind == "screen":
        old_files = (old or {}).get("files") or {}
        new_files = (new or {}).get("files") or {}
        old = {k: v for k, v in (old or {}).items() if k != "files"}
        new = {k: v for k, v in (new or {}).items() if k != "files"}
    changes = []
    for op in jsonpatch.make_patch(old, new).patch:
        if op["op"] in ("replace", "remove"):
            op = {**op, "was": jsonpointer.resolve_pointer(old, op["path"], None)}
        changes.append(op)
    out: dict[str, Any] = {"changes": changes}
    if kind == "screen":
        out["files"] = {"added": sorted(set(new_files) - set(old_files)),
                        "removed": sorted(set(old_files) - set(new_files))}
        out["regions"] = region_changes(old, new)
    return out


def _regions(content: dict) -> dict[str, dict]:
    screen = content.get("screen") or {}
    return {r.get("name"): r for r in screen.get("validation_regions") or []}


def region_changes(old: dict, new: dict) -> list[dict[str, Any]]:
    """Per region name: moved (both boxes), added, removed, or its crop changed."""
    before, after = _regions(old), _regions(new)
    out = []
    for name in sorted(set(before) | set(after), key=str):
        a, b = before.get(name), after.get(name)
        if a is None:
            out.append({"region": name, "change": "added", "to": b.get("coordinates"),
                        "reference_to": b.get("reference")})
        elif b is None:
            out.append({"region": name, "change": "removed", "from": a.get("coordinates"),
                        "reference_from": a.get("reference")})
        elif a.get("coordinates") != b.get("coordinates"):
            out.append({"region": name, "change": "moved", "from": a.get("coordinates"),
                        "to": b.get("coordinates"), "reference_from": a.get("reference"),
                        "reference_to": b.get("reference")})
        elif a.get("reference") != b.get("reference"):
            out.append({"region": name, "change": "crop", "reference_from": a.get("reference"),
                        "reference_to": b.get("reference")})
    return out
