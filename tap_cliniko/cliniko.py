"""Cliniko's rules, as pure functions: shards, base URLs, filters, times, waits, errors."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

DEFAULT_SHARD = "au1"
SHARD_PATTERN = re.compile(r"[a-z]{2}\d{1,2}")
USER_AGENT_PATTERN = re.compile(r"^\S.*\(\s*[^()\s@]+@[^()\s@]+\.[^()\s@]+\s*\)\s*$")
NOT_SEARCHABLE = "This column is not searchable."
MIN_RATE_LIMIT_WAIT = 1.0
#: How long an unreachable host is retried before Cliniko has answered once.
CONNECT_RETRY_SECONDS = 30.0


class ClinikoError(Exception):
    """A failure the user can act on, carried as one line with no secret and no record data."""


class EveryRequestFails(ClinikoError):
    """A failure every request of the run would meet too: no answer at all, or a key refused."""


class Forbidden(ClinikoError):
    """HTTP 403: the API key's user may not read this list (a role permission)."""


def has_shard_suffix(api_key: str) -> bool:
    """Tell whether the key ends in a shard suffix ('-' then the shard); without, it is au1."""
    return "-" in api_key


def shard_from_key(api_key: str) -> str:
    """Return the shard named by the suffix after the key's last '-' (no suffix: au1)."""
    if not has_shard_suffix(api_key):
        return DEFAULT_SHARD
    suffix = api_key.rsplit("-", 1)[1]
    if not SHARD_PATTERN.fullmatch(suffix):
        raise ClinikoError(
            "api_key ends in a malformed shard suffix (expected '-' then a shard such as"
            " au1 or uk2): copy the whole key from Cliniko's My Info > Manage API keys"
        )
    return suffix


def base_url_for_key(api_key: str) -> str:
    """Return the API base URL of the key's shard."""
    return f"https://api.{shard_from_key(api_key)}.cliniko.com/v1"


def is_loopback_host(host: str | None) -> bool:
    """Tell whether host is localhost or a loopback IP address."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    """Return url without a trailing slash, refusing plain HTTP except to loopback hosts."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url.rstrip("/")
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return url.rstrip("/")
    raise ClinikoError(
        "base_url must be an https:// URL (plain http is allowed only for 127.0.0.1,"
        " ::1 or localhost): fix base_url or remove it to use the key's shard"
    )


def same_origin(url: str, base_url: str) -> bool:
    """Tell whether url has the scheme, host and port of base_url."""
    a, b = urlsplit(url), urlsplit(base_url)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def format_time(moment: datetime) -> str:
    """Format a moment as Cliniko's filter value, UTC to the second, rounded down."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def since_filter(field: str, moment: datetime) -> str:
    """Return the q[] value selecting rows whose field is at or after moment."""
    return f"{field}:>={format_time(moment)}"


def parse_time(value: object) -> datetime | None:
    """Read a Cliniko date-time (ISO 8601, UTC); None when absent, empty or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def server_time(headers: Mapping[str, str] | None) -> datetime | None:
    """Return the moment in a response's Date header, or None when absent or unreadable."""
    value = (headers or {}).get("Date")
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def rate_limit_wait(headers: Mapping[str, str], now: float, default: float = 60.0) -> float:
    """Seconds to wait after a 429, from Retry-After or X-RateLimit-Reset (UNIX seconds).

    The reset is a moment on Cliniko's clock, so it is measured against the response's own
    Date header when there is one, and against `now` (this machine's clock) only without.
    A wait that comes out at zero or less still pauses MIN_RATE_LIMIT_WAIT: never a hot
    loop of 429s.
    """
    retry_after = headers.get("Retry-After")
    if retry_after:
        try:
            return max(MIN_RATE_LIMIT_WAIT, float(retry_after))
        except ValueError:
            try:
                moment = parsedate_to_datetime(retry_after).timestamp()
                return max(MIN_RATE_LIMIT_WAIT, moment - _server_now(headers, now))
            except (TypeError, ValueError):
                pass
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(MIN_RATE_LIMIT_WAIT, math.ceil(float(reset)) - _server_now(headers, now))
        except ValueError:
            pass
    return default


def _server_now(headers: Mapping[str, str], now: float) -> float:
    """Cliniko's clock when it answered: its Date header, or ours when the two agree."""
    moment = server_time(headers)
    if moment is None:
        return now
    stamp = moment.timestamp()
    # Date holds whole seconds: within a second of ours, our clock is the finer reading.
    return now if -1.5 < stamp - now <= 0.5 else stamp + 0.5


def backoff_wait(attempt: int, base: float = 1.0, cap: float = 30.0) -> float:
    """Capped exponential wait before retry number attempt (1-based)."""
    return min(cap, base * 2 ** (attempt - 1))


class RouteNotFound(ClinikoError):
    """Cliniko answered 404 for a list route (one the current API may have dropped)."""


class SortRefused(ClinikoError):
    """Cliniko refused the sort parameter (400 naming the sort)."""


def status_error(status: int, path: str, message: str | None = None) -> ClinikoError:
    """Explain a final HTTP status in one line, naming the likely cause and the fix."""
    if status == 400 and message and "sort" in message.lower():
        return SortRefused(f"HTTP 400 from GET {path}: Cliniko refused the sort parameter")
    causes = {
        400: "Cliniko refused the request as malformed (an unsupported filter or parameter)",
        401: "Cliniko refused the API key: it is wrong, revoked, or belongs to another shard"
        " (check the key's suffix, or base_url)",
        403: "the API key's user lacks permission to read it: give that Cliniko user"
        " access in its role, or use another user's key",
        404: "the path does not exist: check base_url (it should end in /v1)",
    }
    cause = causes.get(status, "Cliniko answered with an unexpected status")
    error = {401: EveryRequestFails, 403: Forbidden, 404: RouteNotFound}.get(status, ClinikoError)
    return error(f"HTTP {status} from GET {path}: {cause}")


def connection_failure(exc: Exception) -> str:
    """Name a failed connection's cause without its text (which may hold the URL's query)."""
    text = repr(exc)
    if "NameResolutionError" in text or "Name or service not known" in text:
        return "host name not found"
    if "Connection refused" in text or "ConnectionRefusedError" in text:
        return "connection refused"
    if "RemoteDisconnected" in text or "ConnectionResetError" in text:
        return "connection closed without an answer"
    return type(exc).__name__


def unreachable_error(host: str, reason: str, attempts: int, waited: float) -> EveryRequestFails:
    """Explain a host never reached: almost always a wrong base_url or key suffix."""
    return EveryRequestFails(
        f"cannot reach {host} ({reason}; {attempts} attempts over {waited:.0f}s): check"
        " base_url, or, without base_url, the shard suffix of api_key (-au1, -uk2, ...)"
    )
