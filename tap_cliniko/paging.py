"""Keyset paging over a Cliniko list, so that no patient is skipped while the data changes.

Cliniko pages by page number. When a patient leaves a filtered list mid-sync (archived or
deleted), every later row moves up one place and page N+1 starts one row too late, so a
pager that follows `links.next` as given can skip a row for good. Here every request after
the first follows the server's next link (same host, path and filters) but asks for
`id > last id seen` on page one instead of page N+1: ids never change, so rows leaving or
entering the list cannot make the pager jump over anyone.

Long lists are read from both ends at once: an ascending reader, which alone decides when
the scan is complete, and a descending helper that stops whenever it likes. Two requests in
flight reach Cliniko's per-minute budget even when one round trip takes longer than the
budget's interval.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from tap_cliniko.cliniko import ClinikoError
from tap_cliniko.records import patient_id

Params = list[tuple[str, str]]


@dataclass
class Page:
    """One list response: its patients, next link, total and the server's clock."""

    patients: list[dict[str, Any]]
    next_link: str | None
    total_entries: int | None
    server_time: Any = None


Fetch = Callable[[str, Params], Page]


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
            raise ClinikoError("Cliniko returned a patient without an id")
        value = int(raw_id)
        if ids and (value >= ids[-1] if descending else value <= ids[-1]):
            raise ClinikoError(
                "Cliniko did not return patients in id order (sort=id), so the tap cannot"
                " page safely: please report this with the tap's version"
            )
        ids.append(value)
    return ids


def scan(fetch: Fetch, url: str, params: Params, *, parallel: bool = True) -> Iterator[Page]:
    """Yield the pages of a list in keyset order; the first page is yielded whole first."""
    first = fetch(url, params)
    ids = page_ids(first.patients)
    yield first
    if not first.next_link or not ids:
        return
    remaining = None if first.total_entries is None else first.total_entries - len(ids)
    if parallel and remaining is not None and remaining > 2 * len(ids):
        yield from _both_ends(fetch, first.next_link, ids[-1], remaining, len(ids))
    else:
        yield from _ascend(fetch, first.next_link, ids[-1])


def _ascend(fetch: Fetch, link: str, last: int) -> Iterator[Page]:
    while True:
        page = fetch(*follow(link, above=last))
        ids = page_ids(page.patients)
        yield page
        if not page.next_link or not ids:
            return
        link, last = page.next_link, ids[-1]


class _Meeting:
    """Where the two readers have got to, so that neither emits what the other did."""

    def __init__(self, low: int, remaining: int, per_page: int) -> None:
        self.lock = threading.Lock()
        self.high = low  # every id <= high is read by the ascending reader
        self.low: int | None = None  # every id >= low is read by the descending helper
        self.remaining = remaining
        self.per_page = per_page
        self.done = threading.Event()

    def take_ascending(self, patients: list[dict[str, Any]], ids: list[int]) -> tuple[list, bool]:
        """Keep the rows below the helper's claim; True when the scan is now complete."""
        with self.lock:
            keep = [
                p for p, i in zip(patients, ids, strict=True) if self.low is None or i < self.low
            ]
            if ids:
                self.high = max(self.high, ids[-1])
            self.remaining -= len(keep)
            return keep, len(keep) < len(ids)

    def take_descending(self, patients: list[dict[str, Any]], ids: list[int]) -> tuple[list, bool]:
        """Keep the rows above the ascending claim; True when the helper should stop."""
        with self.lock:
            if self.done.is_set():
                return [], True
            keep = [p for p, i in zip(patients, ids, strict=True) if i > self.high]
            if keep:
                self.low = ids[len(keep) - 1]
            self.remaining -= len(keep)
            # The ascending reader finishes the last stretch; one more helper page would overlap.
            return keep, len(keep) < len(ids) or self.remaining <= 2 * self.per_page

    def bounds(self) -> int | None:
        with self.lock:
            return self.low

    def floor(self) -> int:
        with self.lock:
            return self.high


_DONE = object()


def _both_ends(fetch: Fetch, link: str, last: int, remaining: int, per_page: int) -> Iterator[Page]:
    meeting = _Meeting(last, remaining, per_page)
    pages: queue.Queue[Any] = queue.Queue(maxsize=4)

    def put(item: Any) -> None:
        # Once the scan is complete, the helper's late pages are dropped; _DONE always goes.
        while not meeting.done.is_set() or item is _DONE or isinstance(item, BaseException):
            try:
                pages.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def ascending() -> None:
        next_link, above = link, last
        try:
            while True:
                page = fetch(*follow(next_link, above=above, below=meeting.bounds()))
                ids = page_ids(page.patients)
                keep, complete = meeting.take_ascending(page.patients, ids)
                put(Page(keep, page.next_link, page.total_entries, page.server_time))
                if complete or not page.next_link or not ids:
                    return
                next_link, above = page.next_link, ids[-1]
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)
        finally:
            meeting.done.set()
            put(_DONE)

    def descending() -> None:
        next_link, below = link, None
        try:
            while not meeting.done.is_set():
                request = follow(next_link, above=meeting.floor(), below=below, descending=True)
                page = fetch(*request)
                ids = page_ids(page.patients, descending=True)
                keep, stop = meeting.take_descending(page.patients, ids)
                if keep:
                    put(Page(keep, page.next_link, page.total_entries, page.server_time))
                if stop or not page.next_link or not ids:
                    return
                next_link, below = page.next_link, ids[-1]
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)
        finally:
            put(_DONE)

    threads = [
        threading.Thread(target=ascending, name="cliniko-ascending", daemon=True),
        threading.Thread(target=descending, name="cliniko-descending", daemon=True),
    ]
    for thread in threads:
        thread.start()
    finished = 0
    try:
        while finished < len(threads):
            item = pages.get()
            if item is _DONE:
                finished += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        meeting.done.set()
        while any(thread.is_alive() for thread in threads):
            try:
                pages.get(timeout=0.1)
            except queue.Empty:
                continue
