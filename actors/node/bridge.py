"""The one bridge between the asyncio loop and pykka actors.

`await pykka_future` would block the event loop (pykka's ``__await__`` calls ``get()``), and a
thread per wait would cap a 60-phone broadcast at the executor's size. Instead the loop sends
a ``Call`` message carrying a reply function; the actor runs the method in its own thread
and the reply is posted back with ``loop.call_soon_threadsafe``. Every asyncio->actor call
in the project goes through ``call_actor``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import pykka

from protocol.errors import ActorStopped, FarmError

log = logging.getLogger(__name__)

Reply = Callable[[Any, BaseException | None], None]


@dataclass(frozen=True)
class Call:
    """Run ``method(*args, **kwargs)`` on the actor and hand the outcome to ``reply``.

    A method that returns ``Deferred`` gets its follow-up work run after the reply is on its
    way (work the caller need not wait for, such as the screenshot after a tap).
    """

    method: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    reply: Reply | None = None


class Deferred:
    """A result plus follow-up work the actor does after replying."""

    def __init__(self, result: Any, after: Callable[[], None]) -> None:
        self.result = result
        self.after = after


class BridgedActor(pykka.ThreadingActor):
    """Base for actors called from asyncio. Owns the Call protocol and its failure rules.

    A ``FarmError`` from a method is an answer (the caller gets it raised); any other
    exception is a bug: the caller gets it too, and the actor crashes so that its
    supervisor restarts it.
    """

    # An actor still stuck in a device call after Node.stop gave up on it must not keep the
    # node's process from exiting (pykka's threads are not daemons by default).
    use_daemon_thread = True

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, Call):
            return self.on_other_message(message)
        reply = message.reply or (lambda result, exc: None)
        try:
            result = getattr(self, message.method)(*message.args, **message.kwargs)
        except FarmError as exc:
            reply(None, exc)
            return None
        except Exception as exc:
            # Answered from on_failure, once the actor is dead: a caller must never see the
            # crash while the actor still looks alive.
            self._crash_reply = (reply, exc)
            raise
        if isinstance(result, Deferred):
            reply(result.result, None)
            result.after()
        else:
            reply(result, None)
        return None

    def on_other_message(self, message: Any) -> Any:
        log.warning("%s ignored unexpected message %r", self, message)
        return None

    def _answer_pending(self) -> None:
        """Calls still queued would never be answered: answer them with ActorStopped."""
        while True:
            try:
                envelope = self.actor_inbox.get_nowait()
            except queue.Empty:
                return
            message = getattr(envelope, "message", None)
            if isinstance(message, Call) and message.reply is not None:
                message.reply(None, ActorStopped(f"{self.actor_ref} stopped before {message.method}"))

    def on_stop(self) -> None:
        self._answer_pending()

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        crash = getattr(self, "_crash_reply", None)
        if crash is not None:
            self._crash_reply = None
            crash[0](None, crash[1])
        self._answer_pending()


def tell_quietly(actor_ref: pykka.ActorRef, message: Any) -> None:
    """Tell, from a timer or another thread, an actor that may have stopped meanwhile."""
    try:
        actor_ref.tell(message)
    except pykka.ActorDeadError:
        pass


async def call_actor(actor_ref: pykka.ActorRef, method: str, *args: Any,
                     timeout: float | None = 120.0, **kwargs: Any) -> Any:
    """Await ``actor.method(*args, **kwargs)`` without blocking the event loop."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def reply(result: Any, exc: BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:
            pass  # the loop closed while the actor worked: nobody is waiting any more

    try:
        actor_ref.tell(Call(method, args, kwargs, reply))
    except pykka.ActorDeadError as exc:
        raise ActorStopped(f"{actor_ref} is not running") from exc
    if timeout is None:
        return await fut
    try:
        return await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        raise ActorStopped(f"{actor_ref} did not answer {method} within {timeout:g}s") from None


def ask_actor(actor_ref: pykka.ActorRef, method: str, *args: Any,
              timeout: float | None = 120.0, **kwargs: Any) -> Any:
    """Blocking ``actor.method(*args, **kwargs)`` from another actor's thread (never from the
    event loop): the same Call protocol as ``call_actor``, answered through a threading Event.
    Between such calls the callee is free for its other messages."""
    done = threading.Event()
    box: list = []

    def reply(result: Any, exc: BaseException | None) -> None:
        if not done.is_set():
            box.append((result, exc))
            done.set()

    try:
        actor_ref.tell(Call(method, args, kwargs, reply))
    except pykka.ActorDeadError as exc:
        raise ActorStopped(f"{actor_ref} is not running") from exc
    if not done.wait(timeout):
        raise ActorStopped(f"{actor_ref} did not answer {method} within {timeout:g}s")
    result, exc = box[0]
    if exc is not None:
        raise exc
    return result
