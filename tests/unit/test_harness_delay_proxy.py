"""The harness's delay proxy (tests/harness/delay_proxy.py) on loopback, no namespaces: bytes
arrive intact and in order both ways under jitter; the delay is applied (a lower bound only:
never an assertion on how fast anything is); a control file change applies to an open
connection; closing either side closes the other. Each test runs its own event loop."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.harness.delay_proxy import start_proxy

ROOT = Path(__file__).resolve().parents[2]
# Generous: the machine may be loaded, and nothing here asserts an upper bound on speed.
TIMEOUT_S = 20.0


def set_control(path: Path, delay_ms: float, jitter_ms: float) -> None:
    """As the harness writes it: atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"delay_ms": delay_ms, "jitter_ms": jitter_ms}))
    os.replace(tmp, path)


class Upstream:
    """A loopback server standing for the coordinator: keeps each connection's streams."""

    def __init__(self) -> None:
        self.conns: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue())
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.accepted += 1
            await self.conns.put((r, w))

        self.server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[:2]

    async def next(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(self.conns.get(), TIMEOUT_S)


async def connected(tmp_path: Path, control: Path | None = None):
    """(upstream, proxy server, client streams, upstream's streams of that connection)."""
    up = Upstream()
    up_addr = await up.start()
    proxy = await start_proxy(("127.0.0.1", 0), up_addr, control or tmp_path / "delay.json")
    port = proxy.sockets[0].getsockname()[1]
    client = await asyncio.open_connection("127.0.0.1", port)
    return up, proxy, client, await up.next()


async def read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), TIMEOUT_S)


def test_bytes_arrive_intact_and_in_order_both_ways_under_jitter(tmp_path: Path) -> None:
    async def main() -> None:
        set_control(tmp_path / "delay.json", 0, 40)
        up, proxy, (cr, cw), (ur, uw) = await connected(tmp_path)
        # Many separate writes with pauses between some: many chunks, each with its own
        # random delay, which must still come out in the order they went in.
        sent_up = [f"up-{i:04d};".encode() * (1 + i % 7) for i in range(300)]
        sent_down = [f"down-{i:04d}|".encode() * (1 + i % 5) for i in range(300)]

        async def send(writer: asyncio.StreamWriter, parts: list[bytes]) -> None:
            for i, part in enumerate(parts):
                writer.write(part)
                await writer.drain()
                if i % 10 == 0:
                    await asyncio.sleep(0.005)

        await asyncio.gather(send(cw, sent_up), send(uw, sent_down))
        got_up, got_down = await asyncio.gather(
            read_exactly(ur, sum(map(len, sent_up))), read_exactly(cr, sum(map(len, sent_down))))
        assert got_up == b"".join(sent_up)
        assert got_down == b"".join(sent_down)
        assert up.accepted == 1
        cw.close()
        proxy.close()

    asyncio.run(main())


def test_the_delay_is_applied_each_way(tmp_path: Path) -> None:
    async def main() -> None:
        set_control(tmp_path / "delay.json", 250, 50)
        _, proxy, (cr, cw), (ur, uw) = await connected(tmp_path)
        loop = asyncio.get_running_loop()
        for writer, reader in ((cw, ur), (uw, cr)):
            began = loop.time()
            writer.write(b"ping")
            await writer.drain()
            assert await read_exactly(reader, 4) == b"ping"
            assert loop.time() - began >= 0.25  # at least the delay; no upper bound
        cw.close()
        proxy.close()

    asyncio.run(main())


def test_a_control_change_applies_to_the_open_connection(tmp_path: Path) -> None:
    async def main() -> None:
        control = tmp_path / "delay.json"  # absent: no delay
        up, proxy, (cr, cw), (ur, uw) = await connected(tmp_path, control)
        loop = asyncio.get_running_loop()

        async def one_trip() -> float:
            began = loop.time()
            cw.write(b"x")
            await cw.drain()
            assert await read_exactly(ur, 1) == b"x"
            return loop.time() - began

        await one_trip()
        set_control(control, 400, 0)
        await asyncio.sleep(0.5)  # the proxy polls the file every 0.1 s
        assert await one_trip() >= 0.4
        control.unlink()
        await asyncio.sleep(0.5)
        await one_trip()  # still the same connection, and it still carries bytes
        assert up.accepted == 1
        cw.close()
        proxy.close()

    asyncio.run(main())


def test_closing_either_side_closes_the_other(tmp_path: Path) -> None:
    async def main() -> None:
        set_control(tmp_path / "delay.json", 100, 50)
        # The client closes right after writing: what it wrote still arrives, then EOF.
        up, proxy, (cr, cw), (ur, uw) = await connected(tmp_path)
        cw.write(b"last words")
        cw.close()
        assert await asyncio.wait_for(ur.read(), TIMEOUT_S) == b"last words"  # read() = to EOF
        # The upstream closes: the client sees EOF.
        cr2, cw2 = await asyncio.open_connection("127.0.0.1",
                                                 proxy.sockets[0].getsockname()[1])
        ur2, uw2 = await up.next()
        uw2.close()
        assert await asyncio.wait_for(cr2.read(), TIMEOUT_S) == b""
        cw2.close()
        proxy.close()

    asyncio.run(main())


def test_an_upstream_that_refuses_closes_the_client(tmp_path: Path) -> None:
    async def main() -> None:
        up = Upstream()
        host, port = await up.start()
        up.server.close()  # nothing listens there any more
        await up.server.wait_closed()
        proxy = await start_proxy(("127.0.0.1", 0), (host, port), tmp_path / "delay.json")
        cr, cw = await asyncio.open_connection("127.0.0.1", proxy.sockets[0].getsockname()[1])
        assert await asyncio.wait_for(cr.read(), TIMEOUT_S) == b""
        cw.close()
        proxy.close()

    asyncio.run(main())


def test_the_command_line_prints_where_it_listens_and_forwards(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as upstream:
        up_port = upstream.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.delay_proxy", "--listen", "127.0.0.1:0",
             "--upstream", f"127.0.0.1:{up_port}", "--control", str(tmp_path / "d.json")],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            assert line.startswith("listening 127.0.0.1:"), line
            port = int(line.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as client:
                upstream.settimeout(TIMEOUT_S)
                conn, _ = upstream.accept()
                with conn:
                    conn.settimeout(TIMEOUT_S)
                    client.sendall(b"hello")
                    assert conn.recv(5) == b"hello"
        finally:
            proc.terminate()
            proc.wait(timeout=TIMEOUT_S)
