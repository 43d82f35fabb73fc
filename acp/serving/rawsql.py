"""Hand-written SQL for the few statements on every request's path, read and written through the models' fields.

Django's compiler costs a few hundred microseconds per query to build SQL that never changes (py-spy under
bench/run.py: the token lookup alone was 16 % of a prepare). These helpers let a hot path write its SQL once and
still go through the models: the column lists come from `_meta`, values are read with the ORM's own converters
and written as the fields prepare them, so a model change is picked up and SQLite keeps working. Their callers
(acp/selectors.py, bindings/services.py, commands/services.py) use the ORM instead with ACP_SERVING=stock.
"""

from __future__ import annotations

import functools

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model
from django.db.models.sql import Query


def database():
    """The current thread's connection itself: each use of `django.db.connection` costs a proxy lookup."""
    return connections[DEFAULT_DB_ALIAS]


def quote(name: str) -> str:
    return database().ops.quote_name(name)


@functools.cache
def fields(model: type[Model]) -> tuple:
    return tuple(model._meta.concrete_fields)


def column(model: type[Model], field_name: str) -> str:
    return quote(model._meta.get_field(field_name).column)


def db_value(db, model: type[Model], field_name: str, value):
    """`value` as a query parameter for the column of `model.field_name` (a UUID is text on SQLite)."""
    return model._meta.get_field(field_name).get_db_prep_value(value, db)


def db_values(db, model: type[Model], criteria: dict[str, object]) -> list:
    """`criteria`'s values (field name → value) as the query parameters of `where(model, tuple(criteria))`."""
    return [db_value(db, model, name, value) for name, value in criteria.items()]


def columns(model: type[Model], alias: str = "") -> str:
    """Every column of `model`, in `fields(model)` order, to select into `instances`."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{quote(field.column)}" for field in fields(model))


def instances(db, models: tuple[type[Model], ...], row) -> list[Model | None]:
    """One instance per model from a row of their `columns` side by side; None where a model's key is NULL."""
    values = _converted(db, models, row)
    result, start = [], 0
    for model in models:
        own = values[start : start + len(fields(model))]
        start += len(own)
        key = own[fields(model).index(model._meta.pk)]
        result.append(None if key is None else model.from_db(db.alias, _attnames(model), own))
    return result


def fetch_one(db, models: tuple[type[Model], ...], sql: str, params: list) -> list[Model | None] | None:
    """Run `sql` (selecting the `columns` of `models` side by side) and read its first row as `instances`.

    None when there is no row.
    """
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else instances(db, models, row)


def equal_to_one_of(count: int) -> str:
    """The comparison with `count` parameters: `= %s` for one (the statement a single value has always had), else an
    `IN` list."""
    return "= %s" if count == 1 else f"IN ({', '.join(['%s'] * count)})"


def fetch_all(db, models: tuple[type[Model], ...], sql: str, params: list) -> list[list[Model | None]]:
    """Run `sql` (selecting the `columns` of `models` side by side) and read every row as `instances`."""
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [instances(db, models, row) for row in rows]


def locked(model: type[Model], criteria: dict[str, object]) -> Model | None:
    """The row of `model` whose fields equal `criteria` (field name → value), locked until the transaction ends
    (FOR NO KEY UPDATE, where the database has it), or None."""
    db = database()
    params = db_values(db, model, criteria)
    found = fetch_one(db, (model,), _locked_sql(model, tuple(criteria), db.vendor), params)
    return found[0] if found else None


def exists(model: type[Model], criteria: dict[str, object]) -> bool:
    """Whether a row of `model` has fields equal to `criteria` (field name → value)."""
    db = database()
    params = db_values(db, model, criteria)
    with db.cursor() as cursor:
        cursor.execute(_exists_sql(model, tuple(criteria), db.vendor), params)
        return cursor.fetchone() is not None


@functools.cache
def _exists_sql(model: type[Model], criteria: tuple[str, ...], vendor: str) -> str:
    return f"SELECT 1 FROM {quote(model._meta.db_table)} WHERE {where(model, criteria)} LIMIT 1"


def lock_clause() -> str:
    return " FOR NO KEY UPDATE" if database().features.has_select_for_no_key_update else ""


def locked_in_key_order(model: type[Model], condition: str) -> tuple[str, str]:
    """PostgreSQL: what a statement that updates several rows of `model` joins so that it locks them in primary-key
    order first: the `FROM` item (a subquery locking the rows meeting `condition`, FOR NO KEY UPDATE, in key order,
    as `locked`) and the condition joining it to the table. Any two such statements then lock shared rows in the
    same order and cannot deadlock; left to itself, an UPDATE locks its rows in whatever order its plan meets them."""
    table, key = quote(model._meta.db_table), column(model, model._meta.pk.name)
    locked = f"(SELECT {key} AS pk FROM {table} WHERE {condition} ORDER BY {key} FOR NO KEY UPDATE) AS locked"
    return locked, f"{table}.{key} = locked.pk"


def where(model: type[Model], criteria: tuple[str, ...]) -> str:
    """`criteria`'s fields each equal to a parameter, in order."""
    return " AND ".join(f"{column(model, name)} = %s" for name in criteria)


@functools.cache
def _locked_sql(model: type[Model], criteria: tuple[str, ...], vendor: str) -> str:
    return f"SELECT {columns(model)} FROM {quote(model._meta.db_table)} WHERE {where(model, criteria)}{lock_clause()}"


def insert(instance: Model) -> None:
    """INSERT `instance` with every value as `save()` would write it (defaults, auto_now), without the compiler.

    For models whose primary key is set in Python (UUIDs); no signals are sent.
    """
    db = database()
    model = type(instance)
    with db.cursor() as cursor:
        cursor.execute(_insert_sql(model, db.vendor), saved_values(db, instance))
    instance._state.adding = False
    instance._state.db = db.alias


def saved_values(db, instance: Model) -> list:
    """`instance`'s values in `fields` order, as `save()` would write them for an INSERT (defaults, auto_now)."""
    return [field.get_db_prep_save(field.pre_save(instance, True), db) for field in fields(type(instance))]


def update(instance: Model, field_names: tuple[str, ...]) -> int:
    """UPDATE the row of `instance` with its values of `field_names` as `save(update_fields=…)` would write them
    (auto_now fields are not touched unless named); how many rows it changed. No signals are sent."""
    db = database()
    model = type(instance)
    changed = (model._meta.get_field(name) for name in field_names)
    values = [field.get_db_prep_save(getattr(instance, field.attname), db) for field in changed]
    values.append(model._meta.pk.get_db_prep_value(instance.pk, db))
    with db.cursor() as cursor:
        cursor.execute(_update_sql(model, field_names, db.vendor), values)
        return cursor.rowcount


@functools.cache
def _insert_sql(model: type[Model], vendor: str) -> str:
    placeholders = ", ".join(["%s"] * len(fields(model)))
    return f"INSERT INTO {quote(model._meta.db_table)} ({columns(model)}) VALUES ({placeholders})"


@functools.cache
def _update_sql(model: type[Model], field_names: tuple[str, ...], vendor: str) -> str:
    assignments = ", ".join(f"{column(model, name)} = %s" for name in field_names)
    return f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {quote(model._meta.pk.column)} = %s"


def _converted(db, models, row) -> list:
    """`row` as the ORM reads it: each column through its field's and the backend's converters."""
    values = list(row)
    for position, (converters, expression) in _converters(db, models).items():
        value = values[position]
        for converter in converters:
            value = converter(value, expression, db)
        values[position] = value
    return values


def _converters(db, models) -> dict:
    """The compiler's converters for `models`' columns, found once per connection object (a thread's): looking them
    up built a compiler and asked every field at each token lookup, i.e. every request."""
    found = db.__dict__.setdefault("_acp_rawsql_converters", {})
    if models not in found:
        compiler = db.ops.compiler("SQLCompiler")(Query(None), db, db.alias)
        found[models] = compiler.get_converters(_cols(models))
    return found[models]


@functools.cache
def _cols(models: tuple[type[Model], ...]) -> list:
    return [field.get_col(model._meta.db_table) for model in models for field in fields(model)]


@functools.cache
def _attnames(model: type[Model]) -> list[str]:
    return [field.attname for field in fields(model)]
