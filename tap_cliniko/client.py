"""Everything HTTP about Cliniko: session, headers, throttle, retries, keyset paging."""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import msgspec
import requests
from singer_sdk import RESTStream, SchemaDirectory, StreamSchema
from singer_sdk.helpers._util import utc_now
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.singerlib.encoding.simple import RecordMessage
from typing_extensions import override

from tap_cliniko import cliniko, paging
from tap_cliniko.cliniko import ClinikoError
from tap_cliniko.paging import Page, Params
from tap_cliniko.records import (
    date_fields,
    needs_redaction,
    normalize_patient,
    patient_id,
    redact_patient,
)

if TYPE_CHECKING:
    from singer_sdk.helpers.types import Context, Record

LOGGER = logging.getLogger("tap-cliniko")

_PACKAGE = Path(__file__).resolve().parent
# An installed wheel carries the schemas inside the package; a source checkout keeps them on top.
SCHEMAS = _PACKAGE / "schemas" if (_PACKAGE / "schemas").is_dir() else _PACKAGE.parent / "schemas"


LEARNED_FALLBACKS = "unsearchable_filters"


class NotSearchable(ClinikoError):
    """Cliniko refused a filter on a column it cannot search (400 'not searchable')."""


class RetryableResponse(Exception):
    """A response worth asking again for: 429, 5xx, or a body that is not the JSON expected."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


@dataclass
class RequestBudget:
    """Client-side throttle: at most `per_minute` requests in any rolling 60 seconds (0: no cap).

    Shared by every stream and thread of one tap run; a 429 pauses everyone until its reset.
    """

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    window: float = 60.0
    _sent: collections.deque[float] = field(default_factory=collections.deque)
    _paused_until: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self) -> None:
        """Block until one more request fits the budget, then count it."""
        while True:
            with self._lock:
                now = self.clock()
                while self._sent and now - self._sent[0] >= self.window:
                    self._sent.popleft()
                wait = self._paused_until - now
                if wait <= 0 and 0 < self.per_minute <= len(self._sent):
                    wait = self._sent[0] + self.window - now
                if wait <= 0:
                    self._sent.append(now)
                    return
            self.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold every request back for seconds (a 429 told us to)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self.clock() + seconds)


class ClinikoAPI:
    """One kept-alive session to one Cliniko account, with throttle and retry policy."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        user_agent: str,
        timeout: float = 60.0,
        requests_per_minute: int = 190,
        max_retry_seconds: float = 600.0,
        budget: RequestBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = cliniko.check_base_url(base_url)
        self._auth = (api_key, "")
        self.timeout = timeout
        self.max_retry_seconds = max_retry_seconds
        self.budget = budget or RequestBudget(requests_per_minute, sleep=sleep)
        self._sleep = sleep
        self._wall_clock = wall_clock
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": user_agent})
        self.requests_sent = 0
        self.rate_limited = 0

    def get_page(self, url: str, params: Params, records_key: str = "patients") -> Page:
        """GET one list page, waiting and retrying as Cliniko's answer asks."""
        if not cliniko.same_origin(url, self.base_url):
            raise ClinikoError(
                f"refusing to send the API key to {urlsplit(url).scheme}://"
                f"{urlsplit(url).netloc}: Cliniko's next link left {self.base_url}"
            )
        path = urlsplit(url).path
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._get_once(url, params, path, records_key)
            except RetryableResponse as exc:
                wait = exc.wait if exc.wait is not None else cliniko.backoff_wait(attempt)
                reason = str(exc)
            except (requests.Timeout, requests.ConnectionError) as exc:
                wait = cliniko.backoff_wait(attempt)
                reason = type(exc).__name__
            if waited + wait > self.max_retry_seconds:
                raise ClinikoError(
                    f"GET {path} still failing after {attempt} attempts over {waited:.0f}s"
                    f" ({reason}): Cliniko may be down or throttling; rerun later, or raise"
                    " max_retry_seconds"
                )
            LOGGER.warning(
                "GET %s: %s; retrying in %.1fs (attempt %d)", path, reason, wait, attempt
            )
            self._sleep(wait)
            waited += wait

    def _get_once(self, url: str, params: Params, path: str, records_key: str) -> Page:
        self.budget.acquire()
        self.requests_sent += 1
        response = self.session.get(
            url, params=params, auth=self._auth, timeout=self.timeout, allow_redirects=False
        )
        status = response.status_code
        LOGGER.debug("GET %s -> %d", path, status)
        if status == 429:
            self.rate_limited += 1
            wait = cliniko.rate_limit_wait(dict(response.headers), self._wall_clock())
            self.budget.pause(wait)
            raise RetryableResponse("429 rate limited", wait=wait)
        if status >= 500:
            raise RetryableResponse(f"HTTP {status}")
        if status == 400 and _message(response) == cliniko.NOT_SEARCHABLE:
            raise NotSearchable(f"HTTP 400 from GET {path}: {cliniko.NOT_SEARCHABLE}")
        if status != 200:
            raise cliniko.status_error(status, path)
        try:
            # msgspec parses a page several times faster than the stdlib, ints kept exact.
            body = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            raise RetryableResponse("response was not complete JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get(records_key), list):
            raise RetryableResponse(f"response JSON had no {records_key} list")
        links = body.get("links") or {}
        total = body.get("total_entries")
        return Page(
            patients=body[records_key],
            next_link=links.get("next") if isinstance(links, dict) else None,
            total_entries=total if isinstance(total, int) else None,
            server_time=cliniko.server_time(dict(response.headers)),
        )


def _message(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("message") if isinstance(body, dict) else None


class ClinikoStream(RESTStream[Any]):
    """A Cliniko patient list: incremental on updated_at, read in id order by keyset."""

    schema = StreamSchema(SchemaDirectory(SCHEMAS), key="patient")
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
    #: Key of the records list in a page of this stream's route.
    records_key: ClassVar[str] = "patients"

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
        # The cap on the bookmark is the server's clock at the first response, set in
        # request_records: the local clock may run ahead of Cliniko's.
        return None

    @override
    def request_records(self, context: Context | None) -> Iterator[dict[str, Any]]:
        start = self.get_starting_timestamp(context)
        passes = [self._since(f, start, context) for f in self.since_fields] if start else [[]]
        emitted: dict[str, tuple[Any, ...]] = {}
        for filters in passes:
            for raw in self._scan(filters, context):
                if len(passes) > 1:
                    version = (raw.get("updated_at"), raw.get("archived_at"))
                    key = patient_id(raw) or ""
                    if emitted.get(key) == version:
                        continue
                    emitted[key] = version
                yield raw

    def _since(self, column: str, start: datetime, context: Context | None) -> list[str]:
        """The filter selecting rows changed since start, as far as this account allows."""
        learned = self.get_context_state(context).get(LEARNED_FALLBACKS, {})
        instead = learned.get(column, column)
        return [cliniko.since_filter(instead, start)] if instead else []

    def _scan(
        self, filters: list[str], context: Context | None, path: str | None = None
    ) -> Iterator[dict[str, Any]]:
        url = f"{self.url_base}{path or self.path}"
        params: Params = [("q[]", f) for f in filters]
        params += [("sort", "id"), ("per_page", str(self.config.get("per_page", 100)))]
        progress = _Progress(self.name)
        pages = paging.scan(partial(self.api.get_page, records_key=self.records_key), url, params)
        try:
            first = next(pages)
        except NotSearchable:
            column = filters[0].split(":", 1)[0] if filters else ""
            if column not in self.fallbacks:
                raise
            instead = self.fallbacks[column]
            # Kept in the stream's state, so later runs do not ask for the refused filter again.
            state = self.get_context_state(context)
            state.setdefault(LEARNED_FALLBACKS, {})[column] = instead
            LOGGER.info(
                "%s: Cliniko cannot filter on %s here; using %s instead",
                self.name,
                column,
                instead or "no filter",
            )
            rest = [f"{instead}:{filters[0].split(':', 1)[1]}"] if instead else []
            yield from self._scan(rest, context, path)
            return
        self._note_server_start(first, context)
        for page in itertools.chain([first], pages):
            yield from page.patients
            progress.page(len(page.patients), page.total_entries)

    def _note_server_start(self, page: Page, context: Context | None) -> None:
        """Cap this stream's bookmark at the server's clock when its first answer came."""
        if getattr(self, "_server_start", None) is not None:
            return
        moment = page.server_time
        if moment is None:
            LOGGER.warning(
                "%s: no Date header from Cliniko; capping the bookmark by the local clock",
                self.name,
            )
            moment = datetime.now(UTC)
        self._server_start: datetime | None = moment
        self.state_manager.write_replication_key_signpost(
            cliniko.format_time(moment), context=context
        )

    @override
    def post_process(self, row: Record, context: Context | None = None) -> Record | None:
        record = normalize_patient(row, self._properties, self._date_fields)
        if record is None:
            return None
        if needs_redaction(record, self.config.get("privacy_redaction", "off")):
            return redact_patient(record)
        return record

    @override
    def _generate_record_messages(self, record: Record) -> Generator[RecordMessage, None, None]:
        # The SDK walks every nested property of every record to drop deselected ones: half
        # of the record path's CPU. When the catalog selects everything there is nothing to
        # drop, so only then the walk is skipped (singer-sdk is pinned; see tests/test_core).
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
            "%s: %d of %d patients (%.0f%%), about %s left",
            self.stream,
            self.count,
            self.total,
            100 * self.count / self.total,
            _duration(left),
        )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
