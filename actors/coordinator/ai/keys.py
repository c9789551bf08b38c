"""Per-client / per-organization AI endpoint keys (issue 8.1, spec 16.4), stored encrypted.

Owns the encryption of AI keys (`KeyCipher`: a `SecretBox` of purpose ``api_keys`` over the
farm master key, actors.access.secrets_box, which also loads that key: ``load_master_key`` is
re-exported here), and ``AIKeyring``: storing, listing (masked: the last 4 characters only),
retiring, and choosing the AI client of an execution: the key of its client, else of its
client's organization, else the coordinator's default config (``hub.ai``). One ``AIClient``
per distinct config, cached.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from actors.access.secrets_box import (MASTER_KEY_ENV, MASTER_KEY_FILE,  # noqa: F401 - re-exported
                                       SecretBox, SecretDecryptError, load_master_key)
from actors.coordinator.ai.client import AIClient, AIConfig
from protocol.errors import FarmError, ValidationError

log = logging.getLogger(__name__)

SERVICE = "openai"  # api_keys.service_name of an OpenAI-compatible endpoint's key


class KeyDecryptError(FarmError):
    """A stored key cannot be decrypted with this farm's master key (a wrong or replaced
    PHONEFARM_SECRET_KEY / secret.key); names the key id, never shows key material."""

    def __init__(self, key_id: int) -> None:
        self.key_id = key_id
        super().__init__(f"AI key {key_id}: cannot be decrypted with this farm's master key "
                         f"(wrong {MASTER_KEY_ENV} / --secret-key-file / secret.key?); "
                         f"store the key again or start with the master key it was saved under")


def mask(key: str) -> str:
    """What may be shown of a key: its last 4 characters."""
    return "…" + key[-4:] if len(key) > 4 else "…"


class KeyCipher:
    """Encrypts and decrypts stored AI keys under the master key, one derived key per
    organization (keys of no organization share one derived key of their own)."""

    def __init__(self, master: bytes) -> None:
        self._box = SecretBox(master, "api_keys")

    def encrypt(self, key: str, organization_id: int | None) -> str:
        return self._box.seal(key, organization_id)

    def decrypt(self, token: str, organization_id: int | None, key_id: int) -> str:
        try:
            return self._box.open(token, organization_id, f"AI key {key_id}")
        except SecretDecryptError:
            raise KeyDecryptError(key_id) from None


class AIKeyring:
    """The farm's stored AI keys over the farm database, and the AI client of an execution.

    ``default`` gives the coordinator's own client (``hub.ai``, None = no default)."""

    def __init__(self, db: Any, master: bytes, default: Callable[[], AIClient | None],
                 *, client_factory: Callable[[AIConfig], AIClient] = AIClient) -> None:
        self.db = db
        self.cipher = KeyCipher(master)
        self._default = default
        self._factory = client_factory
        self._clients: dict[AIConfig, AIClient] = {}

    # --- storage ---------------------------------------------------------------------------
    async def add(self, *, base_url: str, model: str, key: str, label: str | None = None,
                  client: str | None = None, organization: str | int | None = None) -> dict:
        """Store a key for exactly one of ``client`` (name) or ``organization`` (id or name);
        the stored row's view (masked). ValidationError names the field."""
        if (client is None) == (organization is None):
            raise ValidationError("$.client", "give exactly one of client or organization")
        if client is not None:
            row = await self.db.client_row(client)
            if row is None:
                raise ValidationError("$.client", f"no such client: {client!r}")
            client_id, organization_id = row["client_id"], row.get("organization_id")
        else:
            org = await self.db.organization_row(organization)
            if org is None:
                raise ValidationError("$.organization",
                                      f"no such organization: {organization!r}")
            client_id, organization_id = None, org["organization_id"]
        key_id = await self.db.add_api_key(
            service_name=SERVICE, key_identifier=mask(key),
            encrypted_key=self.cipher.encrypt(key, organization_id),
            organization_id=organization_id, client_id=client_id, base_url=base_url,
            model=model, label=label)
        return await self.view(key_id)

    async def view(self, key_id: int) -> dict:
        row = await self.db.api_key_row(key_id)
        if row is None:
            raise LookupError(f"no such AI key: {key_id}")
        return _view(row)

    async def list(self, include_retired: bool = False) -> list[dict]:
        return [_view(r) for r in await self.db.api_key_rows(include_retired)]

    async def retire(self, key_id: int) -> tuple[dict, dict]:
        """Soft delete; (before, after) views. LookupError when there is no such key."""
        before = await self.view(key_id)
        await self.db.retire_api_key(key_id)
        return before, await self.view(key_id)

    async def check(self) -> list[str]:
        """Try every active key under this master key; the errors (logged), for start-up."""
        errors = []
        for row in await self.db.api_key_rows():
            stored = await self.db.api_key_ciphertext(row["key_id"])
            if stored is None:
                continue
            try:
                self.cipher.decrypt(stored[0], stored[1], row["key_id"])
            except KeyDecryptError as exc:
                log.error("%s", exc)
                errors.append(str(exc))
        return errors

    # --- selection -------------------------------------------------------------------------
    async def client_for(self, serial: str, account_id: int | None = None) -> AIClient | None:
        """The AI client of an execution on ``serial`` (as account ``account_id``): its
        client's key, else its organization's, else the default (None = no AI).
        KeyDecryptError names a stored key the master key cannot open."""
        client_id, organization_id = await self.db.owner_of(serial, account_id)
        row = None
        if client_id is not None:
            row = await self.db.active_api_key(SERVICE, client_id=client_id)
        if row is None and organization_id is not None:
            row = await self.db.active_api_key(SERVICE, organization_id=organization_id)
        if row is None:
            return self._default()
        key = self.cipher.decrypt(row["encrypted_key"], row["organization_id"], row["key_id"])
        config = AIConfig(base_url=row["base_url"], model=row["model"] or "default",
                          api_key=key)
        found = self._clients.get(config)
        if found is None:
            found = self._clients[config] = self._factory(config)
            log.info("ai client for key %d: endpoint=%s model=%s", row["key_id"],
                     config.base_url, config.model)
        return found

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def _view(row: dict) -> dict:
    """A key as the API shows it: never the key, only ``key_last4``."""
    return {"id": row["key_id"], "client": row.get("client"),
            "organization": row.get("organization"),
            "organization_id": row.get("organization_id"), "base_url": row.get("base_url"),
            "model": row.get("model"), "label": row.get("label"),
            "key_last4": (row.get("key_identifier") or "").lstrip("…"),
            "status": row.get("status"), "created_at": row.get("created_at")}
