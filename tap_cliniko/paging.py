"""Paging over a Cliniko list, so that no row is skipped while the data changes.

Cliniko pages by page number. When a row leaves a filtered list mid-sync (archived or
deleted), every later row moves up one place and page N+1 starts one row too late, so a
pager that follows `links.next` as given can skip a row for good. Three modes, best first:

- `id` (keyset): every request after the first follows the server's next link (same host,
  path and filters) but asks for `id > last id seen` on page one, sorted by id. Ids never
  change, so rows leaving or entering the list cannot make the pager jump over anyone.
  A long list is cut into id windows read side by side, so that one list can keep every
  request slot busy.
- `created_at`: for an account that refuses or ignores `sort=id`. Cliniko's documented
  default order is `created_at` ascending and `created_at` is a documented filter, so the
  pager asks for `created_at >= the last value seen` and drops the ids it already has.
- `links`: `links.next` as given, only for lists rows never leave (deleted rows).

Every page is checked against what its own request asked and what Cliniko said of it: rows
outside the page's filters (at or below the id cursor, before the bookmark) mean a filter
is ignored; fewer rows or no next page where its total_entries counts more mean a glitch,
and the page is asked again. Every mode moves forward on each request (the id cursor,
created_at, a link not followed before), so no list is read forever.
"""

from __future__ import annotations

import math
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from tap_cliniko.cliniko import ClinikoError, format_time, parse_time
from tap_cliniko.records import row_id

Params = list[tuple[str, str]]

ID_MODE, CREATED_MODE, LINKS_MODE = "id", "created_at", "links"
#: Most passes over one second's rows paged by number: two passes that read alike end it.
SECOND_REREADS = 5
#: How often a page contradicting its own total_entries is asked again before its list fails.
REASKS = 2
#: Pages a list read by page number may take beyond those its total_entries allows.
PAGE_SLACK = 2
#: A q[] filter the rows of a page can be checked against: column, operator, bound.
_BOUND = re.compile(r"^(\w+):(>=|<=|>|<)(.+)$")


@dataclass
class Page:
    """One list response: its rows, next link, total and the server's clock."""

    rows: list[dict[str, Any]]
    next_link: str | None
    total_entries: int | None
    server_time: Any = None


Fetch = Callable[[str, Params], Page]


class OutOfOrder(ClinikoError):
    """Cliniko did not return the rows in the order asked for (a sort it ignores)."""


class CursorIgnored(OutOfOrder):
    """Cliniko returned rows at or below the id:> cursor asked for (an id filter it ignores)."""


class FilterIgnored(ClinikoError):
    """Cliniko returned rows outside a timestamp filter asked for (a filter it ignores)."""

    def __init__(self, message: str, column: str) -> None:
        super().__init__(message)
        self.column = column


class ListIncomplete(ClinikoError):
    """Cliniko's answers do not let a list be read whole: its pages or links contradict it."""


def checked(fetch: Fetch) -> Fetch:
    """fetch, refusing rows outside each request's filters and re-asking a page that
    contradicts its own total_entries (REASKS times, then the list fails)."""

    def ask(url: str, params: Params) -> Page:
        for _ in range(REASKS + 1):
            page = fetch(url, params)
            refuse_outside(page.rows, params, url)
            problem = contradiction(page, params)
            if problem is None:
                return page
        raise ListIncomplete(
            f"GET {urlsplit(url).path}: {problem}, {REASKS + 1} times; the stream stops here"
            " and its bookmark stays where it was: rerun the sync later"
        )

    return ask


def refuse_outside(rows: list[dict[str, Any]], params: Params, url: str) -> None:
    """Refuse rows outside the q[] bounds asked for: ids above id:>, timestamps within theirs.

    id:< is not checked here: a window trims rows past its end (see _Window.keep).
    """
    for key, value in params:
        bound = _BOUND.match(value) if key == "q[]" else None
        if bound is None:
            continue
        column, operator, limit = bound.groups()
        if column == "id":
            if operator == ">" and any(int(row_id(r) or 0) <= int(limit) for r in rows):
                raise CursorIgnored(
                    f"GET {urlsplit(url).path}: Cliniko returned rows at or below id {limit}"
                    " when asked for ids above it (it ignores the id filter here)"
                )
            continue
        moment = parse_time(limit)
        if moment is None:
            continue
        for row in rows:
            stamp = parse_time(row.get(column))
            if stamp is not None and not _within(stamp, operator, moment):
                raise FilterIgnored(
                    f"GET {urlsplit(url).path}: Cliniko returned rows outside the filter"
                    f" {column}:{operator}{limit} it was asked for, so no way of paging can"
                    " read this list safely: please report this with the tap's version",
                    column,
                )


def _within(stamp: datetime, operator: str, moment: datetime) -> bool:
    if operator == ">=":
        return stamp >= moment
    if operator == ">":
        return stamp > moment
    if operator == "<=":
        return stamp <= moment
    return stamp < moment


def contradiction(page: Page, params: Params) -> str | None:
    """What a page says against its own total_entries (None: nothing).

    Its total counts the rows matching its own request, so page N of per_page rows must
    hold every counted row after the pages before it, up to per_page, and have a next page
    while more are counted. Rows leaving between two requests change the next total, never
    make one answer contradict itself.
    """
    total = page.total_entries
    asked = dict(params)
    try:
        per_page = int(asked.get("per_page", "0"))
        number = int(asked.get("page", "1"))
    except ValueError:
        return None
    if total is None or (number > 1 and per_page < 1):
        return None
    before, got = (number - 1) * per_page, len(page.rows)
    if per_page > 0 and got < min(per_page, total - before):
        return f"Cliniko answered {got} rows where its total_entries ({total}) says more"
    if (not page.next_link or not page.rows) and total > before + got:
        return f"Cliniko gave no next page after {before + got} rows of the {total} it counts"
    return None


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
        raw_id = row_id(raw)
        if raw_id is None:
            raise ClinikoError("Cliniko returned a row without an id")
        value = int(raw_id)
        if ids and (value >= ids[-1] if descending else value <= ids[-1]):
            raise OutOfOrder("Cliniko did not return rows in id order (sort=id)")
        ids.append(value)
    return ids


def scan(
    fetch: Fetch, url: str, params: Params, *, concurrency: int = 1, whole: bool = False
) -> Iterator[Page]:
    """Yield the pages of a list in keyset order; the first page is yielded whole first.

    concurrency: most requests of this list in flight at once. Above one, a long list is
    cut into id windows read side by side (see _Windows). whole: the list is read without
    a filter of changes, so it is likely long: its top page is asked with page one.
    """
    fetch = checked(fetch)
    if concurrency > 1 and whole:
        yield from _Windows(fetch, concurrency).from_both_ends(url, params)
        return
    first = fetch(url, params)
    ids = page_ids(first.rows)
    yield first
    if not first.next_link or not ids:
        return
    left = None if first.total_entries is None else first.total_entries - len(ids)
    if concurrency > 1 and left is not None and left > len(ids):
        yield from _Windows(fetch, concurrency).above_page_one(first.next_link, ids, left)
        return
    # Page two comes alone: a server that ignores sort=id shows itself in its count. Rows
    # above the last id of page one must be all rows not on it; fewer means page one was not
    # the lowest ids, and keyset paging would skip the rest (a row leaving the list in
    # between looks the same, and then the fallback costs speed, never rows).
    second = fetch(*follow(first.next_link, above=ids[-1]))
    more = page_ids(second.rows)
    _check_count(left, second)
    yield second
    if second.next_link and more:
        yield from _ascend(fetch, second.next_link, more[-1])


def _check_count(left: int | None, page: Page) -> None:
    """Refuse a page above page one's last id counting fewer rows than page one left."""
    if left is not None and page.total_entries is not None and page.total_entries < left:
        raise OutOfOrder("Cliniko's counts show rows below the last id of page one")


def _ascend(fetch: Fetch, link: str, last: int) -> Iterator[Page]:
    while True:
        page = fetch(*follow(link, above=last))
        ids = page_ids(page.rows)
        yield page
        if not page.next_link or not ids:
            return
        link, last = page.next_link, ids[-1]


@dataclass(eq=False)  # a window is itself, not its bounds: it tags its requests
class _Window:
    """Ids from above + 1 up to below - 1 (below None: no end), read upwards by keyset."""

    above: int
    below: int | None

    def keep(self, page: Page, ids: list[int]) -> tuple[list[int], bool]:
        """Trim rows past the window's end (a server ignoring id:<); True when it is done."""
        inside = len(ids) if self.below is None else sum(1 for i in ids if i < self.below)
        if inside < len(ids):
            del page.rows[inside:]
            return ids[:inside], True
        if not page.next_link or not ids:
            return ids, True
        self.above = ids[-1]
        return ids, False

    def split(self, rows_left: int, page_rows: int) -> _Window | None:
        """Give the upper half of what is left to a new window, when that is worth a request."""
        if self.below is None or rows_left <= page_rows or self.below - self.above < 4:
            return None
        middle = self.above + (self.below - self.above) // 2
        upper = _Window(middle - 1, self.below)
        self.below = middle
        return upper


class _Windows:
    """The rest of a long list, read in id windows side by side.

    The list's lowest page and its top page (sort=id:desc) bound the ids between them,
    which are cut into windows, each read upwards by keyset with an id:< bound, so windows
    never share a row. A window whose count shows more than a page still to come gives its
    upper half to a new window while a request slot is idle. Only the consumer (this
    generator) changes windows: requests run in daemon threads that hand over whole pages,
    so no page is taken before its window is known, and a request still in flight when the
    scan fails is left to finish on its own.
    """

    def __init__(self, fetch: Fetch, most: int) -> None:
        self._fetch = fetch
        self._most = most
        self._answers: queue.Queue[tuple[Any, Page | BaseException]] = queue.Queue()
        self._in_flight = 0
        self._link = ""
        self._page_rows = 1

    def from_both_ends(self, url: str, params: Params) -> Iterator[Page]:
        """A whole list: page one and the top page side by side, then the windows between."""
        self._send("first", (url, params))
        descending = [(k, v) for k, v in params if k != "sort"] + [("sort", "id:desc")]
        self._send("top", (url, descending))
        got = dict([self._receive(), self._receive()])
        first, top = got["first"], got["top"]
        ids = page_ids(first.rows)
        yield first
        if not first.next_link or not ids:
            return  # one page holds the whole list: the top page is not needed, nor checked
        top_ids = page_ids(top.rows, descending=True)
        self._link, self._page_rows = first.next_link, len(ids)
        left = (first.total_entries or 0) - len(ids)
        yield from self._above(_Window(ids[-1], None), top, top_ids, left)

    def above_page_one(self, link: str, ids: list[int], left: int) -> Iterator[Page]:
        """The rows above page one: page two and the top page side by side, then windows."""
        self._link, self._page_rows = link, len(ids)
        bottom = _Window(ids[-1], None)
        self._send(bottom, follow(link, above=bottom.above))
        self._send("top", follow(link, above=bottom.above, descending=True))
        got = dict([self._receive(), self._receive()])
        second, top = got[bottom], got["top"]
        lower_ids, top_ids = page_ids(second.rows), page_ids(top.rows, descending=True)
        _check_count(left, second)
        lower_ids, done = bottom.keep(second, lower_ids)
        yield second
        if not done:
            yield from self._above(bottom, top, top_ids, left - len(lower_ids))

    def _above(self, bottom: _Window, top: Page, top_ids: list[int], left: int) -> Iterator[Page]:
        # The top page covers every id from its lowest up; rows the bottom has are dropped.
        rows = zip(top.rows, top_ids, strict=True)
        top.rows = [row for row, i in rows if i > bottom.above]
        yield top
        floor = top_ids[-1] if top_ids else None
        if floor is None or not top.next_link or floor <= bottom.above + 1:
            return
        # Enough windows that each may fit in one page, up to one per request slot.
        rows_left = max(left - len(top.rows), 1)
        pieces = min(math.ceil(1.25 * rows_left / self._page_rows), self._most)
        windows = [_Window(bottom.above, floor)]
        while len(windows) < pieces:
            widest = max(windows, key=lambda w: (w.below or 0) - w.above)
            upper = widest.split(2 * self._page_rows, self._page_rows)
            if upper is None:
                break
            windows.append(upper)
        for window in windows:
            self._request(window)
        while self._in_flight:
            window, page = self._receive()
            ids, done = window.keep(page, page_ids(page.rows))
            yield page
            if done:
                continue
            if self._in_flight + 1 < self._most:
                upper = window.split((page.total_entries or 0) - len(ids), self._page_rows)
                if upper is not None:
                    self._request(upper)
            self._request(window)

    def _request(self, window: _Window) -> None:
        self._send(window, follow(self._link, above=window.above, below=window.below))

    def _send(self, tag: Any, request: tuple[str, Params]) -> None:
        self._in_flight += 1

        def run() -> None:
            try:
                self._answers.put((tag, self._fetch(*request)))
            except BaseException as exc:
                self._answers.put((tag, exc))

        threading.Thread(target=run, name="cliniko-window", daemon=True).start()

    def _receive(self) -> tuple[Any, Page]:
        tag, outcome = self._answers.get()
        self._in_flight -= 1
        if isinstance(outcome, BaseException):
            raise outcome
        return tag, outcome


def scan_by_created(fetch: Fetch, url: str, params: Params) -> Iterator[Page]:
    """Yield a list's rows in Cliniko's default created_at order, keyed by created_at.

    Each request asks for `created_at >= the newest value seen`, so a row leaving the list
    cannot shift anyone past the pager; rows of that second already yielded are dropped by
    id. A second holding more rows than a page is read page by page on its own, again
    from its start whenever its count changes while it is read. `since` moves forward on
    every request (rows before it are refused), so the read ends.
    """
    fetch = checked(fetch)
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
        stamps = _created_seconds(page.rows, url)
        fresh = [row for row in page.rows if int(row_id(row) or 0) not in seen]
        yield replace(page, rows=fresh)
        if not page.next_link or not page.rows:
            return
        newest = stamps[-1]
        if newest == since:  # a whole page in one second: read that second by page number
            seen.update(int(row_id(row) or 0) for row in fresh)
            yield from _one_second(fetch, url, base, newest, seen)
            since, seen = newest + timedelta(seconds=1), set()
            continue
        seen = {
            int(row_id(row) or 0)
            for row, stamp in zip(page.rows, stamps, strict=True)
            if stamp == newest
        }
        since = newest


def _one_second(
    fetch: Fetch, url: str, base: Params, second: datetime, seen: set[int]
) -> Iterator[Page]:
    """Yield the rows created in one second: in id windows, or by page number where Cliniko
    ignores id filters."""
    window = [
        *base,
        ("q[]", f"created_at:>={format_time(second)}"),
        ("q[]", f"created_at:<{format_time(second + timedelta(seconds=1))}"),
    ]
    try:
        yield from _second_by_ids(fetch, url, window, seen)
    except CursorIgnored:
        yield from _second_by_number(fetch, url, window, second, seen)


def _second_by_ids(fetch: Fetch, url: str, window: Params, seen: set[int]) -> Iterator[Page]:
    """One second's rows in id windows, cut until each is whole in one answer.

    A window read in one answer holds every row of it at that moment, however rows come and
    go: a row that stays in the second is in the answer of its window. A window with more
    is cut at an id of its answer (rows yielded, that id in neither half), so windows shrink
    and the read ends. Raises CursorIgnored where Cliniko ignores id:> or id:<.
    """
    windows: list[tuple[int, int | None]] = [(0, None)]
    while windows:
        above, below = windows.pop()
        bounds = [("q[]", f"id:>{above}")]
        if below is not None:
            bounds.append(("q[]", f"id:<{below}"))
        page = fetch(url, [*window, *bounds])
        ids = [int(row_id(r) or 0) for r in page.rows]
        if below is not None and any(i >= below for i in ids):
            raise CursorIgnored(f"GET {urlsplit(url).path}: Cliniko ignores id:< here")
        fresh = [r for r, i in zip(page.rows, ids, strict=True) if i not in seen]
        seen.update(ids)
        yield replace(page, rows=fresh)
        whole = page.total_entries is not None and page.total_entries <= len(ids)
        if (not page.next_link and whole) or not ids:
            continue  # an empty answer that says more is refused by checked()
        cut = sorted(ids)[(len(ids) - 1) // 2]
        windows += [(cut, below), (above, cut)]


def _second_by_number(
    fetch: Fetch, url: str, window: Params, second: datetime, seen: set[int]
) -> Iterator[Page]:
    """One second's rows page by page, until one pass reads what the last did.

    Rows entering or leaving the second while it is paged move every later row (a swap
    moves them with the count unchanged): only two passes reading the same ids in the same
    order show that no row was jumped over.
    """
    previous: list[int] | None = None
    for _ in range(SECOND_REREADS):
        order: list[int] = []
        number = 1
        bound = _PageBound(url)
        while True:
            bound.check(number)
            page = fetch(url, [*window, ("page", str(number))])
            bound.note(page)
            ids = [int(row_id(r) or 0) for r in page.rows]
            order.extend(ids)
            fresh = [r for r, i in zip(page.rows, ids, strict=True) if i not in seen]
            seen.update(ids)
            yield replace(page, rows=fresh)
            if not page.next_link or not page.rows:
                break
            number += 1
        if order == previous:
            return
        previous = order
    raise ClinikoError(
        f"GET {urlsplit(url).path}: rows created at {format_time(second)} kept changing"
        " while they were read:"
        " rerun the sync later"
    )


def _created_seconds(rows: list[dict[str, Any]], url: str) -> list[datetime]:
    """Each row's created_at to the second, refusing rows out of created_at order."""
    stamps: list[datetime] = []
    for row in rows:
        moment = parse_time(row.get("created_at"))
        if moment is None:
            raise ClinikoError(
                f"GET {urlsplit(url).path}: Cliniko returned a row without created_at where"
                " the tap must page by it (sort=id is not available): please report this with"
                " the tap's version"
            )
        moment = moment.replace(microsecond=0)
        if stamps and moment < stamps[-1]:
            raise ClinikoError(
                f"GET {urlsplit(url).path}: Cliniko returned rows neither in id order"
                " (sort=id) nor in its default created_at order, so no mode can page safely:"
                " please report this with the tap's version"
            )
        stamps.append(moment)
    return stamps


def scan_links(fetch: Fetch, url: str, params: Params) -> Iterator[Page]:
    """Yield a list's pages following `links.next` as given (for lists rows never leave).

    A link leading back to a page already asked for, or more pages than the list's
    total_entries allows, ends the read in a ListIncomplete naming the route.
    """
    fetch = checked(fetch)
    query = [(key, value) for key, value in params if key != "sort"]
    asked = {_address(url, query)}
    bound = _PageBound(url)
    page = fetch(url, query)
    yield page
    number = 1
    while page.next_link and page.rows:
        bound.note(page)
        link = urlsplit(page.next_link)
        url = urlunsplit((link.scheme, link.netloc, link.path, "", ""))
        query = parse_qsl(link.query, keep_blank_values=True)
        if _address(url, query) in asked:
            raise ListIncomplete(
                f"GET {link.path}: Cliniko's next link after page {number} leads back to a"
                " page already read, so the list would never end: please report this with"
                " the tap's version"
            )
        asked.add(_address(url, query))
        number += 1
        bound.check(number)
        page = fetch(url, query)
        yield page


def _address(url: str, params: Params) -> tuple[str, tuple[tuple[str, str], ...]]:
    """What a request asks for, whatever the order of its parameters (page one by default)."""
    pairs = sorted(params if any(k == "page" for k, _ in params) else [*params, ("page", "1")])
    return url, tuple(pairs)


class _PageBound:
    """The pages a list read by page number may take: what its counts and pages allow."""

    def __init__(self, url: str) -> None:
        self.path = urlsplit(url).path
        self.total: int | None = None
        self.rows = 1

    def note(self, page: Page) -> None:
        if page.total_entries is not None:
            self.total = max(self.total or 0, page.total_entries)
        self.rows = max(self.rows, len(page.rows))

    def check(self, number: int) -> None:
        """Refuse to ask for page `number` when no count seen allows that many pages."""
        if self.total is None:
            return
        most = math.ceil(self.total / self.rows) + PAGE_SLACK
        if number > most:
            raise ListIncomplete(
                f"GET {self.path}: Cliniko's next links did not end after {number - 1} pages,"
                f" where its total_entries ({self.total}) allows {most}: please report this"
                " with the tap's version"
            )


SCANS: dict[str, Callable[[Fetch, str, Params], Iterator[Page]]] = {
    CREATED_MODE: scan_by_created,
    LINKS_MODE: scan_links,
}
