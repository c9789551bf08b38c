"""A read on the farm database sees every write whose call has returned, also while other
coroutines read at the same time (a read split into execute and fetch calls used to let
another read share its older snapshot: about one key in ten was "not there" right after
it was stored)."""

from __future__ import annotations

import asyncio

from actors.store.farm_db import FarmDB


async def test_reads_see_writes_under_concurrent_reads(db: FarmDB) -> None:
    await db.upsert_client("Acme")

    async def noise() -> None:
        while True:
            await db.client_rows()
            await db.phone_rows()

    readers = [asyncio.create_task(noise()) for _ in range(3)]
    try:
        missing = 0
        for _ in range(300):
            key_id = await db.add_api_key(service_name="s", key_identifier="…abcd",
                                          encrypted_key="x", organization_id=None, client_id=1)
            missing += await db.api_key_row(key_id) is None
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    assert missing == 0
