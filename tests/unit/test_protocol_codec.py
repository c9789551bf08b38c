"""Codec: every message kind round-trips; bad version, schema, kind, JSON and size are
ProtocolErrors naming the peer."""

from __future__ import annotations

import msgspec
import pytest

from protocol.codec import (
    MAX_MESSAGE_BYTES,
    check_proof,
    decode,
    encode,
    hello_proof,
    make_command,
    make_envelope,
)
from protocol.errors import FarmError, ProtocolError
from protocol.messages import (
    KINDS,
    PROTOCOL_VERSION,
    Acquire,
    Challenge,
    Command,
    CommandResult,
    Envelope,
    Event,
    EventAck,
    EventBatch,
    Heartbeat,
    Hello,
    RegistryApplied,
    RegistryPush,
    Key,
    LaunchApp,
    LongTap,
    PhoneInfo,
    Refused,
    Release,
    Screenshot,
    StopApp,
    Swipe,
    DebugCrash,
    LiveEvent,
    LiveFrame,
    LiveWatch,
    Tap,
    Text,
    Welcome,
)

ACTIONS = [
    Tap(x=10, y=20),
    LongTap(x=1, y=2, duration_ms=900),
    Swipe(x1=1, y1=2, x2=3, y2=4, duration_ms=250),
    Swipe(x1=1, y1=2, x2=5, y2=6, duration_ms=250, path=[(1, 2), (3, 4), (5, 6)]),
    Text(text="héllo {wörld}"),
    Key(key=4),
    Key(key="KEYCODE_BACK"),
    LaunchApp(package="com.example", activity=".Main"),
    LaunchApp(package="com.example"),
    StopApp(package="com.example"),
    Screenshot(),
    Acquire(execution_id="ex-1", lease_s=30.0),
    Release(execution_id="ex-1"),
    DebugCrash(),
]

BODIES = [
    Challenge(nonce="abc123"),
    Hello(node="n1", proof="ff" * 32, phones=[PhoneInfo(serial="S1", state="device", model="Pixel")],
          last_acked_seq=7),
    Hello(node="n2", proof="00"),
    Welcome(coordinator="coordinator", last_seq=3),
    Refused(reason="bad proof"),
    Heartbeat(),
    CommandResult(command_id="c1", serial="S1", status="ok", data={"png": "..." , "n": [1, 2]}),
    CommandResult(command_id="c2", serial="S1", status="locked", error="held by ex-9"),
    Event(seq=1, event="step_done", serial="S1", data={"step": 3}),
    Event(seq=2, event="node_started"),
    EventAck(upto_seq=2),
    EventAck(upto_seq=2, resend_from=3),
    EventBatch(events=[Event(seq=3, event="step_done", serial="S1"), Event(seq=4, event="x")]),
    LiveEvent(event="thumbnail", serial="S1", data={"jpeg": "b64", "ts": 1.5}),
    Hello(node="n3", proof="aa", phones=[PhoneInfo(serial="S2", state="online",
                                                    detail={"lock_holder": "ex-2"})]),
    Hello(node="n4", proof="bb", registry_version="ab" * 32),
    RegistryPush(version="cd" * 32, app="clipshare", app_json=b'{"package": "x.y"}\n',
                 files={"clipshare/feed.png": b"\x89PNG\r\n\x1a\n\x00\xff"},
                 apps=["clipshare", "global"]),
    RegistryApplied(app="clipshare", version="cd" * 32),
    RegistryApplied(app="clipshare", version="ab" * 32, error="invalid: box outside"),
    LiveWatch(serial="S1", width=270, fps=10.0, lease_s=10.0),
    LiveWatch(serial="S1", width=0),
    LiveFrame(serial="S1", jpeg=b"\xff\xd8\x00jpeg", ts=1.5, width=1080, height=2400),
] + [make_command("S1", action, execution_id="ex-1") for action in ACTIONS]


def test_every_kind_is_covered() -> None:
    assert {type(b) for b in BODIES} == set(KINDS.values())


@pytest.mark.parametrize("body", BODIES, ids=lambda b: type(b).__name__)
def test_round_trip(body) -> None:
    env = make_envelope(body, "coordinator", "n1")
    assert env.v == PROTOCOL_VERSION and env.kind == type(body).KIND
    data = encode(env)
    back = decode(data, "n1")
    assert back == env
    assert type(back.body) is type(body)


def test_envelope_fields_on_the_wire() -> None:
    env = make_envelope(Heartbeat(), "n1", "coordinator")
    wire = msgspec.json.decode(encode(env))
    assert set(wire) == {"v", "id", "kind", "src", "dst", "ts", "body"}
    assert wire["kind"] == "heartbeat" and wire["body"] == {}
    assert len(env.id) == 32 and make_envelope(Heartbeat(), "a", "b").id != env.id


def _wire(**changes) -> bytes:
    wire = msgspec.json.decode(encode(make_envelope(make_command("S1", Tap(1, 2)), "c", "n1")))
    for path, value in changes.items():
        target = wire
        *parents, last = path.split("__")
        for p in parents:
            target = target[p]
        target[last] = value
    return msgspec.json.encode(wire)


def _reject(data: bytes, peer: str = "node-7@127.0.0.1:4711", **kw) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(data, peer, **kw)
    err = info.value
    assert isinstance(err, FarmError)
    assert err.peer == peer and peer in str(err)
    return err


def test_wrong_version() -> None:
    assert _reject(_wire(v=2)).reason == f"version 2, expected {PROTOCOL_VERSION}"


def test_wrong_version_with_other_shape_reports_the_version() -> None:
    data = msgspec.json.encode({"v": 2, "whatever": True})
    assert _reject(data).reason == f"version 2, expected {PROTOCOL_VERSION}"


def test_bad_schema_names_the_path() -> None:
    err = _reject(_wire(body__action__x="ten"))
    assert err.reason == "bad schema: $.body.action.x: Expected `int`, got `str`"


def test_missing_body_field() -> None:
    err = _reject(_wire(body__command_id=None))
    assert "$.body.command_id" in err.reason


def test_bad_envelope_field() -> None:
    assert "$.ts" in _reject(_wire(ts="yesterday")).reason


def test_unknown_kind() -> None:
    assert _reject(_wire(kind="teleport")).reason == "unknown kind 'teleport'"


def test_unknown_action_type() -> None:
    assert "$.body.action.type" in _reject(_wire(body__action={"type": "fly"})).reason


def test_bad_status_literal() -> None:
    env = make_envelope(CommandResult(command_id="c", serial="S", status="ok"), "n1", "c")
    data = encode(env).replace(b'"status":"ok"', b'"status":"maybe"')
    assert "$.body.status" in _reject(data).reason


def test_garbage_bytes() -> None:
    assert _reject(b"\x00\xffnot json").reason.startswith("malformed message")


def test_oversized_rejected_before_parsing() -> None:
    data = encode(make_envelope(Event(seq=1, event="big", data={"blob": "x" * 5000}), "n1", "c"))
    err = _reject(data, max_bytes=1000)
    assert err.reason == f"message of {len(data)} bytes is over the limit of 1000 bytes"
    assert MAX_MESSAGE_BYTES == 16 * 1024 * 1024


def test_encode_refuses_oversized() -> None:
    env = make_envelope(Event(seq=1, event="big", data={"blob": "x" * 5000}), "n1", "coordinator")
    with pytest.raises(ProtocolError) as info:
        encode(env, max_bytes=1000)
    assert info.value.peer == "coordinator"


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    wire = msgspec.json.decode(encode(make_envelope(Heartbeat(), "n1", "c")))
    wire["body"]["added_later"] = 1
    wire["trace"] = "x"
    assert isinstance(decode(msgspec.json.encode(wire), "n1").body, Heartbeat)


def test_make_envelope_refuses_non_bodies() -> None:
    with pytest.raises(TypeError):
        make_envelope(PhoneInfo(serial="S", state="device"), "a", "b")  # type: ignore[arg-type]


def test_hello_proof() -> None:
    proof = hello_proof("secret", "nonce", "n1")
    assert len(proof) == 64
    assert check_proof(b"secret", "nonce", "n1", proof)
    assert not check_proof("other", "nonce", "n1", proof)
    assert not check_proof("secret", "nonce", "n2", proof)


def test_envelope_is_immutable() -> None:
    env = make_envelope(Heartbeat(), "a", "b")
    assert isinstance(env, Envelope)
    with pytest.raises(AttributeError):
        env.kind = "x"  # type: ignore[misc]
    assert isinstance(make_command("S", Tap(1, 1)), Command)


def test_new_ids_are_unique_and_a_forked_child_does_not_repeat_them() -> None:
    import os

    from protocol.codec import new_id

    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert child not in ids and child[:16] != new_id()[:16]
