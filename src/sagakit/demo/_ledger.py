"""The idempotency ledger every fake service keeps in its own SQLite database.

A real service de-duplicates requests by their idempotency key in the same transaction as
the effect itself; otherwise a crash between the two would either lose the effect's record
(and apply it twice on a retry) or record an effect that never happened. The ledger does
exactly that: :meth:`Ledger.once` opens one transaction, checks the key, applies the effect
and records its outcome, so a second call with the same key replays the first outcome.

It also counts, per key, every call and every effect actually applied, in an append-only
``ledger_effects`` table that nothing de-duplicates: a crash test can then prove from the
service's own database that an effect happened at most once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    key TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    outcome TEXT,            -- 'ok' or 'error' once the call has a final outcome
    result TEXT,             -- JSON: the result, or the recorded error's details
    calls INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_effects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    operation TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_effects_key ON ledger_effects (key);
"""


class RecordedError(Exception):
    """A service error that is a final answer for its key, so it is recorded and replayed.

    A declined card stays declined for that request: a retry with the same key must get the
    same error, not a second attempt. ``effect`` says whether the failed call still changed
    something (a partial reservation did). Subclasses rebuild themselves from ``details``.
    """

    effect: bool = False
    _registry: ClassVar[dict[str, type[RecordedError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        RecordedError._registry[cls.__name__] = cls

    def details(self) -> dict[str, Any]:
        """JSON-able arguments that :meth:`from_details` turns back into the same error."""
        raise NotImplementedError

    @classmethod
    def from_details(cls, details: dict[str, Any]) -> RecordedError:
        return cls(**details)

    @staticmethod
    def rebuild(recorded: dict[str, Any]) -> RecordedError:
        kind = RecordedError._registry[recorded["type"]]
        return kind.from_details(recorded["details"])


class KeyReusedError(Exception):
    """One idempotency key was used for two different operations: a caller bug."""


@dataclass(frozen=True, slots=True)
class Call:
    """What an effect function is handed: the open transaction and this call's facts."""

    db: sqlite3.Connection
    key: str
    calls: int
    """How many times this key has been called, this call included."""


class Ledger:
    """A SQLite database (a file, or ``:memory:``) with the idempotency ledger in it.

    ``schema`` is the owning service's own tables, created beside the ledger's. One
    connection is shared by the threads of this process under a lock; other processes
    using the same file are serialised by SQLite's write lock (``BEGIN IMMEDIATE``).
    """

    def __init__(self, path: str | os.PathLike[str] = ":memory:", schema: str = "") -> None:
        self.path = os.fspath(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA + schema)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed on success and rolled back on any error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read-only helper for the services' query methods."""
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def once(self, key: str, operation: str, apply: Callable[[Call], Any]) -> Any:
        """Apply ``apply`` at most once per ``key``; later calls replay its outcome.

        ``apply`` runs inside the transaction that records its outcome. If it raises a
        :class:`RecordedError` that error is recorded (with its effect, if any) and raised
        now and on every later call; any other exception is transient: its changes are
        rolled back, only the call is counted, and the next call tries again.
        """
        transient: Exception | None = None
        with self.transaction() as db:
            calls = self._count_call(db, key, operation)
            outcome, result = db.execute(
                "SELECT outcome, result FROM ledger WHERE key = ?", (key,)
            ).fetchone()
            if outcome is None:
                decided = self._apply(db, Call(db, key, calls), operation, apply)
                if isinstance(decided, Exception):
                    transient = decided
                else:
                    outcome, result = decided
        # Raised only now, after the commit, so the call (and a recorded error) is kept.
        if transient is not None:
            raise transient
        return _replay(outcome, result)

    def _apply(
        self, db: sqlite3.Connection, call: Call, operation: str, apply: Callable[[Call], Any]
    ) -> tuple[str, str] | Exception:
        """Run the effect under a savepoint: its outcome to record, or a transient error."""
        db.execute("SAVEPOINT effect")
        try:
            value = apply(call)
        except RecordedError as error:
            db.execute("RELEASE effect")
            decided = ("error", _error_json(error))
            effect = error.effect
        except Exception as error:
            db.execute("ROLLBACK TO effect")
            db.execute("RELEASE effect")
            return error
        else:
            db.execute("RELEASE effect")
            decided = ("ok", json.dumps(value))
            effect = True
        db.execute("UPDATE ledger SET outcome = ?, result = ? WHERE key = ?", (*decided, call.key))
        if effect:
            db.execute(
                "INSERT INTO ledger_effects (key, operation) VALUES (?, ?)", (call.key, operation)
            )
        return decided

    @staticmethod
    def _count_call(db: sqlite3.Connection, key: str, operation: str) -> int:
        db.execute(
            "INSERT INTO ledger (key, operation, calls) VALUES (?, ?, 1) "
            "ON CONFLICT (key) DO UPDATE SET calls = calls + 1",
            (key, operation),
        )
        known, calls = db.execute(
            "SELECT operation, calls FROM ledger WHERE key = ?", (key,)
        ).fetchone()
        if known != operation:
            raise KeyReusedError(f"key {key!r} was used for {known!r}, not {operation!r}")
        return int(calls)

    def calls(self, key: str) -> int:
        """How many times ``key`` was called, replays and transient failures included."""
        rows = self.query("SELECT calls FROM ledger WHERE key = ?", (key,))
        return int(rows[0][0]) if rows else 0

    def effects_applied(self, key: str) -> int:
        """How many times an effect was applied under ``key``; correct code keeps it <= 1."""
        rows = self.query("SELECT COUNT(*) FROM ledger_effects WHERE key = ?", (key,))
        return int(rows[0][0])

    def keys(self, operation: str | None = None) -> list[str]:
        """Every key called so far (for one operation, if given), in key order."""
        if operation is None:
            return [r[0] for r in self.query("SELECT key FROM ledger ORDER BY key")]
        sql = "SELECT key FROM ledger WHERE operation = ? ORDER BY key"
        return [r[0] for r in self.query(sql, (operation,))]


def _error_json(error: RecordedError) -> str:
    return json.dumps({"type": type(error).__name__, "details": error.details()})


def _replay(outcome: str, result: str) -> Any:
    if outcome == "error":
        raise RecordedError.rebuild(json.loads(result))
    return json.loads(result)
