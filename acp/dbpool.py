"""The check psycopg's pool runs on a connection before handing it out (with DATABASE_POOL=1)."""

from django.db.backends.signals import connection_created
from psycopg_pool import ConnectionPool


def check_pooled_connection(conn) -> None:
    """Raise if `conn` is broken; then check every idle connection of the pool at once.

    One broken connection usually means they all broke (a database restart, a failover, pg_terminate_backend).
    The pool would otherwise try them one by one with a growing pause after each failure (0, 1, 2, 4 s…), and a
    request would time out behind a handful of dead connections (tests/sessions/test_faults.py).
    """
    try:
        ConnectionPool.check_connection(conn)
    except Exception:
        from django.db import DEFAULT_DB_ALIAS, connections

        connections[DEFAULT_DB_ALIAS].pool.check()
        raise


def _use_our_check(sender, connection, **kwargs) -> None:
    # Django builds the pool with `check=ConnectionPool.check_connection` (CONN_HEALTH_CHECKS) and refuses another in
    # OPTIONS["pool"]; the pool keeps its check in `_check`, read at every getconn.
    pool = getattr(connection, "pool", None)
    if pool is not None and getattr(pool, "_check", None) is ConnectionPool.check_connection:
        pool._check = check_pooled_connection


def install() -> None:
    connection_created.connect(_use_our_check, dispatch_uid="acp.dbpool")
