"""A tiny TCP proxy that delays what passes through it: the harness's delay and jitter.

This machine's kernel has no ``netem`` qdisc, so delay and jitter cannot be put on a rack's
veth the way loss (nftables) and bandwidth (tc tbf) are. Instead each rack's node dials
this proxy on the rack's loopback, and the proxy dials the coordinator over the veth, so
partitions and loss on the veth still hit the link.

    python -m tests.harness.delay_proxy --listen 127.0.0.1:8470 --upstream 10.213.5.1:40000 \
        --control /tmp/rack1-delay.json

The control file holds ``{"delay_ms": D, "jitter_ms": J}``; it is re-read when it changes
(write it atomically: a temporary file renamed over it) and its absence means no delay.
Each chunk read, either way, is forwarded ``D + uniform(0, J)`` ms after it was read, but
never before the chunk read before it in the same direction: a TCP stream keeps its order,
so jitter shows as uneven gaps, not as reordering. Closing either side closes the other
(after the closing side's chunks still waiting were forwarded). Prints ``listening
HOST:PORT`` on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from pathlib import Path

CHUNK = 65536
# Chunks read but not yet forwarded, per direction: beyond it, reading waits (backpressure).
QUEUE_CHUNKS = 256
CONTROL_POLL_S = 0.1
# A node redials its proxy at once when the proxy closes it; an upstream SYN lost in a
# partition would otherwise be retried by the kernel with back-off for minutes.
CONNECT_TIMEOUT_S = 3.0


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


class Control:
    """Owns the current delay and jitter (seconds), read from the control file whenever its
    stat changes (polled); a file that is absent means none, one that cannot be read keeps
    the last values."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.delay_s = 0.0
        self.jitter_s = 0.0
        self._seen: tuple[int, int, int] | None = None
        self.task: asyncio.Task | None = None  # `watch`, kept referenced while it runs

    def refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self.delay_s, self.jitter_s = None, 0.0, 0.0
            return
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        if stamp == self._seen:
            return
        try:
            doc = json.loads(self.path.read_text())
            delay, jitter = float(doc.get("delay_ms", 0)), float(doc.get("jitter_ms", 0))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            print(f"delay_proxy: control {self.path} not read ({exc}); keeping "
                  f"{self.delay_s * 1000:g}+{self.jitter_s * 1000:g} ms", file=sys.stderr)
            return
        self._seen = stamp
        self.delay_s, self.jitter_s = max(0.0, delay) / 1000, max(0.0, jitter) / 1000

    def due(self, now: float) -> float:
        """When a chunk read at ``now`` may be forwarded."""
        return now + self.delay_s + random.uniform(0.0, self.jitter_s)

    async def watch(self) -> None:
        while True:
            self.refresh()
            await asyncio.sleep(CONTROL_POLL_S)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                control: Control) -> None:
    """Copy one direction until EOF, each chunk held until its due time, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)

    async def read() -> None:
        try:
            while chunk := await reader.read(CHUNK):
                await queue.put((control.due(loop.time()), chunk))
        except OSError:  # reset: the side is gone, as at EOF
            pass
        await queue.put(None)

    reading = asyncio.create_task(read())
    try:
        # In order: a chunk due before the one ahead of it waits for it.
        while (item := await queue.get()) is not None:
            due, chunk = item
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(chunk)
            await writer.drain()
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)


async def _serve_one(down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter,
                     upstream: tuple[str, int], control: Control) -> None:
    try:
        up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*upstream),
                                            CONNECT_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError):
        down_w.close()  # the dialer sees the refusal as a closed connection and redials
        return
    pumps = [asyncio.create_task(_pump(down_r, up_w, control)),
             asyncio.create_task(_pump(up_r, down_w, control))]
    try:
        # Either side closed (or failed): the other is closed too.
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for w in (down_w, up_w):
            w.close()


async def start_proxy(listen: tuple[str, int], upstream: tuple[str, int],
                      control_path: Path) -> asyncio.Server:
    """The listening proxy (its control file watched for as long as the loop runs)."""
    control = Control(control_path)
    control.refresh()
    control.task = asyncio.create_task(control.watch())
    return await asyncio.start_server(
        lambda r, w: _serve_one(r, w, upstream, control), *listen)


async def serve(listen: tuple[str, int], upstream: tuple[str, int], control_path: Path
                ) -> None:
    server = await start_proxy(listen, upstream, control_path)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.harness.delay_proxy",
                                description="A TCP proxy that delays each chunk.")
    p.add_argument("--listen", type=_address, required=True, metavar="HOST:PORT")
    p.add_argument("--upstream", type=_address, required=True, metavar="HOST:PORT")
    p.add_argument("--control", type=Path, required=True, metavar="FILE",
                   help='JSON {"delay_ms": D, "jitter_ms": J}; absent: no delay')
    args = p.parse_args(argv)
    try:
        asyncio.run(serve(args.listen, args.upstream, args.control))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
