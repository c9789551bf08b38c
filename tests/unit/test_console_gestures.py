"""Action mode's gesture rules (actors/control/static/gestures.js, spec 5.1), run in Node:
inside the 100 px box a press is a tap (< 0.5 s) or a long tap (>= 0.5 s), leaving it is a
swipe along the path (sampled per frame, simplified to at most 64 points); fractions become
each phone's own pixels; phones group by size."""

from __future__ import annotations

import json
import math
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


def test_leaving_the_box_is_a_swipe_along_the_path_even_when_coming_back():
    # A straight line simplifies to its two ends.
    got = run(f"g.classify({path((0.5, 0.8, 0), (0.5, 0.5, 150), (0.5, 0.4, 300))}, {SIZE})")
    assert got == {"type": "swipe", "path": [[0.5, 0.8], [0.5, 0.4]], "duration_ms": 300}
    # 60 px out and back: left the box, so not a tap; the turn is kept.
    back = run(f"g.classify({path((0.5, 0.5, 0), (0.5 + 60 / 1080, 0.5, 50), (0.5, 0.5, 100))}, {SIZE})")
    assert back == {"type": "swipe", "path": [[0.5, 0.5], [0.5 + 60 / 1080, 0.5], [0.5, 0.5]],
                    "duration_ms": 100}


def arc(n: int, ms: float = 16) -> list[tuple[float, float, float]]:
    """A half circle from the bottom middle up the right side to the top middle."""
    return [(0.5 + 0.3 * math.sin(math.pi * i / (n - 1)), 0.8 - 0.6 * i / (n - 1), i * ms)
            for i in range(n)]


def test_a_curve_keeps_its_middle_points_and_at_most_64():
    got = run(f"g.classify({path(*arc(40))}, {SIZE})")
    assert got["type"] == "swipe" and got["duration_ms"] == 39 * 16
    pts = got["path"]
    assert 5 <= len(pts) <= 40 and pts[0] == [0.5, 0.8] and pts[-1][1] == pytest.approx(0.2)
    assert max(x for x, _ in pts) == pytest.approx(0.8, abs=0.01)  # the far side of the arc
    # A long wiggly drag (500 samples) still fits the action API.
    wiggle = [(0.5 + 0.2 * math.sin(i / 3), 0.9 - 0.8 * i / 499, i * 16) for i in range(500)]
    many = run(f"g.classify({path(*wiggle)}, {SIZE})")["path"]
    assert len(many) <= 64 and many[0] == [0.5, 0.9] and many[-1][1] == pytest.approx(0.1)


def test_sampling_keeps_one_point_per_frame_and_always_the_release():
    script = ("(() => { const p = []; for (const t of [0, 5, 10, 16, 20, 33]) "
              "g.sample(p, {fx: t / 100, fy: 0, t}); g.sample(p, {fx: 0.4, fy: 0, t: 40}, true); "
              "return p.map((q) => q.t); })()")
    assert run(script) == [0, 16, 40]  # 33 was 17 ms after 16; the release 7 ms later replaces it


def test_scaled_to_each_phones_pixels_and_grouped_by_size():
    tap = run('g.scaled({"type": "tap", "fx": 0.5, "fy": 1.0}, [720, 1600])')
    assert tap == {"type": "tap", "x": 360, "y": 1599}
    swipe = run('g.scaled({"type": "swipe", "path": [[0, 0.5], [1, 0.5]], '
                '"duration_ms": 200}, [1080, 2400])')
    assert swipe == {"type": "swipe", "x1": 0, "y1": 1200, "x2": 1079, "y2": 1200,
                     "duration_ms": 200}
    curve = run('g.scaled({"type": "swipe", "path": [[0.5, 0.8], [0.7, 0.5], [0.7, 0.5001], '
                '[0.5, 0.2]], "duration_ms": 300}, [720, 1600])')
    # The second 0.7 lands on the same pixel: dropped.
    assert curve == {"type": "swipe", "x1": 360, "y1": 1280, "x2": 360, "y2": 320,
                     "path": [[360, 1280], [504, 800], [360, 320]], "duration_ms": 300}
    groups = run('g.bySize([{"serial": "a", "screen_size": [720, 1600]}, {"serial": "b"}, '
                 '{"serial": "c", "screen_size": [1080, 2400]}], [1080, 2400])')
    assert groups == [{"size": [720, 1600], "serials": ["a"]},
                      {"size": [1080, 2400], "serials": ["b", "c"]}]
