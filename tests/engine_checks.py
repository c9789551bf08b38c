"""What tests ask of the farm database's schema and errors, on either engine (SQLite file or
PostgreSQL, tests/conftest.py ``engine``): the catalog reads go through the `FarmDB`'s own
reader, so a test checks the database the product opened, whichever it is."""

from __future__ import annotations

import sqlite3

import psycopg

from actors.store.farm_db import FarmDB

# A constraint the database refused (unique key, foreign key, NOT NULL), from either driver.
INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.errors.IntegrityError)


def is_postgresql(db: FarmDB) -> bool:
    return db.target.is_postgresql


async def tables(db: FarmDB) -> set[str]:
    """The database's tables (not views)."""
    if is_postgresql(db):
        sql = ("SELECT table_name FROM information_schema.tables"
               " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'")
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {r[0] for r in await db._all(sql)}


async def columns(db: FarmDB, table: str) -> set[str]:
    if is_postgresql(db):
        return {r[0] for r in await db._all(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?", (table,))}
    return {r[1] for r in await db._all(f"PRAGMA table_info({table})")}


async def foreign_keys(db: FarmDB) -> set[tuple[str, str, str, str]]:
    """(table, column, referenced table, referenced column) of every foreign key (its
    first column)."""
    if is_postgresql(db):
        return {tuple(r) for r in await db._all(
            "SELECT CAST(c.conrelid AS regclass)::text, a.attname,"
            " CAST(c.confrelid AS regclass)::text, af.attname FROM pg_constraint c"
            " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
            " JOIN pg_attribute af ON af.attrelid = c.confrelid AND af.attnum = c.confkey[1]"
            " WHERE c.contype = 'f'"
            " AND c.connamespace = CAST(current_schema() AS regnamespace)")}
    out = set()
    for table in await tables(db):
        for r in await db._all(f"PRAGMA foreign_key_list({table})"):
            out.add((table, r[3], r[2], r[4]))
    return out


async def index_leads(db: FarmDB, table: str) -> set[str]:
    """The leading column of every index on ``table``."""
    if is_postgresql(db):
        return {r[0] for r in await db._all(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a"
            " ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
            " WHERE i.indrelid = CAST(? AS regclass)", (table,))}
    leads = set()
    for index in await db._all(f"PRAGMA index_list({table})"):
        first = next(iter(await db._all(f"PRAGMA index_info({index[1]})")), None)
        if first is not None and first[2] is not None:
            leads.add(first[2])
    return leads


async def dump_text(db: FarmDB) -> str:
    """Every row of every table as text (what a logical dump of the database holds)."""
    out = []
    for table in sorted(await tables(db)):
        out += [f"{table}: {tuple(r)!r}" for r in await db._all(f"SELECT * FROM {table}")]
    return "\n".join(out)
