"""Whether a failed device command may have reached the phone (``DeviceError.sent``), when
the adb server goes away around the service's opening. The adb server is a scripted peer
on a loopback socket here: the real one cannot be killed at that instant on purpose."""

from __future__ import annotations

import socket
import threading

import pytest

from actors.node.device.adb_server import AdbServer
from actors.node.device.driver import DeviceDriver
from protocol.errors import DeviceError

SERIAL = "127.0.0.1:5555"


class DyingAdbServer:
    """Answers the host protocol until the request ``dies_at`` arrives, then hangs up on it
    without a word, as a killed adb server does; after that it refuses nothing but answers
    nothing either (a `get-state` finds no server: "gone")."""

    def __init__(self, dies_at: str) -> None:
        self.dies_at = dies_at
        self.requests: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.dead = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while True:
                    head = conn.recv(4)
                    if len(head) < 4:
                        break
                    request = conn.recv(int(head, 16)).decode()
                    self.requests.append(request)
                    if self.dead or request.startswith(self.dies_at):
                        self.dead = True
                        break
                    if request.endswith(":features"):
                        conn.sendall(b"OKAY000dshell_v2,cmd ")
                        break
                    conn.sendall(b"OKAY")

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("dies_at, sent", [
    ("shell", True),             # the request went on to the phone: `input tap` may run
    ("host:transport", False),   # nothing asked of the phone yet
])
def test_a_tap_whose_adb_server_died_at_the_opening_says_whether_it_may_have_run(
        dies_at: str, sent: bool) -> None:
    # The 4 x 15 chaos bench's adb_kill: the server was killed after passing `input tap` on
    # to the phone and before its OKAY reached the node, which took the tap for unsent and
    # played it again once the server was back.
    server = DyingAdbServer(dies_at)
    try:
        driver = DeviceDriver(SERIAL, AdbServer(port=server.port))
        with pytest.raises(DeviceError) as failed:
            driver.tap(5, 6)
        assert failed.value.sent is sent, failed.value
        assert any(r.startswith(dies_at) for r in server.requests), server.requests
    finally:
        server.close()
