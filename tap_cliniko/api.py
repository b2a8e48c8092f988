"""One Cliniko account over HTTP: session, headers, throttle, retries, what a response means."""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import msgspec
import requests

from tap_cliniko import cliniko
from tap_cliniko.cliniko import ClinikoError, EveryRequestFails
from tap_cliniko.concurrency import WRITER, FirstAnswer, Scheduler
from tap_cliniko.paging import Page, Params

LOGGER = logging.getLogger("tap-cliniko")


class NotSearchable(ClinikoError):
    """Cliniko refused a filter on a column it cannot search (400 'not searchable')."""


class RetryableResponse(Exception):
    """A response worth asking again for: 429, 5xx, or a body that is not the JSON expected."""

    def __init__(self, reason: str, wait: float | None = None, status: int | None = None) -> None:
        super().__init__(reason)
        self.wait = wait
        self.status = status  # the HTTP status Cliniko answered with, if it answered one


class _Turn:
    """One request's place in FirstAnswer: whether it is the one asking alone right now."""

    def __init__(self, first_answer: FirstAnswer) -> None:
        self._first_answer = first_answer
        self.alone = False

    def take(self) -> None:
        """Wait for this request's turn (nothing to wait for once Cliniko has answered)."""
        if not self.alone:
            self.alone = self._first_answer.take_turn()

    def end(self, *, answered: bool, verdict: BaseException | None = None) -> None:
        """Let the next request ask, if this one was asking alone."""
        if self.alone:
            self.alone = False
            self._first_answer.end_turn(answered=answered, verdict=verdict)


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
        clock: Callable[[], float] = time.monotonic,
        on_first_answer: Callable[[], None] | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.base_url = cliniko.check_base_url(base_url)
        self._auth = (api_key, "")
        self.timeout = timeout
        self.max_retry_seconds = max_retry_seconds
        self.budget = budget or RequestBudget(requests_per_minute, sleep=sleep)
        self.scheduler = scheduler or Scheduler(1)
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._clock = clock
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": user_agent})
        # Until Cliniko first answers 200, an unreachable host is a wrong base_url or shard
        # (fail fast); after that it is an outage worth the long retry budget.
        self._first_answer = FirstAnswer()
        self._on_first_answer = on_first_answer
        #: Called with each response's headers (the doctor reads Date and rate-limit names).
        self.on_headers: Callable[[Mapping[str, str]], None] | None = None

    @property
    def connected(self) -> bool:
        """Whether Cliniko has answered a request of this run (200)."""
        return self._first_answer.answered

    def get_page(
        self, url: str, params: Params, records_key: str = "patients", priority: int = WRITER
    ) -> Page:
        """GET one list page, waiting and retrying as Cliniko's answer asks.

        Until Cliniko has answered once, one request at a time is sent (see FirstAnswer):
        a wrong host or key then fails the run once, not once per stream reading ahead.
        priority: the place in the sync order of the stream asking (see
        concurrency.Scheduler); a request holds its slot only while it is sent.
        """
        if not cliniko.same_origin(url, self.base_url):
            raise ClinikoError(
                f"refusing to send the API key to {urlsplit(url).scheme}://"
                f"{urlsplit(url).netloc}: Cliniko's next link left {self.base_url}"
            )
        turn = _Turn(self._first_answer)
        try:
            page = self._get_with_retries(url, params, records_key, priority, turn)
        except EveryRequestFails as exc:
            turn.end(answered=False, verdict=exc)
            raise
        except BaseException:
            turn.end(answered=False)
            raise
        try:
            if turn.alone and self._on_first_answer:
                self._on_first_answer()  # writes the output held so far: it may fail
        finally:
            turn.end(answered=True)
        return page

    def _get_with_retries(
        self, url: str, params: Params, records_key: str, priority: int, turn: _Turn
    ) -> Page:
        """The retry loop of get_page: the budget is the time elapsed since the first attempt,
        waits and slow answers alike (an unreachable host: since its first failure)."""
        path = urlsplit(url).path
        started = self._clock()
        unreachable_since: float | None = None
        warned: set[str] = set()
        attempt = 0
        allowed = self.timeout
        while True:
            attempt += 1
            unreachable = False
            answered_with: int | None = None
            turn.take()
            try:
                with self.scheduler.slot(priority):
                    return self._get_once(url, params, path, records_key, allowed)
            except RetryableResponse as exc:
                wait = exc.wait if exc.wait is not None else cliniko.backoff_wait(attempt)
                reason = str(exc)
                answered_with = exc.status
                if exc.status is not None:
                    self._first_answer.heard = True
                    # Cliniko itself answered (5xx, 429): the host is right, and this route's
                    # trouble is its own; the next request may ask while this one waits.
                    turn.end(answered=False)
            except TRANSIENT_ERRORS as exc:
                wait = cliniko.backoff_wait(attempt)
                reason = _transient_reason(exc)
                # Once Cliniko sent any status, the host is right: this is an outage.
                unreachable = not self._first_answer.heard and not isinstance(
                    exc, requests.ReadTimeout
                )
            except requests.RequestException as exc:
                # Anything else the HTTP layer raises (a malformed URL, a bad header...) is
                # not worth retrying; the user gets its kind, never a traceback.
                raise EveryRequestFails(
                    f"GET {path} failed: {type(exc).__name__}; check base_url and the network"
                ) from None
            now = self._clock()
            elapsed, budget = now - started, self.max_retry_seconds
            if unreachable:
                unreachable_since = now if unreachable_since is None else unreachable_since
                elapsed = now - unreachable_since
                budget = min(budget, cliniko.CONNECT_RETRY_SECONDS)
            if elapsed + wait >= budget:
                host = urlsplit(url).netloc
                if unreachable:
                    raise cliniko.unreachable_error(host, reason, attempt, elapsed)
                # Only a failure no route could escape (no answer, or not Cliniko's) is the
                # account's; a status Cliniko answered with is this route's own.
                answered = self._first_answer.answered or answered_with is not None
                error = ClinikoError if answered else EveryRequestFails
                raise error(
                    f"GET {path} on {host} still failing after {attempt} attempts over"
                    f" {elapsed:.0f}s ({reason}): Cliniko may be down or throttling; rerun"
                    " later, or raise max_retry_seconds"
                )
            if self._first_answer.answered:
                LOGGER.warning(
                    "GET %s: %s; retrying in %.1fs (attempt %d)", path, reason, wait, attempt
                )
            elif reason not in warned:  # before any answer, one line per kind of failure
                warned.add(reason)
                LOGGER.warning(
                    "GET %s: %s; retrying for up to %.0fs before giving up", path, reason, budget
                )
            # The next attempt gets at most what is left of the budget: the request ends in it.
            allowed = min(self.timeout, budget - elapsed - wait)
            self._sleep(wait)

    def _get_once(
        self, url: str, params: Params, path: str, records_key: str, allowed: float
    ) -> Page:
        self.budget.acquire()
        deadline = self._clock() + allowed
        # requests' timeout bounds each socket read; the deadline bounds the whole response.
        response = self.session.get(
            url, params=params, auth=self._auth, timeout=allowed, allow_redirects=False, stream=True
        )
        late = (
            f"no whole response within request_timeout ({allowed:g}s)"
            if allowed == self.timeout
            else f"no whole response in the {allowed:.1f}s left of max_retry_seconds"
        )
        content = _body_by(response, deadline - self._clock(), late)
        status = response.status_code
        if self.on_headers is not None:
            self.on_headers(response.headers)
        LOGGER.debug("GET %s -> %d", path, status)
        if status == 429:
            wait = cliniko.rate_limit_wait(response.headers, self._wall_clock())
            self.budget.pause(wait)
            raise RetryableResponse("429 rate limited", wait=wait, status=status)
        if status >= 500:
            raise RetryableResponse(f"HTTP {status}", status=status)
        if status == 400 and _message(content) == cliniko.NOT_SEARCHABLE:
            raise NotSearchable(f"HTTP 400 from GET {path}: {cliniko.NOT_SEARCHABLE}")
        if status != 200:
            raise cliniko.status_error(status, path, _message(content) if status == 400 else None)
        try:
            # msgspec parses a page several times faster than the stdlib, ints kept exact.
            body = msgspec.json.decode(content)
        except msgspec.DecodeError:
            raise RetryableResponse("response was not complete JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get(records_key), list):
            raise RetryableResponse(f"response JSON had no {records_key} list")
        links = body.get("links") or {}
        total = body.get("total_entries")
        return Page(
            rows=body[records_key],
            next_link=links.get("next") if isinstance(links, dict) else None,
            total_entries=total if isinstance(total, int) else None,
            server_time=cliniko.server_time(response.headers),
        )


#: Failures of the connection rather than of the request: worth asking again.
TRANSIENT_ERRORS = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,  # the body ended early: a dropped connection
    requests.exceptions.ContentDecodingError,
)


def _transient_reason(exc: Exception) -> str:
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection dropped mid-response"
    return cliniko.connection_failure(exc)


def _body_by(response: requests.Response, seconds: float, late: str) -> bytes:
    """The whole body of a response whose headers came, unless it takes over seconds more.

    At the deadline the socket is shut down, which ends a read blocked on a response that
    drips (urllib3's HTTPResponse.shutdown); the connection is then closed, not kept. The
    body of a response that errs without its deadline raises as requests raises it.
    """
    cut = threading.Event()

    def shut_down() -> None:
        cut.set()
        # Refused once the body was read whole (the connection is back in the pool) or closed.
        with contextlib.suppress(RuntimeError, ValueError, OSError):
            response.raw.shutdown()

    watchdog = threading.Timer(max(seconds, 0.0), shut_down)
    watchdog.daemon = True
    watchdog.start()
    try:
        content = response.content
    except requests.RequestException:
        if not cut.is_set():
            raise
    finally:
        watchdog.cancel()
    if cut.is_set():  # a body ended by its shutdown may look whole: it is never used
        response.close()
        raise RetryableResponse(late)
    return content


def _message(content: bytes) -> str | None:
    try:
        body = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return None
    return body.get("message") if isinstance(body, dict) else None
