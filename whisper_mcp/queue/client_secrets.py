"""Realtime client secrets in the job database (SQLite or PostgreSQL), so a
secret made by one replica opens a WebSocket on any other.

Only a hash of each secret is stored. Using one deletes its row in the same
statement that finds it, so of two handshakes presenting one secret, here or
on two replicas, exactly one gets it. Every method blocks.
"""

from __future__ import annotations

from whisper_mcp.queue.store import Database


class SQLClientSecretStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, secret_hash: str, session: str, created_at: float, expires_at: float) -> None:
        self.db.run(
            "INSERT INTO client_secrets (secret_hash, session, created_at, expires_at) VALUES (?,?,?,?)",
            (secret_hash, session, created_at, expires_at),
        )

    def redeem(self, secret_hash: str, now: float) -> str | None:
        """Use a secret: its session (JSON) if it exists and has not expired,
        and it is gone either way; None if unknown, used or expired."""
        rows, _ = self.db.run(
            "DELETE FROM client_secrets WHERE secret_hash = ? RETURNING session, expires_at", (secret_hash,)
        )
        if not rows or float(rows[0][1]) <= now:
            return None
        return str(rows[0][0])

    def expire(self, now: float) -> int:
        """Delete expired secrets; how many there were."""
        _, count = self.db.run("DELETE FROM client_secrets WHERE expires_at <= ?", (now,))
        return count
