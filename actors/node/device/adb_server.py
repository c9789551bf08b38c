"""A small blocking client of the adb server's host protocol (AOSP OVERVIEW.TXT, SERVICES.TXT).

Owns the byte-level conversation with the adb server: length-prefixed requests, OKAY/FAIL
status, `host:*` queries and opening a device service on a fresh socket. It exists because
the hot path (a tap, a screenshot on 60 phones) must not pay adbutils' fixed ~20 ms of
`time.sleep` in its connection close; everything that is not hot still goes through adbutils.
"""

from __future__ import annotations

import socket
import struct

from protocol.errors import DeviceError, DeviceGone, FarmError

# Substrings of the adb server's FAIL messages that mean "that phone is not there now".
GONE_MARKERS = ("not found", "offline", "no devices", "device still connecting",
                "unauthorized", "no emulators")


# A `shell,v2` stream's packets: kind (1 stdout, 2 stderr, 3 exit status), length, payload.
SHELL_V2_HEADER = struct.Struct("<BI")


class AdbServerError(FarmError):
    """The adb server itself could not be reached or answered nonsense."""


class AdbServer:
    """Address of one adb server and the requests this project makes of it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5037, timeout: float = 20.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"AdbServer({self.host}:{self.port})"

    def connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise AdbServerError(f"adb server {self.host}:{self.port} unreachable: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    @staticmethod
    def send_request(sock: socket.socket, request: str) -> None:
        data = request.encode()
        sock.sendall(b"%04x" % len(data) + data)

    @staticmethod
    def read_status(sock: socket.socket) -> str | None:
        """None on OKAY; the server's message on FAIL."""
        status = recv_exactly(sock, 4)
        if status == b"OKAY":
            return None
        if status == b"FAIL":
            return read_length_prefixed(sock).decode("utf-8", "replace")
        raise AdbServerError(f"adb server sent {status!r} where OKAY or FAIL belongs")

    def host_query(self, request: str) -> str:
        """A `host:` request whose reply is one length-prefixed string (version, devices-l…)."""
        with self.connect() as sock:
            self.send_request(sock, request)
            failure = self.read_status(sock)
            if failure is not None:
                raise AdbServerError(f"adb server refused {request!r}: {failure}")
            return read_length_prefixed(sock).decode("utf-8", "replace")

    def open_service(self, serial: str, service: str, command_label: str | None = None) -> socket.socket:
        """A socket already switched to ``serial`` and to ``service``; raw stream follows."""
        sock = self.connect()
        try:
            self.open_service_on(sock, serial, service, command_label)
        except BaseException:
            sock.close()
            raise
        return sock

    def open_service_on(self, sock: socket.socket, serial: str, service: str,
                        command_label: str | None = None) -> None:
        """Switch ``sock`` (fresh from ``connect``) to ``serial`` and to ``service``. The
        caller owns the socket (and closes it on failure): a driver keeps it cuttable from
        another thread while the phone answers the opening."""
        self.send_request(sock, f"host:transport:{serial}")
        failure = self.read_status(sock)
        if failure is None:
            self.send_request(sock, service)
            try:
                failure = self.read_status(sock)
            except OSError as exc:
                # The server may have passed the request on before it went (a killed adb
                # server: the phone ran `input tap`, its OKAY never came): DeviceError.sent.
                exc.service_requested = True  # type: ignore[attr-defined]
                raise
        if failure is not None:
            label = command_label or service
            if any(marker in failure for marker in GONE_MARKERS):
                raise DeviceGone(serial, label, failure)
            raise DeviceError(serial, label, failure)

    def device_state(self, serial: str) -> str:
        """'device', 'offline', … or 'gone' when the adb server does not know the serial."""
        try:
            with self.connect() as sock:
                self.send_request(sock, f"host-serial:{serial}:get-state")
                failure = self.read_status(sock)
                if failure is not None:
                    return "gone"
                return read_length_prefixed(sock).decode()
        except (OSError, AdbServerError):
            return "gone"

    def features(self, serial: str) -> set[str]:
        with self.connect() as sock:
            self.send_request(sock, f"host-serial:{serial}:features")
            failure = self.read_status(sock)
            if failure is not None:
                raise DeviceGone(serial, "features", failure)
            return set(read_length_prefixed(sock).decode().split(","))

    def connect_device(self, address: str) -> str:
        return self.host_query(f"host:connect:{address}")

    def disconnect_device(self, address: str) -> str:
        return self.host_query(f"host:disconnect:{address}")


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError(f"connection closed after {got} of {n} bytes")
        got += k
    return bytes(buf)


def read_length_prefixed(sock: socket.socket) -> bytes:
    length = int(recv_exactly(sock, 4), 16)
    return recv_exactly(sock, length) if length else b""


def read_until_close(sock: socket.socket, size_hint: int = 0) -> bytearray:
    """Everything until the peer closes; ``size_hint`` pre-sizes the buffer (screenshots)."""
    # One byte of slack so that a reply of exactly size_hint bytes never forces a regrowth.
    buf = bytearray(max(size_hint + 1, 65536))
    got = 0
    while True:
        if got == len(buf):
            buf.extend(bytes(len(buf)))
        with memoryview(buf) as view:
            k = sock.recv_into(view[got:])
        if k == 0:
            break
        got += k
    del buf[got:]
    return buf


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_adb_server(port: int, adb_path: str = "adb", timeout: float = 20.0) -> AdbServer:
    """Start (or reuse) the real adb server on ``port`` and wait until it answers."""
    import subprocess
    import time

    subprocess.run([adb_path, "-P", str(port), "start-server"], check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = AdbServer(port=port)
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.host_query("host:version")
            return server
        except AdbServerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start_private_adb_server(adb_path: str = "adb", attempts: int = 20) -> AdbServer:
    """A new adb server of the caller's own, on a port nobody else serves.

    ``start_adb_server`` reuses a server already on its port, so two runs that drew the same
    free port would share one server, and the first to finish would kill the other's. Ports
    come at random from a range outside the kernel's ephemeral one (where back-to-back
    ``free_port()`` calls of two processes can meet) and must be silent before we start."""
    import random

    rng = random.SystemRandom()
    for _ in range(attempts):
        port = rng.randrange(20000, 32000)
        if _answers(port):
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return start_adb_server(port, adb_path)
    raise AdbServerError(f"no free port for a private adb server after {attempts} tries")


def kill_adb_server(port: int, adb_path: str = "adb") -> None:
    import subprocess

    subprocess.run([adb_path, "-P", str(port), "kill-server"], timeout=20,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
