"""Paging over a Cliniko list, so that no row is skipped while the data changes.

Cliniko pages by page number. When a row leaves a filtered list mid-sync (archived or
deleted), every later row moves up one place and page N+1 starts one row too late, so a
pager that follows `links.next` as given can skip a row for good. Three modes, best first:

- `id` (keyset): every request after the first follows the server's next link (same host,
  path and filters) but asks for `id > last id seen` on page one, sorted by id. Ids never
  change, so rows leaving or entering the list cannot make the pager jump over anyone.
  Long lists are read from both ends at once (two requests in flight reach Cliniko's
  per-minute budget even when one round trip is slower than the budget's interval).
- `created_at`: for an account that refuses or ignores `sort=id`. Cliniko's documented
  default order is `created_at` ascending and `created_at` is a documented filter, so the
  pager asks for `created_at >= the last value seen` and drops the ids it already has.
- `links`: `links.next` as given, only for lists rows never leave (deleted rows).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from tap_cliniko.cliniko import ClinikoError, format_time, parse_time
from tap_cliniko.records import patient_id

Params = list[tuple[str, str]]

ID_MODE, CREATED_MODE, LINKS_MODE = "id", "created_at", "links"
#: How often one second's rows are re-read when rows leave it while it is being paged.
SECOND_REREADS = 5


@dataclass
class Page:
    """One list response: its rows, next link, total and the server's clock."""

    patients: list[dict[str, Any]]
    next_link: str | None
    total_entries: int | None
    server_time: Any = None


Fetch = Callable[[str, Params], Page]


class OutOfOrder(ClinikoError):
    """Cliniko did not return the rows in the order asked for (a sort it ignores)."""


def follow(
    link: str, *, above: int | None = None, below: int | None = None, descending: bool = False
) -> tuple[str, Params]:
    """Request the rows of `link`'s list with an id between above and below, in id order.

    Keeps the link's host, path and every parameter once (each repeated q[] included), and
    replaces its page number, sort and id bounds with ours.
    """
    parts = urlsplit(link)
    params = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key not in ("page", "sort") and not (key == "q[]" and value.startswith("id:"))
    ]
    if above is not None:
        params.append(("q[]", f"id:>{above}"))
    if below is not None:
        params.append(("q[]", f"id:<{below}"))
    params.append(("sort", "id:desc" if descending else "id"))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), params


def page_ids(patients: list[dict[str, Any]], *, descending: bool = False) -> list[int]:
    """The ids of a page as integers, refusing a page that is not in the id order asked for."""
    ids: list[int] = []
    for raw in patients:
        raw_id = patient_id(raw)
        if raw_id is None:
            raise ClinikoError("Cliniko returned a row without an id")
        value = int(raw_id)
        if ids and (value >= ids[-1] if descending else value <= ids[-1]):
            raise OutOfOrder("Cliniko did not return rows in id order (sort=id)")
        ids.append(value)
    return ids


def scan(fetch: Fetch, url: str, params: Params, *, parallel: bool = True) -> Iterator[Page]:
    """Yield the pages of a list in keyset order; the first page is yielded whole first."""
    first = fetch(url, params)
    ids = page_ids(first.patients)
    yield first
    if not first.next_link or not ids:
        return
    # Page two comes alone: a server that ignores sort=id shows itself in its count. Rows
    # above the last id of page one must be all rows not on it; fewer means page one was not
    # the lowest ids, and keyset paging would skip the rest (a row leaving the list in
    # between looks the same, and then the fallback costs speed, never rows).
    second = fetch(*follow(first.next_link, above=ids[-1]))
    more = page_ids(second.patients)
    if None not in (first.total_entries, second.total_entries) and (
        second.total_entries < first.total_entries - len(ids)  # type: ignore[operator]
    ):
        raise OutOfOrder("Cliniko's counts show rows below the last id of page one")
    yield second
    if not second.next_link or not more:
        return
    remaining = second.total_entries
    if parallel and remaining is not None and remaining - len(more) > 2 * len(more):
        yield from _both_ends(fetch, second.next_link, more[-1])
    else:
        yield from _ascend(fetch, second.next_link, more[-1])


def _ascend(fetch: Fetch, link: str, last: int) -> Iterator[Page]:
    while True:
        page = fetch(*follow(link, above=last))
        ids = page_ids(page.patients)
        yield page
        if not page.next_link or not ids:
            return
        link, last = page.next_link, ids[-1]


class _Ends:
    """How far each reader has got, and what the consumer has taken from each end.

    The readers shape their requests by what the other has fetched, so that they stop near
    each other. Only the consumer decides what is taken and when the scan is complete, from
    the pages it has in hand: a page still inside a reader (a slow target has filled the
    queue) covers nothing yet, so no row can be dropped between the two.
    """

    def __init__(self, last: int) -> None:
        self._lock = threading.Lock()
        self.fetched_high, self.fetched_low = last, cast(int | None, None)  # readers' frontiers
        self.covered_high: float = last  # every id <= this is taken (ascending end)
        self.covered_low: float = math.inf  # every id >= this is taken (descending end)
        self.emitted_high, self.emitted_low = last, cast(int | None, None)  # taken rows' ends

    def request_bounds(self, descending: bool) -> int | None:
        """The bound a reader's next request may stop at: the other reader's frontier."""
        with self._lock:
            return self.fetched_high if descending else self.fetched_low

    def fetched(self, ids: list[int], *, descending: bool) -> bool:
        """Note a reader's page; True when it reached rows the other reader has fetched."""
        with self._lock:
            if not ids:
                return True
            if descending:
                self.fetched_low = ids[-1]
                return ids[-1] <= self.fetched_high
            self.fetched_high = ids[-1]
            return self.fetched_low is not None and ids[-1] >= self.fetched_low

    def take(self, page: Page, ids: list[int], bound: int | None, *, descending: bool) -> bool:
        """Keep the page's rows not taken yet (in place); True once the ends have met.

        bound is the other end's frontier the page's request stopped at: a page without a
        next link covers everything up to it.
        """
        rows = zip(page.patients, ids, strict=True)
        if descending:
            page.patients = [row for row, i in rows if i > self.emitted_high]
            if page.patients:
                self.emitted_low = ids[len(page.patients) - 1]
            reached = (
                ids[-1] if ids and page.next_link else (-math.inf if bound is None else bound + 1)
            )
            self.covered_low = min(self.covered_low, reached)
        else:
            low = self.emitted_low
            page.patients = [row for row, i in rows if low is None or i < low]
            if ids:
                self.emitted_high = max(self.emitted_high, ids[-1])
            reached = (
                ids[-1] if ids and page.next_link else (math.inf if bound is None else bound - 1)
            )
            self.covered_high = max(self.covered_high, reached)
        return self.covered_high >= self.covered_low - 1


_ASCENDING, _DESCENDING = "ascending", "descending"
Handoff = tuple[str, Page | BaseException, list[int], int | None]


def _both_ends(fetch: Fetch, link: str, last: int) -> Iterator[Page]:
    ends = _Ends(last)
    handoff: queue.Queue[Handoff] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def hand_over(item: Handoff) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read(direction: str) -> None:
        descending = direction == _DESCENDING
        next_link, previous = link, None if descending else last
        try:
            while not stop.is_set():
                bound = ends.request_bounds(descending)
                if descending:
                    request = follow(next_link, above=bound, below=previous, descending=True)
                else:
                    request = follow(next_link, above=previous, below=bound)
                page = fetch(*request)
                ids = page_ids(page.patients, descending=descending)
                crossed = ends.fetched(ids, descending=descending)
                if not hand_over((direction, page, ids, bound)) or not page.next_link or crossed:
                    return
                next_link, previous = page.next_link, ids[-1]
        except BaseException as exc:  # handed to the consumer, which raises it unless done
            hand_over((direction, exc, [], None))

    for direction in (_ASCENDING, _DESCENDING):
        reader = threading.Thread(target=read, args=(direction,), name=f"cliniko-{direction}")
        reader.daemon = True  # one still waiting on Cliniko must not hold the process open
        reader.start()
    try:
        while True:
            direction, item, ids, bound = handoff.get()
            if isinstance(item, BaseException):
                raise item
            met = ends.take(item, ids, bound, descending=direction == _DESCENDING)
            yield item
            if met:
                return
    finally:
        # A request still in flight is left to finish on its own: its page is not needed.
        stop.set()


def scan_by_created(fetch: Fetch, url: str, params: Params) -> Iterator[Page]:
    """Yield a list's rows in Cliniko's default created_at order, keyed by created_at.

    Each request asks for `created_at >= the newest value seen`, so a row leaving the list
    cannot shift anyone past the pager; rows of that second already yielded are dropped by
    id. A second holding more rows than a page is read page by page on its own, again
    from its start whenever its count changes while it is read.
    """
    base = [
        (key, value)
        for key, value in params
        if key != "sort" and not (key == "q[]" and value.startswith(("id:", "created_at:")))
    ]
    since: datetime | None = None
    seen: set[int] = set()  # ids already yielded whose created_at is in the second `since`
    while True:
        query = base + ([("q[]", f"created_at:>={format_time(since)}")] if since else [])
        page = fetch(url, query)
        stamps = _created_seconds(page.patients, since)
        fresh = [row for row in page.patients if int(patient_id(row) or 0) not in seen]
        yield replace(page, patients=fresh)
        if not page.next_link or not page.patients:
            return
        newest = stamps[-1]
        if newest == since:  # a whole page in one second: read that second by page number
            seen.update(int(patient_id(row) or 0) for row in fresh)
            yield from _one_second(fetch, url, base, newest, seen)
            since, seen = newest + timedelta(seconds=1), set()
            continue
        seen = {
            int(patient_id(row) or 0)
            for row, stamp in zip(page.patients, stamps, strict=True)
            if stamp == newest
        }
        since = newest


def _one_second(
    fetch: Fetch, url: str, base: Params, second: datetime, seen: set[int]
) -> Iterator[Page]:
    """Yield the rows created in one second, page by page, re-reading it if its count moves."""
    window = [
        *base,
        ("q[]", f"created_at:>={format_time(second)}"),
        ("q[]", f"created_at:<{format_time(second + timedelta(seconds=1))}"),
    ]
    for _ in range(SECOND_REREADS):
        total: int | None = None
        moved = False
        number = 1
        while True:
            page = fetch(url, [*window, ("page", str(number))])
            fresh = [r for r in page.patients if int(patient_id(r) or 0) not in seen]
            seen.update(int(patient_id(r) or 0) for r in fresh)
            yield replace(page, patients=fresh)
            if total is not None and page.total_entries != total:
                moved = True
            total = page.total_entries
            if not page.next_link or not page.patients:
                break
            number += 1
        if not moved:
            return
    raise ClinikoError(
        f"rows created at {format_time(second)} kept changing while they were read:"
        " rerun the sync later"
    )


def _created_seconds(rows: list[dict[str, Any]], since: datetime | None) -> list[datetime]:
    """Each row's created_at to the second, refusing rows out of created_at order."""
    stamps: list[datetime] = []
    for row in rows:
        moment = parse_time(row.get("created_at"))
        if moment is None:
            raise ClinikoError(
                "Cliniko returned a row without created_at where the tap must page by it"
                " (sort=id is not available): please report this with the tap's version"
            )
        moment = moment.replace(microsecond=0)
        if (stamps and moment < stamps[-1]) or (since is not None and moment < since):
            raise ClinikoError(
                "Cliniko returned rows neither in id order (sort=id) nor in its default"
                " created_at order, so no mode can page safely: please report this with"
                " the tap's version"
            )
        stamps.append(moment)
    return stamps


def scan_links(fetch: Fetch, url: str, params: Params) -> Iterator[Page]:
    """Yield a list's pages following `links.next` as given (for lists rows never leave)."""
    query = [(key, value) for key, value in params if key != "sort"]
    page = fetch(url, query)
    yield page
    while page.next_link and page.patients:
        link = urlsplit(page.next_link)
        page = fetch(
            urlunsplit((link.scheme, link.netloc, link.path, "", "")),
            parse_qsl(link.query, keep_blank_values=True),
        )
        yield page


SCANS: dict[str, Callable[[Fetch, str, Params], Iterator[Page]]] = {
    CREATED_MODE: scan_by_created,
    LINKS_MODE: scan_links,
}
