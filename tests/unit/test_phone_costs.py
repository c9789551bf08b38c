"""The real-phone cost profile: start-up costs per program, and the shared USB bus (a token
bucket) on a fake clock."""

from __future__ import annotations

import pytest

from virtual.profile import (APP_PROCESS_START_S, INPUT_JVM_START_S, INSTANT, PROFILES, REAL,
                             SCREENCAP_PNG_ENCODE_S, SCREENCAP_RAW_S, USB2_BUS_BYTES_PER_S,
                             UsbBus)

MB = 1_000_000


class FakeTime:
    """A clock and a sleep that only records: time moves when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def bus(fake: FakeTime, rate: float | None = 10 * MB, burst: int = MB, **kw) -> UsbBus:
    return UsbBus(rate, burst=burst, clock=fake.clock, sleep=fake.sleep, **kw)


@pytest.mark.parametrize("argv, cost", [
    (["input", "tap", "1", "2"], INPUT_JVM_START_S),
    (["/system/bin/input", "keyevent", "4"], INPUT_JVM_START_S),
    (["screencap"], SCREENCAP_RAW_S),
    (["screencap", "-p"], SCREENCAP_RAW_S + SCREENCAP_PNG_ENCODE_S),
    (["screencap", "/sdcard/s.png"], SCREENCAP_RAW_S + SCREENCAP_PNG_ENCODE_S),
    (["uiautomator", "dump", "/dev/tty"], APP_PROCESS_START_S),
    (["monkey", "-p", "x", "1"], APP_PROCESS_START_S),
    (["app_process", "/system/bin", "x.Main"], APP_PROCESS_START_S),
    (["echo", "input"], 0.0),
    ([], 0.0),
])
def test_real_charges_each_program_its_start_up_and_instant_nothing(argv, cost):
    assert REAL.start_cost(argv) == pytest.approx(cost)
    assert INSTANT.start_cost(argv) == 0.0


def test_the_real_figures_are_the_published_ones():
    assert (INPUT_JVM_START_S, SCREENCAP_RAW_S, SCREENCAP_PNG_ENCODE_S, APP_PROCESS_START_S,
            USB2_BUS_BYTES_PER_S) == (0.230, 0.250, 1.5, 0.800, 35_000_000)
    assert PROFILES == {"instant": INSTANT, "real": REAL}
    assert REAL.describe() == {"profile": "real", "input_ms": 230, "screencap_raw_ms": 250,
                               "screencap_png_ms": 1750, "app_process_ms": 800,
                               "usb_mb_per_s": 35.0}
    assert INSTANT.describe()["usb_mb_per_s"] is None


async def test_an_unlimited_bus_never_waits():
    fake = FakeTime()
    b = bus(fake, rate=None)
    assert [await b.transfer(100 * MB) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert fake.slept == []


async def test_the_burst_passes_at_once_and_the_rest_at_the_bus_rate():
    fake = FakeTime()
    b = bus(fake)
    assert await b.transfer(MB) == 0.0  # the burst
    assert await b.transfer(5 * MB) == pytest.approx(0.5)
    assert fake.slept == [pytest.approx(0.5)]


async def test_senders_at_the_same_moment_queue_behind_each_other():
    """Two phones each sending 1 MB chunks at once: the second waits for the first, so
    together they take twice as long as one alone: the budget is shared, not per phone."""
    fake = FakeTime()
    b = bus(fake, burst=0)
    waits = [await b.transfer(MB) for _ in range(4)]  # phone A, B, A, B at t=100
    assert waits == [pytest.approx(0.1 * k) for k in (1, 2, 3, 4)]


async def test_time_passing_refills_the_bucket_up_to_the_burst_only():
    fake = FakeTime()
    b = bus(fake)
    await b.transfer(3 * MB)  # 0.2 s of debt
    fake.now += 0.2
    assert await b.transfer(MB) == pytest.approx(0.1)  # the debt was paid, nothing saved
    fake.now += 3600  # idle for an hour: still only one burst free
    assert await b.transfer(MB) == 0.0
    assert await b.transfer(MB) == pytest.approx(0.1)


async def test_the_wait_is_bounded():
    fake = FakeTime()
    b = bus(fake, burst=0, max_wait_s=2.0)
    for _ in range(10):
        await b.transfer(10 * MB)  # 1 s each: a 10 s queue, cut at 2 s
    assert max(fake.slept) == pytest.approx(2.0)
    fake.now += 2.0
    assert await b.transfer(MB) == pytest.approx(0.1)  # the forgotten backlog stays forgotten


def test_a_bus_of_no_speed_is_refused():
    with pytest.raises(ValueError, match="positive"):
        UsbBus(0)


async def test_the_bus_counts_every_byte_it_carries_limited_or_not():
    fake = FakeTime()
    limited, unlimited = bus(fake), bus(fake, rate=None)
    for b in (limited, unlimited):
        await b.transfer(3 * MB)
        b.charge(24)
        b.charge(0)
    assert limited.bytes_total == unlimited.bytes_total == 3 * MB + 24
    assert limited.describe() == {"bytes_total": 3 * MB + 24, "budget_mb_per_s": 10.0}
    assert unlimited.describe()["budget_mb_per_s"] is None
