"""A farm actor stuck for good (a device call that never returns) must not keep its process
alive once the node has given up on it: the actors run on daemon threads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STUCK = """
import threading
from actors.node.bridge import BridgedActor
from actors.node.matcher import MatcherActor
from actors.node.playback import PlaybackActor

class Stuck(BridgedActor):
    def on_start(self):
        threading.Event().wait()  # a call that never returns

Stuck.start()
assert MatcherActor.use_daemon_thread and PlaybackActor.use_daemon_thread
print("leaving", flush=True)
"""


def test_a_stuck_actor_does_not_keep_the_process_alive() -> None:
    done = subprocess.run([sys.executable, "-c", STUCK], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "leaving" in done.stdout
