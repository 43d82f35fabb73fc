"""Reads of the registry that sit on every request's path."""

from __future__ import annotations

import functools
from itertools import accumulate

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model
from django.db.models.sql import Query

from acp.models import ApiToken, Device, User

# The token, its user, its device (if it is a device token): the models of `token_by_hash`'s row, in order.
_TOKEN_ROW = ((ApiToken, "t"), (User, "u"), (Device, "d"))


def token_by_hash(key_hash: str) -> ApiToken | None:
    """The token with this hash, its user and device (or None) attached, in one query.

    Every request authenticates, and compiling this join cost Django ~0.75 ms of CPU per request (bench/run.py
    --profile: 16 % of a prepare). The SQL is built once from the models' fields, so it follows their changes, and
    the values go through the same converters as the ORM's.
    """
    db = connections[DEFAULT_DB_ALIAS]  # the thread's own connection: no proxy lookup per use
    with db.cursor() as cursor:
        cursor.execute(_token_sql(db.vendor), [key_hash])
        row = cursor.fetchone()
    if row is None:
        return None
    token, user, device = _instances(db, row)
    token.user = user
    token.device = device
    return token


@functools.cache
def _token_sql(vendor: str) -> str:
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    (token, t), (user, u), (device, d) = _TOKEN_ROW
    columns = ", ".join(f"{alias}.{quote(field.column)}" for model, alias in _TOKEN_ROW for field in _fields(model))

    def column(model, name):
        return quote(model._meta.get_field(name).column)

    return (
        f"SELECT {columns} FROM {quote(token._meta.db_table)} {t}"
        f" JOIN {quote(user._meta.db_table)} {u} ON {u}.{column(user, 'id')} = {t}.{column(token, 'user')}"
        f" LEFT JOIN {quote(device._meta.db_table)} {d} ON {d}.{column(device, 'id')} = {t}.{column(token, 'device')}"
        f" WHERE {t}.{column(token, 'key_hash')} = %s"
    )


def _instances(db, row) -> list[Model | None]:
    """One instance per model of `_TOKEN_ROW` from the joined row; None for a model whose primary key is NULL."""
    compiler = db.ops.compiler("SQLCompiler")(Query(None), db, db.alias)
    converters = compiler.get_converters(_token_columns())
    values = next(iter(compiler.apply_converters([row], converters))) if converters else list(row)
    ends = list(accumulate(len(_fields(model)) for model, _ in _TOKEN_ROW))
    instances = []
    for (model, _), start, end in zip(_TOKEN_ROW, [0, *ends[:-1]], ends, strict=True):
        own = values[start:end]
        primary_key = own[_fields(model).index(model._meta.pk)]
        instances.append(None if primary_key is None else _from_row(db, model, own))
    return instances


def _from_row(db, model: type[Model], values: list) -> Model:
    return model.from_db(db.alias, [field.attname for field in _fields(model)], values)


@functools.cache
def _token_columns() -> list:
    return [field.get_col(alias) for model, alias in _TOKEN_ROW for field in _fields(model)]


@functools.cache
def _fields(model: type[Model]) -> list:
    return list(model._meta.concrete_fields)
