"""The keyset pager and its id windows: every row exactly once, whatever the timing.

A list here is a plain Python list served with Cliniko's keyset semantics (id bounds, sort
by id either way, per_page, a next link while rows remain), so each test can hold a request
at a precise point, or change the list between any two answers.
"""

from __future__ import annotations

import os
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
        ids.extend(int(row["id"]) for row in page.rows)
        pause(number)
    return ids


def run_within(seconds: float, job: Callable[[], list[int]]) -> list[int]:
    """job's result (or its exception), failing the test, not hanging it, when it never ends."""
    result: list[list[int]] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            result.append(job())
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(seconds)
    if failed:
        raise failed[0]
    assert result, f"the scan did not finish within {seconds} s"
    return result[0]


def first_request(per_page: int) -> Params:
    return [("sort", "id"), ("per_page", str(per_page))]


class Changing(KeysetList):
    """A list that loses and gains rows while it is read (archived, deleted, new patients).

    Every answer first applies a few random changes. Rows present from the first request to
    the last (`stayed`) must all be read; nothing may come twice.
    """

    def __init__(self, ids: list[int], per_page: int, rng: random.Random) -> None:
        super().__init__(ids, per_page)
        self.rng = rng
        self.rate = rng.choice([0.02, 0.05, 0.2])  # chance that an answer changes a row
        self.ever = set(ids)
        self.left: set[int] = set()

    def answer(self, params: Params) -> Page:
        with self.lock:
            for _ in range(self.rng.random() < self.rate):
                if self.ids and self.rng.random() < 0.6:
                    gone = self.ids.pop(self.rng.randrange(len(self.ids)))
                    self.left.add(gone)
                else:
                    new = self.rng.randint(1, 2 * max(self.ever))
                    if new not in self.ever:
                        self.ever.add(new)
                        self.ids = sorted([*self.ids, new])
        return super().answer(params)

    def stayed(self, first: list[int]) -> set[int]:
        return set(first) - self.left


def _ids(rng: random.Random) -> list[int]:
    """Ids dense, sparse or in clumps (windows are cut by id range, so density matters)."""
    shape = rng.choice(["dense", "sparse", "clumps"])
    count = rng.randint(30, 900)
    if shape == "dense":
        start = rng.randint(1, 10**6)
        return list(range(start, start + count))
    if shape == "sparse":
        return sorted(rng.sample(range(1, 10**9), count))
    clumps = [rng.randint(1, 10**12) for _ in range(rng.randint(1, 4))]
    return sorted({rng.choice(clumps) + rng.randint(0, 3 * count) for _ in range(count)})


def test_windows_in_any_interleaving_yield_every_row_once_while_rows_come_and_go() -> None:
    """Random lists, page sizes, concurrency and request delays, rows changing throughout."""
    seeds = int(os.environ.get("PAGING_SEEDS", "120"))
    fell_back = 0
    for seed in range(seeds):
        rng = random.Random(seed)
        ids = _ids(rng)
        rows = Changing(ids, per_page=rng.choice([3, 7, 10, 25]), rng=rng)

        def fetch(url: str, params: Params, rows: Changing = rows, rng: Any = rng) -> Page:
            time.sleep(rng.uniform(0, 0.002))
            return rows.answer(params)

        scan = paging.scan(
            fetch, URL, first_request(rows.per_page), concurrency=rng.choice([1, 2, 3, 8])
        )
        try:
            got = run_within(60, lambda scan=scan: run(scan))  # type: ignore[misc]
        except paging.OutOfOrder:
            # Rows leaving below page one's end look like an ignored sort: the stream then
            # pages by created_at, which costs speed, never rows.
            fell_back += 1
            continue
        missing = sorted(rows.stayed(ids) - set(got))
        assert not missing, f"seed {seed}: lost {missing[:5]}"
        assert len(got) == len(set(got)), f"seed {seed}: a row came twice"
        assert set(got) <= rows.ever, f"seed {seed}: a row that never existed"
    assert fell_back < seeds // 4, f"{fell_back} of {seeds} scans fell back"


class Counting(KeysetList):
    """Counts requests in flight at once and in all, each taking a little while."""

    def __init__(self, ids: list[int], per_page: int) -> None:
        super().__init__(ids, per_page)
        self.in_flight = self.most = self.requests = self.short_pages = 0

    def answer(self, params: Params) -> Page:
        with self.lock:
            self.in_flight += 1
            self.requests += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(0.02)
        page = super().answer(params)
        with self.lock:
            self.in_flight -= 1
            self.short_pages += len(page.rows) < self.per_page
        return page


@pytest.mark.parametrize("concurrency", [1, 2, 8])
def test_a_long_list_keeps_the_slots_busy_and_costs_a_page_per_window_at_most(
    concurrency: int,
) -> None:
    rows = Counting(list(range(10**6, 10**6 + 2000)), per_page=20)
    got = run(
        paging.scan(lambda u, p: rows.answer(p), URL, first_request(20), concurrency=concurrency)
    )
    assert sorted(got) == rows.ids
    assert rows.most == concurrency, f"{rows.most} requests in flight at most"
    # Full pages hold distinct rows, so every request beyond them is a window's last page.
    assert rows.requests - rows.short_pages <= 2000 // 20
    assert rows.short_pages <= (1 if concurrency == 1 else 4 * concurrency)


def test_a_list_of_two_or_three_pages_takes_two_round_trips_and_no_row_twice() -> None:
    """Page two and the top page side by side overlap when the list is short: once each."""
    for size in range(12, 31):
        rows = Counting(list(range(500, 500 + size)), per_page=10)
        got = run(
            paging.scan(lambda u, p, r=rows: r.answer(p), URL, first_request(10), concurrency=8)
        )
        assert sorted(got) == rows.ids, f"{size} rows"
        assert len(got) == len(set(got)), f"{size} rows: a row came twice"
        assert rows.requests == 1 + min(2, -(-(size - 10) // 10)), f"{size} rows"


def test_a_failed_request_fails_the_scan_without_waiting_for_one_in_flight() -> None:
    """One window's request hangs, another's fails: the scan raises at once, not after."""
    rows = KeysetList(list(range(1, 1001)), per_page=10)
    release = threading.Event()
    windows = 0

    def fetch(url: str, params: Params) -> Page:
        nonlocal windows
        if any(k == "q[]" and v.startswith("id:<") for k, v in params):
            with rows.lock:
                windows += 1
                mine = windows
            if mine == 1:
                release.wait(timeout=20)  # only the test releases it
            elif mine == 3:
                raise RuntimeError("Cliniko failed this window")
        return rows.answer(params)

    def job() -> list[int]:
        with pytest.raises(RuntimeError, match="failed this window"):
            run(paging.scan(fetch, URL, first_request(10), concurrency=4))
        return []

    run_within(10, job)
    release.set()


def test_a_server_ignoring_sort_is_caught_by_the_top_page_or_the_counts() -> None:
    """sort=id ignored (rows in created order, not id order) must not pass as keyset order."""
    created = list(range(1, 301))
    random.Random(5).shuffle(created)

    def fetch(url: str, params: Params) -> Page:
        above = max((int(v[4:]) for k, v in params if v.startswith("id:>")), default=0)
        below = min((int(v[4:]) for k, v in params if v.startswith("id:<")), default=10**9)
        rows = [i for i in created if above < i < below]  # filters honoured, sort ignored
        link = f"{URL}?{urlencode(params)}" if len(rows) > 10 else None
        return Page([{"id": str(i)} for i in sorted(rows[:10])], link, len(rows))

    for concurrency in (1, 8):
        with pytest.raises(paging.OutOfOrder):
            run(paging.scan(fetch, URL, first_request(10), concurrency=concurrency))


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
