"""The check psycopg's pool runs on a connection before handing it out (with DATABASE_POOL=1)."""

import select
import time
import weakref

from django.db.backends.signals import connection_created
from psycopg import pq
from psycopg_pool import ConnectionPool


def check_pooled_connection(conn) -> None:
    """Raise if `conn` is broken; then check every idle connection of the pool at once.

    A connection given back moments ago that has nothing to read is handed out without a round trip (`_quiet`). One that
    fails its round trip usually means they all broke (a database restart, a failover, pg_terminate_backend):
    the pool would otherwise try them one by one with a growing pause after each failure (0, 1, 2, 4 s…), and a
    request would time out behind a handful of dead connections (tests/sessions/test_faults.py).
    """
    if _quiet(conn):
        return
    try:
        ConnectionPool.check_connection(conn)
    except Exception:
        from django.db import DEFAULT_DB_ALIAS, connections

        connections[DEFAULT_DB_ALIAS].pool.check()
        raise


RECENTLY_GIVEN_BACK = 1.0  # seconds: a connection given back since is lent without a round trip if it is quiet

_given_back_at: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _quiet(conn) -> bool:
    """Whether `conn` came back to the pool within RECENTLY_GIVEN_BACK, is open and idle, and nothing has arrived on
    it since.

    A backend that ends (terminated, its server stopping or restarting) says so on the socket first (a FATAL
    message, then the end of the stream), so such a connection needs no round trip to be trusted. One idle for
    longer gets it: a NAT, a load balancer or a rebooted host that dropped it answers only when spoken to (a reset),
    which only a round trip finds (and then the whole pool is checked). Under load every connection comes back
    within milliseconds, so requests, channel connects and long-poll checks skip a statement each. poll(), not
    select(): a process holding 10,000 channels has descriptors above select()'s 1,024.
    """
    given_back = _given_back_at.get(conn)
    if given_back is None or time.monotonic() - given_back > RECENTLY_GIVEN_BACK:
        return False
    pgconn = conn.pgconn
    if pgconn.status != pq.ConnStatus.OK or pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return False
    try:
        arrived = select.poll()
        arrived.register(pgconn.socket, select.POLLIN)
        return not arrived.poll(0)
    except (OSError, ValueError):
        return False


def note_given_back(conn) -> None:
    """The pool's `reset`, run on each connection as it comes back."""
    _given_back_at[conn] = time.monotonic()


def _use_our_check(sender, connection, **kwargs) -> None:
    # Django builds the pool with `check=ConnectionPool.check_connection` (CONN_HEALTH_CHECKS) and refuses another in
    # OPTIONS["pool"]; the pool keeps its check in `_check`, read at every getconn.
    pool = getattr(connection, "pool", None)
    if pool is not None and getattr(pool, "_check", None) is ConnectionPool.check_connection:
        pool._check = check_pooled_connection
        if pool._reset is None:  # read as each connection comes back; Django sets none
            pool._reset = note_given_back


def install() -> None:
    connection_created.connect(_use_our_check, dispatch_uid="acp.dbpool")
