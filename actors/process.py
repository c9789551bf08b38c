"""What every farm process (coordinator, node, virtual phones) does the same way at its edges:
log format and level, waiting for SIGINT/SIGTERM to shut down cleanly, and a start-up that
fails: one line on stderr, no traceback, a non-zero exit once what was opened is closed
(a supervisor restarts the process; a process kept alive by its open databases never is)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import sys
from typing import Any, Callable, Coroutine, Iterator

import pynng

from protocol.errors import FarmError, ValidationErrors

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=LOG_FORMAT)


def stop_signal() -> asyncio.Event:
    """An event SIGINT or SIGTERM (Ctrl-C, `kill`, a supervisor stopping us) sets, its
    handlers installed on return. Take it before saying "ready": a stop sent in answer to
    that line would otherwise meet Python's default handler (a KeyboardInterrupt traceback)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def wait_for_stop_signal() -> None:
    """Return once SIGINT or SIGTERM arrives (Ctrl-C, `kill`, a supervisor stopping us)."""
    await stop_signal().wait()


STARTUP_EXIT = 2
# What a bad configuration, data folder or address raises while a process starts.
STARTUP_ERRORS = (FarmError, OSError, sqlite3.Error, pynng.NNGException, UnicodeError)


def startup_errors() -> tuple[type[BaseException], ...]:
    """STARTUP_ERRORS, and PostgreSQL's errors once psycopg is loaded (a node never loads
    it: importing it here cost every node start ~0.15 s of CPU)."""
    psycopg = sys.modules.get("psycopg")
    return STARTUP_ERRORS if psycopg is None else (*STARTUP_ERRORS, psycopg.Error)


class StartupError(Exception):
    """The process cannot start; the message is the one line the operator gets."""


def startup_message(exc: BaseException) -> str:
    """``exc`` as one line: several problems as the first one and how many more."""
    if isinstance(exc, ValidationErrors) and len(exc.problems) > 1:
        text = f"{exc.problems[0]} (and {len(exc.problems) - 1} more problems)"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


@contextlib.contextmanager
def starting(what: str | None = None) -> Iterator[None]:
    """A start-up step: the errors it is expected to meet (STARTUP_ERRORS) become a
    StartupError, prefixed with ``what`` when given."""
    try:
        yield
    except startup_errors() as exc:
        message = startup_message(exc)
        raise StartupError(f"{what}: {message}" if what else message) from None


def run_main(prog: str, main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run a process's ``main`` coroutine; the exit code. A StartupError (raised after
    ``main`` closed what it had opened) is printed as ``prog: message`` on stderr: exit 2."""
    try:
        asyncio.run(main())
    except StartupError as exc:
        print(f"{prog}: {exc}", file=sys.stderr, flush=True)
        return STARTUP_EXIT
    return 0
