"""The coordinator's live-wall bookkeeping (actors/coordinator/live.py): per phone the widest
width and highest rate any page wants is what its node is told; the last page leaving (or
disconnecting) tells it 0 (stop); a slow page keeps only the newest frame per phone. And the
page message's validation (actors/control/live.py)."""

from __future__ import annotations

import asyncio

import pytest

from actors.control.live import WatchError, pack_frame, parse_watch
from actors.coordinator.live import Frame, LiveWatchers


def frame(serial: str, n: int) -> Frame:
    return Frame(serial, bytes([n]), float(n), 1080, 2400)


def test_node_is_told_the_widest_width_and_stops_when_the_last_watcher_leaves():
    told: list[tuple[str, int, float]] = []
    live = LiveWatchers(lambda s, w, f: told.append((s, w, f)))
    wall, single = live.add(), live.add()
    live.set_watch(wall, {"a": (270, 10.0), "b": (270, 10.0)})
    assert told == [("a", 270, 10.0), ("b", 270, 10.0)]
    live.set_watch(single, {"a": (1080, 60.0)})
    assert told[-1] == ("a", 1080, 60.0) and live.watchers("a") == 2
    told.clear()
    live.set_watch(wall, {"a": (300, 10.0), "b": (270, 10.0)})  # narrower than 1080: no news
    assert told == []
    live.remove(single)  # the single view closes: back to the wall's width and rate
    assert told == [("a", 300, 10.0)]
    live.set_watch(wall, {"a": (300, 10.0)})  # b scrolled out of view
    assert told[-1] == ("b", 0, 0.0)
    live.remove(wall)  # the page disconnected
    assert told[-1] == ("a", 0, 0.0)
    assert live.wanted() == {} and live.clients == {}
    live.remove(wall)  # twice: nothing more
    assert told[-1] == ("a", 0, 0.0) and len(told) == 3


def test_renew_tells_every_watched_phone_again():
    told: list[tuple[str, int, float]] = []
    live = LiveWatchers(lambda s, w, f: told.append((s, w, f)))
    live.set_watch(live.add(), {"a": (270, 10.0), "b": (540, 30.0)})
    told.clear()
    live.renew({"b", "z"})
    assert told == [("b", 540, 30.0)]
    live.renew()
    assert sorted(told[1:]) == [("a", 270, 10.0), ("b", 540, 30.0)]


async def test_frames_go_only_to_watchers_and_a_slow_page_gets_the_newest():
    live = LiveWatchers(lambda *_: None)
    one, other = live.add(), live.add()
    live.set_watch(one, {"a": (270, 10.0)})
    live.set_watch(other, {"b": (270, 10.0)})
    for n in range(5):
        live.frame(frame("a", n))
    live.frame(frame("c", 9))  # nobody watches c
    got = await one.next(timeout=1)
    assert [(f.serial, f.ts) for f in got] == [("a", 4.0)] and one.skipped == 4
    assert await other.next(timeout=0.05) == []
    live.remove(one)
    assert await asyncio.wait_for(one.next(), 1) == []  # a closed page's writer wakes


def test_watch_message_validation_names_the_field():
    known = {"a", "b"}
    assert parse_watch({"watch": {"a": 270, "b": {"width": 540, "fps": 30}}}, known) == {
        "a": (270, 10.0), "b": (540, 30.0)}
    assert parse_watch({"watch": {}}, known) == {}
    for message, field in [([], "$"), ({"watch": [1]}, "$.watch"),
                           ({"watch": {"zz": 270}}, "$.watch.zz"),
                           ({"watch": {"a": 5}}, "$.watch.a"),
                           ({"watch": {"a": True}}, "$.watch.a"),
                           ({"watch": {"a": {"width": 270, "fps": 0}}}, "$.watch.a.fps"),
                           ({"watch": {"a": {"width": "x"}}}, "$.watch.a.width")]:
        with pytest.raises(WatchError) as err:
            parse_watch(message, known)
        assert err.value.field == field, message


def test_packed_frame_is_length_header_json_then_jpeg():
    data = pack_frame(Frame("a", b"\xff\xd8jpeg", 1.5, 1080, 2400))
    size = int.from_bytes(data[:4], "big")
    assert data[4:4 + size] == b'{"serial":"a","ts":1.5,"width":1080,"height":2400}'
    assert data[4 + size:] == b"\xff\xd8jpeg"
