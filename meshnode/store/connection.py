"""Opening the store's SQLite connection, and the transactions and chunked queries run on it.

:func:`open_connection` checks that a file is a meshnode database of a
version this code knows, configures the connection (busy timeout, WAL with
``synchronous=NORMAL``, foreign keys, cache, checkpoint size) and brings the
schema up to date (:func:`meshnode.store.schema.migrate`). A read-only
connection never changes the file: it refuses an old schema instead of
upgrading it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from meshnode.errors import StoreError
from meshnode.store import schema

BUSY_TIMEOUT_MS = 5_000
CACHE_SIZE_KIB = 16 * 1024  # the writer's page cache
READER_CACHE_SIZE_KIB = 4 * 1024  # each read-only connection's (the daemon keeps two)
# Checkpoint the WAL every ~40 MB instead of SQLite's 4 MB: a 1,000-record
# batch into a 100k-record store dirties >1,000 pages, so the default ran a
# checkpoint in nearly every commit (15k -> 22k records/s). The WAL file is
# truncated back to JOURNAL_SIZE_LIMIT after a checkpoint.
WAL_AUTOCHECKPOINT_PAGES = 10_000
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
CHUNK = 500  # values per IN (...) list

MEMORY = ":memory:"


def open_connection(where: str, *, readonly: bool) -> sqlite3.Connection:
    """A configured connection to the store at ``where`` (``":memory:"``: a private one).

    Usable from any thread (the caller serialises). Raises :class:`StoreError`
    if the file is not a meshnode database, was written by a newer meshnode,
    cannot be opened, or (``readonly``) has an older schema.
    """
    memory = where == MEMORY
    if readonly and memory:
        raise StoreError("an in-memory store cannot be opened read-only")
    if not memory and not readonly:
        _owner_only(where)
    try:
        if readonly:
            uri = Path(where).absolute().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            conn = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store {where}: {exc}") from None
    try:
        _prepare(conn, where, readonly=readonly, memory=memory)
    except BaseException:
        conn.close()
        raise
    return conn


def _owner_only(where: str) -> None:
    """Create the database file (and fix it, its WAL and shared memory) with mode 0600.

    The store holds everything the neighbours posted and whom this node
    trusts: nobody else on the machine needs to read it. SQLite creates the
    WAL and shared-memory files with the database file's mode.
    """
    try:
        os.close(os.open(where, os.O_RDWR | os.O_CREAT, 0o600))
        for path in (where, where + "-wal", where + "-shm"):
            if os.path.exists(path) and os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open the store {where}: {exc.strerror or exc}") from None


def quick_check(conn: sqlite3.Connection, where: str) -> None:
    """SQLite's quick integrity check (``PRAGMA quick_check``); raise if the file is damaged."""
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.DatabaseError as exc:
        rows = [str(exc)]
    if rows != ["ok"]:
        lines = [line.strip() for row in rows for line in row.splitlines() if line.strip("* ")]
        raise StoreError(
            f"the store {where} is damaged ({'; '.join(lines[:3])}): move it away and restart to sync"
            " the records again from your swarms (your identity and swarms are kept)"
        )


def _prepare(conn: sqlite3.Connection, where: str, *, readonly: bool, memory: bool) -> None:
    """Check that ``conn`` is a meshnode database, configure it, migrate it."""
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{where} is not a meshnode database ({exc})") from None
    known = len(schema.MIGRATIONS)
    fresh = version == 0 and tables == 0 and app_id in (0, schema.APPLICATION_ID)
    if not fresh and app_id != schema.APPLICATION_ID:
        raise StoreError(
            f"{where} is an SQLite database of another application, not a meshnode store"
            " (move it away or choose another path)"
        )
    if version > known:
        raise StoreError(
            f"{where} has store schema version {version}, newer than the {known} this meshnode"
            " knows: upgrade meshnode (or restore a backup made by this version)"
        )
    try:
        if not readonly and not memory:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"{where}: cannot switch the store to WAL mode (got {mode})")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA cache_size = -{READER_CACHE_SIZE_KIB if readonly else CACHE_SIZE_KIB}")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot configure the store {where}: {exc}") from None
    if version < known:
        if readonly:
            raise StoreError(
                f"{where} has store schema version {version}, older than {known}:"
                " open it read-write once to upgrade it"
            )
        schema.migrate(conn, where)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (``BEGIN IMMEDIATE``): committed if the block ends, else rolled back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:  # the block or the commit failed
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """``values`` in slices of at most ``size`` (SQLite bounds the parameters of a statement)."""
    for i in range(0, len(values), size):
        yield values[i : i + size]


def marks(n: int) -> str:
    """``?, ?, ...``: ``n`` parameter marks for an IN list."""
    return ", ".join("?" * n)


def select_in(
    conn: sqlite3.Connection, sql: str, values: Sequence[Any], *params: Any
) -> Iterator[tuple[Any, ...]]:
    """Run ``sql`` (with one ``{}`` for an IN list) over ``values`` in chunks, then ``params``."""
    for chunk in chunks(values):
        yield from conn.execute(sql.format(marks(len(chunk))), (*chunk, *params))


def execute_in(conn: sqlite3.Connection, sql: str, values: Sequence[Any]) -> None:
    """Run the statement ``sql`` (with one ``{}`` for an IN list) over ``values`` in chunks."""
    for chunk in chunks(values):
        conn.execute(sql.format(marks(len(chunk))), chunk)
