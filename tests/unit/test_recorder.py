"""Recording: actions on the lead phone become steps with the screen expected before each."""

from __future__ import annotations

import msgspec
import pytest

from actors.coordinator.recorder import Recorder
from protocol.errors import FarmError, ValidationError
from sequences.model import Sequence


def test_recording_becomes_a_sequence_file(tmp_path) -> None:
    screens = {"A": "clipshare/login", "B": "launcher/home"}
    rec = Recorder(tmp_path, screens.get)
    r = rec.start("log_in", "clipshare", ["A", "B"])
    rec.observe("A", {"type": "tap", "x": 540, "y": 875})
    rec.observe("B", {"type": "tap", "x": 1, "y": 1})           # not the lead: not recorded
    rec.observe("A", {"type": "text", "text": "clip_creator"})
    screens["A"] = "clipshare/interrupt:rate_us"                  # a popup is not expected
    rec.observe("A", {"type": "key", "key": "ENTER"})
    rec.observe("A", {"type": "screenshot"})                      # not a step
    screens["A"] = "clipshare/feed"
    path, data = rec.stop(r.recording_id)
    assert path == tmp_path / "clipshare" / "log_in.json"
    assert data["steps"] == [
        {"type": "expect_screen", "screen": "clipshare/login"}, {"type": "tap", "x": 540, "y": 875},
        {"type": "expect_screen", "screen": "clipshare/login"}, {"type": "type", "text": "clip_creator"},
        {"type": "key", "key": "ENTER"},
        {"type": "wait_for_screen", "screen": "clipshare/feed", "timeout_s": 15.0}]
    seq = msgspec.json.decode(path.read_bytes(), type=Sequence)
    assert seq.name == "log_in" and seq.app == "clipshare" and len(seq.steps) == 6
    assert not list(tmp_path.rglob(".*.tmp"))


def test_bad_recordings_are_refused(tmp_path) -> None:
    rec = Recorder(tmp_path, lambda s: None)
    with pytest.raises(ValidationError, match="name"):
        rec.start("../etc", None, ["A"])
    with pytest.raises(ValidationError, match="no phone"):
        rec.start("x", None, [])
    rec.start("x", None, ["A"])
    with pytest.raises(ValidationError, match="already being recorded"):
        rec.start("y", None, ["A"])
    with pytest.raises(FarmError, match="no such open recording"):
        rec.stop("nope")


def test_a_swipe_along_a_path_is_recorded_with_its_path(tmp_path) -> None:
    """A console drag keeps its curve in the sequence, so playing it back follows it too."""
    from actors.coordinator.recorder import action_step

    curve = {"type": "swipe", "x1": 10, "y1": 900, "x2": 10, "y2": 100, "duration_ms": 400,
             "path": [(10, 900), (300, 500), (10, 100)]}
    step = action_step(curve)
    assert step == {**curve, "path": [[10, 900], [300, 500], [10, 100]]}
    assert "path" not in action_step({"type": "swipe", "x1": 1, "y1": 2, "x2": 3, "y2": 4})
