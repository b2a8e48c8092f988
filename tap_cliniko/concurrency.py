"""Requests in flight at once, shared by every stream, and streams read ahead of their turn.

The Singer output is written one stream at a time (the SDK's sync loop: a stream's records,
then its STATE). The requests need not wait for that: every selected stream starts reading
when the sync starts, each in a thread of its own, and hands its pages to the writer through
a queue. Who may send a request is decided here: at most `max_concurrency` at once, the
stream being written before any other, and streams still waiting for their turn holding at
most `read_ahead_rows` rows in memory between them.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: Priority of requests that belong to no stream read ahead (the writer's own, --test).
WRITER = 0

Rows = list[dict[str, Any]]


class Scheduler:
    """Grants request slots: at most `slots` at once, lowest priority number first.

    Priorities are the streams' places in the sync order (1, 2, ...). The stream being
    written is `current`; streams after it may send a request only while the rows they hold
    (requests in flight counted as a full page, plus pages queued) stay under the reserve,
    so reading ahead never costs more memory than that, however many streams there are.
    """

    def __init__(self, slots: int, *, page_rows: int = 100, reserve_rows: int = 5000) -> None:
        self.slots = max(1, slots)
        self.page_rows = page_rows
        self.reserve_rows = max(reserve_rows, page_rows)
        self._lock = threading.Lock()
        self._free = self.slots
        self._waiting: list[tuple[int, int, threading.Event]] = []
        self._tickets = itertools.count()
        self._held: Counter[int] = Counter()  # rows in flight or queued, by priority
        self.current = WRITER

    @contextmanager
    def slot(self, priority: int = WRITER) -> Iterator[None]:
        """Hold one request slot for the duration of the block."""
        granted = threading.Event()
        with self._lock:
            heapq.heappush(self._waiting, (priority, next(self._tickets), granted))
            self._dispatch()
        granted.wait()
        try:
            yield
        finally:
            with self._lock:
                self._free += 1
                self._held[priority] -= self.page_rows
                self._dispatch()

    def queued(self, priority: int, rows: int) -> None:
        """Count rows a stream read ahead holds in its queue."""
        with self._lock:
            self._held[priority] += rows

    def taken(self, priority: int, rows: int) -> None:
        """The writer took rows from a stream's queue: they no longer count."""
        with self._lock:
            self._held[priority] -= rows
            self._dispatch()

    def writing(self, priority: int) -> None:
        """The stream of this priority is now being written: its requests go first."""
        with self._lock:
            self.current = priority
            self._dispatch()

    def _dispatch(self) -> None:
        # Called with the lock held: grant free slots to the waiters first in line.
        while self._waiting and self._free > 0:
            priority = self._waiting[0][0]
            if priority > self.current:
                ahead = sum(rows for p, rows in self._held.items() if p > self.current)
                if ahead + self.page_rows > self.reserve_rows:
                    return  # every later waiter is a stream further ahead still
            _, _, granted = heapq.heappop(self._waiting)
            self._free -= 1
            self._held[priority] += self.page_rows
            granted.set()


class FirstAnswer:
    """Until the server has answered once, one request at a time asks it.

    Every selected stream starts reading at once, so a wrong host or key would otherwise be
    tried, retried and logged by dozens of requests side by side. The one asking first
    learns it alone; a failure every request would meet too (its `verdict`) is then
    raised to each of them at once, and anything else lets the next one ask.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._asking = False
        self._verdict: BaseException | None = None
        self.answered = False
        #: Whether the server sent any HTTP status at all (a 5xx, a 429): it is reachable.
        self.heard = False

    def take_turn(self) -> bool:
        """Wait until this request may be sent: True when it asks alone (answered: False).

        Raises the verdict, if a request already failed for every request.
        """
        with self._changed:
            while True:
                if self._verdict is not None:
                    raise type(self._verdict)(*self._verdict.args) from None
                if self.answered:
                    return False
                if not self._asking:
                    self._asking = True
                    return True
                self._changed.wait()

    def end_turn(self, *, answered: bool, verdict: BaseException | None = None) -> None:
        """The request asking alone is done: the server answered it, or it failed."""
        with self._changed:
            self._asking = False
            self.answered = self.answered or answered
            self.heard = self.heard or answered
            if verdict is not None:
                self._verdict = verdict
            self._changed.notify_all()


_END = object()


class Feed:
    """One stream's pages, read by a thread of its own ahead of the stream's turn."""

    def __init__(
        self, name: str, pages: Iterator[Rows], scheduler: Scheduler, priority: int, depth: int
    ) -> None:
        self.priority = priority
        self._scheduler = scheduler
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
        self._pages = pages
        thread = threading.Thread(target=self._read, name=f"cliniko-{name}")
        thread.daemon = True  # one still waiting on Cliniko must not hold the process open
        thread.start()

    def _read(self) -> None:
        try:
            for rows in self._pages:
                if rows:
                    self._scheduler.queued(self.priority, len(rows))
                    self._queue.put(rows)
            self._queue.put(_END)
        except BaseException as exc:  # raised in the writer's thread, at this stream's turn
            self._queue.put(exc)

    def __iter__(self) -> Iterator[Rows]:
        """The pages in the order read; the reader's exception is raised here."""
        self._scheduler.writing(self.priority)
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            self._scheduler.taken(self.priority, len(item))
            yield item


class ReadAhead:
    """The feeds of one sync: every stream starts reading when the first one is written."""

    def __init__(self, scheduler: Scheduler, depth: int) -> None:
        self._scheduler = scheduler
        self._depth = depth
        self._feeds: dict[str, Feed] | None = None

    def start(self, streams: list[tuple[str, Callable[[int], Iterator[Rows]]]]) -> None:
        """Start reading each (name, pages_at_priority) in sync order, unless started."""
        if self._feeds is not None:
            return
        self._feeds = {}
        for priority, (name, pages) in enumerate(streams, start=WRITER + 1):
            self._feeds[name] = Feed(name, pages(priority), self._scheduler, priority, self._depth)

    def take(self, name: str) -> Feed | None:
        """The feed of a stream, once: None when it is not being read ahead."""
        return None if self._feeds is None else self._feeds.pop(name, None)


def side_by_side(jobs: list[Callable[[], Iterator[Rows]]], most: int) -> Iterator[Rows]:
    """The pages of several lists read at once (at most `most` at a time), as they arrive.

    Each job runs in a daemon thread; a job's exception is raised here, and the jobs still
    running are then left to finish on their own.
    """
    results: queue.Queue[Any] = queue.Queue(maxsize=max(2 * most, 1))
    pending = iter(jobs)
    running = 0

    def run(job: Callable[[], Iterator[Rows]]) -> None:
        try:
            for rows in job():
                results.put(rows)
            results.put(_END)
        except BaseException as exc:
            results.put(exc)

    def start_next() -> bool:
        job = next(pending, None)
        if job is not None:
            threading.Thread(target=run, args=(job,), name="cliniko-list", daemon=True).start()
        return job is not None

    while running < max(most, 1) and start_next():
        running += 1
    while running:
        item = results.get()
        if isinstance(item, BaseException):
            raise item
        if item is _END:
            running -= 1
            running += start_next()
            continue
        yield item
