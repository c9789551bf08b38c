"""The nng link between one coordinator and many nodes (pynng, asyncio).

`CoordinatorLink` listens; `NodeLink` dials (a node needs only the coordinator's address).
The delivery rules these classes implement are written in `protocol/__init__.py`.

Socket pattern: pynng ``Pair1(polyamorous=True)`` on both ends. Each end receives with a
blocking ``recv_msg()`` on a reader thread (`_SocketReader`) and reads ``msg.pipe`` to know
which connection a message came on, and answers with ``pipe.asend()``; verified with pynng
0.9 (nng 1.x). The node uses a polyamorous socket too, although it has only one connection
at a time, so that it can send on one exact pipe: nng drops a message addressed to a pipe
that is gone instead of putting it on the next connection, so nothing meant for an old connection (an event, a heartbeat) can reach the
coordinator on a new connection before the node's Hello. (nng marks polyamorous pair1 as
deprecated; if it goes, the replacement is one Pair0 listener per node or a Bus0 socket with
the node name in the envelope, and only this module changes.)

pynng facts this module relies on:
- Pipe callbacks (``add_post_pipe_connect_cb`` / ``..._remove_cb``) run on nng's threads;
  they only post to the event loop with ``call_soon_threadsafe`` (never close a pipe there).
- A socket's ``recv_max_size`` (nng ``recv-size-max``) makes nng silently close any
  connection that sends a bigger message; the error could not be logged, so it is set
  well above ``max_message_bytes`` (2x + 64 KiB) and the codec rejects what lies between.
- ``Pair1`` send waits while there is no peer; every send here has a timeout.
- A dialer started with ``block=False`` retries on its own and redials after its pipe
  closes (reconnect_time_min .. reconnect_time_max back-off).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import weakref
from collections import Counter, OrderedDict, deque
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol, runtime_checkable

import msgspec
import pynng

from protocol.codec import (COORDINATOR_TO_NODE, MAX_MESSAGE_BYTES, MAX_NONCE_CHARS,
                            MIN_NONCE_CHARS, NODE_TO_COORDINATOR, check_link_proof, check_proof,
                            decode, encode, link_proof, make_envelope, new_nonce)
from protocol.errors import DeliveryError, DeviceError, DeviceGone, ProtocolError
from protocol.journal import Journal
from protocol.messages import (
    Body,
    Challenge,
    Command,
    CommandResult,
    Envelope,
    Event,
    EventAck,
    EventBatch,
    Heartbeat,
    Hello,
    PhoneInfo,
    Refused,
    Welcome,
)

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S = 1.0
# Polyamorous Pair1 silently drops a message sent while its pipe is busy and the socket has
# no buffer (nng's defaults: 0 send, 1 receive). A burst (60 results, thumbnails and events
# at once) then loses messages and commands wait for their 2 s re-send. Buffers absorb bursts.
SOCKET_BUFFER_MSGS = 1024
MAX_EVENT_BATCH = 256  # node events handed to the sink at once (one store transaction, one ack)
EVENTS_PER_MESSAGE = 64  # a node's queued events per EventBatch message
# Polyamorous Pair1 also drops a message when a pipe's queue is full (a burst while the peer
# reads slowly). A drop inside a run of events is a seq gap the coordinator asks about at once
# (EventAck.resend_from); a lost last event of a burst shows in the node's next heartbeat
# (``sent_upto``); this timeout (no ack progress while events are outstanding) is the
# fallback, e.g. for a coordinator that does not read heartbeats that way.
ACK_TIMEOUT_S = 5.0
RESEND_ASK_AGAIN_S = 2.0  # a gap still open this long after asking: ask again
FIRST_RESEND_S = 0.25
RESEND_RTTS = 3  # a command's first re-send waits at least this many recent round trips
DEFAULT_DEAD_AFTER_S = 3.0  # silent this long -> peer is dead; with 1 s heartbeats: detected < 5 s


def _recv_limit(max_message_bytes: int) -> int:
    return 2 * max_message_bytes + 64 * 1024


def _pipe_address(pipe: pynng.Pipe) -> str:
    try:
        return str(pipe.remote_address)
    except Exception:  # the pipe may already be gone
        return f"pipe#{pipe.id}"


class _TaskOwner:
    """Background tasks of one link: tracked, exceptions logged, all cancelled on close."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Awaitable[Any], what: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(what)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("task failed task=%s error=%r", what, t.exception(), exc_info=t.exception())

        task.add_done_callback(done)
        return task

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """From an nng thread: run fn(*args) on the loop (dropped if the loop is gone)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass

    def _callback(self, cb: Callable[..., Any] | None, *args: Any) -> None:
        """Call a user callback (plain or async) without letting it break the link."""
        if cb is None:
            return
        try:
            result = cb(*args)
        except Exception:
            log.exception("callback failed callback=%s", getattr(cb, "__name__", cb))
            return
        if inspect.isawaitable(result):
            self._spawn(result, getattr(cb, "__name__", "callback"))

    async def _cancel_tasks(self, grace: float = 2.0) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if not tasks:
            return
        # A pynng send on a pipe of a closed socket may never finish its cancellation;
        # closing must not hang on it.
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for t in pending:
            log.warning("task did not stop within %.1f s of close: %s", grace, t.get_name())


class _RepeatLog:
    """Which repeats of one log line to write: a refused peer redials every fraction of a
    second, so the same refusal would fill the log. The first ``burst`` of a key in a
    ``period_s`` are written, the rest held back and counted in the next one written."""

    def __init__(self, burst: int = 3, period_s: float = 60.0) -> None:
        self.burst, self.period_s = burst, period_s
        self._seen: dict[str, list[float | int]] = {}  # key -> [period start, written, held]

    def __call__(self, key: str) -> int | None:
        """None: hold this one back; else how many were held back before it."""
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.period_s:
            held = int(entry[2]) if entry is not None else 0
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[key] = [now, 1, 0]
            return held
        if entry[1] < self.burst:
            entry[1] += 1
            return 0
        entry[2] += 1
        return None


def _held(count: int) -> str:
    return f" ({count} more like it not logged)" if count else ""


class _SocketReader:
    """Receives from one nng socket on a thread of its own and hands the loop every message
    that arrived meanwhile in one call of ``on_message`` per message.

    Why a thread: an async receive cost the loop about 0.2 ms per message (an nng aio, a
    future, a self-pipe wake-up each); the blocking receive releases the GIL, and a burst
    of messages reaches the loop in one hand-over. Closing the socket ends the thread."""

    def __init__(self, sock: pynng.Socket, loop: asyncio.AbstractEventLoop,
                 on_message: Callable[[pynng.Message], None], name: str) -> None:
        self._sock = sock
        self._loop = loop
        self._on_message = on_message
        self._lock = threading.Lock()
        self._buffer: list[pynng.Message] = []
        self._posted = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                msg = self._sock.recv_msg()
            except pynng.Closed:
                return
            except pynng.NNGException as exc:  # e.g. a message over recv_max_size
                log.warning("receive failed on %s: %s", self._thread.name, exc)
                continue
            with self._lock:
                self._buffer.append(msg)
                if self._posted:
                    continue
                self._posted = True
            try:
                self._loop.call_soon_threadsafe(self._hand_over)
            except RuntimeError:
                return  # the loop is closed: nobody listens any more

    def _hand_over(self) -> None:
        with self._lock:
            messages, self._buffer = self._buffer, []
            self._posted = False
        for msg in messages:
            try:
                self._on_message(msg)
            except Exception:  # noqa: BLE001 - one bad message must not stop the others
                log.exception("message handling failed on %s", self._thread.name)


_PIPE_LOCKS: "weakref.WeakValueDictionary[int, asyncio.Lock]" = weakref.WeakValueDictionary()


async def _send_pipe(pipe: pynng.Pipe, data: bytes, timeout: float) -> bool:
    # One send at a time per pipe: polyamorous Pair1 drops a message sent while the pipe is
    # still busy with the previous one.
    lock = _PIPE_LOCKS.get(pipe.id)
    if lock is None:
        lock = _PIPE_LOCKS[pipe.id] = asyncio.Lock()
    try:
        async with lock:
            await asyncio.wait_for(pipe.asend(data), timeout)
        return True
    except (asyncio.TimeoutError, pynng.NNGException):
        return False


async def _send_body(pipe: pynng.Pipe, body: Body, src: str, dst: str, max_bytes: int,
                     timeout: float, who: str) -> bool:
    """Wrap ``body`` in an envelope, encode it and send it on ``pipe``; False (logged with
    ``who``, the sender's view of the peer) if the send failed."""
    env = make_envelope(body, src, dst)
    ok = await _send_pipe(pipe, encode(env, max_bytes=max_bytes), timeout)
    if not ok:
        log.warning("send failed %s kind=%s", who, env.kind)
    return ok


# --------------------------------------------------------------------------------------
# coordinator side
# --------------------------------------------------------------------------------------


@runtime_checkable
class EventSink(Protocol):
    """Where the coordinator puts node events. ``handle`` must have stored the event (and
    advanced ``last_seq(node)`` to its seq) when it returns: the ack follows it. A sink may
    also offer ``handle_batch(node, events)`` (consecutive seqs, in order): the link then
    hands it every event queued for a node at once; on an error, ``last_seq`` must say how
    far it stored."""

    async def handle(self, node: str, event: Event) -> None: ...

    def last_seq(self, node: str) -> int: ...


class MemoryEventSink:
    """In-memory EventSink: remembers the last seq per node and the latest events."""

    def __init__(self, max_events: int = 10_000) -> None:
        self.events: dict[str, deque[Event]] = {}
        self._last: dict[str, int] = {}
        self._max_events = max_events

    async def handle(self, node: str, event: Event) -> None:
        self.events.setdefault(node, deque(maxlen=self._max_events)).append(event)
        self._last[node] = event.seq

    def last_seq(self, node: str) -> int:
        return self._last.get(node, 0)


class _SentMark(msgspec.Struct, frozen=True):
    """In a node's inbox, after the events it came behind: the node had sent up to ``seq``."""

    seq: int


class NodeCredential(msgspec.Struct, frozen=True):
    """What the coordinator knows of one node name's own key: ``key`` to check its proof
    with, or ``refusal`` (e.g. the key was revoked) to refuse it with."""

    key: str | None = None
    refusal: str | None = None


# node name -> its credential, None when the name has no key of its own (the shared farm
# secret, if any, is then tried).
NodeKeyLookup = Callable[[str], "NodeCredential | None"]


class _Peer:
    """One connection (pipe) at the coordinator; ``node`` is set once its Hello passed."""

    __slots__ = ("pipe", "address", "nonce", "opened", "last_seen", "last_hb", "node", "hello",
                 "refused", "inbox", "worker", "awaiting_seq", "asked_at")

    def __init__(self, pipe: pynng.Pipe, now: float) -> None:
        self.pipe = pipe
        self.address = _pipe_address(pipe)
        self.nonce = new_nonce()
        self.opened = now
        self.last_seen = now
        self.last_hb = 0.0
        self.node: str | None = None
        self.hello: Hello | None = None
        self.refused = False
        self.inbox: asyncio.Queue[Event | _SentMark] = asyncio.Queue()
        self.worker: asyncio.Task[Any] | None = None
        # The seq the link waits for after a gap or a sink failure: later events are
        # dropped unacked until the node re-sends from it, so an ack never covers an
        # unstored event (and a re-send request goes out once per wait, not per event).
        self.awaiting_seq: int | None = None
        self.asked_at = 0.0  # when the last re-send request went out

    @property
    def peer(self) -> str:
        return f"{self.node}@{self.address}" if self.node else self.address


class NodeUp(msgspec.Struct, frozen=True):
    """A connected, authenticated node as the coordinator sees it."""

    name: str
    address: str
    phones: list[PhoneInfo]


class CoordinatorLink(_TaskOwner):
    """The coordinator's end: one listening socket, many authenticated nodes.

    A node proves its own key (``node_keys(name)``, a `NodeCredential`) or, for a name with
    no key, the shared farm ``secret`` (deprecated; None: none accepted), and the Welcome
    proves the same key back. Callbacks (plain functions or coroutines): ``on_node_up(name, hello)``,
    ``on_node_down(name, reason)``, ``on_message(name, envelope)`` for bodies the link does not
    handle itself (without it they queue for ``recv()``). Events go to ``sink``.
    """

    def __init__(
        self,
        listen_addr: str,
        secret: bytes | str | None,
        name: str = "coordinator",
        *,
        node_keys: NodeKeyLookup | None = None,
        sink: EventSink | None = None,
        on_node_up: Callable[[str, Hello], Any] | None = None,
        on_node_down: Callable[[str, str], Any] | None = None,
        on_message: Callable[[str, Envelope], Any] | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_S,
        dead_after: float = DEFAULT_DEAD_AFTER_S,
        hello_timeout: float = 5.0,
        send_timeout: float = 2.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__()
        self.listen_addr = listen_addr
        self.address = listen_addr  # the real address (ephemeral port filled in) after start()
        self.name = name
        self.sink: EventSink = sink if sink is not None else MemoryEventSink()
        self.on_node_up = on_node_up
        self.on_node_down = on_node_down
        self.on_message = on_message
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self.hello_timeout = hello_timeout
        self.send_timeout = send_timeout
        self.max_message_bytes = max_message_bytes
        self._secret = secret or None
        self._node_keys = node_keys
        self._refusal_log = _RepeatLog()
        self._sock: pynng.Socket | None = None
        self._peers: dict[int, _Peer] = {}  # pipe id -> peer, every open connection
        self._nodes: dict[str, _Peer] = {}  # node name -> its authenticated connection
        self._pending: dict[str, asyncio.Future[CommandResult]] = {}
        self._up_waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._rtt: dict[str, float] = {}  # node -> recent command round trip (EWMA), seconds
        self._inbox: asyncio.Queue[tuple[str, Envelope]] = asyncio.Queue()
        # Re-sends since start, read by the metrics: command_resends, event_resend_requests.
        self.counts: Counter[str] = Counter()

    # -- lifecycle --

    async def start(self) -> "CoordinatorLink":
        self._loop = asyncio.get_running_loop()
        sock = pynng.Pair1(polyamorous=True, recv_max_size=_recv_limit(self.max_message_bytes),
                           send_buffer_size=SOCKET_BUFFER_MSGS, recv_buffer_size=SOCKET_BUFFER_MSGS)
        sock.add_post_pipe_connect_cb(lambda p: self._post(self._pipe_added, p))
        sock.add_post_pipe_remove_cb(lambda p: self._post(self._pipe_removed, p.id))
        listener = sock.listen(self.listen_addr)
        self._sock = sock
        try:
            self.address = listener.url
        except Exception:
            self.address = self.listen_addr
        _SocketReader(sock, self._loop, self._on_raw, f"coordinator-recv-{self.name}")
        self._spawn(self._tick_loop(), "coordinator-tick")
        log.info("coordinator listening name=%s address=%s", self.name, self.address)
        return self

    async def close(self) -> None:
        # Socket first: the reader thread's pending receive then ends with pynng.Closed, and
        # pending sends end too (pynng can swallow a task cancellation when the nng aio
        # completes at the same moment, so cancelling a send alone may leave it waiting).
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        await self._cancel_tasks()
        self._nodes.clear()
        self._peers.clear()
        log.info("coordinator closed name=%s address=%s", self.name, self.address)

    async def __aenter__(self) -> "CoordinatorLink":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- public API --

    @property
    def nodes(self) -> dict[str, NodeUp]:
        return {
            name: NodeUp(name=name, address=p.address, phones=list(p.hello.phones) if p.hello else [])
            for name, p in self._nodes.items()
        }

    def is_up(self, node: str) -> bool:
        return node in self._nodes

    async def wait_node_up(self, node: str, timeout: float) -> None:
        """Return once ``node`` is connected and authenticated; DeliveryError after timeout."""
        if node in self._nodes:
            return
        waiter = self._add_up_waiter(node)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except asyncio.TimeoutError:
            raise DeliveryError(node, f"not connected within {timeout} s") from None
        finally:
            self._up_waiters.get(node, set()).discard(waiter)

    async def send(self, node: str, body: Body) -> Envelope:
        """Send one message to a connected node; DeliveryError if it is not connected."""
        peer = self._nodes.get(node)
        if peer is None:
            raise DeliveryError(node, "not connected")
        env = make_envelope(body, self.name, node)
        data = encode(env, max_bytes=self.max_message_bytes)
        if not await _send_pipe(peer.pipe, data, self.send_timeout):
            raise DeliveryError(peer.peer, f"could not send {env.kind} within {self.send_timeout} s")
        return env

    async def send_command(
        self, node: str, command: Command, *, timeout: float = 2.0, deadline: float = 30.0
    ) -> CommandResult:
        """Send ``command`` until its result arrives: re-sent with the same command_id after
        ``timeout`` without a result and at once when the node reconnects. DeliveryError if
        no result came within ``deadline`` seconds."""
        loop = asyncio.get_running_loop()
        cid = command.command_id
        fut = self._pending.get(cid)
        if fut is None:
            fut = self._pending[cid] = loop.create_future()
        end = time.monotonic() + deadline
        attempts = 0
        # nng may drop a message in a burst (see SOCKET_BUFFER_MSGS): the first re-send comes
        # soon, later ones back off to ``timeout``. The node runs a command id once, so an
        # early duplicate of a slow command only costs a message.
        # ... but never before a few of this node's recent round trips: in a burst of
        # hundreds of commands the results queue for a while, and re-sending them all only
        # adds to the queue.
        wait_s = min(max(FIRST_RESEND_S, RESEND_RTTS * self._rtt.get(node, 0.0)), timeout)
        first_sent = time.monotonic()
        try:
            while not fut.done():
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise DeliveryError(node, f"no result for command {cid} within {deadline} s "
                                              f"({attempts} attempts)")
                if node in self._nodes:
                    attempts += 1
                    if attempts > 1:
                        self.counts["command_resends"] += 1
                        log.info("command re-sent node=%s command_id=%s attempt=%d", node, cid, attempts)
                    try:
                        await self.send(node, command)
                    except DeliveryError as exc:
                        log.warning("command send failed node=%s command_id=%s reason=%s", node, cid, exc.reason)
                up = self._add_up_waiter(node)
                try:
                    await asyncio.wait({fut, up}, timeout=min(wait_s, remaining),
                                       return_when=asyncio.FIRST_COMPLETED)
                    wait_s = min(wait_s * 2, timeout)
                finally:
                    self._up_waiters.get(node, set()).discard(up)
            rtt = time.monotonic() - first_sent
            self._rtt[node] = rtt if node not in self._rtt else 0.8 * self._rtt[node] + 0.2 * rtt
            return fut.result()
        finally:
            if self._pending.get(cid) is fut:
                del self._pending[cid]

    async def recv(self) -> tuple[str, Envelope]:
        """Next message the link does not handle itself (used when on_message is not set)."""
        return await self._inbox.get()

    # -- internals --

    def _add_up_waiter(self, node: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._up_waiters.setdefault(node, set()).add(fut)
        return fut

    def _peer_for(self, pipe: pynng.Pipe) -> _Peer:
        peer = self._peers.get(pipe.id)
        if peer is None:
            peer = self._peers[pipe.id] = _Peer(pipe, time.monotonic())
            log.debug("connection opened peer=%s", peer.address)
            self._spawn(self._send_to(peer, Challenge(nonce=peer.nonce)), "challenge")
        return peer

    def _pipe_added(self, pipe: pynng.Pipe) -> None:
        if self._sock is not None:
            self._peer_for(pipe)

    def _pipe_removed(self, pipe_id: int) -> None:
        if self._sock is None:  # closing: no node_down storm for our own shutdown
            return
        peer = self._peers.pop(pipe_id, None)
        if peer is not None and peer.node is not None and self._nodes.get(peer.node) is peer:
            self._node_down(peer, "connection closed")

    async def _send_to(self, peer: _Peer, body: Body) -> bool:
        return await _send_body(peer.pipe, body, self.name, peer.node or peer.address,
                                self.max_message_bytes, self.send_timeout, f"peer={peer.peer}")

    def _on_raw(self, msg: pynng.Message) -> None:
        if self._sock is None:
            return  # closing
        pipe = msg.pipe
        if pipe is None:
            return
        peer = self._peer_for(pipe)
        if peer.refused:
            return
        try:
            env = decode(msg.bytes, peer.peer, max_bytes=self.max_message_bytes)
        except ProtocolError as exc:
            log.error("message rejected peer=%s reason=%s", exc.peer, exc.reason)
            return
        peer.last_seen = time.monotonic()
        if peer.node is None:
            self._handle_hello(peer, env)
        else:
            self._dispatch(peer, env)

    def _authenticate(self, peer: _Peer, hello: Hello) -> tuple[bytes | str | None, str | None]:
        """(the key the node proved, None) or (None, why it is refused)."""
        node = hello.node
        credential = self._node_keys(node) if self._node_keys is not None else None
        if credential is not None:
            if credential.refusal is not None or not credential.key:
                return None, credential.refusal or f"node {node!r} has no usable key"
            key: bytes | str = credential.key
            wrong = "wrong node key?"
        elif self._secret is not None:
            key, wrong = self._secret, "wrong farm secret?"
        else:
            return None, (f"no key for node {node!r} (create one with `farm nodes add "
                          f"{node}` and start the node with --key-file)")
        if hello.nonce is None:
            # The one-way handshake of an older node: shared secret only, one release more.
            if credential is not None:
                return None, (f"node {node!r} has its own key but sent no nonce (a farm-node "
                              f"too old for node keys?)")
            if not check_proof(key, peer.nonce, node, hello.proof):
                return None, f"bad proof for node {node!r} ({wrong})"
            log.warning("node=%s uses the shared farm secret without checking the coordinator "
                        "(an older farm-node): deprecated, give it a key (farm nodes add %s)",
                        node, node)
            return key, None
        if not MIN_NONCE_CHARS <= len(hello.nonce) <= MAX_NONCE_CHARS:
            return None, (f"node {node!r}: hello nonce of {len(hello.nonce)} characters "
                          f"(expected {MIN_NONCE_CHARS}..{MAX_NONCE_CHARS})")
        if not check_link_proof(key, NODE_TO_COORDINATOR, peer.nonce, hello.nonce, node,
                                hello.proof):
            return None, f"bad proof for node {node!r} ({wrong})"
        if credential is None:
            log.warning("node=%s authenticated with the shared farm secret: deprecated, give "
                        "it its own key (farm nodes add %s, farm-node --key-file)", node, node)
        return key, None

    def _handle_hello(self, peer: _Peer, env: Envelope) -> None:
        hello = env.body
        if not isinstance(hello, Hello):
            self._refuse(peer, f"expected hello, got {env.kind}")
            return
        key, refusal = self._authenticate(peer, hello)
        if key is None:
            self._refuse(peer, refusal or f"node {hello.node!r} refused")
            return
        old = self._nodes.get(hello.node)
        if old is not None and old is not peer:
            log.warning("node reconnected, old connection dropped node=%s old=%s new=%s",
                        hello.node, old.address, peer.address)
            self._retire(old)
        peer.node = hello.node
        peer.hello = hello
        self._nodes[hello.node] = peer
        peer.worker = self._spawn(self._event_worker(peer), f"events-{hello.node}")
        proof = (link_proof(key, COORDINATOR_TO_NODE, peer.nonce, hello.nonce, hello.node)
                 if hello.nonce is not None else None)
        self._spawn(
            self._send_to(peer, Welcome(coordinator=self.name, last_seq=self.sink.last_seq(hello.node),
                                        event_batches=True, proof=proof)),
            "welcome",
        )
        log.info("node up node=%s address=%s phones=%d", hello.node, peer.address, len(hello.phones))
        for waiter in self._up_waiters.pop(hello.node, set()):
            if not waiter.done():
                waiter.set_result(None)
        self._callback(self.on_node_up, hello.node, hello)

    def disconnect(self, node: str, reason: str) -> bool:
        """Drop ``node``'s connection now (e.g. its key was revoked): reported down with
        ``reason``, told ``Refused(reason)``, closed; it must pass a new Hello to come back.
        False when it is not connected."""
        peer = self._nodes.get(node)
        if peer is None:
            return False
        self._node_down(peer, reason)
        peer.node = None
        self._refuse(peer, reason)
        return True

    def _refuse(self, peer: _Peer, reason: str) -> None:
        peer.refused = True
        held = self._refusal_log(reason)
        if held is not None:
            log.error("node refused peer=%s reason=%s%s", peer.address, reason, _held(held))

        async def refuse() -> None:
            await self._send_to(peer, Refused(reason=reason))
            await asyncio.sleep(0.2)  # let nng flush the Refused before the pipe closes
            self._close_pipe(peer)

        self._spawn(refuse(), "refuse")

    def _close_pipe(self, peer: _Peer) -> None:
        try:
            peer.pipe.close()
        except pynng.NNGException:
            pass

    def _retire(self, peer: _Peer) -> None:
        """Forget a node connection without reporting the node down (it has a newer one)."""
        if peer.worker:
            peer.worker.cancel()
        if peer.node and self._nodes.get(peer.node) is peer:
            del self._nodes[peer.node]
        peer.node = None
        peer.refused = True
        self._close_pipe(peer)

    def _node_down(self, peer: _Peer, reason: str) -> None:
        name = peer.node
        assert name is not None
        if self._nodes.get(name) is peer:
            del self._nodes[name]
        if peer.worker:
            peer.worker.cancel()
        log.warning("node down node=%s address=%s reason=%s", name, peer.address, reason)
        self._callback(self.on_node_down, name, reason)

    def _dispatch(self, peer: _Peer, env: Envelope) -> None:
        body = env.body
        node = peer.node
        assert node is not None
        if isinstance(body, Heartbeat):
            if body.sent_upto:
                peer.inbox.put_nowait(_SentMark(body.sent_upto))  # checked after the events before it
            return
        if isinstance(body, Event):
            peer.inbox.put_nowait(body)
        elif isinstance(body, EventBatch):
            for event in body.events:
                peer.inbox.put_nowait(event)
        elif isinstance(body, CommandResult):
            fut = self._pending.get(body.command_id)
            if fut is not None and not fut.done():
                fut.set_result(body)
            else:
                log.debug("late or duplicate result dropped node=%s command_id=%s", node, body.command_id)
        elif isinstance(body, Hello):
            log.warning("hello on an authenticated connection ignored peer=%s", peer.peer)
        elif self.on_message is not None:
            self._callback(self.on_message, node, env)
        else:
            self._inbox.put_nowait((node, env))

    async def _event_worker(self, peer: _Peer) -> None:
        """Per node, in seq order: every event queued so far is taken at once, duplicates
        dropped, the run of consecutive new seqs handed to the sink (as one batch when it
        can take one), then one ack for everything stored.

        A seq past a gap is never stored: the ack that followed would cover the missing
        events, which the node then deletes. The node is asked to re-send from the gap.
        The one jump allowed is up to the node's own acked seq from its Hello: events the
        node deleted on an earlier ack are gone for good (this store is behind it, e.g. a
        restored backup), and waiting for them would stall the node forever."""
        node = peer.node
        assert node is not None and peer.hello is not None
        floor = peer.hello.last_acked_seq or 0
        if self.sink.last_seq(node) < floor:
            log.warning("node=%s acked seq %d earlier but this store holds up to %d: events "
                        "in between are not here (store restored or replaced?)",
                        node, floor, self.sink.last_seq(node))
        handle_batch = getattr(self.sink, "handle_batch", None)
        while True:
            queued = [await peer.inbox.get()]
            while not peer.inbox.empty() and len(queued) < MAX_EVENT_BATCH:
                queued.append(peer.inbox.get_nowait())
            last = self.sink.last_seq(node)
            fresh: list[Event] = []
            # Past a hole nothing is stored (the ack would cover the hole and the node would
            # delete what is missing); it is skipped, not the end of the scan: the re-send
            # asked for often arrives right behind the newer events the node had in flight,
            # in the same read, and dropping everything queued behind the first of those
            # dropped the re-send too (asked again 2 s later, over and over: a rack's events
            # came ~10 s late after the 4 x 15 bench's full disk was freed).
            beyond: list[Event | _SentMark] = []
            for event in queued:
                if isinstance(event, _SentMark):
                    if event.seq > max(last, floor):  # sent before this mark, not here yet
                        beyond.append(event)
                    continue
                if event.seq <= last:
                    log.debug("duplicate event dropped node=%s seq=%d last_seq=%d", node, event.seq, last)
                elif event.seq == last + 1 or event.seq <= floor + 1:
                    fresh.append(event)
                    last = event.seq
                else:
                    beyond.append(event)
            gap = next((e for e in beyond if e.seq > max(last, floor)), None)
            if fresh:
                if gap is None:
                    peer.awaiting_seq = None  # no hole left: the next one is asked for at once
                try:
                    if handle_batch is not None:
                        await handle_batch(node, fresh)
                    else:
                        for event in fresh:
                            await self.sink.handle(node, event)
                except Exception:
                    stored = self.sink.last_seq(node)
                    log.exception("event sink failed node=%s seq=%d; not acked, the node re-sends",
                                  node, stored + 1)
                    # Asked again (by a heartbeat's mark) no sooner than RESEND_ASK_AGAIN_S:
                    # a sink that keeps failing is retried, not hammered.
                    peer.awaiting_seq, peer.asked_at = stored + 1, time.monotonic()
                    self._drop_queued(peer)  # keep order: the node re-sends from there
                    await self._send_to(peer, EventAck(upto_seq=stored))  # re-sent on its timeout
                    continue
            if gap is not None:
                expected = self.sink.last_seq(node) + 1
                now = time.monotonic()
                # Once per gap; again only if the re-send has not come for a while (the
                # request itself may have been lost). A hole right behind the events a
                # re-send just brought is the rest of that re-send still on its way (the
                # node re-sends everything from the seq asked for): not asked again then.
                if peer.awaiting_seq is None or now - peer.asked_at > RESEND_ASK_AGAIN_S:
                    peer.awaiting_seq, peer.asked_at = expected, now
                    self.counts["event_resend_requests"] += 1
                    got = (f"node sent up to {gap.seq}" if isinstance(gap, _SentMark)
                           else f"got {gap.seq}")
                    log.warning("event seq gap node=%s expected=%d %s: asking the node to "
                                "re-send", node, expected, got)
                    await self._send_to(peer, EventAck(upto_seq=expected - 1, resend_from=expected))
                elif fresh:  # what this read stored is acked; the hole is still on its way
                    await self._send_to(peer, EventAck(upto_seq=expected - 1))
                continue
            if peer.inbox.empty() and not all(isinstance(e, _SentMark) for e in queued):
                await self._send_to(peer, EventAck(upto_seq=self.sink.last_seq(node)))

    @staticmethod
    def _drop_queued(peer: _Peer) -> None:
        while not peer.inbox.empty():
            peer.inbox.get_nowait()

    async def _tick_loop(self) -> None:
        period = min(self.heartbeat_interval, self.dead_after / 4)
        woke = time.monotonic()
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            stall = _stall(now, woke, period)
            woke = now
            for peer in list(self._peers.values()):
                if peer.node is None:
                    if not peer.refused and now - peer.opened > self.hello_timeout:
                        log.warning("no hello, connection closed peer=%s after_s=%.1f",
                                    peer.address, now - peer.opened)
                        peer.refused = True
                        self._close_pipe(peer)
                    continue
                peer.last_seen = min(now, peer.last_seen + stall)
                silent = now - peer.last_seen
                if silent > self.dead_after:
                    self._node_down(peer, f"silent for {silent:.1f} s")
                    peer.node = None
                    peer.refused = True
                    self._close_pipe(peer)
                elif now - peer.last_hb >= self.heartbeat_interval:
                    peer.last_hb = now
                    self._spawn(self._send_to(peer, Heartbeat()), "heartbeat")


def _stall(now: float, woke: float, period: float) -> float:
    """How long our own event loop held this tick up (a CPU-starved process, a long call on
    the loop). Messages that arrived meanwhile are read only after it, so that time is not
    the peer's silence: each peer's last sign of life moves on by it."""
    return max(0.0, now - woke - period)


# --------------------------------------------------------------------------------------
# node side
# --------------------------------------------------------------------------------------


class _Conn:
    """The node's current connection (one pipe); ``verified`` once the coordinator proved
    the node's key in its Welcome, ``welcomed`` once that Welcome is handled."""

    __slots__ = ("pipe", "address", "last_seen", "last_hb", "welcomed", "sent_upto", "last_ack",
                 "rewinds", "event_batches", "challenge", "nonce", "verified", "failed")

    def __init__(self, pipe: pynng.Pipe, now: float) -> None:
        self.pipe = pipe
        self.address = _pipe_address(pipe)
        self.last_seen = now
        self.last_hb = 0.0
        self.welcomed = False
        self.sent_upto = 0  # highest event seq sent on this connection
        self.last_ack = now  # last ack progress (or first send with nothing outstanding)
        self.rewinds = 0  # bumped when sending must restart lower (see NodeLink._rewind)
        self.event_batches = False  # the coordinator's Welcome says it takes EventBatch
        self.challenge: str | None = None  # the coordinator's nonce (its Challenge)
        self.nonce: str | None = None  # ours, in the Hello: the coordinator's proof covers it
        self.verified = False  # the Welcome's proof was right: commands are taken from here on
        self.failed: str | None = None  # why the coordinator's proof failed


CommandHandler = Callable[[Command], "CommandResult | Awaitable[CommandResult]"]


class NodeLink(_TaskOwner):
    """A node's end: dials the coordinator, proves its key (``secret``: the node's own key,
    or the deprecated shared farm secret) and accepts nothing but the handshake until the
    coordinator has proved the same key; runs commands once, journals events and re-sends
    them until acked.

    ``phones_provider()`` (plain or async) returns the node's ``list[PhoneInfo]`` for Hello.
    ``on_command(command)`` (plain or async) returns the CommandResult; it runs at most once
    per command_id (results are cached for re-sent commands). Exceptions become results:
    DeviceGone -> "gone", anything else -> "error". ``journal`` is a Journal or a path
    (opened and closed by the link); None keeps events in memory only (not durable).
    Callbacks: ``on_connected(coordinator_name)``, ``on_disconnected(reason)``,
    ``on_message(envelope)`` for bodies the link does not handle itself.
    ``registry_version()`` is the node's screen registry version, told in every Hello.
    """

    def __init__(
        self,
        coordinator_addr: str,
        secret: bytes | str,
        node_name: str,
        phones_provider: Callable[[], Any] | None = None,
        *,
        journal: Journal | str | Path | None = None,
        on_command: CommandHandler | None = None,
        on_connected: Callable[[str], Any] | None = None,
        on_disconnected: Callable[[str], Any] | None = None,
        on_message: Callable[[Envelope], Any] | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_S,
        dead_after: float = DEFAULT_DEAD_AFTER_S,
        send_timeout: float = 2.0,
        ack_timeout: float = ACK_TIMEOUT_S,
        result_cache_size: int = 1024,
        reconnect_min: float = 0.1,
        reconnect_max: float = 1.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        registry_version: Callable[[], str | None] | None = None,
    ) -> None:
        super().__init__()
        self.coordinator_addr = coordinator_addr
        self.registry_version = registry_version
        self.node_name = node_name
        self.phones_provider = phones_provider
        self.on_command = on_command
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.on_message = on_message
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self.send_timeout = send_timeout
        self.ack_timeout = ack_timeout
        self.result_cache_size = result_cache_size
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.max_message_bytes = max_message_bytes
        self._secret = secret
        if isinstance(journal, Journal):
            self.journal, self._own_journal = journal, False
        else:
            if journal is None:
                log.warning("node %s has no journal path: events are kept in memory only", node_name)
            self.journal, self._own_journal = Journal(journal if journal is not None else ":memory:"), True
        self.coordinator_name: str | None = None
        self._sock: pynng.Socket | None = None
        self._conn: _Conn | None = None
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._results: OrderedDict[str, CommandResult] = OrderedDict()
        self._running: set[str] = set()
        self._gone_pipes: set[int] = set()
        self._refusal_log = _RepeatLog()
        self.commands_executed = 0
        self.counts: Counter[str] = Counter()  # event_rewinds

    @property
    def peer(self) -> str:
        return f"{self.coordinator_name or 'coordinator'}@{self.coordinator_addr}"

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.welcomed

    # -- lifecycle --

    async def start(self) -> "NodeLink":
        self._loop = asyncio.get_running_loop()
        if self._own_journal:
            await self.journal.open()
        sock = pynng.Pair1(
            polyamorous=True,
            recv_max_size=_recv_limit(self.max_message_bytes),
            send_buffer_size=SOCKET_BUFFER_MSGS,
            recv_buffer_size=SOCKET_BUFFER_MSGS,
            reconnect_time_min=int(self.reconnect_min * 1000),
            reconnect_time_max=int(self.reconnect_max * 1000),
        )
        sock.add_post_pipe_connect_cb(lambda p: self._post(self._pipe_added, p))
        sock.add_post_pipe_remove_cb(lambda p: self._post(self._pipe_removed, p.id))
        self._sock = sock
        sock.dial(self.coordinator_addr, block=False)  # retried by nng until the coordinator is there
        _SocketReader(sock, self._loop, self._on_raw, f"node-recv-{self.node_name}")
        self._spawn(self._tick_loop(), "node-tick")
        self._spawn(self._event_pump(), "node-events")
        log.info("node dialing node=%s coordinator=%s", self.node_name, self.coordinator_addr)
        return self

    async def close(self) -> None:
        sock, self._sock = self._sock, None  # socket first, see CoordinatorLink.close
        if sock is not None:
            sock.close()
        await self._cancel_tasks()
        self._conn = None
        self._connected.clear()
        if self._own_journal:
            await self.journal.close()
        log.info("node closed node=%s", self.node_name)

    async def __aenter__(self) -> "NodeLink":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- public API --

    async def wait_connected(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except asyncio.TimeoutError:
            raise DeliveryError(self.peer, f"not welcomed within {timeout} s") from None

    async def send_event(self, event: str, serial: str | None = None, data: dict[str, Any] | None = None) -> int:
        """Journal the event (durable), then send it when connected; returns its seq.
        ProtocolError (nothing journaled) if the event could never fit in one message."""
        data = data or {}
        self._check_fits(event, serial, data)
        seq = await self.journal.append(event, serial, data)
        self._wake.set()
        return seq

    async def send_events(self, events: list[tuple[str, str | None, dict[str, Any]]]) -> list[int]:
        """`send_event` for several (event, serial, data) items, in this order, journaled
        together (one commit for the lot instead of one wait per event). ProtocolError
        (nothing journaled) if one could never fit in a message."""
        items = [(event, serial, data or {}) for event, serial, data in events]
        for item in items:
            self._check_fits(*item)
        seqs = await self.journal.append_many(items)
        self._wake.set()
        return seqs

    def _check_fits(self, event: str, serial: str | None, data: dict[str, Any]) -> None:
        probe = make_envelope(Event(seq=2**62, event=event, serial=serial, data=data), self.node_name, "coordinator")
        encode(probe, max_bytes=self.max_message_bytes)

    async def send(self, body: Body) -> Envelope:
        """Send any other message on the current connection; DeliveryError if not connected."""
        conn = self._conn
        if conn is None or not conn.welcomed:
            raise DeliveryError(self.peer, "not connected")
        env = make_envelope(body, self.node_name, self.coordinator_name or "coordinator")
        if not await _send_pipe(conn.pipe, encode(env, max_bytes=self.max_message_bytes), self.send_timeout):
            raise DeliveryError(self.peer, f"could not send {env.kind} within {self.send_timeout} s")
        return env

    # -- internals --

    def _pipe_added(self, pipe: pynng.Pipe) -> None:
        if self._sock is None or pipe.id in self._gone_pipes:
            return
        if self._conn is not None:
            if self._conn.pipe.id == pipe.id:
                return
            self._conn_lost("replaced by a new connection")
        self._conn = _Conn(pipe, time.monotonic())
        log.debug("connection opened node=%s coordinator=%s", self.node_name, self._conn.address)

    def _pipe_removed(self, pipe_id: int) -> None:
        if self._sock is None:  # closing
            return
        if len(self._gone_pipes) > 1000:
            self._gone_pipes.clear()
        self._gone_pipes.add(pipe_id)
        if self._conn is not None and self._conn.pipe.id == pipe_id:
            self._conn_lost("connection closed")

    def _conn_lost(self, reason: str) -> None:
        conn, self._conn = self._conn, None
        self._connected.clear()
        if conn is not None and conn.welcomed:
            log.warning("coordinator lost node=%s coordinator=%s reason=%s", self.node_name, self.peer, reason)
            self._callback(self.on_disconnected, reason)

    async def _send_on(self, conn: _Conn, body: Body) -> bool:
        return await _send_body(conn.pipe, body, self.node_name,
                                self.coordinator_name or "coordinator", self.max_message_bytes,
                                self.send_timeout, f"node={self.node_name} coordinator={self.peer}")

    def _on_raw(self, msg: pynng.Message) -> None:
        if self._sock is None:
            return  # closing
        if msg.pipe is None or msg.pipe.id in self._gone_pipes:
            return  # from a connection that is already gone
        try:
            env = decode(msg.bytes, self.peer, max_bytes=self.max_message_bytes)
        except ProtocolError as exc:
            log.error("message rejected peer=%s reason=%s", exc.peer, exc.reason)
            return
        conn = self._conn
        if conn is None or msg.pipe.id != conn.pipe.id:
            # The pipe-connect callback may not have run yet: a Challenge opens a connection.
            if not isinstance(env.body, Challenge):
                return
            self._pipe_added(msg.pipe)
            conn = self._conn
            assert conn is not None
        conn.last_seen = time.monotonic()
        self._dispatch(conn, env)

    def _dispatch(self, conn: _Conn, env: Envelope) -> None:
        body = env.body
        if isinstance(body, Challenge):
            if conn.challenge is not None:
                log.warning("second challenge on one connection ignored node=%s coordinator=%s",
                            self.node_name, conn.address)
                return
            conn.challenge, conn.nonce = body.nonce, new_nonce()
            self._spawn(self._answer(conn, body), "hello")
            return
        if isinstance(body, Welcome):
            if self._coordinator_proved(conn, body):
                self._spawn(self._welcomed(conn, body), "welcome")
            return
        if isinstance(body, Refused):
            held = self._refusal_log(body.reason)
            if held is not None:
                log.error("refused by coordinator node=%s coordinator=%s reason=%s%s",
                          self.node_name, self.peer, body.reason, _held(held))
            return
        if not conn.verified:
            # Only a coordinator that proved this node's key may drive its phones.
            why = conn.failed or "no welcome with its proof yet"
            held = self._refusal_log(f"{env.kind}: {why}")
            if held is not None:
                level = logging.ERROR if isinstance(body, Command) else logging.WARNING
                log.log(level, "%s from an unproved coordinator refused node=%s coordinator=%s "
                        "reason=%s%s", env.kind, self.node_name, conn.address, why, _held(held))
            return
        if isinstance(body, Heartbeat):
            return
        if isinstance(body, Command):
            self._on_command(conn, body)
        elif isinstance(body, EventAck):
            conn.last_ack = time.monotonic()
            self._spawn(self.journal.ack(body.upto_seq), "journal-ack")
            if body.resend_from is not None:
                log.warning("coordinator missed events, re-sending node=%s from_seq=%d",
                            self.node_name, body.resend_from)
                self._rewind(conn, body.resend_from - 1)
        elif self.on_message is not None:
            self._callback(self.on_message, env)
        else:
            log.warning("unexpected message dropped node=%s kind=%s", self.node_name, env.kind)

    async def _answer(self, conn: _Conn, challenge: Challenge) -> None:
        assert conn.nonce is not None
        phones: Any = []
        if self.phones_provider is not None:
            phones = self.phones_provider()
            if inspect.isawaitable(phones):
                phones = await phones
        hello = Hello(
            node=self.node_name,
            proof=link_proof(self._secret, NODE_TO_COORDINATOR, challenge.nonce, conn.nonce,
                             self.node_name),
            phones=list(phones),
            last_acked_seq=self.journal.acked_upto,
            registry_version=self.registry_version() if self.registry_version else None,
            nonce=conn.nonce,
        )
        await self._send_on(conn, hello)

    def _coordinator_proved(self, conn: _Conn, welcome: Welcome) -> bool:
        """Check the Welcome's proof of our key; a wrong or missing one is logged and the
        connection dropped (nng redials): nothing from it is ever acted on."""
        if conn.verified:
            log.warning("second welcome on one connection ignored node=%s coordinator=%s",
                        self.node_name, conn.address)
            return False
        if conn.challenge is None or conn.nonce is None:
            reason = "welcome before any challenge"
        elif welcome.proof is None:
            reason = ("its welcome carries no proof (not the farm's coordinator, or one too "
                      "old for node keys)")
        elif not check_link_proof(self._secret, COORDINATOR_TO_NODE, conn.challenge, conn.nonce,
                                  self.node_name, welcome.proof):
            reason = "wrong proof: it does not hold this node's key"
        else:
            conn.verified = True
            return True
        conn.failed = reason
        held = self._refusal_log(f"proof: {reason}")
        if held is not None:
            log.error("coordinator failed its proof, connection dropped and its commands "
                      "refused node=%s coordinator=%s reason=%s%s", self.node_name,
                      conn.address, reason, _held(held))
        if self._conn is conn:
            self._conn_lost(f"coordinator failed its proof: {reason}")
        self._gone_pipes.add(conn.pipe.id)
        try:
            conn.pipe.close()  # nng redials: the real coordinator may be back at that address
        except pynng.NNGException:
            pass
        return False

    async def _welcomed(self, conn: _Conn, welcome: Welcome) -> None:
        if welcome.last_seq > self.journal.last_seq:
            await self.journal.rebase(welcome.last_seq)
        else:
            await self.journal.ack(welcome.last_seq)
        if self._conn is not conn:
            return
        self.coordinator_name = welcome.coordinator
        conn.event_batches = welcome.event_batches
        conn.welcomed = True
        conn.sent_upto = self.journal.acked_upto
        conn.last_ack = time.monotonic()
        self._connected.set()
        self._wake.set()
        log.info("node connected node=%s coordinator=%s unacked_from=%d",
                 self.node_name, self.peer, self.journal.acked_upto + 1)
        self._callback(self.on_connected, welcome.coordinator)

    def _on_command(self, conn: _Conn, cmd: Command) -> None:
        cached = self._results.get(cmd.command_id)
        if cached is not None:
            self._results.move_to_end(cmd.command_id)
            log.info("duplicate command, cached result re-sent node=%s command_id=%s", self.node_name, cmd.command_id)
            self._spawn(self._send_on(conn, cached), "command-result")
        elif cmd.command_id in self._running:
            log.info("duplicate of a running command ignored node=%s command_id=%s", self.node_name, cmd.command_id)
        else:
            self._running.add(cmd.command_id)
            self._spawn(self._run_command(conn, cmd), f"command-{cmd.command_id}")

    async def _run_command(self, came_on: _Conn, cmd: Command) -> None:
        def result(status: str, error: str | None) -> CommandResult:
            return CommandResult(command_id=cmd.command_id, serial=cmd.serial, status=status,  # type: ignore[arg-type]
                                 error=error)

        try:
            self.commands_executed += 1
            if self.on_command is None:
                res = result("error", f"node {self.node_name} has no command handler")
            else:
                out: Any = self.on_command(cmd)
                if inspect.isawaitable(out):
                    out = await out
                if not isinstance(out, CommandResult):
                    res = result("error", f"command handler returned {type(out).__name__}, not CommandResult")
                elif out.command_id != cmd.command_id:
                    res = msgspec.structs.replace(out, command_id=cmd.command_id)
                else:
                    res = out
        except DeviceGone as exc:
            res = result("gone", str(exc))
        except DeviceError as exc:
            res = result("error", str(exc))
        except Exception as exc:
            log.exception("command failed node=%s command_id=%s serial=%s", self.node_name, cmd.command_id, cmd.serial)
            res = result("error", f"{type(exc).__name__}: {exc}")
        finally:
            self._running.discard(cmd.command_id)
        self._results[cmd.command_id] = res
        while len(self._results) > self.result_cache_size:
            self._results.popitem(last=False)
        conn = self._conn  # the command's connection is authenticated even before Welcome is handled
        if conn is not None and (conn.welcomed or conn is came_on):
            await self._send_on(conn, res)
        # else: the coordinator re-sends the command after reconnecting; the cache answers it

    async def _event_pump(self) -> None:
        """The only sender of events: in seq order, from the journal, per connection."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                conn = self._conn
                if conn is None or not conn.welcomed:
                    break
                after = max(conn.sent_upto, self.journal.acked_upto)
                batch = await self.journal.unacked(after_seq=after, limit=256)
                if not batch:
                    break
                rewinds = conn.rewinds
                per_message = EVENTS_PER_MESSAGE if conn.event_batches else 1
                for at in range(0, len(batch), per_message):
                    chunk = batch[at:at + per_message]
                    if self._conn is not conn or conn.rewinds != rewinds:
                        break
                    if conn.sent_upto <= self.journal.acked_upto:
                        conn.last_ack = time.monotonic()  # nothing was outstanding: start the clock
                    if not await self._send_events(conn, chunk):
                        break
                    if conn.rewinds != rewinds:
                        break  # rewound while these were on their way: start again lower
                    conn.sent_upto = chunk[-1].seq
                else:
                    continue
                break

    async def _send_events(self, conn: _Conn, events: list[Event]) -> bool:
        """One message for ``events`` (split in halves while it is over the size limit:
        each event alone is known to fit, send_event checked)."""
        if len(events) == 1:
            return await self._send_on(conn, events[0])
        try:
            return await self._send_on(conn, EventBatch(events=events))  # encodes before sending
        except ProtocolError:
            half = len(events) // 2
            return (await self._send_events(conn, events[:half])
                    and await self._send_events(conn, events[half:]))

    def _rewind(self, conn: _Conn, upto_seq: int) -> None:
        """Send again everything after ``upto_seq`` on this connection. The pump notices at
        its next event (``rewinds``), so a send in progress cannot move ``sent_upto`` back
        up over the rewind."""
        conn.sent_upto = min(conn.sent_upto, upto_seq)
        conn.rewinds += 1
        self.counts["event_rewinds"] += 1  # events sent again (read by the node's metrics)
        conn.last_ack = time.monotonic()
        self._wake.set()

    async def _tick_loop(self) -> None:
        period = min(self.heartbeat_interval, self.dead_after / 4)
        woke = time.monotonic()
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            stall = _stall(now, woke, period)
            woke = now
            conn = self._conn
            if conn is None:
                continue
            conn.last_seen = min(now, conn.last_seen + stall)
            silent = now - conn.last_seen
            if silent > self.dead_after:
                log.warning("coordinator silent, connection dropped node=%s coordinator=%s silent_s=%.1f",
                            self.node_name, self.peer, silent)
                self._conn_lost(f"silent for {silent:.1f} s")
                try:
                    conn.pipe.close()  # nng redials
                except pynng.NNGException:
                    pass
                continue
            if not conn.welcomed:
                continue
            if now - conn.last_hb >= self.heartbeat_interval:
                conn.last_hb = now
                self._spawn(self._send_on(conn, Heartbeat(sent_upto=conn.sent_upto)), "heartbeat")
            if conn.sent_upto > self.journal.acked_upto and now - conn.last_ack > self.ack_timeout:
                log.warning("events not acked, re-sending node=%s from_seq=%d", self.node_name,
                            self.journal.acked_upto + 1)
                self._rewind(conn, self.journal.acked_upto)
