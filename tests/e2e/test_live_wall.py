"""The live wall end to end (issue 16 point 4): a real hub + node driving virtual phones on the
agent path (their scrcpy server's video stream), the control endpoint on a real port, and a
WebSocket client on ``/api/live`` as the console is: it receives JPEG frames of the phone it
watches at the width it asked, a new one after a tap changes the screen, none of a phone it
does not watch, and the node stops sending once it leaves."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import cv2
import numpy as np
import orjson
import pytest
from aiohttp.test_utils import TestServer

from actors.control.app import make_app
from actors.node.device.adb_server import AdbServer
from actors.node.device.agent import AgentConfig
from actors.node.device.driver import DeviceDriver
from tests.e2e.test_farm_inprocess import shutdown, start_farm, wait_for

TOKEN = "live-wall-token"


@pytest.fixture(scope="module")
def jar(tmp_path_factory):
    path = tmp_path_factory.mktemp("live") / "scrcpy-server-placeholder.jar"
    path.write_bytes(b"placeholder: the virtual phones run their own server\n")
    return path


def unpack(data: bytes) -> tuple[dict, np.ndarray]:
    size = int.from_bytes(data[:4], "big")
    header = orjson.loads(data[4:4 + size])
    image = cv2.imdecode(np.frombuffer(data[4 + size:], np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return header, image


class Frames:
    """Every binary message of a socket, read by one task (a receive() cut by its timeout can
    lose the message arriving just then)."""

    def __init__(self, ws) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.serials: set[str] = set()
        self.task = asyncio.create_task(self._read(ws))

    async def _read(self, ws) -> None:
        async for msg in ws:
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            header, image = unpack(msg.data)
            self.serials.add(header["serial"])
            self.queue.put_nowait((header, image))

    async def next(self, timeout: float = 15.0) -> tuple[dict, np.ndarray]:
        return await asyncio.wait_for(self.queue.get(), timeout)


def clipshare_icon(driver: DeviceDriver) -> tuple[int, int]:
    nodes = driver.ui_dump() or []
    icon = next(n for n in nodes if n.text == "ClipShare")
    x0, y0, x1, y1 = icon.bounds
    return (x0 + x1) // 2, (y0 + y1) // 2


async def test_watched_phone_streams_at_its_width_and_stops_when_the_page_leaves(
        farm, adb_server, jar, tmp_path):
    store, hub, node = await start_farm(adb_server, tmp_path,
                                        node_options={"agent": AgentConfig(jar=jar)})
    server = TestServer(make_app(hub, token=TOKEN))
    await server.start_server()
    watched, other = farm.serials[0], farm.serials[1]
    try:
        await wait_for(lambda: all(hub.phone_rows[s]["io"] == "agent" for s in (watched, other)),
                       30, "the agent path")
        shell = DeviceDriver(watched, AdbServer(port=adb_server.port))
        await hub.run_action(watched, {"type": "key", "key": "HOME"})
        x, y = await asyncio.to_thread(clipshare_icon, shell)
        async with aiohttp.ClientSession() as session:
            # No token: a plain GET is refused by the HTTP check, an upgrade by its first message.
            async with session.get(server.make_url("/api/live")) as resp:
                assert resp.status == 401
            async with session.ws_connect(server.make_url("/api/live")) as ws:
                await ws.send_json({"watch": {watched: 200}})
                msg = await ws.receive(timeout=10)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4401
            async with session.ws_connect(server.make_url("/api/live")) as ws:
                await ws.send_json({"token": TOKEN, "watch": {watched: 200, "nope": 200}})
                assert await ws.receive_json(timeout=10) == {
                    "error": "no phone 'nope'", "field": "$.watch.nope"}
                assert hub.live.wanted() == {}  # nothing of a bad message is applied
                await ws.send_json({"watch": {watched: 200}})
                assert await ws.receive_json(timeout=10) == {"watching": {watched: 200}}
                await wait_for(lambda: watched in node.live.watching(), 10, "the node told")
                frames = Frames(ws)
                first, image = await frames.next()  # the screen as it is: the launcher
                assert first["serial"] == watched and image.shape[1] == 200
                assert (first["width"], first["height"]) == (1080, 2400)
                # A static screen sends nothing (the video stream repeats its frame; the node
                # does not): frames stop once the HOME key's screen has settled.
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    try:
                        first, image = await frames.next(timeout=1.5)
                    except asyncio.TimeoutError:
                        break
                else:
                    raise AssertionError("frames kept coming for a static screen")
                tapped_at = time.time()
                r = await hub.run_action(watched, {"type": "tap", "x": x, "y": y})
                assert r["status"] == "ok", r
                header, after = await frames.next()  # no reload, no request: it comes
                assert header["serial"] == watched and after.shape[1] == 200
                assert header["ts"] >= tapped_at - 0.5
                while np.abs(after.astype(int) - image.astype(int)).mean() < 5:
                    header, after = await frames.next()  # the app opening, frame by frame
                assert other not in node.live.watching()
                assert frames.serials == {watched}  # never a frame of the unwatched phone
            # The page left: the hub tells the node, which stops sending.
            await wait_for(lambda: not node.live.watching(), 10, "the node stopped")
            assert hub.live.wanted() == {}
    finally:
        await server.close()
        await shutdown(node, hub, store)
