"""The streams: three for patients, and one generic stream per collection of resources.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk.schema.source import SchemaDirectory
from typing_extensions import override

from tap_cliniko import paging
from tap_cliniko.api import ClinikoAPI
from tap_cliniko.client import SCHEMAS, ClinikoSchema, ClinikoStream, sent_once
from tap_cliniko.cliniko import ClinikoError, Forbidden, RouteNotFound
from tap_cliniko.concurrency import WRITER, Rows, side_by_side
from tap_cliniko.records import (
    UNKNOWN,
    link_id_fields,
    normalize_record,
    patients_named,
    personal_fields,
    redact_fields,
    row_id,
)
from tap_cliniko.resources import BY_NAME, COLLECTIONS, Collection

if TYPE_CHECKING:
    from singer_sdk.helpers.types import Context, Record

LOGGER = logging.getLogger("tap-cliniko")


class SkipsForbidden(ClinikoStream):
    """A stream the key's user may not read (403 on its first request) is skipped, not fatal.

    A 403 once Cliniko has answered for the stream is a permission lost mid-sync: skipping
    then would drop the rest of the stream and move its bookmark past it, so the run fails.
    """

    #: What the 403 warning says the user may not do.
    permission: ClassVar[str] = "read patients"

    @override
    def pages(self, context: Context | None, priority: int = WRITER) -> Iterator[Rows]:
        try:
            yield from super().pages(context, priority)
        except Forbidden as exc:
            request = str(exc).split(":", 1)[0]
            if self.answered:
                raise ClinikoError(
                    f"{self.name}: {request} after part of the stream was read: the API key's"
                    f" Cliniko user lost the permission to {self.permission} during the sync;"
                    " the stream's bookmark stays where it was and no ACTIVATE_VERSION was"
                    " sent: restore the permission and run again"
                ) from None
            self.skipped = True
            LOGGER.warning(
                "%s: skipped: the API key's Cliniko user lacks the permission to %s (%s);"
                " the sync goes on without this stream",
                self.name,
                self.permission,
                request,
            )
            self._tap.forbidden_streams.add(self.name)  # type: ignore[attr-defined]


class PatientsStream(SkipsForbidden):
    """Active patients: `GET /patients` (Cliniko leaves out archived and deleted ones)."""

    name = "patients"
    path = "/patients"


class ArchivedPatientsStream(SkipsForbidden):
    """Archived patients: `GET /patients/archived`, or `/patients?q[]=archived_at:*` without it."""

    name = "archived_patients"
    path = "/patients/archived"
    # Today's spec has no /patients/archived; its documented way to hidden rows is the `*`.
    route_fallback: ClassVar[tuple[str, str] | None] = ("/patients", "archived_at:*")
    # Whether archiving moves updated_at is not known, so archived_at is watched too.
    since_fields: ClassVar[tuple[str, ...]] = ("updated_at", "archived_at")
    fallbacks: ClassVar[dict[str, str | None]] = {"archived_at": None}


class DeletedPatientsStream(SkipsForbidden):
    """Deleted patients: `GET /patients/deleted` (today often just deleted_at and a link)."""

    name = "deleted_patients"
    path = "/patients/deleted"
    fallbacks: ClassVar[dict[str, str | None]] = {"updated_at": "deleted_at"}
    append_only: ClassVar[bool] = True  # nobody is undeleted


PATIENT_STREAMS: tuple[type[SkipsForbidden], ...] = (
    PatientsStream,
    ArchivedPatientsStream,
    DeletedPatientsStream,
)


def consent_ids(api: ClinikoAPI, answer: bool, per_page: int) -> frozenset[str]:
    """Ids of every patient (archived ones too) whose privacy-policy answer is `answer`."""
    params: paging.Params = [
        ("q[]", f"accepted_privacy_policy:={str(answer).lower()}"),
        ("q[]", "archived_at:*"),
        ("sort", "id"),
        ("per_page", str(per_page)),
    ]
    fetch = partial(api.get_page, records_key="patients")
    ids: set[str] = set()
    pages = paging.scan(fetch, f"{api.base_url}/patients", params, concurrency=api.scheduler.slots)
    for page in pages:
        ids.update(found for raw in page.rows if (found := row_id(raw)))
    return frozenset(ids)


class ConsentBook:
    """Which patients' rows in other streams privacy_redaction blanks, read once per run.

    'rejected' blanks the patients who answered no; 'rejected_or_unanswered' blanks everyone
    not known to have answered yes, so a patient missing from the lookup (deleted, or new
    since it was read) is blanked too: when in doubt, leave the data out.
    """

    def __init__(self, api: ClinikoAPI, mode: str, per_page: int) -> None:
        self.mode = mode
        self._api = api
        self._per_page = per_page

    @cached_property
    def _ids(self) -> frozenset[str]:
        ids = consent_ids(self._api, self.mode != "rejected", self._per_page)
        LOGGER.info("privacy_redaction: read the privacy-policy answers of the patients")
        return ids

    def redacts(self, patients: list[str]) -> bool:
        """Tell whether a row naming these patients is to be blanked."""
        if self.mode == "rejected":
            return any(p in self._ids for p in patients)
        if self.mode == "rejected_or_unanswered":
            return any(p not in self._ids for p in patients)
        return False


class CollectionStream(SkipsForbidden):
    """Any Cliniko collection, read as its line in resources.COLLECTIONS says.

    Incremental collections: `updated_at >= bookmark` on every route, with the hidden-row
    filters, keyset paging by id; then the deleted rows' route (filtered on deleted_at) where
    the account still has it. Full-table collections: every row, every run, with
    ACTIVATE_VERSION. Child collections: every parent's nested routes.
    """

    collection: ClassVar[Collection]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.collection.incremental and self.forced_replication_method is None:
            # Said in the catalog too, so a reader of it sees which streams reload in full.
            self.forced_replication_method = "FULL_TABLE"

    @property
    @override
    def emit_activate_version_messages(self) -> bool:
        # A full-table stream's rows can vanish without a trace; the version lets targets drop them.
        return not self.collection.incremental and self.config.get(
            "emit_activate_version_messages", True
        )

    @override
    def rows(self, context: Context | None) -> Iterator[Rows]:
        collection = self.collection
        if collection.parent:
            yield from self._child_rows(context)
            return
        if not collection.keyset:
            yield from self._numbered_pages(collection.path)
            return
        start, full_read = self.window_start(context) if collection.incremental else (None, False)
        self.reading_whole = collection.incremental and start is None  # reference tables are short
        # Whether archiving or cancelling moves updated_at is not known (as for patients),
        # so an incremental run also asks for rows archived or cancelled since the bookmark.
        columns = ("updated_at", *(h.split(":", 1)[0] for h in collection.hidden))
        # As learned on earlier runs: a filter Cliniko ignored here is not asked for again.
        passes = [self._since(c, start, context) for c in columns] if start else [[]]
        if [] in passes:  # one pass reads the whole list: every other pass is inside it
            passes = [[]]
        seen: dict[str, tuple[Any, ...]] = {}
        for route in collection.routes:
            try:
                for since in passes:
                    pages = self._scan([*since, *collection.hidden], context, route)
                    # The same row found by two passes is sent once.
                    yield from sent_once(pages, columns, seen, len(passes) > 1)
            except RouteNotFound:
                if route == collection.path:
                    raise
                # A further route (/practitioners/inactive) this account does not have: its
                # rows cannot be read; nothing is retired on the strength of this run.
                self.incomplete = True
                LOGGER.warning(
                    "%s: this account has no %s route, so its rows cannot be read; the rest"
                    " of the stream is complete",
                    self.name,
                    route,
                )
        if collection.deleted_route:
            deleted_since = self._since("deleted_at", start, context) if start else []
            try:
                yield from self._scan(deleted_since, context, collection.deleted_route)
            except RouteNotFound:
                LOGGER.warning(
                    "%s: this account has no %s route, so rows deleted in Cliniko cannot be"
                    " read; the rest of the stream is complete",
                    self.name,
                    collection.deleted_route,
                )
        if full_read:
            self.whole_read_done(context)

    def _child_rows(self, context: Context | None) -> Iterator[Rows]:
        """Every row of the nested routes of every parent (archived parents included)."""
        collection = self.collection
        parent = BY_NAME[str(collection.parent)]
        parent_ids: list[str] = []
        for route in parent.routes:
            # The parents' list, paged as any list (with the same fallbacks).
            pages = self._scan(list(parent.hidden), context, route, parent.records_key)
            parent_ids += [found for rows in pages for raw in rows if (found := row_id(raw))]
        # A 403 on the first nested route is the permission to read this stream's rows.
        self.answered = False
        missing: set[str] = set()

        def nested(parent_id: str, template: str) -> Iterator[Rows]:
            try:
                for rows in self._scan([], context, template.format(parent_id=parent_id)):
                    yield [{**raw, collection.parent_key: parent_id} for raw in rows]
            except RouteNotFound:
                missing.add(template)  # the parent went away mid-run, or no such route

        # One request or two per parent: read the parents' routes side by side.
        yield from side_by_side(
            [partial(nested, p, t) for p in parent_ids for t in collection.routes],
            self.api.scheduler.slots,
        )
        # A parent removed mid-sync, or a route Cliniko dropped: rows not read this run stay
        # as the target has them (no ACTIVATE_VERSION), never retired on a guess.
        self.incomplete = self.incomplete or bool(missing)
        for template in sorted(missing):
            LOGGER.warning(
                "%s: some or all parents had no %s route; the rows the target has of them stay",
                self.name,
                template,
            )

    def _numbered_pages(self, route: str) -> Iterator[Rows]:
        """A list without ids or filters (/services): its pages by number, as Cliniko links them."""
        per_page = str(self.config.get("per_page", 100))
        get = partial(self._fetch, records_key=self.records_key, priority=self._priority)
        for page in paging.scan_links(get, f"{self.url_base}{route}", [("per_page", per_page)]):
            self._note_answer(page)
            yield page.rows

    @override
    def _note_answer(self, page: paging.Page) -> None:
        if self.collection.incremental:  # a full-table stream has no bookmark to cap
            super()._note_answer(page)

    @override
    def post_process(self, row: Record, context: Context | None = None) -> Record | None:
        collection = self.collection
        record = normalize_record(row, self._projection, self._links, has_id="id" in collection.key)
        if record is None:
            return None
        if self._keep_unknown:
            record[UNKNOWN] = self.unknown_fields.kept(row)
        consent = self._consent if collection.patient_fields else None
        if consent and consent.redacts(patients_named(record, collection.patient_fields)):
            return redact_fields(record, self._personal)
        return record

    @cached_property
    def _links(self) -> dict[str, str]:
        return link_id_fields(self.schema)

    @cached_property
    def _personal(self) -> frozenset[str]:
        return personal_fields(self.schema)

    @cached_property
    def _consent(self) -> ConsentBook | None:
        return self._tap.consent_book  # type: ignore[attr-defined,no-any-return]


def stream_class(collection: Collection) -> type[CollectionStream]:
    """The stream class of one collection."""
    title = "".join(part.title() for part in collection.name.split("_"))
    return type(
        f"{title}Stream",
        (CollectionStream,),
        {
            "__doc__": f"Cliniko's {collection.path} ({collection.name}).",
            "collection": collection,
            "name": collection.name,
            "path": collection.path,
            "records_key": collection.records_key,
            "permission": collection.permission,
            "schema": ClinikoSchema(SchemaDirectory(SCHEMAS), key=collection.name),
            "primary_keys": collection.key,
            "replication_key": "updated_at" if collection.incremental else None,
            "selected_by_default": not collection.clinical,
        },
    )


COLLECTION_STREAMS = tuple(stream_class(c) for c in COLLECTIONS)
STREAM_TYPES: tuple[type[SkipsForbidden], ...] = (*PATIENT_STREAMS, *COLLECTION_STREAMS)
STREAM_NAMES = ("patients", "archived_patients", "deleted_patients", *(c.name for c in COLLECTIONS))
