"""Each node's own key for the node link (issue 17.6): nodes are principals too.

Owns issuing a node's key (random, shown once to whoever asked), storing it sealed under
the farm master key (`SecretBox` of purpose ``node_keys``, actors.access.secrets_box: the
coordinator must hold the key itself to check a node's HMAC proof and to prove it back),
listing keys (never the key: its last 4 characters), revoking one, and answering the link's
question for every Hello: which key does node NAME prove, or why is it refused (`lookup`,
synchronous, read from a copy in memory that this process keeps in step with each change it
makes; nothing else writes node keys).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from pathlib import Path
from typing import Any, Callable

from actors.access.secrets_box import SecretBox, SecretDecryptError
from protocol.errors import FarmError, ValidationError
from protocol.files import write_atomic
from protocol.transport import NodeCredential

log = logging.getLogger(__name__)

PURPOSE = "node_keys"
# A node name becomes part of file names on the node (journal-<name>.sqlite3): path-safe.
NODE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
KEY_BYTES = 32  # random bytes of a key; urlsafe base64 of them is the key's text


class NodeKeyExists(FarmError):
    """The node already has a key that is not revoked (revoke it first)."""


def check_node_name(name: str, where: str = "$.node") -> str:
    """``name`` if it is a node name; ValidationError naming ``where`` otherwise."""
    if not re.fullmatch(NODE_NAME, name):
        raise ValidationError(where, f"{name!r} is not a node name (1-64 of A-Z a-z 0-9 _ . -, "
                                     f"starting with a letter or digit)")
    return name


class NodeKeyring:
    """The farm's node keys over the farm database (``node_keys``, schema v11), and the
    credential of each node name for the link. ``on_revoked(node, reason)`` is told after a
    revocation (the hub drops that node's connection)."""

    def __init__(self, db: Any, master: bytes) -> None:
        self.db = db
        self.box = SecretBox(master, PURPOSE)
        self._credentials: dict[str, NodeCredential] = {}
        self.on_revoked: Callable[[str, str], None] | None = None

    async def load(self) -> list[str]:
        """Read every key into memory (at start, before the link listens); the errors of
        keys this master key cannot open (logged; those nodes are refused, saying why)."""
        errors = []
        credentials = {}
        for row in await self.db.node_key_ciphertexts():
            credential = self._credential(row)
            if credential.refusal is not None and row["revoked_at"] is None:
                log.error("%s", credential.refusal)
                errors.append(credential.refusal)
            credentials[row["node"]] = credential
        self._credentials = credentials
        active = sum(c.key is not None for c in credentials.values())
        log.info("node keys: %d active, %d revoked or unreadable", active,
                 len(credentials) - active)
        return errors

    def _credential(self, row: dict) -> NodeCredential:
        node = row["node"]
        if row["revoked_at"] is not None:
            return NodeCredential(refusal=_revoked(node, row["revoked_at"]))
        try:
            return NodeCredential(key=self.box.open(row["encrypted_key"], None,
                                                    f"the key of node {node!r}"))
        except SecretDecryptError as exc:
            return NodeCredential(refusal=str(exc))

    def lookup(self, node: str) -> NodeCredential | None:
        """The link's question (see protocol.transport.CoordinatorLink): ``node``'s key, a
        refusal, or None when the name has no key (the shared farm secret is tried)."""
        return self._credentials.get(node)

    def has_key(self, node: str) -> bool:
        credential = self._credentials.get(node)
        return credential is not None and credential.key is not None

    async def add(self, node: str) -> tuple[dict, str]:
        """Issue a key for ``node``: (its view, the key). The key is not kept anywhere in
        clear: whoever asked must hand it to the node now. NodeKeyExists when the node has
        a key that is not revoked; a revoked one is replaced."""
        check_node_name(node)
        key = secrets.token_urlsafe(KEY_BYTES)
        if not await self.db.put_node_key(node, self.box.seal(key, None), key[-4:]):
            raise NodeKeyExists(f"node {node!r} already has a key; revoke it first "
                                f"(farm nodes revoke {node})")
        self._credentials[node] = NodeCredential(key=key)
        log.info("node key issued for node=%s", node)
        return await self.view(node), key

    async def view(self, node: str) -> dict:
        row = await self.db.node_key_row(node)
        if row is None:
            raise LookupError(f"node {node!r} has no key")
        return _view(row)

    async def list(self) -> list[dict]:
        return [_view(r) for r in await self.db.node_key_rows()]

    async def revoke(self, node: str) -> tuple[dict, dict]:
        """Revoke ``node``'s key: (before, after) views. Its connection is dropped now and
        its next hellos are refused. LookupError when it has no key, FarmError when the key
        is revoked already (nothing changes)."""
        check_node_name(node, "name")
        before = await self.view(node)
        if before["revoked_at"] is not None:
            raise FarmError(f"the key of node {node!r} was revoked already at "
                            f"{before['revoked_at']}")
        await self.db.revoke_node_key(node)
        after = await self.view(node)
        reason = _revoked(node, after["revoked_at"])
        self._credentials[node] = NodeCredential(refusal=reason)
        log.warning("node key revoked node=%s", node)
        if self.on_revoked is not None:
            self.on_revoked(node, reason)
        return before, after

    async def seen(self, node: str) -> None:
        """``node`` connected (with its key, if it has one: the link takes no other then)."""
        if self.has_key(node):
            await self.db.node_key_seen(node)


async def ensure_node_key(keyring: NodeKeyring, node: str, path: Path) -> Path:
    """A key file for a node this coordinator starts itself (``--demo``): the key in
    ``path`` (mode 0600) when it is ``node``'s active key, else a new key issued (an old
    one revoked first) and written there. The path, for the node's --key-file."""
    credential = keyring.lookup(node)
    try:
        kept = path.read_text().strip()
    except OSError:
        kept = None
    if credential is not None and credential.key is not None and kept == credential.key:
        return path
    row = await keyring.db.node_key_row(node)
    if row is not None and row["revoked_at"] is None:  # readable or not: replaced
        await keyring.revoke(node)
    _, key = await keyring.add(node)
    await asyncio.to_thread(write_atomic, path, (key + "\n").encode())  # mkstemp: mode 0600
    return path


def _revoked(node: str, at: str) -> str:
    return (f"the key of node {node!r} was revoked at {at} (a new one: farm nodes add {node})")


def _view(row: dict) -> dict:
    """A key as the API shows it: never the key, only ``key_last4``."""
    return {"node": row["node"], "key_last4": row["key_last4"],
            "status": "revoked" if row["revoked_at"] is not None else "active",
            "created_at": row["created_at"], "revoked_at": row["revoked_at"],
            "last_seen_at": row["last_seen_at"]}
