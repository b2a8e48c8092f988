"""The list query language: `q[]` filters, `sort` and which rows a route holds, as SQL.

Generic over every collection: resources.py says what each one can filter and sort by; the
store runs the SQL over tables of one layout (the columns below, and the rest as JSON).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tap_cliniko.sandbox.resources import VARIANT_MEMBERS, Resource

TIME_COLUMNS = ("created_at", "updated_at", "archived_at", "cancelled_at", "deleted_at")
COLUMNS = ("id", *TIME_COLUMNS)
SORT_MODES = ("honoured", "ignored", "refused")  # what the server does with a sort on id
BAD_SORT = "Sort parameter must be a valid column name"
NOT_SEARCHABLE = "This column is not searchable."


class QueryError(ValueError):
    """A list request the API refuses with 400; the message is the API's."""


@dataclass(frozen=True)
class Condition:
    """One parsed `q[]` filter: column, operator, value."""

    column: str
    operator: str
    value: str
    kind: str = "string"


DATETIME_OPS = (">=", "<=", "!?", ">", "<", "?", "*")
VALUE_OPS = ("!=", ">=", "<=", ">", "<", "=", "~")
TIME_VALUE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]00:?00)$")
DATE_VALUE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
NUMBER_VALUE = re.compile(r"^-?\d+$")


def parse_condition(text: str, searchable: dict[str, str]) -> Condition:
    """Parse `field:OPvalue` against searchable (column -> format), refusing other columns."""
    column, _, rest = text.partition(":")
    kind = searchable.get(column)
    if kind is None:
        raise QueryError(NOT_SEARCHABLE)
    if kind == "date-time":
        operator = next((op for op in DATETIME_OPS if rest.startswith(op)), None)
        value = rest[len(operator) :] if operator else ""
        if operator is None or (operator in (">=", "<=", ">", "<") and not TIME_VALUE.match(value)):
            raise QueryError(f"Invalid filter value for {column}.")
        return Condition(column, operator, value[:19] + "Z" if value else "", kind)
    if rest in ("?", "!?"):
        return Condition(column, rest, "", kind)
    operator = next((op for op in VALUE_OPS if rest.startswith(op)), None)
    if operator is None:
        raise QueryError(f"Invalid filter for {column}.")
    value = rest[len(operator) :]
    numeric = kind in ("int64", "integer") or (kind == "array" and column.endswith("_ids"))
    if numeric and not all(NUMBER_VALUE.match(v) for v in value.split(",")):
        raise QueryError(f"Invalid filter value for {column}.")
    if kind == "date" and operator != "~" and not DATE_VALUE.match(value):
        raise QueryError(f"Invalid filter value for {column}.")
    if kind == "boolean" and value.lower() not in ("true", "false"):
        raise QueryError(f"Invalid filter value for {column}.")
    return Condition(column, operator, value, kind)


def column_sql(column: str) -> str:
    """A column of the table, or a field of the record's JSON."""
    return column if column in COLUMNS else f"json_extract(data, '$.{column}')"


def condition_sql(condition: Condition) -> tuple[str, list[Any]]:
    """SQL for one condition."""
    column, operator, value = column_sql(condition.column), condition.operator, condition.value
    if operator == "*":
        return "1=1", []
    if operator == "?":
        return f"{column} IS NOT NULL", []
    if operator == "!?":
        return f"{column} IS NULL", []
    if condition.kind == "boolean":
        flag = int(value.lower() == "true")
        return (f"{column} = ?" if operator == "=" else f"{column} IS NOT ?"), [flag]
    if condition.kind == "array":  # the record's list holds the value
        member = f"EXISTS (SELECT 1 FROM json_each(data, '$.{condition.column}') WHERE value = ?)"
        argument: Any = int(value) if value.isdigit() else value
        return (member if operator != "!=" else f"NOT {member}"), [argument]
    if operator == "~":
        return f"lower({column}) LIKE ?", [f"%{value.lower()}%"]
    sql_operator = "<>" if operator == "!=" else operator
    if condition.kind in ("int64", "integer"):
        numbers = [int(v) for v in value.split(",")]
        if operator == "=" and len(numbers) > 1:  # `id:=1,2,3`: any of them
            return f"{column} IN ({','.join('?' * len(numbers))})", list(numbers)
        return f"{column} {sql_operator} ?", [numbers[0]]
    return f"{column} {sql_operator} ?", [value]


def route_members(resource: Resource, variant: str, filters: Sequence[str]) -> str:
    """Which rows a list route holds before its q[] filters.

    A plain list hides deleted rows, and rows carrying a hidden marker unless a filter names it
    (`archived_at:*` brings archived rows back, `archived_at:?` selects only them).
    """
    if variant:
        return VARIANT_MEMBERS[variant]
    members = ["deleted_at IS NULL"]
    named = {text.partition(":")[0] for text in filters}
    members += [f"{marker} IS NULL" for marker in resource.hidden if marker not in named]
    if resource.plain:
        members.append(resource.plain)
    return " AND ".join(members)


def searchable_fields(resource: Resource, variant: str, behaviour: str) -> dict[str, str]:
    """What a list route can filter by (column -> format): a current deleted list, little."""
    if variant == "deleted":
        if behaviour == "current":
            return {"deleted_at": "date-time", "id": "int64"}
        return {**resource.filters, "deleted_at": "date-time"}
    return resource.filters


def order_sql(resource: Resource, sort: str | None, sort_mode: str) -> str:
    """ORDER BY for a `sort` parameter, refusing what the route cannot sort by.

    sort_mode is what the server does with a sort on id (one of SORT_MODES).
    """
    terms = []
    parts = [part.strip().partition(":") for part in (sort or "created_at").split(",")]
    if any(column == "id" for column, _, _ in parts) and sort_mode != "honoured":
        if sort_mode == "refused":
            raise QueryError(BAD_SORT)
        parts = [("created_at", "", "")]  # "ignored": the default order, silently
    sortable = resource.sortable | ({"deleted_at"} & resource.markers)
    for column, _, direction in parts:
        if column not in sortable or direction not in ("", "asc", "desc"):
            raise QueryError(BAD_SORT)
        terms.append(f"{column_sql(column)} {'DESC' if direction == 'desc' else 'ASC'}")
    if not any(t.startswith("id ") for t in terms):
        terms.append("id ASC")  # a stable order, so that page numbers mean something
    return ", ".join(terms)
