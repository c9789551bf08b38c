"""One JSON request to a test client of the control endpoint: (status, decoded body)."""

from __future__ import annotations

from aiohttp.test_utils import TestClient


async def call(client: TestClient, method: str, path: str, body=None) -> tuple[int, dict]:
    resp = await client.request(method, path, json=body)
    return resp.status, await resp.json()
