"""The job database and the storage that ``Settings`` name, opened and
checked: what ``serve`` needs before anything else, and all that ``migrate``
needs, without the web, MCP or model stacks."""

from __future__ import annotations

from pathlib import Path

from whisper_mcp.config import Settings
from whisper_mcp.queue.files import FileStore
from whisper_mcp.queue.sqlite import SQLiteDatabase
from whisper_mcp.queue.storage import Storage
from whisper_mcp.queue.store import Database


def database_path(settings: Settings) -> Path:
    """Where the SQLite database is: ``FileStore.database``, known before the
    storage folders are made."""
    return settings.storage.resolve() / "jobs.sqlite3"


def open_database(settings: Settings) -> Database:
    """PostgreSQL when a URL is given (replicas), else SQLite in the storage folder;
    checked and migrated. Raises ``DatabaseRefused`` (one sentence) if it cannot be used.

    Only the SQLite case touches the storage folder: `migrate --database-url`
    must not leave an empty one wherever it was run. Nothing is created before
    the database passes its checks, so a refused one leaves the folder as it was.
    """
    if settings.database_url:
        from whisper_mcp.queue.postgres import PostgresDatabase  # psycopg only when used

        return PostgresDatabase(settings.database_url)
    return SQLiteDatabase(database_path(settings))


def open_storage(settings: Settings) -> Storage:
    """The bucket of --storage-url, with --storage as its scratch space; else
    the storage folder alone. ``ValueError`` if the bucket cannot be used."""
    if settings.storage_url:
        from whisper_mcp.queue.objects import ObjectStore, connect  # obstore only when used

        url, endpoint, region = settings.storage_url, settings.storage_endpoint, settings.storage_region
        quick = connect(url, endpoint=endpoint, region=region, quick=True)  # watches for the store's return
        store = ObjectStore(connect(url, endpoint=endpoint, region=region), settings.storage, quick)
        store.check()  # a bucket that cannot be used stops start-up, in one sentence
        return store
    return FileStore(settings.storage)
