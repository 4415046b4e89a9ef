"""Tools of the reliability suite: tallies, the secret registry, fault injectors, catalog checks.

Nothing here mocks PostgreSQL or Redis: faults are real (backends terminated
with ``pg_terminate_backend``, TCP connections cut by a proxy that stops
listening, ``CLIENT PAUSE`` on the real Redis server).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from alpha_data import Database, testing
from tests.streams_tools import throwaway_redis
from tests.support import ALL_TABLES, REDIS_URL, SERVER_URL

T = TypeVar("T")

#: argon2id with tiny parameters: the suite tests behaviour, not the hash's cost.
FAST_HASHER = testing.FAST_HASHER


# -- tallies --------------------------------------------------------------------------


@dataclass
class Tally:
    """What the suite did, printed by ``pytest_terminal_summary`` at the end of the run."""

    cases: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    audit: dict[str, int] = field(default_factory=dict)

    def case(self, kind: str, n: int = 1) -> None:
        """Count ``n`` cases (inputs, calls, examples) of ``kind`` tried."""
        self.cases[kind] += n

    def fault(self, kind: str, n: int = 1) -> None:
        """Count ``n`` faults of ``kind`` injected."""
        self.faults[kind] += n

    def rows_verified(self, kind: str, n: int) -> None:
        """Count ``n`` rows whose committed content (or absence) was checked."""
        self.rows[kind] += n

    def check(self, kind: str, n: int = 1) -> None:
        """Count ``n`` whole-state comparisons (catalog snapshots, table counts) of ``kind``."""
        self.checks[kind] += n

    def any(self) -> bool:
        return bool(self.cases or self.faults or self.rows)


TALLY = Tally()


# -- secrets ----------------------------------------------------------------------------

#: Kinds of secret that only a stored row can hold (never a plaintext secret).
STORED_FORMS = frozenset({"password_hash", "key_hash"})

#: value -> kind of every secret the suite used; audited against logs and Redis at the end.
SECRETS: dict[str, str] = {}


def remember_secret(value: str, kind: str) -> str:
    """Register ``value`` as a secret that must never appear in a log, repr or cache entry."""
    if len(value) < 8:
        raise ValueError("secrets shorter than 8 characters would match by accident")
    SECRETS[value] = kind
    return value


def new_password() -> str:
    """A fresh password (registered as a secret) that passes the policy."""
    return remember_secret(f"pw-{secrets.token_urlsafe(15)}", "password")


def hash_digest(stored: str) -> str:
    """The hex digest part of a stored API-key hash (``scheme$hex``)."""
    return stored.partition("$")[2] or stored


def leaks(text_: str, *, kinds: frozenset[str] | None = None) -> list[str]:
    """Kinds of the registered secrets that occur in ``text_`` (never the secrets themselves)."""
    return sorted(
        {
            kind
            for value, kind in SECRETS.items()
            if (kinds is None or kind in kinds) and value in text_
        }
    )


def mask(text_: str) -> str:
    """``text_`` with every registered secret replaced by its kind (safe to print)."""
    for value, kind in SECRETS.items():
        text_ = text_.replace(value, f"<{kind}>")
    return text_


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


# -- log capture ------------------------------------------------------------------------------

_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class SessionLog(logging.Handler):
    """Keeps every record as the text a log handler could ever write for it.

    That is the formatted message, the traceback and stack text, and every
    ``extra`` attribute's repr.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[tuple[str, str, str]] = []  # (logger, raw msg template, text)
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is still captured verbatim
            message = f"{record.msg!r} % {record.args!r}"
        parts = [f"{record.name} {record.levelname} {message}"]
        if record.exc_info:
            parts.append(self._formatter.formatException(record.exc_info))
        if record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(record.stack_info)
        parts.extend(
            f"{key}={value!r}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRS
        )
        self.lines.append((record.name, str(record.msg), "\n".join(parts)))


# -- PostgreSQL side channel ------------------------------------------------------------


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def admin_connection(url: str = SERVER_URL) -> Any:
    """A plain asyncpg connection outside every Database under test (for checks and kills)."""
    conn = await asyncpg.connect(_dsn(url), timeout=5)
    try:
        yield conn
    finally:
        await conn.close()


async def kill_backend(pid: int) -> None:
    """``pg_terminate_backend`` and wait (up to 5 s) until the backend has exited."""
    async with admin_connection() as conn:
        killed = await conn.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
    if not killed:
        raise AssertionError(f"backend {pid} was not terminated")


async def backend_pid(uow: Any) -> int:
    """The server pid of the connection a unit of work runs on."""
    return int((await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


def run_async_in_listener(coro: Awaitable[T]) -> T:
    """Await ``coro`` from inside a synchronous SQLAlchemy event listener (greenlet bridge)."""
    from sqlalchemy.util import concurrency

    bridge: Callable[[Awaitable[T]], T] = (
        getattr(concurrency, "await_", None) or concurrency.await_only
    )
    return bridge(coro)


@contextlib.contextmanager
def listening(target: Any, name: str, fn: Callable[..., Any]) -> Iterator[None]:
    """``event.listen`` for the duration of a block."""
    event.listen(target, name, fn)
    try:
        yield
    finally:
        event.remove(target, name, fn)


#: What "nothing written" is checked against: every table but the outbox, a queue
#: that delivery drains in the background (what commits wrote there is asserted
#: by the outbox tests).
COUNTED_TABLES = tuple(table for table in ALL_TABLES if table != "alphapulse.outbox")


async def row_counts(url: str) -> dict[str, int]:
    """Rows in every table of the schema, read on a connection of its own."""
    query = " UNION ALL ".join(
        f"SELECT '{table}' AS t, count(*) AS n FROM {table}" for table in COUNTED_TABLES
    )
    async with admin_connection(url) as conn:
        return {r["t"]: int(r["n"]) for r in await conn.fetch(query)}


CATALOG_SQL = r"""
SELECT line FROM (
  SELECT format('column %s.%s.%s %s %s %s %s', table_schema, table_name, column_name,
                data_type, is_nullable, column_default, character_maximum_length) AS line
  FROM information_schema.columns WHERE table_schema IN ('public', 'alphapulse')
  UNION ALL
  SELECT format('index %s.%s %s', schemaname, indexname, indexdef)
  FROM pg_indexes WHERE schemaname IN ('public', 'alphapulse')
  UNION ALL
  SELECT format('constraint %s.%s.%s %s', n.nspname, c.conrelid::regclass, c.conname,
                pg_get_constraintdef(c.oid))
  FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
  WHERE n.nspname IN ('public', 'alphapulse')
  UNION ALL
  SELECT format('relation %s.%s %s', n.nspname, c.relname, c.relkind)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname IN ('public', 'alphapulse')
  UNION ALL
  SELECT format('trigger %s %s %s', tgrelid::regclass, tgname, tgenabled)
  FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL
  SELECT format('function %s.%s(%s)', n.nspname, p.proname,
                pg_get_function_identity_arguments(p.oid))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname IN ('public', 'alphapulse')
  UNION ALL
  SELECT format('schema %s', nspname) FROM pg_namespace
  WHERE nspname NOT LIKE 'pg\_temp\_%' AND nspname NOT LIKE 'pg\_toast\_temp\_%'
) catalog ORDER BY line
"""


def _digest(lines: list[str]) -> tuple[str, list[str]]:
    return hashlib.md5("\n".join(lines).encode(), usedforsecurity=False).hexdigest(), lines


async def catalog_snapshot(url: str) -> tuple[str, list[str]]:
    """(md5, lines) of the schema: columns, indexes, constraints, relations, triggers, functions."""
    async with admin_connection(url) as conn:
        return _digest([r["line"] for r in await conn.fetch(CATALOG_SQL)])


async def catalog_as_seen_by(db: Database) -> tuple[str, list[str]]:
    """The same snapshot through ``db`` (inside its transaction, for the ``db`` fixture)."""
    async with db.unit_of_work(read_only=True) as uow:
        return _digest(list((await uow.session.execute(text(CATALOG_SQL))).scalars()))


_COUNTS_SQL = "SELECT " + ", ".join(
    f'(SELECT count(*) FROM {table}) AS "{table}"' for table in COUNTED_TABLES
)


async def rows_seen_by(db: Database) -> dict[str, int]:
    """Rows in every table as ``db`` sees them (inside the ``db`` fixture's transaction too)."""
    async with db.unit_of_work(read_only=True) as uow:
        row = (await uow.session.execute(text(_COUNTS_SQL))).one()
    return {k: int(v) for k, v in row._mapping.items()}


#: Empties every table (alpha_data.testing's, shared with the ``real_db`` fixture).
truncate_all = testing.truncate_all


def pool_checked_out(db: Database) -> int:
    return db.pool_status().get("checkedout", -1)


# -- a TCP proxy that can refuse connections ---------------------------------------------


class TcpProxy:
    """Forwards a local port to ``target``; ``stop()`` cuts every connection and refuses new ones.

    ``start()`` again listens on the same port, so a client configured with the
    proxy's address sees its server go away and come back.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        #: Blackhole mode: bytes are read and dropped in both directions, sockets stay
        #: open and new connections are accepted but never reach the target.
        self.silent = False
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening (connections are refused) and abort every open connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()  # no new connections from here on
        # Abort before wait_closed(): since Python 3.12.1 it waits for every
        # connection the server accepted to close.
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if server is not None:
            await server.wait_closed()

    def blackhole(self, on: bool = True) -> None:
        """Go silent (or forward again): nothing is forwarded, nothing is closed or reset.

        What a dead network path looks like to both ends (a firewall dropping
        packets, a hung NAT entry): writes succeed, replies never come.
        """
        self.silent = on

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, asyncio.CancelledError):
            pass

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in a task that ``stop()`` cancels."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.silent:
            self._spawn(self._swallow(reader, writer))
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for work in self._relay(reader, writer, up_reader, up_writer):
            self._spawn(work)

    def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> list[Coroutine[Any, Any, None]]:
        """What moves bytes between a client and the target (subclasses alter one direction)."""
        return [self._pipe(reader, up_writer), self._pipe(up_reader, writer)]

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float = 0.0
    ) -> None:
        """Forward ``src`` to ``dst`` (each chunk ``delay`` s late) until either side closes."""
        try:
            while data := await src.read(65536):
                if self.silent:
                    continue  # dropped on the floor; the connection stays open
                if delay:
                    await asyncio.sleep(delay)
                dst.write(data)
                await dst.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)


async def proxied_redis(url: str) -> tuple[TcpProxy, str]:
    """A started TcpProxy in front of the Redis at ``url``, and the URL through it."""
    target = urlsplit(url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    port = await proxy.start()
    return proxy, f"redis://127.0.0.1:{port}{target.path}"


# -- a Redis server of our own ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def private_redis() -> AsyncIterator[str]:
    """The URL of a redis-server started for one test (``CLIENT PAUSE`` stalls only it).

    Same binary as the shared service, so still the real thing
    (``tests.streams_tools.throwaway_redis``); when no ``redis-server`` is
    installed, the shared server's URL (pauses then stall every client of that
    server for their length).
    """
    if shutil.which("redis-server") is None:
        yield REDIS_URL
        return
    async with throwaway_redis() as server:
        yield server.url
