"""Stores as an older emulator made them, for the migration tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bms.store.nvm import APPLICATION_ID, MIGRATIONS


def store_at_version(path: Path, version: int) -> sqlite3.Connection:
    """A new store at `path` with the tables of schema `version` and nothing in them: an
    open connection (autocommit) for the test to fill."""
    db = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:version]:
        for statement in migration.split(";"):
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {version}")
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    return db
