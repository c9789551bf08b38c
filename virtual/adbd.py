"""Device side of the ADB wire protocol: what a phone's adbd does on one TCP connection.

Owns framing (24-byte headers, checksums for protocol version 0x01000000), the CNXN
handshake, the stream table (OPEN/OKAY/WRTE/CLSE) and per-stream flow control. What a
service *does* is not here: ``ServiceHost.open_service`` (the virtual phone) returns a
coroutine that serves one stream.

Rules followed (AOSP protocol.txt plus what Debian adb 29 does, see shared/notes/adb-wire.md):
- never send a WRTE on a stream before the host OKAYed the previous one;
- OKAY every host WRTE at once (we buffer; payloads are bounded by max_payload);
- before CLSE, wait for the OKAY of our last WRTE, or the host may drop the tail;
- a bad packet is logged with the peer and dropped; only a broken frame (bad magic, absurd
  length) ends the connection, and the phone keeps serving its other connections.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
from typing import Awaitable, Callable, Protocol

from virtual.profile import UsbBus

log = logging.getLogger(__name__)

A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_AUTH = 0x48545541
A_STLS = 0x534C5453

COMMAND_NAMES = {A_SYNC: "SYNC", A_CNXN: "CNXN", A_OPEN: "OPEN", A_OKAY: "OKAY",
                 A_CLSE: "CLSE", A_WRTE: "WRTE", A_AUTH: "AUTH", A_STLS: "STLS"}

VERSION_CHECKSUMMED = 0x01000000
VERSION_SKIP_CHECKSUM = 0x01000001
DEVICE_MAX_PAYLOAD = 1024 * 1024
# A host never announces more than this; a bigger length means the frame is garbage.
ABSURD_PAYLOAD = 16 * 1024 * 1024
HEADER = struct.Struct("<6I")


def checksum(data: bytes) -> int:
    """ADB's data_check: the plain byte sum, not a CRC."""
    return sum(data) & 0xFFFFFFFF


class StreamClosed(Exception):
    """The host closed the stream (or the connection went away)."""


class ServiceRefused(Exception):
    """A service the phone knows with nothing behind it right now (a local socket nobody
    listens on): refused as an unknown one is, but normal, so not logged as an error."""


ServiceHandler = Callable[["AdbStream"], Awaitable[None]]


class ServiceHost(Protocol):
    """What a connection needs from the phone it belongs to."""

    serial: str
    bus: UsbBus  # every byte the phone sends to the adb server crosses it

    def banner(self) -> bytes: ...

    def open_service(self, service: str) -> ServiceHandler | None:
        """The coroutine serving ``service``; None for an unknown service; raises
        `ServiceRefused` when it is known but refused now."""

    async def reply_delay(self) -> None: ...


class AdbStream:
    """One open stream: a service session. Owns its inbound buffer and send window."""

    def __init__(self, conn: "AdbConnection", local_id: int, remote_id: int, service: str) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.service = service
        self._buf = bytearray()
        self._data = asyncio.Event()
        self._eof = False
        self._can_send = asyncio.Event()
        self._can_send.set()
        self._closed = False
        self._hung_up = asyncio.Event()  # the host closed the stream (or the connection)

    # inbound -----------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self._buf.extend(data)
        self._data.set()

    def feed_eof(self) -> None:
        self._eof = True
        self._closed = True
        self._data.set()
        self._can_send.set()
        self._hung_up.set()

    async def wait_closed(self) -> None:
        """Return once the host closed the stream; reads nothing."""
        await self._hung_up.wait()

    async def read_some(self) -> bytes:
        """Whatever the host has sent so far; b'' once the host closed the stream."""
        while not self._buf:
            if self._eof:
                return b""
            self._data.clear()
            await self._data.wait()
        out = bytes(self._buf)
        self._buf.clear()
        return out

    async def read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._eof:
                raise StreamClosed(f"stream {self.service!r} closed after {len(self._buf)} of {n} bytes")
            self._data.clear()
            await self._data.wait()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    # outbound ----------------------------------------------------------------------------
    def host_ready(self) -> None:
        self._can_send.set()

    async def write(self, data: bytes) -> None:
        """Send data in max_payload chunks, one WRTE in flight at a time."""
        view = memoryview(data)
        step = self.conn.max_payload
        for off in range(0, len(view), step):
            await self._can_send.wait()
            if self._closed:
                raise StreamClosed(f"stream {self.service!r} closed by host")
            self._can_send.clear()
            chunk = view[off:off + step]
            # Its turn on the USB bus the phone shares with the others on its hub.
            await self.conn.host.bus.transfer(HEADER.size + len(chunk))
            if self._closed:
                raise StreamClosed(f"stream {self.service!r} closed by host")
            self.conn.send_packet(A_WRTE, self.local_id, self.remote_id, chunk, on_bus=True)
        await self.conn.drain()

    async def close(self) -> None:
        """Close our side after the host acknowledged everything we sent."""
        if self._closed:
            self.conn.forget(self.local_id)
            return
        try:
            await asyncio.wait_for(self._can_send.wait(), timeout=10)
        except asyncio.TimeoutError:
            log.warning("peer=%s stream=%r no OKAY for last write; closing anyway",
                        self.conn.peer, self.service)
        self._closed = True
        self.conn.forget(self.local_id)
        if not self.conn.is_closing:
            self.conn.send_packet(A_CLSE, self.local_id, self.remote_id, b"")
            await self.conn.drain()


class AdbConnection:
    """One host connection to a phone. Owns the handshake state and the stream table."""

    def __init__(self, host: ServiceHost, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.host = host
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.version = VERSION_SKIP_CHECKSUM
        self.max_payload = 4096
        self.online = False
        self.streams: dict[int, AdbStream] = {}
        self._by_remote: dict[int, int] = {}
        self._next_local = 1
        self._tasks: set[asyncio.Task] = set()
        # Local ids we closed lately: the host may still have packets for them in flight.
        self._recently_closed: collections.deque[int] = collections.deque(maxlen=64)

    @property
    def is_closing(self) -> bool:
        return self.writer.is_closing()

    def send_packet(self, command: int, arg0: int, arg1: int, data: bytes | memoryview, *,
                    on_bus: bool = False) -> None:
        """Write one packet; ``on_bus``: the caller already waited for its bytes on the USB
        bus (stream data does), else they are charged to the bus without waiting (the small
        control packets written from synchronous code)."""
        if self.writer.is_closing():
            return
        if not on_bus:
            self.host.bus.charge(HEADER.size + len(data))
        check = checksum(data) if self.version < VERSION_SKIP_CHECKSUM else 0
        self.writer.write(HEADER.pack(command, arg0, arg1, len(data), check,
                                      command ^ 0xFFFFFFFF))
        if len(data):
            self.writer.write(data)

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            pass

    def forget(self, local_id: int) -> None:
        stream = self.streams.pop(local_id, None)
        if stream is not None:
            self._by_remote.pop(stream.remote_id, None)
            self._recently_closed.append(local_id)

    async def serve(self) -> None:
        """Read packets until the host goes away or the frame breaks."""
        try:
            while True:
                header = await self.reader.readexactly(HEADER.size)
                command, arg0, arg1, length, check, magic = HEADER.unpack(header)
                if magic != command ^ 0xFFFFFFFF:
                    log.error("peer=%s phone=%s bad packet magic %#x for command %#x; "
                              "dropping this connection", self.peer, self.host.serial,
                              magic, command)
                    return
                if length > ABSURD_PAYLOAD:
                    log.error("peer=%s phone=%s packet length %d is absurd; dropping this "
                              "connection", self.peer, self.host.serial, length)
                    return
                data = await self.reader.readexactly(length) if length else b""
                if self._checks_required(command) and check != checksum(data):
                    log.error("peer=%s phone=%s %s packet with bad checksum ignored",
                              self.peer, self.host.serial, COMMAND_NAMES.get(command, hex(command)))
                    continue
                if length > max(self.max_payload, DEVICE_MAX_PAYLOAD) and command != A_CNXN:
                    log.error("peer=%s phone=%s %s payload of %d bytes exceeds max payload %d; "
                              "ignored", self.peer, self.host.serial,
                              COMMAND_NAMES.get(command, hex(command)), length, self.max_payload)
                    continue
                await self._dispatch(command, arg0, arg1, data)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            await self._shutdown()

    def _checks_required(self, command: int) -> bool:
        # The host always checksums CNXN; afterwards only protocol 0x01000000 does.
        return command == A_CNXN or self.version < VERSION_SKIP_CHECKSUM

    async def _dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == A_CNXN:
            self.version = min(arg0, VERSION_SKIP_CHECKSUM) if arg0 >= VERSION_CHECKSUMMED \
                else VERSION_CHECKSUMMED
            self.max_payload = max(256, min(arg1, DEVICE_MAX_PAYLOAD))
            self.online = True
            self.send_packet(A_CNXN, self.version, DEVICE_MAX_PAYLOAD, self.host.banner())
            await self.drain()
        elif not self.online:
            log.error("peer=%s phone=%s %s before CNXN ignored", self.peer, self.host.serial,
                      COMMAND_NAMES.get(command, hex(command)))
        elif command == A_OPEN:
            await self._open(arg0, data)
        elif command == A_WRTE:
            stream = self.streams.get(arg1)
            if stream is None and arg1 in self._recently_closed:
                return  # in flight when we closed it: normal, nothing to answer
            if stream is None or stream.remote_id != arg0:
                log.error("peer=%s phone=%s WRTE for unknown stream %d ignored",
                          self.peer, self.host.serial, arg1)
                self.send_packet(A_CLSE, 0, arg0, b"")
                return
            stream.feed(data)
            self.send_packet(A_OKAY, stream.local_id, stream.remote_id, b"")
        elif command == A_OKAY:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.host_ready()
        elif command == A_CLSE:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.feed_eof()
                self.forget(stream.local_id)
        elif command == A_AUTH:
            log.warning("peer=%s phone=%s AUTH ignored: virtual phones need none",
                        self.peer, self.host.serial)
        else:
            log.error("peer=%s phone=%s unknown command %#x ignored", self.peer,
                      self.host.serial, command)

    async def _open(self, remote_id: int, data: bytes) -> None:
        service = data.rstrip(b"\0").decode("utf-8", "replace")
        if remote_id == 0:
            log.error("peer=%s phone=%s OPEN %r with remote id 0 refused", self.peer,
                      self.host.serial, service)
            return
        if remote_id in self._by_remote:
            log.error("peer=%s phone=%s OPEN %r reuses open stream id %d: refused, the open "
                      "stream is kept", self.peer, self.host.serial, service, remote_id)
            self.send_packet(A_CLSE, 0, remote_id, b"")
            return
        try:
            handler = self.host.open_service(service)
            if handler is None:
                log.error("peer=%s phone=%s unknown service %r refused", self.peer,
                          self.host.serial, service)
        except ServiceRefused as exc:
            log.debug("peer=%s phone=%s service %r refused: %s", self.peer, self.host.serial,
                      service, exc)
            handler = None
        if handler is None:
            self.send_packet(A_CLSE, 0, remote_id, b"")
            await self.drain()
            return
        local_id = self._next_local
        self._next_local += 1
        stream = AdbStream(self, local_id, remote_id, service)
        self.streams[local_id] = stream
        self._by_remote[remote_id] = local_id
        self.send_packet(A_OKAY, local_id, remote_id, b"")
        task = asyncio.create_task(self._run_service(handler, stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_service(self, handler: ServiceHandler, stream: AdbStream) -> None:
        try:
            await self.host.reply_delay()
            await handler(stream)
        except StreamClosed:
            pass
        except Exception:
            log.exception("peer=%s phone=%s service %r crashed", self.peer, self.host.serial,
                          stream.service)
        finally:
            await stream.close()

    def abort(self) -> None:
        """Drop the connection at once, as a pulled cable does."""
        transport = self.writer.transport
        if transport is not None:
            transport.abort()

    async def _shutdown(self) -> None:
        for stream in list(self.streams.values()):
            stream.feed_eof()
        self.streams.clear()
        self._by_remote.clear()
        for task in list(self._tasks):
            task.cancel()
        self.writer.close()
