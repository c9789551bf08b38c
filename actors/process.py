"""What every farm process (coordinator, node, virtual phones) does the same way at its edges:
log format and level, and waiting for SIGINT/SIGTERM to shut down cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=LOG_FORMAT)


async def wait_for_stop_signal() -> None:
    """Return once SIGINT or SIGTERM arrives (Ctrl-C, `kill`, a supervisor stopping us)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
