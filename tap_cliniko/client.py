"""ClinikoStream: the SDK stream over a Cliniko list (windows, bookmarks, records, progress)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk.helpers._util import utc_now
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.schema.source import SchemaDirectory, StreamSchema
from singer_sdk.singerlib.encoding.simple import RecordMessage
from singer_sdk.streams.rest import RESTStream
from typing_extensions import override

from tap_cliniko import cliniko, paging
from tap_cliniko.api import ClinikoAPI, NotSearchable
from tap_cliniko.cliniko import ClinikoError
from tap_cliniko.concurrency import WRITER, Rows
from tap_cliniko.paging import Page, Params
from tap_cliniko.records import (
    UNKNOWN,
    UNKNOWN_PROPERTY,
    Projection,
    UnknownFields,
    date_fields,
    needs_redaction,
    normalize_patient,
    redact_patient,
    row_id,
)

if TYPE_CHECKING:
    from singer_sdk.helpers.types import Context, Record

LOGGER = logging.getLogger("tap-cliniko")

_PACKAGE = Path(__file__).resolve().parent
# An installed wheel carries the schemas inside the package; a source checkout keeps them on top.
SCHEMAS = _PACKAGE / "schemas" if (_PACKAGE / "schemas").is_dir() else _PACKAGE.parent / "schemas"


# Keys of a stream's state beyond the SDK's: what this account was found to need.
LEARNED_FALLBACKS = "unsearchable_filters"
PAGING_MODE = "paging_mode"
ROUTE = "route"
LAST_FULL_READ = "last_full_read"
#: Held while a page reader changes its stream's state and while STATE is written: a
#: stream read ahead learns about the account while the writer copies the whole state.
STATE_LOCK = threading.RLock()


class ClinikoSchema(StreamSchema):  # type: ignore[type-arg]
    """A schema file; with unknown_fields 'keep', one more property for what the file lacks."""

    @override
    def get_stream_schema(self, stream: Any, stream_class: Any) -> dict[str, Any]:
        schema: dict[str, Any] = super().get_stream_schema(stream, stream_class)
        if stream is None or stream.config.get("unknown_fields") != "keep":
            return schema
        return {**schema, "properties": {**schema["properties"], UNKNOWN: UNKNOWN_PROPERTY}}


class ClinikoStream(RESTStream[Any]):
    """A Cliniko patient list: incremental on updated_at, read in id order by keyset."""

    schema = ClinikoSchema(SchemaDirectory(SCHEMAS), key="patient")
    primary_keys: ClassVar[Sequence[str]] = ("id",)
    replication_key = "updated_at"
    is_sorted = False
    # Records are normalized to the schema here, so the SDK's per-field conformance is skipped.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    #: Columns whose `>= bookmark` filter each selects changed rows; one pass per column.
    since_fields: ClassVar[tuple[str, ...]] = ("updated_at",)
    #: What to filter on instead when Cliniko answers that a column is not searchable
    #: (None: read the whole route, which costs requests but loses nothing).
    fallbacks: ClassVar[dict[str, str | None]] = {}
    #: When the route answers 404: the list and filter holding the same rows, or None to
    #: skip the stream with a warning.
    route_fallback: ClassVar[tuple[str, str] | None] = None
    #: Rows never leave this list, so links.next as given is safe when sort=id is not.
    append_only: ClassVar[bool] = False
    #: Key of the records list in a page of this stream's route.
    records_key: ClassVar[str] = "patients"
    #: When this run's whole read completed (None: not a whole read, or not complete).
    _whole_read_at: datetime | None = None
    #: The earliest of Cliniko's clock at the answers the stream used: the bookmark's cap.
    _server_start: datetime | None = None
    #: Whether this run reads the stream's lists whole (a first sync, a periodic whole read).
    reading_whole = False
    #: Where this run reads from, when worked out before the stream's turn (read ahead).
    planned_start: tuple[datetime | None] | None = None
    #: Whether Cliniko answered a request for this stream's rows in this run (a 403 after
    #: that is a permission lost mid-sync, not one the user never had).
    answered = False
    #: Whether this run skipped the stream (a 403 on its first request).
    skipped = False
    #: Whether this run's read left rows out on purpose (a parent's route gone): then no
    #: ACTIVATE_VERSION, so the target keeps the rows it has of them.
    incomplete = False
    #: This run's full-table version, sent as ACTIVATE_VERSION once the read is complete.
    _pending_version: int | None = None

    @property
    def api(self) -> ClinikoAPI:
        """The tap's shared Cliniko session."""
        return self._tap.api  # type: ignore[attr-defined,no-any-return]

    @property
    @override
    def url_base(self) -> str:
        return self.api.base_url

    @override
    def get_replication_key_signpost(self, context: Context | None = None) -> None:
        # The cap on the bookmark is the server's clock at the earliest answer less the
        # lookback, written by request_records: the local clock may run ahead of Cliniko's.
        return None

    def window_start(self, context: Context | None) -> tuple[datetime | None, bool]:
        """Where this run reads from, and whether it is the periodic whole read.

        A whole read (none yet, or the last older than full_reread_days) starts at
        start_date and forgets what was learned about the account, to check it again.
        """
        state = self.get_context_state(context)
        with STATE_LOCK:
            if LAST_FULL_READ not in state and state.get("replication_key_value"):
                # State from before periodic full reads: its clock starts at the bookmark.
                state[LAST_FULL_READ] = state["replication_key_value"]
            if not _full_read_due(state, self.config.get("full_reread_days", 7)):
                planned, self.planned_start = self.planned_start, None
                return (planned[0] if planned else self.get_starting_timestamp(context)), False
            for key in (LEARNED_FALLBACKS, PAGING_MODE, ROUTE):
                state.pop(key, None)
        return cliniko.parse_time(self.config.get("start_date")), True

    def whole_read_done(self, context: Context | None) -> None:
        """Note that a whole read completed (on Cliniko's clock when known).

        Written to state by request_records once the stream's rows are all written: a page
        reader running ahead must not mark a whole read done that the output has not got.
        """
        self._whole_read_at = self._server_start or datetime.now(UTC)

    @override
    def request_records(self, context: Context | None) -> Iterator[dict[str, Any]]:
        feed = self._tap.feed_of(self) if context is None else None  # type: ignore[attr-defined]
        try:
            for rows in feed if feed is not None else self.pages(context):
                yield from rows
        except ClinikoError as exc:
            raise self._named(exc) from None
        # Here the last record is written: the read is complete, unless it was skipped.
        if not self.get_batch_config(self.config):
            self._activate_version()
        if self._server_start is not None:
            lookback = timedelta(seconds=self.config.get("lookback_seconds", 300))
            signpost = cliniko.format_time(self._server_start - lookback)
            self.state_manager.write_replication_key_signpost(signpost, context=context)
        if self._whole_read_at is not None:
            moment = cliniko.format_time(self._whole_read_at)
            self.get_context_state(context)[LAST_FULL_READ] = moment

    def _named(self, exc: ClinikoError) -> ClinikoError:
        """The error with this stream's name in front: many streams are read side by side.

        Not before Cliniko's first answer: a wrong key or host is the account's, not a stream's.
        """
        if not self.api.connected or str(exc).startswith(f"{self.name}:"):
            return exc
        # The same kind with the same attributes, whatever else its constructor takes.
        named = type(exc).__new__(type(exc))
        named.__dict__.update(exc.__dict__)
        named.args = (f"{self.name}: {exc}",)
        return named

    def pages(self, context: Context | None, priority: int = WRITER) -> Iterator[Rows]:
        """The stream's raw rows, a page at a time (what request_records writes)."""
        self._priority = priority
        self._whole_read_at = self._server_start = None
        self.answered = self.skipped = self.incomplete = False
        return self.rows(context)

    @override
    def _write_activate_version_message(self, full_table_version: int) -> None:
        # The SDK sends it before the first record, and an SQL target then marks every row
        # of older versions deleted: a stream skipped or failing half-way would leave the
        # rows Cliniko still has marked gone. It goes out after a complete read instead.
        # The SDK's version is the run's start in whole seconds, and a target retires only
        # rows of a version below it: a run starting in the second of the one before (a
        # retry) would never retire a row that run wrote and Cliniko deleted since. The
        # start in milliseconds, as Singer taps commonly version, is always later; the
        # records, written after this, carry it too.
        del full_table_version
        self._stream_version = self._initialized_at
        self._pending_version = self._stream_version

    def _activate_version(self) -> None:
        """Send this run's ACTIVATE_VERSION, if it is a full-table run with versions on that
        read every row: not for a stream skipped, nor one whose read left some rows out."""
        version, self._pending_version = self._pending_version, None
        if version is not None and not self.skipped and not self.incomplete:
            super()._write_activate_version_message(version)

    @override
    def _sync_batches(self, batch_config: Any, context: Context | None = None) -> None:
        super()._sync_batches(batch_config, context)
        self._activate_version()  # after the last BATCH message (a failed read raised above)

    def rows(self, context: Context | None) -> Iterator[Rows]:
        """The patient routes' rows: one pass per column of since_fields."""
        start, full_read = self.window_start(context)
        passes = [self._since(f, start, context) for f in self.since_fields] if start else [[]]
        seen: dict[str, tuple[Any, ...]] = {}
        self._route_missing = False
        self.reading_whole = start is None
        for filters in passes:
            pages = self._scan(filters, context)
            yield from sent_once(pages, ("updated_at", "archived_at"), seen, len(passes) > 1)
            if self._route_missing:
                break
        if full_read:
            self.whole_read_done(context)

    def _since(self, column: str, start: datetime, context: Context | None) -> list[str]:
        """The filter selecting rows changed since start, as far as this account allows."""
        learned = self.get_context_state(context).get(LEARNED_FALLBACKS, {})
        instead: str | None = column
        for _ in range(len(learned)):  # a fallback may itself have been refused or ignored
            if instead not in learned:
                break
            instead = learned[instead]
        return [cliniko.since_filter(instead, start)] if instead else []

    def _scan(
        self,
        filters: list[str],
        context: Context | None,
        path: str | None = None,
        records_key: str | None = None,
    ) -> Iterator[Rows]:
        """The rows of a list matching filters, a page at a time, by the best mode that works.

        path: another route of this stream (its own path by default). Only the stream's own
        path has a learned fallback route; a 404 on another is the caller's to handle.
        """
        state = self.get_context_state(context)
        route, extra = path or self.path, []
        if path is None and state.get(ROUTE) == "fallback" and self.route_fallback:
            route, hidden = self.route_fallback
            extra = [hidden]
        elif path is None and state.get(ROUTE) == "missing":
            self._say_route_missing()
            return
        url = f"{self.url_base}{route}"
        params: Params = [("q[]", f) for f in [*extra, *filters]]
        params += [("sort", "id"), ("per_page", str(self.config.get("per_page", 100)))]
        mode = state.get(PAGING_MODE, paging.ID_MODE)
        if mode == paging.CREATED_MODE and (route.endswith("/deleted") or self.append_only):
            mode = paging.LINKS_MODE  # deleted rows: the list only grows, and may lack created_at
        progress = _Progress(self.name)
        fetch = partial(
            self._fetch,
            records_key=records_key or self.records_key,
            priority=getattr(self, "_priority", WRITER),
        )
        if mode == paging.ID_MODE:
            # A whole list is likely long: its top page is asked for with its first.
            whole = self.reading_whole and not any(":>=" in f for f in filters)
            slots = self.api.scheduler.slots
            pages = paging.scan(fetch, url, params, concurrency=slots, whole=whole)
        else:
            pages = paging.SCANS[mode](fetch, url, params)
        try:
            for page in pages:
                self._note_answer(page)
                yield self._keep(page.rows, extra)
                progress.page(len(page.rows), page.total_entries)
        except NotSearchable:
            instead = self._learn_filter(filters, context)
            yield from self._scan(instead, context, path, records_key)
        except paging.FilterIgnored as exc:
            # Rows before a bookmark's filter: that filter selects nothing here. Ids and
            # created_at are the pagers' own filters, for which no other way is left.
            if not filters or not filters[0].startswith(f"{exc.column}:"):
                raise
            instead = self._learn_filter(filters, context, ignored=True)
            yield from self._scan(instead, context, path, records_key)
        except (paging.OutOfOrder, cliniko.SortRefused) as exc:
            if mode != paging.ID_MODE:
                raise
            # The stream's mode; its deleted route (if any) follows links instead, as above.
            with STATE_LOCK:
                state[PAGING_MODE] = paging.CREATED_MODE
            LOGGER.warning(
                "%s: Cliniko %s here; paging by %s instead (nothing is skipped;"
                " rows already sent may come again)",
                self.name,
                "refused sort=id"
                if isinstance(exc, cliniko.SortRefused)
                else "ignored the id filter (id:>)"
                if isinstance(exc, paging.CursorIgnored)
                else "ignored sort=id",
                paging.LINKS_MODE if self.append_only else paging.CREATED_MODE,
            )
            yield from self._scan(filters, context, path, records_key)
        except cliniko.RouteNotFound:
            if path is not None or ROUTE in state:
                raise
            with STATE_LOCK:
                state[ROUTE] = "fallback" if self.route_fallback else "missing"
            if self.route_fallback:
                LOGGER.warning(
                    "%s: Cliniko has no %s on this account; reading %s with %s instead",
                    self.name,
                    self.path,
                    *self.route_fallback,
                )
            yield from self._scan(filters, context)

    def _fetch(self, url: str, params: Params, records_key: str, priority: int) -> Page:
        """One page of this stream's lists, noting that Cliniko answered it."""
        page = self.api.get_page(url, params, records_key=records_key, priority=priority)
        self.answered = True
        return page

    def _keep(self, rows: list[dict[str, Any]], extra: list[str]) -> list[dict[str, Any]]:
        """Rows of this stream: all of them, unless a fallback route also holds others."""
        if not extra:
            return rows
        column = extra[0].split(":", 1)[0]
        return [row for row in rows if row.get(column) and not row.get("deleted_at")]

    def _say_route_missing(self) -> None:
        self._route_missing = True
        LOGGER.warning(
            "%s: Cliniko has no %s on this account, so %s cannot be read; the other streams go on",
            self.name,
            self.path,
            self.name.replace("_", " "),
        )

    def _learn_filter(
        self, filters: list[str], context: Context | None, ignored: bool = False
    ) -> list[str]:
        """Remember in state what to filter on instead of a column Cliniko cannot search.

        ignored: Cliniko took the filter and ignored it. Without a fallback the list is then
        read without it, which sends more rows, never fewer.
        """
        column = filters[0].split(":", 1)[0] if filters else ""
        if column not in self.fallbacks and not ignored:
            raise ClinikoError(
                f"{self.name}: Cliniko cannot filter on {column or 'this list'} here and the"
                " tap knows no other way: please report this with the tap's version"
            )
        instead = self.fallbacks.get(column)
        # Kept in the stream's state, so later runs do not ask for the refused filter again.
        state = self.get_context_state(context)
        with STATE_LOCK:
            state.setdefault(LEARNED_FALLBACKS, {})[column] = instead
        (LOGGER.warning if ignored else LOGGER.info)(
            "%s: Cliniko %s %s here; using %s instead",
            self.name,
            "ignores the filter on" if ignored else "cannot filter on",
            column,
            instead or "no filter",
        )
        replaced = [f"{instead}:{filters[0].split(':', 1)[1]}"] if instead else []
        # An ignored filter's neighbours (the hidden rows' filters) still hold.
        return [*replaced, *filters[1:]] if ignored else replaced

    def _note_answer(self, page: Page) -> None:
        """Keep the earliest moment Cliniko answered this stream with a page it used.

        The bookmark's cap is that moment less the lookback: an edit landing after a page
        read its row must be >= the next run's filter, and pages asked side by side or
        retried answer in any order. The moment is the Date Cliniko's web server stamped
        after it read the rows; updated_at comes from whichever machine saved a row, so an
        edit stamped a little earlier must still be at or above the cap (the lookback).
        """
        moment = page.server_time
        with STATE_LOCK:  # a child stream's routes answer in threads side by side
            if moment is None:
                if self._server_start is None:
                    LOGGER.warning(
                        "%s: no Date header from Cliniko; capping the bookmark by the local clock",
                        self.name,
                    )
                moment = datetime.now(UTC)
            if self._server_start is None or moment < self._server_start:
                self._server_start = moment

    @override
    def post_process(self, row: Record, context: Context | None = None) -> Record | None:
        record = normalize_patient(row, self._projection)
        if record is None:
            return None
        if self._keep_unknown:
            record[UNKNOWN] = self.unknown_fields.kept(row)
        if needs_redaction(record, self.config.get("privacy_redaction", "off")):
            return redact_patient(record)
        return record

    @override
    def _generate_record_messages(self, record: Record) -> Generator[RecordMessage, None, None]:
        # The SDK walks every nested property of every record to drop deselected ones: half
        # of the record path's CPU. When the catalog selects everything there is nothing to
        # drop, so only then the walk is skipped (singer-sdk is pinned; the other path is
        # tests/test_streams.py::test_deselected_properties_are_left_out_and_the_rest_kept).
        if not self._everything_selected:
            yield from super()._generate_record_messages(record)
            return
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                yield RecordMessage(
                    stream=stream_map.stream_alias,
                    record=mapped,
                    version=self._stream_version,
                    time_extracted=utc_now(),
                )

    @cached_property
    def _everything_selected(self) -> bool:
        return all(self.mask.values())

    @cached_property
    def unknown_fields(self) -> UnknownFields:
        """Fields Cliniko sent in this run that the schema lacks (the tap warns at the end)."""
        return UnknownFields(self._properties)

    @cached_property
    def _projection(self) -> Projection:
        """The schema's fields of each row; each new shape of keys names its unknown fields."""
        return Projection(self._properties, self._date_fields, self.unknown_fields.note_shape)

    @cached_property
    def _keep_unknown(self) -> bool:
        return UNKNOWN in self.schema["properties"]  # unknown_fields 'keep' (ClinikoSchema)

    @cached_property
    def _properties(self) -> tuple[str, ...]:
        return tuple(self.schema["properties"])

    @cached_property
    def _date_fields(self) -> frozenset[str]:
        return date_fields(self.schema)


class _Progress:
    """Logs records so far against total_entries and an estimate of the time left."""

    def __init__(self, stream: str, every: float = 15.0) -> None:
        self.stream = stream
        self.every = every
        self.started = time.monotonic()
        self.last_log = self.started
        self.count = 0
        self.total: int | None = None

    def page(self, rows: int, total: int | None) -> None:
        if self.total is None:
            self.total = total
        self.count += rows
        now = time.monotonic()
        if now - self.last_log < self.every or not self.total:
            return
        self.last_log = now
        rate = self.count / max(now - self.started, 1e-6)
        left = max(self.total - self.count, 0) / rate if rate else 0.0
        LOGGER.info(
            "%s: %d of %d records (%.0f%%), about %s left",
            self.stream,
            self.count,
            self.total,
            100 * self.count / self.total,
            _duration(left),
        )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def sent_once(
    pages: Iterator[Rows], columns: tuple[str, ...], seen: dict[str, tuple[Any, ...]], check: bool
) -> Iterator[Rows]:
    """Pages without the rows another pass already sent as they are (same id and columns).

    check False: a single pass, nothing to compare (and nothing remembered).
    """
    if not check:
        yield from pages
        return
    for page in pages:
        fresh = []
        for raw in page:
            key, version = row_id(raw) or "", tuple(raw.get(c) for c in columns)
            if seen.get(key) != version:
                seen[key] = version
                fresh.append(raw)
        yield fresh


def _full_read_due(state: dict[str, Any], every_days: float) -> bool:
    """Tell whether a stream's last whole read is older than every_days (or never happened)."""
    last = cliniko.parse_time(state.get(LAST_FULL_READ))
    if last is None or every_days <= 0:
        return True
    # last is on Cliniko's clock, now on ours: an hour apart matters little against days.
    return datetime.now(UTC) - last >= timedelta(days=every_days)
