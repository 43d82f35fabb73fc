"""Run a piece of synchronous database work from an async waiter without keeping its connection."""

from collections.abc import Callable
from typing import TypeVar

from django.db import connection

T = TypeVar("T")


def run_released(function: Callable[[], T]) -> T:
    """Run `function`, then close its thread's database connection (unless a transaction is open), so that a
    waiter that only checks now and then holds no connection between its checks."""
    try:
        return function()
    finally:
        if not connection.in_atomic_block:
            connection.close()
