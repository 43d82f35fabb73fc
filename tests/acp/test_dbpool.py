"""The pool's check on lending a connection (acp/dbpool.py), on a real pool of real connections."""

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from acp import dbpool
from acp.dbpool import check_pooled_connection, note_given_back
from acp.realtime import _listener_conninfo
from tests.sessions.live import wait_until

pytestmark = pytest.mark.django_db


def last_statement(admin, pid: int) -> str | None:
    row = admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    return None if row is None else row[0]


def one_connection_pool() -> tuple[ConnectionPool, dict]:
    """A pool of one connection checked and given back as the server's are (acp.dbpool.install)."""
    info = {**_listener_conninfo(), "application_name": "acp-pool-check"}
    pool = ConnectionPool(
        kwargs=info, min_size=1, max_size=1, check=check_pooled_connection, reset=note_given_back, open=True
    )
    return pool, info


def test_a_quiet_connection_is_lent_without_a_round_trip_and_a_terminated_one_is_not_lent():
    pool, info = one_connection_pool()
    try:
        with psycopg.connect(**info, autocommit=True) as admin:
            with pool.connection() as conn:
                pid = conn.info.backend_pid
                conn.execute("SELECT 1")
            returned = last_statement(admin, pid)  # what giving it back sent (its COMMIT)
            with pool.connection() as conn:  # quiet: lent as it is, no check statement sent meanwhile
                assert conn.info.backend_pid == pid
                assert last_statement(admin, pid) == returned

            admin.execute("SELECT pg_terminate_backend(%s)", [pid])  # while it waits in the pool
            # the backend said FATAL and is gone
            wait_until(lambda: last_statement(admin, pid) is None, 10, 0.02, "the terminated backend to exit")
            with pool.connection() as conn:  # not lent: replaced by a new one
                assert conn.info.backend_pid != pid
                assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


def test_a_connection_idle_longer_than_the_window_gets_its_round_trip(monkeypatch):
    """A NAT, a load balancer or a rebooted host that dropped a connection answers only when spoken to."""
    monkeypatch.setattr(dbpool, "RECENTLY_GIVEN_BACK", 0.0)
    pool, info = one_connection_pool()
    try:
        with psycopg.connect(**info, autocommit=True) as admin:
            with pool.connection() as conn:
                pid = conn.info.backend_pid
            with pool.connection() as conn:
                assert conn.info.backend_pid == pid
                assert last_statement(admin, pid) == ""  # the pool's check: an empty statement
    finally:
        pool.close()
