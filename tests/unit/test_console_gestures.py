"""Action mode's gesture rules (actors/control/static/gestures.js, spec 5.1), run in Node:
inside the 100 px box a press is a tap (< 0.5 s) or a long tap (>= 0.5 s), leaving it is a
swipe from start to end; fractions become each phone's own pixels; phones group by size."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

GESTURES = Path(__file__).resolve().parents[2] / "actors" / "control" / "static" / "gestures.js"
NODE = shutil.which("node") or shutil.which("nodejs")

pytestmark = pytest.mark.skipif(NODE is None, reason="needs Node.js to run the ES module")


def run(expr: str):
    script = f"import * as g from {json.dumps(GESTURES.as_uri())};\nconsole.log(JSON.stringify({expr}));"
    out = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True,
                         text=True, timeout=30, check=True)
    return json.loads(out.stdout)


SIZE = "[1080, 2400]"


def path(*points) -> str:
    return json.dumps([{"fx": x, "fy": y, "t": t} for x, y, t in points])


def test_quick_press_in_the_box_is_a_tap():
    # 40 px right on a 1080 px screen: still inside the 100 px box.
    got = run(f"g.classify({path((0.5, 0.5, 0), (0.5 + 40 / 1080, 0.5, 100))}, {SIZE})")
    assert got == {"type": "tap", "fx": 0.5, "fy": 0.5}


def test_held_press_in_the_box_is_a_long_tap():
    got = run(f"g.classify({path((0.25, 0.75, 0), (0.25, 0.75, 500))}, {SIZE})")
    assert got == {"type": "long_tap", "fx": 0.25, "fy": 0.75, "duration_ms": 500}
    assert run(f"g.classify({path((0.25, 0.75, 0), (0.25, 0.75, 499))}, {SIZE})")["type"] == "tap"


def test_leaving_the_box_is_a_swipe_even_when_coming_back():
    got = run(f"g.classify({path((0.5, 0.8, 0), (0.5, 0.5, 150), (0.5, 0.4, 300))}, {SIZE})")
    assert got == {"type": "swipe", "fx1": 0.5, "fy1": 0.8, "fx2": 0.5, "fy2": 0.4,
                   "duration_ms": 300}
    # 60 px out and back: left the box, so not a tap.
    back = run(f"g.classify({path((0.5, 0.5, 0), (0.5 + 60 / 1080, 0.5, 50), (0.5, 0.5, 100))}, {SIZE})")
    assert back["type"] == "swipe"


def test_scaled_to_each_phones_pixels_and_grouped_by_size():
    tap = run('g.scaled({"type": "tap", "fx": 0.5, "fy": 1.0}, [720, 1600])')
    assert tap == {"type": "tap", "x": 360, "y": 1599}
    swipe = run('g.scaled({"type": "swipe", "fx1": 0, "fy1": 0.5, "fx2": 1, "fy2": 0.5, '
                '"duration_ms": 200}, [1080, 2400])')
    assert swipe == {"type": "swipe", "x1": 0, "y1": 1200, "x2": 1079, "y2": 1200,
                     "duration_ms": 200}
    groups = run('g.bySize([{"serial": "a", "screen_size": [720, 1600]}, {"serial": "b"}, '
                 '{"serial": "c", "screen_size": [1080, 2400]}], [1080, 2400])')
    assert groups == [{"size": [720, 1600], "serials": ["a"]},
                      {"size": [1080, 2400], "serials": ["b", "c"]}]
