"""A swipe along a path: the driver's one-line `input motionevent` script
(actors/node/device/driver.py) and the virtual touchscreen that reads such chains back
(virtual/touch.py), with an injected clock."""

from __future__ import annotations

import pytest

from actors.node.device.driver import motion_event_script
from virtual.touch import Touchscreen


def test_script_is_down_moves_up_in_one_line_without_sleep_when_points_are_close():
    # 300 ms over 20 gaps = 15 ms apart: less than one `input motionevent` costs.
    path = [(100 + i, 2000 - 50 * i) for i in range(21)]
    script = motion_event_script(path, 300)
    parts = script.split(";")
    assert parts[0] == "input motionevent DOWN 100 2000"
    assert parts[1:-1] == [f"input motionevent MOVE {x} {y}" for x, y in path[1:-1]]
    assert parts[-1] == "input motionevent UP 120 1000"
    assert "sleep" not in script


def test_script_sleeps_the_rest_of_each_gap_when_points_are_far_apart():
    script = motion_event_script([(1, 2), (3, 4), (5, 6)], 1000, cost_ms=20)
    assert script.split(";") == ["input motionevent DOWN 1 2", "sleep 0.480",
                                 "input motionevent MOVE 3 4", "sleep 0.480",
                                 "input motionevent UP 5 6"]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def screen() -> tuple[Touchscreen, Clock]:
    clock = Clock()
    return Touchscreen(clock, slop_px=20, long_press_ms=500), clock


def test_down_moves_up_is_one_swipe_with_its_path_and_duration(screen):
    ts, clock = screen
    assert ts.event("DOWN", 500, 1800) is None
    clock.t += 0.1
    assert ts.event("move", 600, 1400) is None  # Android takes the action in any case
    clock.t += 0.15
    touch = ts.event("UP", 500, 900)
    assert (touch.kind, touch.path, touch.duration_ms) == (
        "swipe", [(500, 1800), (600, 1400), (500, 900)], 250)
    assert not ts.down


def test_out_and_back_is_a_swipe_not_a_tap(screen):
    ts, _ = screen
    ts.event("DOWN", 500, 500)
    ts.event("MOVE", 560, 500)
    assert ts.event("UP", 500, 500).kind == "swipe"


def test_staying_within_the_slop_is_a_tap_or_a_long_press(screen):
    ts, clock = screen
    ts.event("DOWN", 500, 500)
    ts.event("MOVE", 510, 495)
    assert ts.event("UP", 505, 505).kind == "tap"
    ts.event("DOWN", 500, 500)
    clock.t += 0.6
    touch = ts.event("UP", 500, 500)
    assert (touch.kind, touch.duration_ms) == ("long_press", 600)


def test_cancel_and_stray_events_make_no_touch(screen):
    ts, _ = screen
    ts.event("DOWN", 1, 1)
    ts.event("MOVE", 300, 300)
    assert ts.event("CANCEL", 0, 0) is None and not ts.down
    assert ts.event("MOVE", 5, 5) is None and ts.event("UP", 5, 5) is None
    with pytest.raises(ValueError, match="Unknown action: HOVER"):
        ts.event("HOVER", 1, 1)
