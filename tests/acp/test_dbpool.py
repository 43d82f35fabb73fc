"""The pool's check on lending a connection (acp/dbpool.py), on a real pool of real connections."""

import time

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from acp.dbpool import check_pooled_connection
from acp.realtime import _listener_conninfo

pytestmark = pytest.mark.django_db


def last_statement(admin, pid: int) -> str | None:
    row = admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    return None if row is None else row[0]


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.02)


def test_a_quiet_connection_is_lent_without_a_round_trip_and_a_terminated_one_is_not_lent():
    info = {**_listener_conninfo(), "application_name": "acp-pool-check"}
    pool = ConnectionPool(kwargs=info, min_size=1, max_size=1, check=check_pooled_connection, open=True)
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
            wait_for(lambda: last_statement(admin, pid) is None)  # the backend said FATAL and is gone
            with pool.connection() as conn:  # not lent: replaced by a new one
                assert conn.info.backend_pid != pid
                assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()
