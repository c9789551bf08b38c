"""Which client each phone belongs to, as the hub needs it on every request."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class PhoneOwners:
    """Owns the in-memory copy of the phones table's client column (serial -> client id
    and name), read on every scoped request without a database round trip. Loaded at
    start; `assign` writes the database first, then the copy."""

    def __init__(self, db: Any) -> None:
        self.db = db  # actors.store.farm_db.FarmDB
        self._owners: dict[str, tuple[int | None, str | None]] = {}

    async def load(self) -> None:
        self._owners = {row["serial"]: (row["client_id"], row["client"])
                        for row in await self.db.phone_rows()}

    def client_id(self, serial: str) -> int | None:
        return self._owners.get(serial, (None, None))[0]

    def client_name(self, serial: str) -> str | None:
        return self._owners.get(serial, (None, None))[1]

    async def assign(self, serial: str, client: str | None) -> None:
        """Give ``serial`` to ``client`` (a name; None: to no client, super users only)."""
        if client is None:
            await self.db.upsert_phone(serial)
            await self.db._write("UPDATE phones SET client_id = NULL WHERE serial_number = ?",
                                 (serial,))
        else:
            await self.db.upsert_phone(serial, client=client)
        await self.load()
