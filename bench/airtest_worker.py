"""Airtest side of bench/matcher.py: identify frames the way an Airtest script would.

Runs under the Airtest venv's python, never the project's: airtest 1.4.3 pins numpy<2 and
opencv-contrib-python<=4.6, which cannot share an environment with the project (numpy 2,
opencv-python-headless 4.9+). So it imports nothing from the project and talks JSON:

    /tmp/airtest-venv/bin/python bench/airtest_worker.py JOB.json

JOB.json: ``{"strategy": "shipped" | "tpl", "screens": [{"label", "resolution": [w, h],
"templates": [png path, ...]}], "frames": [npy path (BGR uint8), ...], "budget_s",
"frame_cap_s", "threshold": null (Airtest's default) or a float}``. Prints one JSON object per frame: ``{"i", "found": [labels], "ms",
"checked", "complete"}``.

A screen is "found" when every one of its templates is found (``Template._cv_match``, which
is what ``exists(Template(...))`` runs per attempt), the same all-regions rule as the
project's matcher; every screen is tried, so a frame that several screens claim shows up as
ambiguous rather than as whichever came first. ``shipped`` leaves Airtest's settings as
installed (threshold 0.7, CVSTRATEGY mstpl, tpl, sift, brisk: a template not found falls
through to keypoint matching on the full frame); ``tpl`` keeps template matching only, the
fastest configuration an operator could pick. Frames run until ``budget_s`` is spent (at least
one); a frame is cut after ``frame_cap_s`` and reported incomplete, its time to be
extrapolated by the caller.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import numpy as np

# Airtest logs every match attempt at DEBUG to stderr; formatting those lines is not what is
# being measured, and operators who run many checks silence it the same way.
logging.getLogger("airtest").setLevel(logging.WARNING)

from airtest.core.cv import Template  # noqa: E402
from airtest.core.settings import Settings as ST  # noqa: E402


def main() -> None:
    job = json.load(open(sys.argv[1]))
    if job["strategy"] == "tpl":
        ST.CVSTRATEGY = ["tpl"]
    elif job["strategy"] != "shipped":
        raise SystemExit(f"unknown strategy {job['strategy']!r}")
    # Built once, as a script's module-level Template(...) constants are; each _cv_match still
    # reads its PNG, as Airtest does on every attempt.
    threshold = job.get("threshold")  # None: Template falls back to ST.THRESHOLD (0.7)
    screens = [(s["label"], [Template(p, threshold=threshold, resolution=tuple(s["resolution"]))
                             for p in s["templates"]])
               for s in job["screens"]]
    budget_end = time.perf_counter() + job["budget_s"]
    for i, path in enumerate(job["frames"]):
        if i and time.perf_counter() > budget_end:
            break
        frame = np.load(path)
        found: list[str] = []
        checked = 0
        t0 = time.perf_counter()
        for label, templates in screens:
            if all(t._cv_match(frame) for t in templates):
                found.append(label)
            checked += 1
            if time.perf_counter() - t0 > job["frame_cap_s"]:
                break
        ms = (time.perf_counter() - t0) * 1000
        print(json.dumps({"i": i, "found": found, "ms": ms, "checked": checked,
                          "complete": checked == len(screens)}), flush=True)


if __name__ == "__main__":
    main()
