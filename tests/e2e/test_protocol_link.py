"""The nng link end to end: real sockets on 127.0.0.1 (ephemeral ports), several NodeLinks
and one CoordinatorLink in one process, plus raw pynng sockets playing broken peers.

Timeouts are upper bounds only; nothing asserts on how fast something happened, except the
design rule that a dead peer is detected within 5 s (with the default heartbeat settings).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import msgspec
import pynng
import pytest

from actors.node.device.adb_server import free_port
from protocol.codec import (COORDINATOR_TO_NODE, NODE_TO_COORDINATOR, decode, encode,
                            hello_proof, link_proof, make_command, make_envelope)
from protocol.errors import DeliveryError, DeviceGone, ProtocolError
from protocol.journal import Journal
from protocol.messages import (
    Challenge,
    Command,
    CommandResult,
    Event,
    EventAck,
    EventBatch,
    Heartbeat,
    Hello,
    PhoneInfo,
    Refused,
    Tap,
    Welcome,
)
from protocol.transport import CoordinatorLink, MemoryEventSink, NodeLink

SECRET = "farm-secret"
FAST = dict(heartbeat_interval=0.2, dead_after=1.0)
FAST_NODE = dict(FAST, reconnect_min=0.05, reconnect_max=0.2)


async def until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.02)


class Recorder:
    """Collects node_up / node_down callbacks of a coordinator."""

    def __init__(self) -> None:
        self.up: list[tuple[str, Hello]] = []
        self.down: list[tuple[str, str, float]] = []

    def on_node_up(self, name: str, hello: Hello) -> None:
        self.up.append((name, hello))

    def on_node_down(self, name: str, reason: str) -> None:
        self.down.append((name, reason, time.monotonic()))


class Handler:
    """A command handler that counts executions per command_id."""

    def __init__(self, delay: float = 0.0, fail: BaseException | None = None) -> None:
        self.calls: dict[str, int] = {}
        self.delay = delay
        self.fail = fail

    async def __call__(self, cmd: Command) -> CommandResult:
        self.calls[cmd.command_id] = self.calls.get(cmd.command_id, 0) + 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return CommandResult(command_id=cmd.command_id, serial=cmd.serial, status="ok",
                             data={"action": cmd.action.__struct_config__.tag, "n": self.calls[cmd.command_id]})


class RawPeer:
    """A bare pynng socket speaking the wire format by hand (to misbehave on purpose)."""

    def __init__(self, addr: str) -> None:
        self.sock = pynng.Pair1()
        self.sock.dial(addr, block=True)

    async def send_bytes(self, data: bytes) -> None:
        await asyncio.wait_for(self.sock.asend(data), 2)

    async def send(self, body: Any, src: str = "raw") -> None:
        await self.send_bytes(encode(make_envelope(body, src, "coordinator")))

    async def recv(self, kind: type, timeout: float = 5.0) -> Any:
        end = time.monotonic() + timeout
        while True:
            data = await asyncio.wait_for(self.sock.arecv(), max(0.01, end - time.monotonic()))
            body = decode(data, "coordinator").body
            if isinstance(body, kind):
                return body

    async def handshake(self, name: str, secret: str = SECRET) -> Welcome:
        challenge = await self.recv(Challenge)
        await self.send(Hello(node=name, proof=hello_proof(secret, challenge.nonce, name)), src=name)
        return await self.recv(Welcome)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def closers():
    """Close every link / raw peer a test registers, in reverse order."""
    items: list[Any] = []
    yield items
    for item in reversed(items):
        result = item.close()
        if asyncio.iscoroutine(result):
            await result


async def start_coordinator(closers: list, addr: str = "tcp://127.0.0.1:0", **kw: Any) -> CoordinatorLink:
    params = dict(FAST)
    params.update(kw)
    link = await CoordinatorLink(addr, SECRET, **params).start()
    closers.append(link)
    return link


async def start_node(closers: list, addr: str, name: str, tmp_path: Path, secret: str = SECRET,
                     **kw: Any) -> NodeLink:
    params: dict[str, Any] = dict(FAST_NODE, journal=tmp_path / f"{name}.journal.db")
    params.update(kw)
    phones = [PhoneInfo(serial=f"{name}-S1", state="device"), PhoneInfo(serial=f"{name}-S2", state="device")]
    link = await NodeLink(addr, secret, name, lambda: phones, **params).start()
    closers.append(link)
    return link


# --- connection and authentication ----------------------------------------------------


async def test_several_nodes_hello_welcome(closers, tmp_path):
    rec = Recorder()
    coord = await start_coordinator(closers, on_node_up=rec.on_node_up, on_node_down=rec.on_node_down)
    nodes = [await start_node(closers, coord.address, f"n{i}", tmp_path) for i in range(3)]
    for n in nodes:
        await n.wait_connected(5)
    await until(lambda: len(coord.nodes) == 3, what="3 nodes up")
    assert sorted(name for name, _ in rec.up) == ["n0", "n1", "n2"]
    assert [p.serial for p in coord.nodes["n1"].phones] == ["n1-S1", "n1-S2"]
    assert all(n.connected and n.coordinator_name == "coordinator" for n in nodes)
    assert rec.down == []


async def test_node_starts_before_coordinator(closers, tmp_path):
    probe = await start_coordinator(closers)
    addr = probe.address
    await probe.close()
    node = await start_node(closers, addr, "early", tmp_path)
    await asyncio.sleep(0.3)
    assert not node.connected
    coord = await start_coordinator(closers, addr)
    await node.wait_connected(5)
    await coord.wait_node_up("early", 5)


async def test_wrong_secret_refused_and_logged(closers, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    rec = Recorder()
    coord = await start_coordinator(closers, on_node_up=rec.on_node_up)
    good = await start_node(closers, coord.address, "good", tmp_path, on_command=Handler())
    bad = await start_node(closers, coord.address, "intruder", tmp_path, secret="guess")
    await good.wait_connected(5)

    def refused_logs():
        return [r for r in caplog.records if r.name == "protocol.transport" and r.levelno == logging.ERROR
                and "node refused" in r.getMessage() and "intruder" in r.getMessage()]

    await until(lambda: refused_logs(), what="refusal logged")
    message = refused_logs()[0].getMessage()
    assert "peer=127.0.0.1:" in message and "wrong farm secret" in message
    await until(lambda: any("refused by coordinator" in r.getMessage() for r in caplog.records
                            if r.levelno == logging.ERROR), what="node logs the refusal")
    assert not bad.connected and not coord.is_up("intruder")
    assert [name for name, _ in rec.up] == ["good"]
    result = await coord.send_command("good", make_command("good-S1", Tap(x=1, y=2)), deadline=5)
    assert result.status == "ok"


async def test_first_message_not_hello_is_refused(closers, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    coord = await start_coordinator(closers)
    raw = RawPeer(coord.address)
    closers.append(raw)
    await raw.recv(Challenge)
    await raw.send(Heartbeat())
    refused = await raw.recv(Refused)
    assert "expected hello, got heartbeat" in refused.reason
    assert any("node refused" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert coord.nodes == {}


async def test_bad_messages_logged_and_link_stays_up(closers, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    rec = Recorder()
    coord = await start_coordinator(closers, on_node_down=rec.on_node_down, max_message_bytes=64 * 1024)
    good = await start_node(closers, coord.address, "good", tmp_path, on_command=Handler())
    await good.wait_connected(5)

    # A stranger sends garbage before any hello: logged with its address, dropped.
    stranger = RawPeer(coord.address)
    closers.append(stranger)
    await stranger.send_bytes(b"\x00\x01 definitely not json")

    # An authenticated peer sends garbage, another version, a bad schema and an oversized message.
    raw = RawPeer(coord.address)
    closers.append(raw)
    await raw.handshake("rawnode")
    await raw.send_bytes(b"garbage")
    wire = msgspec.json.decode(encode(make_envelope(Heartbeat(), "rawnode", "coordinator")))
    await raw.send_bytes(msgspec.json.encode({**wire, "v": 2}))
    bad_event = msgspec.json.decode(encode(make_envelope(Event(seq=1, event="x"), "rawnode", "c")))
    bad_event["body"]["seq"] = "one"
    await raw.send_bytes(msgspec.json.encode(bad_event))
    await raw.send_bytes(encode(make_envelope(Event(seq=1, event="big", data={"b": "x" * 100_000}), "rawnode", "c"),
                         max_bytes=1 << 20))

    def rejected(fragment: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
                and "message rejected" in r.getMessage() and fragment in r.getMessage()]

    await until(lambda: len(rejected("peer=rawnode@127.0.0.1:")) == 4, what="4 rejections of rawnode")
    await until(lambda: rejected("peer=127.0.0.1:"), what="stranger's garbage logged")
    reasons = "\n".join(rejected("peer=rawnode@"))
    assert "malformed message" in reasons
    assert "version 2, expected 1" in reasons
    assert "$.body.seq: Expected `int`, got `str`" in reasons
    assert "over the limit of 65536 bytes" in reasons

    # Same connection still works: a valid event is stored and acked.
    await raw.send(Event(seq=1, event="still_here"), src="rawnode")
    ack = await raw.recv(EventAck)
    assert ack.upto_seq == 1
    assert coord.is_up("rawnode") and coord.is_up("good")
    assert rec.down == []
    result = await coord.send_command("good", make_command("good-S1", Tap(x=5, y=5)), deadline=5)
    assert result.status == "ok"


# --- commands -------------------------------------------------------------------------


async def test_command_round_trip(closers, tmp_path):
    coord = await start_coordinator(closers)
    handlers = {name: Handler() for name in ("a", "b")}
    for name, handler in handlers.items():
        await start_node(closers, coord.address, name, tmp_path, on_command=handler)
    await coord.wait_node_up("a", 5)
    await coord.wait_node_up("b", 5)
    cmd_a = make_command("a-S1", Tap(x=100, y=200), execution_id="ex-1")
    cmd_b = make_command("b-S2", Tap(x=1, y=2))
    res_a, res_b = await asyncio.gather(coord.send_command("a", cmd_a, deadline=5),
                                        coord.send_command("b", cmd_b, deadline=5))
    assert (res_a.command_id, res_a.serial, res_a.status, res_a.data) == (cmd_a.command_id, "a-S1", "ok",
                                                                          {"action": "tap", "n": 1})
    assert res_b.command_id == cmd_b.command_id
    assert handlers["a"].calls == {cmd_a.command_id: 1} and handlers["b"].calls == {cmd_b.command_id: 1}


async def test_duplicate_command_executed_once(closers, tmp_path):
    coord = await start_coordinator(closers)
    handler = Handler()
    await start_node(closers, coord.address, "n1", tmp_path, on_command=handler)
    await coord.wait_node_up("n1", 5)
    cmd = make_command("n1-S1", Tap(x=1, y=1))
    first = await coord.send_command("n1", cmd, deadline=5)
    again = await coord.send_command("n1", cmd, deadline=5)  # a re-send of the same command_id
    assert first == again
    assert handler.calls == {cmd.command_id: 1}


async def test_slow_command_resent_but_executed_once(closers, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    coord = await start_coordinator(closers)
    handler = Handler(delay=0.6)
    await start_node(closers, coord.address, "n1", tmp_path, on_command=handler)
    await coord.wait_node_up("n1", 5)
    cmd = make_command("n1-S1", Tap(x=1, y=1))
    result = await coord.send_command("n1", cmd, timeout=0.15, deadline=5)
    assert result.status == "ok"
    assert handler.calls == {cmd.command_id: 1}
    assert any("command re-sent" in r.getMessage() for r in caplog.records)


async def test_command_failures_become_results(closers, tmp_path):
    coord = await start_coordinator(closers)
    await start_node(closers, coord.address, "n1", tmp_path,
                     on_command=Handler(fail=DeviceGone("n1-S1", "tap", "unplugged")))
    await coord.wait_node_up("n1", 5)
    result = await coord.send_command("n1", make_command("n1-S1", Tap(x=1, y=1)), deadline=5)
    assert result.status == "gone" and "unplugged" in (result.error or "")


async def test_command_to_absent_node_times_out(closers):
    coord = await start_coordinator(closers)
    with pytest.raises(DeliveryError) as info:
        await coord.send_command("nobody", make_command("S", Tap(x=1, y=1)), timeout=0.1, deadline=0.3)
    assert info.value.peer == "nobody"


# --- events ---------------------------------------------------------------------------


async def test_events_journaled_and_acked(closers, tmp_path):
    sink = MemoryEventSink()
    coord = await start_coordinator(closers, sink=sink)
    node = await start_node(closers, coord.address, "n1", tmp_path)
    await node.wait_connected(5)
    seqs = [await node.send_event("step_done", "n1-S1", {"i": i}) for i in range(20)]
    assert seqs == list(range(1, 21))
    await until(lambda: node.journal.acked_upto == 20, what="all acked")
    assert [e.data["i"] for e in sink.events["n1"]] == list(range(20))
    assert await node.journal.unacked() == []


async def test_duplicate_event_dropped_but_acked(closers):
    sink = MemoryEventSink()
    coord = await start_coordinator(closers, sink=sink)
    raw = RawPeer(coord.address)
    closers.append(raw)
    await raw.handshake("rawnode")
    acks = []
    for seq in (1, 2, 2, 1, 3):
        await raw.send(Event(seq=seq, event="e", data={"seq": seq}), src="rawnode")
        acks.append((await raw.recv(EventAck)).upto_seq)
    assert acks == [1, 2, 2, 2, 3]
    assert [e.seq for e in sink.events["rawnode"]] == [1, 2, 3]


async def raw_node_with_two_events(closers: list) -> tuple[MemoryEventSink, RawPeer]:
    """A coordinator and a hand-played node 'rawnode' whose seqs 1 and 2 are stored and acked."""
    sink = MemoryEventSink()
    coord = await start_coordinator(closers, sink=sink)
    raw = RawPeer(coord.address)
    closers.append(raw)
    await raw.handshake("rawnode")
    for seq in (1, 2):
        await raw.send(Event(seq=seq, event="e"), src="rawnode")
        assert (await raw.recv(EventAck)).upto_seq == seq
    return sink, raw


async def test_event_past_a_gap_is_not_stored_and_the_node_is_asked_to_resend(closers):
    """Seq 4 after 2: storing it would make the ack cover the missing 3 (the node would
    delete it). It is dropped, the ack asks for 3 again; later events are dropped quietly
    (one request per gap) until 3 comes."""
    sink, raw = await raw_node_with_two_events(closers)
    await raw.send(Event(seq=4, event="e"), src="rawnode")
    ack = await raw.recv(EventAck)
    assert (ack.upto_seq, ack.resend_from) == (2, 3)
    await raw.send(Event(seq=5, event="e"), src="rawnode")
    with pytest.raises(asyncio.TimeoutError):
        await raw.recv(EventAck, timeout=0.5)
    for seq in (3, 4, 5):
        await raw.send(Event(seq=seq, event="e"), src="rawnode")
        ack = await raw.recv(EventAck)
        assert (ack.upto_seq, ack.resend_from) == (seq, None)
    assert [e.seq for e in sink.events["rawnode"]] == [1, 2, 3, 4, 5]


async def test_a_resend_arriving_behind_newer_events_is_taken_with_one_request(closers):
    """After a gap the node rewinds, but the newer events it had in flight arrive first, in
    the same read as the re-send. They are skipped and the re-send behind them is stored:
    dropping all that was queued behind the first of them had dropped the re-send too, and
    asked again every 2 s (a rack's events ~10 s late after the chaos bench's full disk)."""
    sink, raw = await raw_node_with_two_events(closers)
    await raw.send(Event(seq=4, event="e"), src="rawnode")
    ack = await raw.recv(EventAck)
    assert (ack.upto_seq, ack.resend_from) == (2, 3)
    # In flight before the rewind: 5 and 6; then the re-send from 3.
    await raw.send(EventBatch(events=[Event(seq=s, event="e") for s in (5, 6, 3, 4, 5, 6)]),
                   src="rawnode")
    ack = await raw.recv(EventAck, timeout=1.0)  # well within RESEND_ASK_AGAIN_S
    assert (ack.upto_seq, ack.resend_from) == (6, None)
    assert [e.seq for e in sink.events["rawnode"]] == [1, 2, 3, 4, 5, 6]
    # A hole right behind a re-send's first part is the rest of it, still on its way: the
    # events stored are acked, nothing is asked again, and the rest fills it.
    await raw.send(Event(seq=8, event="e"), src="rawnode")
    assert (await raw.recv(EventAck)).resend_from == 7
    await raw.send(EventBatch(events=[Event(seq=s, event="e") for s in (9, 7)]), src="rawnode")
    ack = await raw.recv(EventAck)
    assert (ack.upto_seq, ack.resend_from) == (7, None)
    await raw.send(EventBatch(events=[Event(seq=s, event="e") for s in (8, 9)]), src="rawnode")
    assert (await raw.recv(EventAck)).upto_seq == 9
    assert [e.seq for e in sink.events["rawnode"]] == list(range(1, 10))


async def test_a_lost_last_event_is_asked_for_when_the_heartbeat_says_it_was_sent(closers):
    """Nothing follows seq 3 to show the gap, but the node's heartbeat says it sent up to 3:
    the coordinator asks for 3 at once (not after the node's ack timeout)."""
    sink, raw = await raw_node_with_two_events(closers)
    await raw.send(Heartbeat(sent_upto=2), src="rawnode")  # all there: nothing asked
    with pytest.raises(asyncio.TimeoutError):
        await raw.recv(EventAck, timeout=0.5)
    await raw.send(Heartbeat(sent_upto=3), src="rawnode")
    ack = await raw.recv(EventAck)
    assert (ack.upto_seq, ack.resend_from) == (2, 3)
    await raw.send(Event(seq=3, event="e"), src="rawnode")
    assert (await raw.recv(EventAck)).upto_seq == 3
    assert [e.seq for e in sink.events["rawnode"]] == [1, 2, 3]


async def test_an_event_lost_on_the_way_reaches_the_coordinator_without_the_ack_timeout(
        closers, tmp_path):
    """The node's send of seq 3 'succeeds' but the message never arrives (as when Pair1
    drops it): its next heartbeat says it sent up to 3, the coordinator asks, and 3 is
    stored long before the node's own ack timeout (60 s here)."""
    sink = MemoryEventSink()
    coord = await start_coordinator(closers, sink=sink)
    node = await start_node(closers, coord.address, "n1", tmp_path, ack_timeout=60)
    await node.wait_connected(5)
    real_send = node._send_events
    lost: list[int] = []

    async def lossy(conn, events):
        if not lost and events[-1].seq == 3:
            lost.append(3)
            keep = [e for e in events if e.seq != 3]
            return await real_send(conn, keep) if keep else True
        return await real_send(conn, events)

    node._send_events = lossy
    for i in range(3):
        await node.send_event("e", None, {"i": i})
    await until(lambda: node.journal.acked_upto == 3, timeout=10, what="3 asked for and stored")
    assert lost == [3] and [e.seq for e in sink.events["n1"]] == [1, 2, 3]


async def test_a_store_behind_the_nodes_acked_seq_takes_the_jump_once(closers):
    """A node that acked 10 earlier (this store was restored from an older copy) starts at
    11: that jump is taken (those events are gone from the node); any other is a gap."""
    sink = MemoryEventSink()
    coord = await start_coordinator(closers, sink=sink)
    raw = RawPeer(coord.address)
    closers.append(raw)
    challenge = await raw.recv(Challenge)
    await raw.send(Hello(node="rawnode", proof=hello_proof(SECRET, challenge.nonce, "rawnode"),
                         last_acked_seq=10), src="rawnode")
    await raw.recv(Welcome)
    await raw.send(Event(seq=11, event="e"), src="rawnode")
    assert (await raw.recv(EventAck)).upto_seq == 11
    await raw.send(Event(seq=13, event="e"), src="rawnode")
    ack = await raw.recv(EventAck)
    assert (ack.upto_seq, ack.resend_from) == (11, 12)
    assert [e.seq for e in sink.events["rawnode"]] == [11]


class HandCoordinator:
    """A coordinator played by hand on a bare socket: welcomes one node, then lets the test
    read what the node sends and answer as it likes."""

    def __init__(self, closers: list) -> None:
        self.sock = pynng.Pair1(polyamorous=True)
        closers.append(self.sock)
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.sock.listen(self.address)

    async def recv_body(self) -> Any:
        return decode(await asyncio.wait_for(self.sock.arecv(), 5), "node").body

    async def send_body(self, body: Any) -> None:
        await asyncio.wait_for(self.sock.asend(encode(make_envelope(body, "coordinator", "n1"))), 2)

    async def welcome(self, node: NodeLink, **welcome: Any) -> None:
        await self.send_body(Challenge(nonce="abc"))
        while not isinstance(hello := await self.recv_body(), Hello):
            pass
        proof = link_proof(SECRET, COORDINATOR_TO_NODE, "abc", hello.nonce, hello.node)
        await self.send_body(Welcome(coordinator="coordinator", last_seq=0, proof=proof,
                                     **welcome))
        await node.wait_connected(5)

    async def events(self, count: int) -> tuple[list[int], list[str]]:
        """The next ``count`` event seqs and the kind of each message that carried them."""
        seqs: list[int] = []
        kinds: list[str] = []
        while len(seqs) < count:
            body = await self.recv_body()
            if isinstance(body, Event):
                seqs.append(body.seq)
                kinds.append("event")
            elif isinstance(body, EventBatch):
                seqs += [e.seq for e in body.events]
                kinds.append("event_batch")
        return seqs, kinds


async def test_node_resends_at_once_when_the_coordinator_asks(closers, tmp_path):
    """The coordinator gets 1..5, then says it lost 3 on: the node sends 3..5 again right
    away (its ack timeout, 60 s here, plays no part) and keeps 1..2 acked."""
    coord = HandCoordinator(closers)
    node = await start_node(closers, coord.address, "n1", tmp_path, ack_timeout=60,
                            heartbeat_interval=0.2, dead_after=30)
    await coord.welcome(node)
    for i in range(5):
        await node.send_event("e", None, {"i": i})
    assert (await coord.events(5))[0] == [1, 2, 3, 4, 5]
    await coord.send_body(EventAck(upto_seq=2, resend_from=3))
    assert (await coord.events(3))[0] == [3, 4, 5]
    await until(lambda: node.journal.acked_upto == 2, what="1..2 acked")


@pytest.mark.parametrize("batches", [True, False])
async def test_queued_events_travel_in_batches_only_to_a_coordinator_that_takes_them(
        closers, tmp_path, batches):
    """Events journaled while the link is down go out several to a message once a
    coordinator that says event_batches welcomes the node; an older coordinator (no such
    field) gets one Event per message. Order and seqs are the same either way."""
    coord = HandCoordinator(closers)
    node = await start_node(closers, coord.address, "n1", tmp_path, ack_timeout=60,
                            heartbeat_interval=0.2, dead_after=30)
    for i in range(20):
        await node.send_event("e", None, {"i": i})
    await coord.welcome(node, event_batches=batches)
    seqs, kinds = await coord.events(20)
    assert seqs == list(range(1, 21))
    if batches:
        assert len(kinds) < 20 and "event_batch" in kinds
    else:
        assert kinds == ["event"] * 20


async def test_a_batch_over_the_message_limit_is_split(closers, tmp_path):
    """Events that each fit but not together go in smaller batches, none lost."""
    coord = HandCoordinator(closers)
    node = await start_node(closers, coord.address, "n1", tmp_path, ack_timeout=60,
                            heartbeat_interval=0.2, dead_after=30, max_message_bytes=4096)
    for i in range(8):
        await node.send_event("e", None, {"blob": "x" * 1500, "i": i})
    await coord.welcome(node, event_batches=True)
    seqs, kinds = await coord.events(8)
    assert seqs == list(range(1, 9)) and len(kinds) >= 4


async def test_coordinator_stores_every_event_of_a_batch(closers, tmp_path):
    sink = MemoryEventSink()
    coord = await start_coordinator(closers, sink=sink)
    node = await start_node(closers, coord.address, "n1", tmp_path)
    await node.wait_connected(5)
    await asyncio.gather(*(node.send_event("e", None, {"i": i}) for i in range(300)))
    await until(lambda: node.journal.acked_upto == 300, what="all acked")
    assert [e.seq for e in sink.events["n1"]] == list(range(1, 301))
    assert [e.data["i"] for e in sink.events["n1"]] == list(range(300))


async def test_send_events_journals_in_order_or_nothing_when_one_cannot_fit(closers, tmp_path):
    sink = MemoryEventSink()
    coord = await start_coordinator(closers, sink=sink)
    node = await start_node(closers, coord.address, "n1", tmp_path, max_message_bytes=4096)
    await node.wait_connected(5)
    assert await node.send_events([("a", "S1", {"i": 0}), ("b", None, {"i": 1})]) == [1, 2]
    with pytest.raises(ProtocolError):
        await node.send_events([("c", None, {}), ("huge", None, {"blob": "x" * 8000})])
    assert node.journal.last_seq == 2
    await until(lambda: node.journal.acked_upto == 2, what="both acked")
    assert [(e.seq, e.event) for e in sink.events["n1"]] == [(1, "a"), (2, "b")]


class CrashingSink(MemoryEventSink):
    """Stores event ``crash_at`` and then hangs, as if the coordinator died before acking."""

    def __init__(self, crash_at: int) -> None:
        super().__init__()
        self.crash_at = crash_at
        self.crashed = asyncio.Event()

    async def handle(self, node: str, event: Event) -> None:
        await super().handle(node, event)
        if event.seq == self.crash_at:
            self.crashed.set()
            await asyncio.sleep(3600)


class FailOnceSink(MemoryEventSink):
    """Raises (stores nothing) the first time it is handed event ``fail_at``."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    async def handle(self, node: str, event: Event) -> None:
        if event.seq == self.fail_at:
            self.fail_at = -1
            raise RuntimeError("disk full")
        await super().handle(node, event)


async def test_a_failed_event_is_never_acked_by_a_later_one(closers, tmp_path):
    """The sink fails on seq 3 while 4..8 are in flight: those are not stored across the gap
    (an ack for them would cover 3, and the node would drop it); the node re-sends from 3."""
    sink = FailOnceSink(fail_at=3)
    coord = await start_coordinator(closers, sink=sink)
    node = await start_node(closers, coord.address, "n1", tmp_path, ack_timeout=0.5)
    await node.wait_connected(5)
    for i in range(8):
        await node.send_event("e", None, {"i": i})
    await until(lambda: node.journal.acked_upto == 8, timeout=15, what="all acked after the re-send")
    assert [e.seq for e in sink.events["n1"]] == list(range(1, 9))  # none lost, none twice


async def test_coordinator_restart_node_replays_unacked(closers, tmp_path):
    sink = CrashingSink(crash_at=5)  # the same sink object across restarts = persisted store
    rec = Recorder()
    coord = await start_coordinator(closers, sink=sink)
    addr = coord.address
    node = await start_node(closers, addr, "n1", tmp_path, on_disconnected=lambda reason: None)
    await node.wait_connected(5)
    for i in range(8):
        await node.send_event("e", None, {"i": i})
    await asyncio.wait_for(sink.crashed.wait(), 5)
    await coord.close()  # seq 5 stored but never acked; 6..8 queued or in flight
    await until(lambda: not node.connected, what="node notices")
    for i in range(8, 12):  # written while the coordinator is away
        await node.send_event("e", None, {"i": i})
    assert node.journal.acked_upto < 5

    sink.crash_at = -1
    coord2 = await start_coordinator(closers, addr, sink=sink, on_node_up=rec.on_node_up)
    await node.wait_connected(5)  # nng redialed by itself
    await until(lambda: node.journal.acked_upto == 12, what="all acked after restart")
    assert [e.seq for e in sink.events["n1"]] == list(range(1, 13))  # none lost, none twice
    assert [e.data["i"] for e in sink.events["n1"]] == list(range(12))
    assert [name for name, _ in rec.up] == ["n1"]
    # and commands work on the resumed link
    assert coord2.is_up("n1")


async def test_node_restart_keeps_journal(closers, tmp_path):
    probe = await start_coordinator(closers)
    addr = probe.address
    await probe.close()
    node = await start_node(closers, addr, "n1", tmp_path)
    for i in range(3):
        await node.send_event("offline", None, {"i": i})
    await node.close()
    async with Journal(tmp_path / "n1.journal.db") as journal:
        assert [e.seq for e in await journal.unacked()] == [1, 2, 3]

    sink = MemoryEventSink()
    node = await start_node(closers, addr, "n1", tmp_path)
    assert await node.send_event("after_restart") == 4
    await start_coordinator(closers, addr, sink=sink)
    await until(lambda: node.journal.acked_upto == 4, what="replayed after node restart")
    assert [e.seq for e in sink.events["n1"]] == [1, 2, 3, 4]


async def test_lost_journal_is_rebased(closers, tmp_path):
    sink = MemoryEventSink()
    coord = await start_coordinator(closers, sink=sink)
    node = await start_node(closers, coord.address, "n1", tmp_path)
    for i in range(5):
        await node.send_event("e", None, {"i": i})
    await until(lambda: node.journal.acked_upto == 5, what="acked")
    await node.close()
    (tmp_path / "n1.journal.db").unlink()
    node = await start_node(closers, coord.address, "n1", tmp_path)
    await node.send_event("fresh_journal")  # seq 1 in the new journal: must not be taken for a duplicate
    await until(lambda: len(sink.events["n1"]) == 6, what="event after journal loss stored")
    assert [e.seq for e in sink.events["n1"]] == [1, 2, 3, 4, 5, 6]


# --- liveness ---------------------------------------------------------------------------


async def test_stopped_node_reported_down_within_5s(closers, tmp_path):
    rec = Recorder()
    coord = await start_coordinator(closers, on_node_down=rec.on_node_down,
                                    heartbeat_interval=1.0, dead_after=3.0)  # the defaults
    nodes = [await start_node(closers, coord.address, f"n{i}", tmp_path, heartbeat_interval=1.0, dead_after=3.0)
             for i in range(2)]
    await coord.wait_node_up("n0", 5)
    await coord.wait_node_up("n1", 5)
    stopped = time.monotonic()
    await nodes[0].close()
    await until(lambda: rec.down, timeout=5, what="node_down")
    name, reason, when = rec.down[0]
    assert name == "n0" and when - stopped < 5
    assert coord.is_up("n1") and not coord.is_up("n0")


async def test_silent_node_declared_down_within_5s(closers):
    rec = Recorder()
    coord = await CoordinatorLink("tcp://127.0.0.1:0", SECRET, on_node_down=rec.on_node_down).start()  # defaults
    closers.append(coord)
    raw = RawPeer(coord.address)  # handshakes, then never says anything again (frozen process)
    closers.append(raw)
    await raw.handshake("frozen")
    last_word = time.monotonic()
    await until(lambda: rec.down, timeout=6, what="node_down")
    name, reason, when = rec.down[0]
    assert name == "frozen" and reason.startswith("silent for")
    assert when - last_word < 5


async def test_node_detects_silent_coordinator_and_redials(closers, tmp_path):
    fake = pynng.Pair1(polyamorous=True)  # a coordinator that welcomes and then freezes
    closers.append(fake)
    listener = fake.listen("tcp://127.0.0.1:0")
    lost: list[tuple[str, float]] = []
    node = await start_node(closers, listener.url, "n1", tmp_path, heartbeat_interval=1.0, dead_after=3.0,
                            on_disconnected=lambda reason: lost.append((reason, time.monotonic())))

    pipe_count = 0
    deadline = time.monotonic() + 5
    while pipe_count == 0 and time.monotonic() < deadline:
        pipe_count = len(fake.pipes)
        await asyncio.sleep(0.02)
    pipe = fake.pipes[0]
    await pipe.asend(encode(make_envelope(Challenge(nonce="n"), "fake", "n1")))
    hello = decode((await asyncio.wait_for(fake.arecv_msg(), 5)).bytes, "n1").body
    assert isinstance(hello, Hello)
    assert hello.proof == link_proof(SECRET, NODE_TO_COORDINATOR, "n", hello.nonce, "n1")
    proof = link_proof(SECRET, COORDINATOR_TO_NODE, "n", hello.nonce, "n1")
    await pipe.asend(encode(make_envelope(Welcome(coordinator="fake", proof=proof), "fake", "n1")))
    await node.wait_connected(5)
    welcomed = time.monotonic()
    await until(lambda: lost, timeout=6, what="node gives up on the frozen coordinator")
    reason, when = lost[0]
    assert reason.startswith("silent for") and when - welcomed < 5
    await until(lambda: any(p.id != pipe.id for p in fake.pipes), timeout=5, what="redial")


async def test_a_stall_of_our_own_event_loop_is_not_the_peer_s_silence(closers, tmp_path):
    """A process held up longer than dead_after (a loaded machine, a long call on the loop)
    reads the messages that arrived meanwhile only after its next tick: that tick must not
    take the peer for dead. Here the coordinator and the node share the stalled loop."""
    rec = Recorder()
    coord = await start_coordinator(closers, on_node_down=rec.on_node_down)
    lost: list[str] = []
    node = await start_node(closers, coord.address, "n0", tmp_path,
                            on_disconnected=lost.append)
    await coord.wait_node_up("n0", 5)
    time.sleep(2.5)  # noqa: ASYNC251 - the stall itself: 2.5 x dead_after, nothing runs
    await asyncio.sleep(1.5)  # several ticks, every message read
    assert rec.down == [] and coord.is_up("n0")
    assert lost == [] and node.connected
