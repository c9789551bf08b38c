"""The node's capture scheduler: slots in request order, and no frame while actions start."""

from __future__ import annotations

import threading
import time

from actors.node.capture import CaptureScheduler


def test_frames_wait_until_actions_pause_and_go_in_request_order() -> None:
    sched = CaptureScheduler(slots=1, settle_s=0.2, max_delay_s=5.0)
    granted: list[tuple[str, int]] = []
    actions = 0
    done = threading.Event()

    def grant(serial: str):
        def run() -> None:
            granted.append((serial, actions))
            sched.release()
            if len(granted) == 3:
                done.set()
        return run

    try:
        for serial in ("a", "b", "a", "c"):  # "a" asks twice: one capture covers both
            sched.request(serial, grant(serial))
        for _ in range(5):  # a burst of actions keeps the frames back
            actions += 1
            sched.action_started()
            time.sleep(0.05)
        assert done.wait(10)
        assert [s for s, _ in granted] == ["a", "b", "c"]
        assert all(seen == 5 for _, seen in granted), granted  # none before the burst ended
    finally:
        sched.stop()


def test_a_frame_waits_at_most_max_delay() -> None:
    sched = CaptureScheduler(slots=1, settle_s=60.0, max_delay_s=0.2)
    got = threading.Event()
    try:
        sched.action_started()
        sched.request("a", lambda: (got.set(), sched.release()))
        assert got.wait(10)  # actions "never" pause, yet the frame comes
    finally:
        sched.stop()
