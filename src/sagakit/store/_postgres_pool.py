"""The PostgreSQL saga log's connection pool, made to ride out a server restart.

A restart closes every connection the pool holds. The pool notices a closed connection only
when the event loop gets to read its end, so the first call after a restart may still be
handed a dead one and fail ("connection was closed in the middle of operation"), although the
server is back. Such a call is made once more, on a new connection, when that cannot apply
twice: always if it never reached the server, and otherwise only for calls that are safe to
repeat (reads, and writes whose second run changes nothing: taking or renewing one's own
lease, handing it back). A claim or a message is not repeated after it may have reached the
server: the first attempt may have committed, and the caller decides (a worker re-checks
its leases; a sender is told the database went away).

A server that refuses connections, or did not answer in time, is not retried here: a new
connection would fare no better, and waiting is for the caller (``StoreUnavailableError``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

from sagakit.store._postgres_errors import diagnose
from sagakit.store._postgres_url import DRIVER_ERRORS

T = TypeVar("T")
_Call: TypeAlias = "Callable[[PoolConnectionProxy[asyncpg.Record]], Awaitable[T]]"


class RetryingPool:
    """``asyncpg``'s pool calls, each made once more if its connection turned out dead.

    ``again=False`` (see :attr:`once`) repeats only calls that never reached the server.
    """

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], *, again: bool = True) -> None:
        self.pool = pool
        self._again = again

    @property
    def once(self) -> RetryingPool:
        """The same pool, for calls that must not run twice."""
        return RetryingPool(self.pool, again=False)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._call(lambda conn: conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self._call(lambda conn: conn.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._call(lambda conn: conn.fetchval(sql, *args))

    async def execute(self, sql: str, *args: Any) -> str:
        return await self._call(lambda conn: conn.execute(sql, *args))

    async def fetch_walking_indexes(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """``fetch`` with bitmap and sequential scans off for this statement (``SET LOCAL``,
        so in a transaction of its own): where a query reads an index in order to stop
        early, as a claim does, the planner must not read every match and sort them, or
        the whole table. It does when its estimate says few rows match, or that the table
        is small: on a table never analysed, or one that grew since.

        The transaction begins with its settings in one round trip (three statements of
        one simple query), not two: a worker's claims made most of its system calls."""

        async def walking(conn: PoolConnectionProxy[asyncpg.Record]) -> list[asyncpg.Record]:
            await conn.execute(_WALKING)
            try:
                rows = await conn.fetch(sql, *args)
            except BaseException:
                if not conn.is_closed():
                    with contextlib.suppress(Exception):  # the pool resets it otherwise
                        await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
            return rows

        return await self._call(walking)

    def acquire(self) -> PoolAcquireContext[asyncpg.Record]:
        """A connection of one's own, for a transaction: not retried."""
        return self.pool.acquire()

    def get_max_size(self) -> int:
        return self.pool.get_max_size()

    async def close(self) -> None:
        await self.pool.close()

    async def _call(self, call: _Call[T]) -> T:
        try:
            return await self._on_a_connection(call)
        except DRIVER_ERRORS as error:
            if not stale(error) or not (self._again or never_sent(error)):
                raise
        return await self._on_a_connection(call)  # the pool replaces the dead connection

    async def _on_a_connection(self, call: _Call[T]) -> T:
        async with self.pool.acquire() as conn:
            return await call(conn)


_WALKING = "BEGIN; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off"


def stale(error: BaseException) -> bool:
    """Whether ``error`` says the connection died under the call (a restart closed it), so
    that a new connection may work at once; not a refusal, nor a server slow to answer."""
    if not diagnose(error).transient:
        return False
    if isinstance(error, TimeoutError | ConnectionRefusedError):
        return False
    return getattr(error, "sqlstate", None) != "57P03"  # starting up or shutting down


def never_sent(error: BaseException) -> bool:
    """asyncpg checks that a connection is open before it sends anything."""
    return isinstance(error, asyncpg.InterfaceError) and "connection is closed" in str(error)
