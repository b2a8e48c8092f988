"""A local Cliniko-compatible API server with a synthetic clinic, for demos, tests, benchmarks.

It imports nothing from the tap, and the tap nothing from it.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from tap_cliniko.sandbox.app import RateLimiter, RequestRecord, create_app
from tap_cliniko.sandbox.faults import Faults
from tap_cliniko.sandbox.profile import apply as apply_profile
from tap_cliniko.sandbox.profile import read as read_profile
from tap_cliniko.sandbox.resources import LEGACY_VARIANTS
from tap_cliniko.sandbox.shaping import AccountShape
from tap_cliniko.sandbox.store import SORT_MODES, Store

__all__ = ["RequestRecord", "SandboxConfig", "SandboxServer"]


@dataclass
class SandboxConfig:
    """How a local Cliniko starts: data, behaviour, limits and faults."""

    patients: int = 500
    #: Size of the rest of the clinic (appointments, invoices, ...) per patient; 0: patients only.
    collections: float = 1.0
    seed: int = 1
    data_dir: Path | None = None
    behaviour: str = "current"  # or "legacy": the older API page's shapes
    api_key: str = "sandbox-key-au1"
    shard: str = "au1"
    rate_limit_per_minute: int = 0
    rate_limit_header: str = "X-RateLimit-Reset"  # or "Retry-After" or "both"
    archive_touches_updated_at: bool = True
    unarchive_touches_updated_at: bool = True
    cancel_touches_updated_at: bool = True
    variant_routes: bool = True  # False: the legacy /…/archived, /…/deleted lists answer 404
    sort_mode: str = "honoured"  # or "ignored" / "refused": what the server does with sort=id
    #: Collections the key's user may not read: their routes answer 403 (nested ones too).
    forbidden: tuple[str, ...] = ()
    clock_offset_seconds: float = 0.0
    latency_ms: float = 0.0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    truncate_rate: float = 0.0
    html_200_rate: float = 0.0
    midbody_drop_rate: float = 0.0
    fault_seed: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    #: Fields a real account may send that the schemas lack: on every row, synthetic values.
    extra_fields: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    #: Collections whose routes answer 404 (not on this account) or 500 (broken there).
    missing: tuple[str, ...] = ()
    broken: tuple[str, ...] = ()
    #: Variant routes that answer 404 ("/patients/archived", "/invoices/deleted").
    missing_routes: tuple[str, ...] = ()
    #: q[] filter prefixes a list path ("/v1/patients") drops, or answers 400 for.
    ignored_filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    refused_filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Rate-limit headers sent with every answer (X-RateLimit-Limit, -Remaining, -Reset).
    rate_limit_headers: tuple[str, ...] = ()
    #: Rows per collection and state, id magnitudes, fields sent (a profile's; see shaping).
    account: AccountShape = field(default_factory=AccountShape)
    #: A doctor's profile (a path or its JSON) to shape the account like; see profile.py.
    profile: Path | dict[str, Any] | None = None
    scale: float = 1.0  # the profile's rows times this (a big account made small)


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr (the tests read the tap's stderr)."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        return

    def send_response(self, code: int, message: str | None = None) -> None:
        # The app sets Date from the server's (possibly skewed) clock; send only the status.
        self.log_request(code)
        self.send_response_only(code, message)

    def log_error(self, *args: Any) -> None:
        return


class SandboxServer:
    """A running local Cliniko on a background thread: `with SandboxServer(config) as server:`."""

    def __init__(self, config: SandboxConfig) -> None:
        if config.profile is not None:
            found = config.profile
            profile = read_profile(Path(found)) if isinstance(found, (str, Path)) else found
            config = apply_profile(dataclasses.replace(config, profile=None), profile, config.scale)
        if config.behaviour not in ("current", "legacy"):
            raise ValueError("behaviour must be 'current' or 'legacy'")
        if config.sort_mode not in SORT_MODES:
            raise ValueError(f"sort_mode must be one of {', '.join(SORT_MODES)}")
        self.config = config
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        data_dir = config.data_dir
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cliniko-sandbox-")
            data_dir = Path(self._tmp.name)
        self.faults = Faults(
            latency_ms=config.latency_ms,
            error_rate=config.error_rate,
            drop_rate=config.drop_rate,
            truncate_rate=config.truncate_rate,
            html_200_rate=config.html_200_rate,
            midbody_drop_rate=config.midbody_drop_rate,
            seed=config.fault_seed,
        )
        for path, prefixes in config.ignored_filters.items():
            self.faults.ignore_filters(path, *prefixes)
        for path, prefixes in config.refused_filters.items():
            self.faults.refuse_filters(path, *prefixes)
        self.store = Store(
            Path(data_dir) / "cliniko.sqlite3",
            behaviour=config.behaviour,
            clock=self.now,
            archive_touches_updated_at=config.archive_touches_updated_at,
            unarchive_touches_updated_at=config.unarchive_touches_updated_at,
            cancel_touches_updated_at=config.cancel_touches_updated_at,
            sort_mode=config.sort_mode,
            extra_fields=config.extra_fields,
            account=config.account,
        )
        self.store.seed(config.patients, config.seed, collections=config.collections)
        self.requests: list[RequestRecord] = []
        self.before_list_page: Any = None
        self.forbidden: set[str] = set(config.forbidden)  # change it while the server runs
        app = create_app(
            self.store,
            api_key=config.api_key,
            shard=config.shard,
            faults=self.faults,
            limiter=RateLimiter(config.rate_limit_per_minute),
            rate_limit_header=config.rate_limit_header,
            server_time=self.server_time,
            requests_log=self.requests,
            hook=lambda: self.before_list_page,
            variant_routes=config.variant_routes,
            forbidden=self.forbidden,
            missing=frozenset(config.missing),
            broken=frozenset(config.broken),
            missing_routes=frozenset(config.missing_routes),
            rate_limit_headers=config.rate_limit_headers,
        )
        self._server: BaseWSGIServer = make_server(
            config.host, config.port, app, threaded=True, request_handler=_QuietHandler
        )
        self.port = self._server.server_port
        self.base_url = f"http://{config.host}:{self.port}/v1"
        self.store.link_base = self.base_url
        self._thread: threading.Thread | None = None

    def serves(self, route: str) -> bool:
        """Whether a top-level list route ("/patients/deleted") answers rows to this key, or
        the account's shape (a profile's, the drift settings) takes it away."""
        config = self.config
        name, _, variant = route.strip("/").partition("/")
        if name in self.forbidden or name in config.missing or name in config.broken:
            return False
        if route in config.missing_routes:
            return False
        return config.variant_routes or variant not in LEGACY_VARIANTS

    def server_time(self) -> float:
        """The server's clock (UNIX time): this machine's plus the offset, unless stopped."""
        if (stopped := self.faults.clock_stopped_at) is not None:
            return stopped
        return time.time() + self.config.clock_offset_seconds

    def now(self) -> datetime:
        """The server's clock, to the second."""
        return datetime.fromtimestamp(self.server_time(), UTC).replace(microsecond=0)

    def start(self) -> SandboxServer:
        """Serve on a background thread."""
        # Polled often so stop() returns at once (werkzeug's default poll is half a second).
        serve = functools.partial(self._server.serve_forever, poll_interval=0.02)
        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until shutdown."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._thread:  # shutdown() waits for a serve_forever that never started otherwise
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
