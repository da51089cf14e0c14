"""Errors a caller can act on.

Every error raised towards a client carries a machine-readable ``code``, the
HTTP status the REST routes answer with, and a message written for a person.
MCP tools turn the same errors into tool errors with the same message.
"""

from __future__ import annotations

# What a client is told of an error that is not its own (a bug, a failed
# library call): exception text can hold server paths and internals, so it
# goes to the server's log only.
INTERNAL_ERROR = "An error inside the server stopped this; its log has the details. Trying again may work."


class ServiceError(Exception):
    """Base class: something the caller asked for cannot be done."""

    status_code: int = 400
    code: str = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidInput(ServiceError):
    status_code = 400
    code = "invalid_input"


class InvalidAudio(InvalidInput):
    """The upload is empty, truncated or not audio that we can decode."""

    code = "invalid_audio"


class AudioTooLong(InvalidInput):
    code = "audio_too_long"


class UnknownModel(InvalidInput):
    code = "unknown_model"


class ModelUnavailable(ServiceError):
    """A model that exists but cannot be loaded here (e.g. no network to download it)."""

    status_code = 503
    code = "model_unavailable"


class JobNotFound(ServiceError):
    status_code = 404
    code = "job_not_found"


class NotReady(ServiceError):
    status_code = 404
    code = "not_ready"


class NoRecording(ServiceError):
    """A job without a kept recording (only live sessions opened with store=audio keep one)."""

    status_code = 404
    code = "no_recording"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "too_large"


class InsufficientStorage(ServiceError):
    status_code = 507
    code = "insufficient_storage"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class UploadNotFound(ServiceError):
    status_code = 404
    code = "upload_not_found"


class Unavailable(ServiceError):
    status_code = 503
    code = "unavailable"


class DependencyUnavailable(Unavailable):
    """A service this server depends on (the job database, an object store)
    cannot be reached: every request that needs it is refused at once, in
    words, until it is back, rather than after a connection timeout."""

    code = "dependency_unavailable"


class DatabaseUnavailable(DependencyUnavailable):
    """The shared job database (PostgreSQL) cannot be reached."""

    code = "database_unavailable"

    def __init__(
        self,
        message: str = "The job database cannot be reached right now, so this request was not served"
        " (nothing was changed). Try again in a few seconds: jobs already accepted are kept"
        " and run once it is back.",
    ) -> None:
        super().__init__(message)


class StorageUnavailable(DependencyUnavailable):
    """The object store (--storage-url) did not answer, or refused the request."""

    code = "storage_unavailable"


class DataMissing(ServiceError):
    """A file the job database says exists is not in storage: removed, or
    written where this server does not look (replicas without shared storage)."""

    status_code = 500
    code = "data_missing"


# errno values for "no space left": ENOSPC, EDQUOT (a quota).
_NO_SPACE = frozenset({28, 122})


def storage_fault(exc: BaseException) -> ServiceError | None:
    """The error to answer with when the disk or the database fails under a
    request (507 for a full disk or database, 503 for a database that is
    away, or an object store), or None for any other exception (a bug: 500)."""
    import sqlite3  # stdlib; psycopg's errors are recognised without importing psycopg

    if isinstance(exc, DependencyUnavailable):
        return exc
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return InsufficientStorage("The server's disk is full; try again later.")
    if isinstance(exc, sqlite3.Error):
        if "full" in str(exc):  # "database or disk is full"
            return InsufficientStorage("The server's disk is full; try again later.")
        if isinstance(exc, sqlite3.OperationalError):  # locked, or cannot open or write the file
            return Unavailable("The job database is not available right now; try again later.")
        if isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc):  # damaged while running
            return Unavailable(
                "The job database is damaged; the server's operator must restore it (the server's log says where)."
            )
        return None
    if type(exc).__module__.startswith("psycopg"):
        state = getattr(exc, "sqlstate", None) or ""
        if state == "53100":  # disk_full
            return InsufficientStorage("The database server's disk is full; try again later.")
        kinds = {cls.__name__ for cls in type(exc).__mro__}
        if kinds & {"OperationalError", "PoolTimeout"} or state.startswith(("08", "53", "57")):
            # Connection lost or refused, out of resources, shutting down.
            return Unavailable("The job database is not available right now; try again later.")
    return None
