"""Apps on the phones (schema v21): inventory, pins and install records.

Owns the SQL of tables ``phone_packages`` (each phone's installed packages as its node last
reported them; a report replaces the phone's rows whole, in one writer job), ``app_pins``
(the version a client's or a group's phones should have) and ``app_install_phones`` (one row
per phone of an install or uninstall, its state and reason), over the farm database's single
writer and readers as actors.coordinator.reports.store does. Reads made for a caller run
with its clients set (actors.store.caller_scope) and filter by them too: on PostgreSQL
row-level security is the second guard.
"""

from __future__ import annotations

from typing import Any, Iterable

from actors.store.caller_scope import as_clients
from actors.store.execution_records import utc_text

# A phone's install row moves pending -> sending -> installing -> ok | failed.
PENDING, SENDING, INSTALLING, OK, FAILED = "pending", "sending", "installing", "ok", "failed"
TERMINAL = frozenset({OK, FAILED})
_INSTALL_COLUMNS = ("install_id, serial, client_id, node, kind, app, package, version,"
                    " version_code, allow_downgrade, created_at, created_by, state, reason,"
                    " splits, updated_at")


def _in_list(values: Iterable[Any]) -> tuple[str, tuple[Any, ...]]:
    values = tuple(sorted(values))
    if not values:  # PostgreSQL has no IN (): a list that matches nothing
        return "(NULL)", ()
    return "(" + ", ".join("?" * len(values)) + ")", values


def client_target(client_id: int) -> str:
    return f"client:{client_id}"


def group_target(book_client_id: int | None, name: str) -> str:
    return f"group:{book_client_id or 0}:{name}"


class AppStore:
    """Owns the rows of v21's tables (through ``db``, the farm's FarmDB)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    # --- inventory -------------------------------------------------------------------------
    async def replace_inventory(self, serial: str, packages: dict[str, dict]) -> None:
        """The phone's packages are now exactly ``packages`` ({package: {version_code,
        version_name}}): one transaction, so a reader never sees half a report."""
        now = utc_text()
        rows = [(serial, name, int(info.get("version_code") or 0),
                 info.get("version_name"), now) for name, info in sorted(packages.items())]

        def job(conn) -> None:
            conn.execute("DELETE FROM phone_packages WHERE serial = ?", (serial,))
            if rows:
                conn.executemany("INSERT INTO phone_packages (serial, package, version_code,"
                                 " version_name, reported_at) VALUES (?, ?, ?, ?, ?)", rows)

        await self.db._atomic(job)

    async def set_package(self, serial: str, package: str, version_code: int,
                          version_name: str | None) -> None:
        """One package of a phone, as an install that just succeeded left it."""
        await self.db._write(
            "INSERT INTO phone_packages (serial, package, version_code, version_name,"
            " reported_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (serial, package) DO UPDATE"
            " SET version_code = excluded.version_code, version_name = excluded.version_name,"
            " reported_at = excluded.reported_at",
            (serial, package, version_code, version_name, utc_text()))

    async def inventory(self, serials: Iterable[str] | None = None,
                        packages: Iterable[str] | None = None,
                        clients: frozenset[int] | None = None) -> list[dict[str, Any]]:
        """Rows (serial, package, version_code, version_name, reported_at) of ``serials``
        (None: every phone) and ``packages`` (None: every package), by serial and package."""
        where, args = ["1 = 1"], []
        for column, values in (("serial", serials), ("package", packages)):
            if values is not None:
                in_list, found = _in_list(set(values))
                where.append(f"{column} IN {in_list}")
                args += found
        with as_clients(clients):
            rows = await self.db._all(
                "SELECT serial, package, version_code, version_name, reported_at"
                f" FROM phone_packages WHERE {' AND '.join(where)} ORDER BY serial, package",
                args)
        return [dict(r) for r in rows]

    # --- pins ------------------------------------------------------------------------------
    async def pin(self, *, package: str, app: str, version: str, version_code: int,
                  target: str, client_id: int | None, group_name: str | None,
                  actor: str | None) -> dict[str, Any]:
        """Pin ``package`` at ``version`` for ``target`` (replacing that target's pin)."""
        await self.db._write(
            "INSERT INTO app_pins (package, app, version, version_code, target, client_id,"
            " group_name, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (package, target) DO UPDATE SET version = excluded.version,"
            " version_code = excluded.version_code, app = excluded.app,"
            " created_at = excluded.created_at, created_by = excluded.created_by",
            (package, app, version, version_code, target, client_id, group_name, utc_text(),
             actor))
        return next(p for p in await self.pins() if p["package"] == package
                    and p["target"] == target)

    async def unpin(self, package: str, target: str) -> bool:
        row = await self.db._write("DELETE FROM app_pins WHERE package = ? AND target = ?"
                                   " RETURNING pin_id", (package, target))
        return row is not None

    async def pins(self, clients: frozenset[int] | None = None,
                   package: str | None = None) -> list[dict[str, Any]]:
        """Pins of ``clients`` (None: all, the shared book's group pins too)."""
        where, args = ["1 = 1"], []
        if clients is not None:
            in_list, ids = _in_list(clients)
            where.append(f"p.client_id IN {in_list}")
            args += ids
        if package is not None:
            where.append("p.package = ?")
            args.append(package)
        with as_clients(clients):
            rows = await self.db._all(
                "SELECT p.pin_id, p.package, p.app, p.version, p.version_code, p.target,"
                " p.client_id, c.name AS client, p.group_name, p.created_at, p.created_by"
                " FROM app_pins p LEFT JOIN clients c ON c.client_id = p.client_id"
                f" WHERE {' AND '.join(where)} ORDER BY p.package, p.target", args)
        return [dict(r) for r in rows]

    async def pinned_versions(self, package: str) -> set[str]:
        """Every version some pin names for ``package`` (the library refuses to remove
        those files)."""
        rows = await self.db._all("SELECT DISTINCT version FROM app_pins WHERE package = ?",
                                  (package,))
        return {r[0] for r in rows}

    # --- install records -------------------------------------------------------------------
    async def add_install(self, rows: list[dict[str, Any]]) -> None:
        """The phones of one install, all or none."""
        now = utc_text()
        values = [(r["install_id"], r["serial"], r.get("client_id"), r.get("node"), r["kind"],
                   r["app"], r["package"], r.get("version"), r.get("version_code"),
                   bool(r.get("allow_downgrade")), now, r.get("created_by"),
                   r.get("state", PENDING), r.get("reason"), None, now) for r in rows]
        await self.db._write_many(
            f"INSERT INTO app_install_phones ({_INSTALL_COLUMNS}) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)

    async def set_state(self, install_id: str, serial: str, state: str,
                        reason: str | None = None, splits: list[str] | None = None) -> bool:
        """Move one phone's row; a finished row never moves again (a replayed event).
        True when it moved."""
        row = await self.db._write(
            "UPDATE app_install_phones SET state = ?, reason = ?,"
            " splits = COALESCE(?, splits), updated_at = ?"
            " WHERE install_id = ? AND serial = ? AND state NOT IN ('ok', 'failed')"
            " RETURNING serial",
            (state, reason, ",".join(splits) if splits is not None else None, utc_text(),
             install_id, serial))
        return row is not None

    async def install_rows(self, install_id: str,
                           clients: frozenset[int] | None = None) -> list[dict[str, Any]]:
        where, args = ["install_id = ?"], [install_id]
        if clients is not None:
            in_list, ids = _in_list(clients)
            where.append(f"client_id IN {in_list}")
            args += ids
        with as_clients(clients):
            rows = await self.db._all(f"SELECT {_INSTALL_COLUMNS} FROM app_install_phones"
                                      f" WHERE {' AND '.join(where)} ORDER BY serial", args)
        return [dict(r) for r in rows]

    async def unfinished(self) -> list[dict[str, Any]]:
        """Rows not finished (a coordinator stopped while they ran)."""
        rows = await self.db._all(f"SELECT {_INSTALL_COLUMNS} FROM app_install_phones"
                                  " WHERE state NOT IN ('ok', 'failed')")
        return [dict(r) for r in rows]

    async def recent_installs(self, clients: frozenset[int] | None = None,
                              limit: int = 50) -> list[dict[str, Any]]:
        """The newest installs, one summary each (phones by state)."""
        where, args = ["1 = 1"], []
        if clients is not None:
            in_list, ids = _in_list(clients)
            where.append(f"client_id IN {in_list}")
            args += ids
        with as_clients(clients):
            rows = await self.db._all(
                "SELECT install_id, MIN(kind) AS kind, MIN(app) AS app, MIN(package) AS package,"
                " MIN(version) AS version, MIN(created_at) AS created_at,"
                " COUNT(*) AS phones, COUNT(*) FILTER (WHERE state = 'ok') AS ok,"
                " COUNT(*) FILTER (WHERE state = 'failed') AS failed"
                f" FROM app_install_phones WHERE {' AND '.join(where)}"
                " GROUP BY install_id ORDER BY MIN(created_at) DESC, install_id LIMIT ?",
                (*args, limit))
        return [dict(r) for r in rows]
