"""FrameStore (actors/node/device/agent.py) converts a frame in one thread at a time: PyAV's
frame reformatting is not thread-safe, and the phone actor and the live wall's sender ask
for the same frame at once (the demo node crashed, 'connection closed', when both did)."""

from __future__ import annotations

import threading
import time

import numpy as np

from actors.node.device.agent import FrameStore


def test_two_threads_asking_for_one_frame_convert_it_once_and_never_together():
    active, overlaps, calls = [0], [0], [0]
    lock = threading.Lock()

    def convert(source):
        with lock:
            active[0] += 1
            calls[0] += 1
            overlaps[0] += active[0] > 1
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return np.zeros((2, 2, 4), np.uint8)

    store = FrameStore(convert)
    store.put("frame-1")
    threads = [threading.Thread(target=store.latest) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert overlaps[0] == 0 and calls[0] == 1
