"""The one codec: `Envelope` <-> bytes (msgspec JSON), with the version, schema and size checks.

`decode` never lets a bad message through: a wrong version, a body that does not match its
kind's schema, an unknown kind, malformed JSON or more than ``max_bytes`` bytes raise
`ProtocolError(peer, reason)` naming the peer, e.g. ``peer node-3@127.0.0.1:4711: version 2,
expected 1`` or ``peer n1: bad schema: $.body.x: Expected `int`, got `str```.

Decoding is two-stage: the envelope first, with the body kept raw, then the body with the
type its kind names, so ``kind`` appears once on the wire and an unknown kind has its own
error. The helpers here (`make_envelope`, `make_command`, `link_proof`; `hello_proof` for
nodes of the old, one-way handshake) are the only way the project builds messages.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import itertools
import os
import secrets
import time
from typing import Any

import msgspec

from protocol.errors import ProtocolError
from protocol.messages import (
    KINDS,
    PROTOCOL_VERSION,
    Action,
    Body,
    Command,
    Envelope,
)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Default size limit of one encoded message; links take their own ``max_message_bytes``."""


class _WireEnvelope(msgspec.Struct):
    v: int
    id: str
    kind: str
    src: str
    dst: str
    ts: float
    body: msgspec.Raw


class _VersionOnly(msgspec.Struct):
    v: int


_encoder = msgspec.json.Encoder()
_wire_decoder = msgspec.json.Decoder(_WireEnvelope)
_version_decoder = msgspec.json.Decoder(_VersionOnly)
_body_decoders = {kind: msgspec.json.Decoder(t) for kind, t in KINDS.items()}
_AT_PATH = re.compile(r"^(?P<msg>.*?) - at `(?P<path>\$[^`]*)`$", re.S)


_ID_PREFIX = secrets.token_hex(8)  # per process: ids stay unique across restarts and peers
_ID_COUNTER = itertools.count(1)


def _new_prefix() -> None:
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX, _ID_COUNTER = secrets.token_hex(8), itertools.count(1)


os.register_at_fork(after_in_child=_new_prefix)  # a forked child must not repeat our ids


def new_id() -> str:
    """A unique message / command id (32 hex digits, like a uuid4's): a random prefix per
    process and a counter. uuid4 read the OS's random source for every message."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def kind_of(body: Body) -> str:
    kind = getattr(type(body), "KIND", None)
    if kind is None or KINDS.get(kind) is not type(body):
        raise TypeError(f"{type(body).__name__} is not a message body type")
    return kind


def make_envelope(body: Body, src: str, dst: str, *, id: str | None = None) -> Envelope:
    """Wrap ``body`` in a current-version envelope with a fresh id and the UTC time now."""
    return Envelope(
        v=PROTOCOL_VERSION,
        id=id or new_id(),
        kind=kind_of(body),
        src=src,
        dst=dst,
        ts=time.time(),
        body=body,
    )


def make_command(serial: str, action: Action, execution_id: str | None = None) -> Command:
    """A Command with a fresh command_id (re-sends reuse the same Command object)."""
    return Command(command_id=new_id(), serial=serial, action=action, execution_id=execution_id)


def hello_proof(secret: bytes | str, nonce: str, node: str) -> str:
    """HMAC-SHA256(secret, nonce + node) as hex: what a node shows in its Hello."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, (nonce + node).encode(), hashlib.sha256).hexdigest()


def check_proof(secret: bytes | str, nonce: str, node: str, proof: str) -> bool:
    return hmac.compare_digest(hello_proof(secret, nonce, node), proof)


# Mutual authentication: each side proves the node's key (or the shared farm secret) with an
# HMAC over both nonces, the node name and the direction, so that neither proof can be
# replayed on another connection (fresh nonces) nor reflected as the other side's proof.
NODE_TO_COORDINATOR = "phonefarm link node->coordinator"
COORDINATOR_TO_NODE = "phonefarm link coordinator->node"
MIN_NONCE_CHARS, MAX_NONCE_CHARS = 32, 128


def link_proof(key: bytes | str, direction: str, coordinator_nonce: str, node_nonce: str,
               node: str) -> str:
    """Hex HMAC-SHA256(key, direction NUL coordinator_nonce NUL node_nonce NUL node):
    ``direction`` NODE_TO_COORDINATOR in a Hello, COORDINATOR_TO_NODE in a Welcome."""
    if direction not in (NODE_TO_COORDINATOR, COORDINATOR_TO_NODE):
        raise ValueError(f"unknown proof direction {direction!r}")
    secret = key.encode() if isinstance(key, str) else key
    message = "\0".join((direction, coordinator_nonce, node_nonce, node)).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def check_link_proof(key: bytes | str, direction: str, coordinator_nonce: str,
                     node_nonce: str, node: str, proof: str | None) -> bool:
    """Whether ``proof`` is `link_proof` of these values (constant-time); False for None."""
    if not proof:
        return False
    expected = link_proof(key, direction, coordinator_nonce, node_nonce, node)
    # Bytes: compare_digest refuses a str that is not ASCII (a peer's proof may be anything).
    return hmac.compare_digest(expected.encode(), proof.encode("utf-8", "replace"))


def new_nonce() -> str:
    """A fresh challenge nonce (32 hex digits: 128 random bits)."""
    return secrets.token_hex(16)


def encode(env: Envelope, *, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Envelope -> bytes. Raises ProtocolError (naming env.dst) over ``max_bytes``."""
    if env.kind != kind_of(env.body):
        raise ProtocolError(env.dst, f"envelope kind {env.kind!r} does not match body {type(env.body).__name__}")
    data = _encoder.encode(env)
    if len(data) > max_bytes:
        raise ProtocolError(env.dst, f"message of {len(data)} bytes is over the limit of {max_bytes} bytes")
    return data


def _schema_reason(exc: msgspec.DecodeError, prefix: str = "") -> str:
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return f"malformed message: {text}"
    m = _AT_PATH.match(text)
    if m is None:
        return f"bad schema: {text}"
    path = m["path"]
    if prefix:
        path = prefix + path[1:]
    return f"bad schema: {path}: {m['msg']}"


def decode(data: bytes | bytearray | memoryview, peer: str, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Envelope:
    """bytes -> Envelope, or ProtocolError(peer, reason) for any message that breaks the rules."""
    if len(data) > max_bytes:
        raise ProtocolError(peer, f"message of {len(data)} bytes is over the limit of {max_bytes} bytes")
    try:
        wire = _wire_decoder.decode(data)
    except msgspec.DecodeError as exc:
        # A message of another version may well have another shape: report the version.
        try:
            v = _version_decoder.decode(data).v
        except msgspec.DecodeError:
            v = PROTOCOL_VERSION
        if v != PROTOCOL_VERSION:
            raise ProtocolError(peer, f"version {v}, expected {PROTOCOL_VERSION}") from None
        raise ProtocolError(peer, _schema_reason(exc)) from None
    if wire.v != PROTOCOL_VERSION:
        raise ProtocolError(peer, f"version {wire.v}, expected {PROTOCOL_VERSION}")
    body_decoder = _body_decoders.get(wire.kind)
    if body_decoder is None:
        raise ProtocolError(peer, f"unknown kind {wire.kind!r}")
    try:
        body: Any = body_decoder.decode(wire.body)
    except msgspec.DecodeError as exc:
        raise ProtocolError(peer, _schema_reason(exc, prefix="$.body")) from None
    return Envelope(v=wire.v, id=wire.id, kind=wire.kind, src=wire.src, dst=wire.dst, ts=wire.ts, body=body)
