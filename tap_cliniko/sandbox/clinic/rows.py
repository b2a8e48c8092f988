"""The synthetic clinic's rows as they are made: ids in creation order, Cliniko's time format."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

Record = dict[str, Any]
NewId = Callable[[str, int], int]


class Clinic:
    """Collects the rows of every collection, giving each its id in creation order."""

    def __init__(self, seed: int, now: datetime, new_id: NewId) -> None:
        self.rng = random.Random(f"clinic:{seed}")
        self.now = now
        self.new_id = new_id
        self.rows: dict[str, list[Record]] = {}

    def add(self, collection: str, created: datetime, /, **fields: Any) -> Record:
        """One row, created at `created`, updated some time after (never after now)."""
        rows = self.rows.setdefault(collection, [])
        created = min(created, self.now)
        updated = fields.pop("updated", None) or self.later(created)
        record: Record = {
            "id": self.new_id(collection, len(rows) + 1),
            "created_at": iso(created),
            "updated_at": iso(updated),
            "archived_at": None,
            "cancelled_at": None,
            "deleted_at": None,
        }
        record.update(fields)
        rows.append(record)
        return record

    def later(self, moment: datetime, within_days: float = 400) -> datetime:
        """A moment after `moment`, at most within_days later and never after now."""
        span = min((self.now - moment).total_seconds(), within_days * 86400)
        return moment + timedelta(seconds=int(self.rng.random() * max(span, 0)))

    def fate(self, record: Record, marker: str) -> None:
        """Archive, cancel or delete a row at its last update."""
        record[marker] = record["updated_at"]

    def sorted_add(
        self, name: str, items: Iterable[tuple[datetime, dict[str, Any]]]
    ) -> list[Record]:
        """Add rows in creation order."""
        return [
            self.add(name, created, **fields) for created, fields in sorted(items, key=first_of)
        ]


def first_of(item: tuple[Any, ...]) -> Any:
    return item[0]


def iso(moment: datetime) -> str:
    """A UTC moment as Cliniko writes it (synth.iso's result, several times faster)."""
    return moment.isoformat(timespec="seconds")[:19] + "Z"


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment[:19]).replace(tzinfo=UTC)


def money(amount: float) -> str:
    return f"{amount:.2f}"
