"""PhoneDirectory.close_devices: what a stopping node relies on to never wait on a phone."""

from __future__ import annotations

import pytest

from actors.node.device.adb_server import AdbServer, free_port
from actors.node.device.driver import DeviceDriver
from actors.node.phone import PhoneRecord
from actors.node.rack import PhoneDirectory
from protocol.errors import DeviceError


def test_close_devices_closes_every_driver_and_any_registered_later() -> None:
    directory = PhoneDirectory()
    nowhere = AdbServer(port=free_port(), timeout=1.0)  # nothing listens: never reached
    first = DeviceDriver("SER1", nowhere)
    directory.put("SER1", None, PhoneRecord("SER1"), first)
    directory.close_devices("node stopping")
    assert first.closed
    # An actor restarted while the node stops gets a driver that is closed at once.
    late = DeviceDriver("SER2", nowhere)
    directory.put("SER2", None, PhoneRecord("SER2"), late)
    assert late.closed
    with pytest.raises(DeviceError, match="node stopping"):
        late.tap(1, 2)  # refused before any connection is tried
