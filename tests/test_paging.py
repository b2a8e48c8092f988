"""The two-ended keyset pager: every row exactly once, whatever the timing of its readers.

A list here is a plain Python list served with Cliniko's keyset semantics (id bounds, sort
by id either way, per_page, a next link while rows remain), so each test can hold a reader
at a precise point: inside a request, or with a page in hand and the queue to the consumer
full because the target reads slowly.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tap_cliniko import paging
from tap_cliniko.paging import Page, Params

URL = "http://127.0.0.1:1/v1/patients"


class KeysetList:
    """Rows with the given ids, answered as Cliniko answers a sort=id keyset request."""

    def __init__(self, ids: list[int], per_page: int) -> None:
        self.ids = sorted(ids)
        self.per_page = per_page
        self.lock = threading.Lock()

    def answer(self, params: Params) -> Page:
        above = max(
            (int(v[4:]) for k, v in params if k == "q[]" and v.startswith("id:>")), default=None
        )
        below = min(
            (int(v[4:]) for k, v in params if k == "q[]" and v.startswith("id:<")), default=None
        )
        descending = ("sort", "id:desc") in params
        with self.lock:
            rows = [
                i for i in self.ids if (above is None or i > above) and (below is None or i < below)
            ]
        rows = sorted(rows, reverse=descending)
        page = rows[: self.per_page]
        link = f"{URL}?{urlencode([*params, ('page', '2')])}" if len(rows) > len(page) else None
        return Page([{"id": str(i)} for i in page], link, len(rows))


def run(scan: Iterator[Page], pause: Callable[[int], None] = lambda _: None) -> list[int]:
    ids = []
    for number, page in enumerate(scan):
        ids.extend(int(row["id"]) for row in page.patients)
        pause(number)
    return ids


def run_within(seconds: float, job: Callable[[], list[int]]) -> list[int]:
    """job's result, failing the test (not hanging it) when the pager never finishes."""
    result: list[list[int]] = []
    worker = threading.Thread(target=lambda: result.append(job()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert result, f"the scan did not finish within {seconds} s"
    return result[0]


def first_request(per_page: int) -> Params:
    return [("sort", "id"), ("per_page", str(per_page))]


def _descending_rows(item: Any) -> bool:
    """Whether a hand-over item (a page, or a tuple holding one) holds rows in falling order."""
    page = item if isinstance(item, Page) else next((p for p in item if isinstance(p, Page)), None)
    ids = [int(row["id"]) for row in page.patients] if page else []
    return len(ids) > 1 and ids == sorted(ids, reverse=True)


class SlowHandOff(queue.Queue):  # type: ignore[type-arg]
    """The pager's queue, where the helper's pages arrive late: it pauses before each."""

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if _descending_rows(item):
            time.sleep(0.3)
        super().put(item, block, timeout)


class SlowPage(Page):
    """A page built late when it holds the helper's rows (the old pager built it after claiming)."""

    def __post_init__(self) -> None:
        if _descending_rows(self):
            time.sleep(0.3)


def test_a_page_the_helper_holds_while_the_other_reader_finishes_is_never_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pause the helper between taking a page from Cliniko and handing it over.

    Meanwhile the ascending reader reads up to the helper's frontier and finishes. Before
    the fix the helper claimed its page before handing it over, and the hand-over threw the
    claimed page away once the ascending reader had finished: those rows were never read.
    """
    monkeypatch.setattr(paging.queue, "Queue", SlowHandOff)
    monkeypatch.setattr(paging, "Page", SlowPage)
    for size, per_page in ((120, 10), (70, 7), (33, 3)):
        rows = KeysetList(list(range(1, size + 1)), per_page=per_page)
        helper_pages = 0

        def fetch(url: str, params: Params, rows: KeysetList = rows) -> Page:
            nonlocal helper_pages
            helper_pages += ("sort", "id:desc") in params
            return rows.answer(params)

        got = run_within(30, lambda n=per_page: run(paging.scan(fetch, URL, first_request(n))))
        missing = sorted(set(rows.ids) - set(got))
        assert not missing, f"{size} rows by {per_page}: lost {missing[:10]}"
        assert len(got) == len(set(got)), "a row came twice"
        assert helper_pages, "the helper took part"


def test_readers_in_any_interleaving_yield_every_row_once() -> None:
    for seed in range(40):
        rng = random.Random(seed)
        ids = sorted(rng.sample(range(1, 10_000), rng.randint(40, 400)))
        rows = KeysetList(ids, per_page=rng.choice([3, 7, 10, 25]))
        delays = {"asc": rng.uniform(0, 0.004), "desc": rng.uniform(0, 0.004)}

        def fetch(url: str, params: Params, rows: Any = rows, delays: Any = delays) -> Page:
            page = rows.answer(params)
            time.sleep(delays["desc" if ("sort", "id:desc") in params else "asc"])
            return page

        consumer_delay = rng.choice([0.0, 0.002, 0.01])
        got = run(
            paging.scan(fetch, URL, first_request(rows.per_page)),
            lambda _, d=consumer_delay: time.sleep(d),
        )
        assert sorted(got) == ids, f"seed {seed}: missing {sorted(set(ids) - set(got))[:5]}"
        assert len(got) == len(set(got)), f"seed {seed}: a row came twice"


def test_a_request_still_in_flight_at_the_end_neither_delays_nor_fails_the_scan() -> None:
    """The helper's second request hangs, then fails; the scan is complete without it."""
    rows = KeysetList(list(range(1, 201)), per_page=10)
    release = threading.Event()
    events: list[str] = []
    descending = 0

    def fetch(url: str, params: Params) -> Page:
        nonlocal descending
        if ("sort", "id:desc") in params:
            descending += 1
            if descending == 2:
                release.wait(timeout=10)  # only the test releases it, after the scan
                events.append("helper released")
                raise RuntimeError("a request that failed after the scan was complete")
        return rows.answer(params)

    got = run(paging.scan(fetch, URL, first_request(10)))
    events.append("scan complete")
    release.set()
    time.sleep(0.2)
    assert sorted(got) == rows.ids
    assert len(got) == len(set(got))
    assert events[0] == "scan complete", "the scan waited for a request it did not need"


def test_pages_out_of_id_order_are_refused_as_out_of_order() -> None:
    try:
        paging.page_ids([{"id": "5"}, {"id": "3"}])
    except paging.OutOfOrder:
        pass
    else:
        raise AssertionError("ids out of order were accepted")


class CreatedList:
    """Rows with created_at, answered in Cliniko's default order (created_at, then any)."""

    def __init__(self, rows: list[tuple[int, str]], per_page: int) -> None:
        self.rows = rows
        self.per_page = per_page
        self.requests: list[Params] = []
        self.on_request: Callable[[Params], None] = lambda _: None

    def answer(self, params: Params) -> Page:
        self.requests.append(params)
        self.on_request(params)
        since = [v[len("created_at:>=") :] for k, v in params if v.startswith("created_at:>=")]
        until = [v[len("created_at:<") :] for k, v in params if v.startswith("created_at:<")]
        page = int(dict(params).get("page", "1"))
        chosen = [
            (i, c) for i, c in self.rows if all(c >= s for s in since) and all(c < u for u in until)
        ]
        # The order within one second is the server's business: here, ids descending.
        chosen.sort(key=lambda r: (r[1], -r[0]))
        start = (page - 1) * self.per_page
        part = chosen[start : start + self.per_page]
        more = len(chosen) > start + self.per_page
        link = f"{URL}?{urlencode([*params, ('page', str(page + 1))])}" if more else None
        return Page([{"id": str(i), "created_at": c} for i, c in part], link, len(chosen))


def test_created_at_mode_reads_every_row_once_even_when_a_second_holds_many() -> None:
    rng = random.Random(5)
    rows = []
    for n in range(1, 121):
        second = rng.choice([1, 2, 2, 2, 3, 4, 5]) if n < 100 else 9
        rows.append((n * 13 % 997, f"2024-01-01T00:00:0{second}Z"))
    listing = CreatedList(rows, per_page=7)
    got = run(paging.scan_by_created(lambda url, params: listing.answer(params), URL, []))
    assert sorted(got) == sorted(i for i, _ in rows)
    assert len(got) == len(set(got))
    assert not any(key == "sort" for request in listing.requests for key, _ in request)


def test_created_at_mode_rereads_a_second_whose_rows_move_while_it_is_read() -> None:
    rows = [(n, "2024-01-01T00:00:01Z") for n in range(1, 31)]
    listing = CreatedList(rows, per_page=5)
    removed = False

    def leave_mid_second(params: Params) -> None:
        nonlocal removed
        if ("page", "3") in params and not removed:
            removed = True  # a row of an earlier page leaves: later rows move up one place
            listing.rows = [r for r in listing.rows if r[0] != 28]

    listing.on_request = leave_mid_second
    got = run(paging.scan_by_created(lambda url, params: listing.answer(params), URL, []))
    assert set(range(1, 31)) - {28} <= set(got)
    assert len(got) == len(set(got))
