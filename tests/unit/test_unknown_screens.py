"""The unknown-screens queue: stored once per distinct screen, idempotent, durable."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from actors.coordinator.unknown_screens import UnknownScreenQueue
from protocol.errors import FarmError, ValidationError
from registry.fingerprint import SAME_SCREEN_BITS, hash_distance, perceptual_hash


def screen_png(label: str, noise: int = 0) -> bytes:
    frame = np.full((2400, 1080, 3), 240, np.uint8)
    cv2.rectangle(frame, (80, 860), (1000, 1540), (255, 255, 255), -1)
    cv2.putText(frame, label, (120, 1000), cv2.FONT_HERSHEY_SIMPLEX, 3, (30, 30, 30), 6)
    if label.startswith("B"):
        cv2.rectangle(frame, (0, 0), (1080, 700), (40, 40, 200), -1)
    if noise:
        rng = np.random.default_rng(noise)
        frame = np.clip(frame.astype(int) + rng.integers(-noise, noise, frame.shape), 0, 255).astype(np.uint8)
    return cv2.imencode(".png", frame)[1].tobytes()


def test_same_screen_on_many_phones_is_one_entry(tmp_path) -> None:
    q = UnknownScreenQueue(tmp_path)
    a = q.add("rack1-5", screen_png("A dialog"), {"serial": "p1", "app": "x", "at": 1.0})
    again = q.add("rack1-9", screen_png("A dialog", noise=4), {"serial": "p2", "at": 2.0})
    assert again["id"] == "rack1-5" and again["seen"] == 2 and again["serials"] == ["p1", "p2"]
    other = q.add("rack2-1", screen_png("B other screen"), {"serial": "p3", "at": 3.0})
    assert other["id"] == "rack2-1"
    assert [e["id"] for e in q.entries()] == ["rack1-5", "rack2-1"]
    assert q.image("rack1-5").startswith(b"\x89PNG")
    assert a["app"] == "x"
    # A replayed event (same id) is stored once.
    assert q.add("rack2-1", screen_png("B other screen"), {"serial": "p3"})["seen"] == 1
    # It all survives a restart, and no temp file is left.
    reopened = UnknownScreenQueue(tmp_path)
    assert [(e["id"], e["seen"]) for e in reopened.entries()] == [("rack1-5", 2), ("rack2-1", 1)]
    assert not list(tmp_path.glob(".*"))


def test_bad_input_is_refused_by_name(tmp_path) -> None:
    q = UnknownScreenQueue(tmp_path)
    with pytest.raises(ValidationError, match="rack1-1.png"):
        q.add("rack1-1", b"not a png", {})
    with pytest.raises(ValidationError, match="bad id"):
        q.add("../etc/passwd", screen_png("A"), {})
    with pytest.raises(FarmError, match="no such entry"):
        q.image("rack9-9")


def decode(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def test_perceptual_hash_separates_layouts() -> None:
    a = perceptual_hash(decode(screen_png("A dialog")))
    a2 = perceptual_hash(cv2.resize(decode(screen_png("A dialog", noise=6)), (720, 1600)))
    b = perceptual_hash(decode(screen_png("B other screen")))
    assert hash_distance(a, a2) <= SAME_SCREEN_BITS < hash_distance(a, b)


def test_popups_alike_but_for_their_text_are_separate_entries(tmp_path) -> None:
    """ClipShare's rate-us, video-options and update dialogs share one box over the same
    dimmed feed (their hashes are equal): each is its own entry; a new clock time is not."""
    from registry.load import DEMO_REGISTRY

    q = UnknownScreenQueue(tmp_path)
    pngs = {name: (DEMO_REGISTRY / "clipshare" / f"{name}.png").read_bytes()
            for name in ("rate_us", "video_options", "update_available")}
    for n, (name, png) in enumerate(pngs.items()):
        assert q.add(f"rack1-{n}", png, {"serial": f"p{n}"})["id"] == f"rack1-{n}", name
    frame = decode(pngs["rate_us"])
    cv2.putText(frame, "10:52", (20, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 3)
    again = q.add("rack2-7", cv2.imencode(".png", frame)[1].tobytes(), {"serial": "p9"})
    assert again["id"] == "rack1-0" and again["seen"] == 2
    # A restarted queue compares against the stored PNGs.
    assert UnknownScreenQueue(tmp_path).add("rack3-1", pngs["video_options"], {})["id"] == "rack1-1"
