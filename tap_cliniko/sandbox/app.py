"""The local Cliniko's HTTP API (Flask): auth, lists, filters, paging, writes, limits, faults.

One generic handler per kind of request (list, get, create, update, archive, unarchive, cancel,
delete), routed for every collection of resources.RESOURCES and every nested list of NESTED.
"""

from __future__ import annotations

import base64
import collections
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import urlencode

import msgspec
from flask import Flask, Response, request
from werkzeug.routing import Rule

from tap_cliniko.sandbox.faults import Faults
from tap_cliniko.sandbox.resources import LEGACY_VARIANTS, NESTED, RESOURCES, Nested
from tap_cliniko.sandbox.store import QueryError, Store, ValidationFailed

USER_AGENT = re.compile(r"^\S.*\(\s*[^()\s@]+@[^()\s@]+\.[^()\s@]+\s*\)\s*$")
SHARD = re.compile(r"[a-z]{2}\d{1,2}")
STATUS_MESSAGES = {403: "You do not have permission to access this resource."}


@dataclass(frozen=True)
class RequestRecord:
    """What the server saw of one request (never its Authorization header)."""

    method: str
    path: str
    query_string: str
    status: int
    time: float
    headers_seen: dict[str, str]
    #: When the request arrived (time is when its answer was ready): overlaps show concurrency.
    started: float = 0.0


def key_shard(key: str) -> str | None:
    """The shard a key names: the suffix after its last '-', au1 without one."""
    if "-" not in key:
        return "au1"
    suffix = key.rsplit("-", 1)[1]
    return suffix if SHARD.fullmatch(suffix) else None


class RateLimiter:
    """At most `per_minute` answered requests per key in any rolling 60 seconds."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._sent: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def admit(self, key: str) -> float | None:
        """None when admitted (and counted); else the UNIX time a request will be allowed."""
        if self.per_minute <= 0:
            return None
        with self._lock:
            now = time.time()
            sent = self._sent[key]
            while sent and now - sent[0] >= 60:
                sent.popleft()
            if len(sent) >= self.per_minute:
                return sent[0] + 60
            sent.append(now)
            return None

    def headers(self, key: str, server_now: float) -> dict[str, str]:
        """The X-RateLimit-* headers of an answer to key: the budget, what is left, its reset."""
        per_minute = self.per_minute or 200
        with self._lock:
            sent = self._sent.get(key) or collections.deque()
            reset = (sent[0] + 60 if sent else time.time() + 60) + server_now - time.time()
            left = max(per_minute - len(sent), 0)
        return {
            "X-RateLimit-Limit": str(per_minute),
            "X-RateLimit-Remaining": str(left),
            "X-RateLimit-Reset": str(math.ceil(reset)),
            "Retry-After": "0",
        }


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # msgspec: the same compact UTF-8 JSON as json.dumps, several times faster (benchmarks).
    return Response(
        msgspec.json.encode(body),
        status=status,
        mimetype="application/json",
        headers=headers,
    )


def message(text: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return json_response({"message": text}, status, headers)


class _Rule(Rule):
    """A route whose URL builder (url_for's, which this server never calls) is compiled on
    first use: compiling one for each of the ~300 routes was most of a server's start."""

    def _compile_builder(self, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        compile_builder = super()._compile_builder
        built: list[Callable[..., tuple[str, str]]] = []

        def build(rule: Rule, *args: Any, **kwargs: Any) -> tuple[str, str]:
            if not built:
                built.append(compile_builder(append_unknown).__get__(rule, None))
            return built[0](*args, **kwargs)

        return build


def create_app(
    store: Store,
    *,
    api_key: str,
    shard: str,
    faults: Faults,
    limiter: RateLimiter,
    rate_limit_header: str,
    server_time: Callable[[], float],
    requests_log: list[RequestRecord],
    hook: Callable[[], Callable[[str, Any], int | None] | None],
    variant_routes: bool = True,
    forbidden: set[str] | None = None,
    missing: frozenset[str] = frozenset(),
    broken: frozenset[str] = frozenset(),
    missing_routes: frozenset[str] = frozenset(),
    rate_limit_headers: tuple[str, ...] = (),
) -> Flask:
    """The Flask app of one local Cliniko account."""
    app = Flask("cliniko-sandbox")
    app.url_rule_class = _Rule
    app.json.ensure_ascii = False  # type: ignore[attr-defined]

    def base_url() -> str:
        return f"{request.scheme}://{request.host}/v1"

    @app.before_request
    def gatekeeper() -> Response | None:
        request.environ["sandbox.started"] = time.time()
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if delay := faults.forced_delay():
            time.sleep(delay)
        auth = request.headers.get("Authorization", "")
        key = ""
        if auth.startswith("Basic "):
            try:
                key = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                key = ""
        if key != api_key or key_shard(key) != shard:
            return message("Unauthorized: check the API key and its shard.", 401)
        if not USER_AGENT.match(request.headers.get("User-Agent", "")):
            return message(
                "Send a User-Agent naming your app and a contact e-mail: 'App (you@example.com)'.",
                400,
            )
        if "application/json" not in request.headers.get("Accept", "application/json") and (
            "*/*" not in request.headers.get("Accept", "")
        ):
            return message("Only application/json is served.", 406)
        if storm := faults.throttled():
            return _too_many(storm[0], storm[1])
        if (location := faults.forced_redirect()) is not None:
            return message("Moved.", 302, {"Location": location})
        if (forced := faults.forced_status(request.path, request.args)) is not None:
            return message("Injected failure.", forced, _retry_headers(forced))
        if (allowed_at := limiter.admit(key)) is not None:
            return _too_many(allowed_at, rate_limit_header)
        if (status := faults.route_status(request.path.removeprefix("/v1"))) is not None:
            return message(STATUS_MESSAGES.get(status, "Injected failure."), status)
        served = (request.view_args or {}).get("name")
        if forbidden and served in forbidden:
            return message(STATUS_MESSAGES[403], 403)
        if served in missing:
            return message("Not found", 404)
        if served in broken:
            return message("Internal server error.", 500)
        request.environ["sandbox.key"] = key
        if request.method == "GET":
            if faults.roll(faults.error_rate):
                return message("Injected server error.", faults.pick_error())
            if faults.roll(faults.drop_rate):
                _drop_connection()
            if faults.roll(faults.html_200_rate):
                return Response(
                    "<html><body><h1>Maintenance</h1></body></html>", 200, mimetype="text/html"
                )
        return None

    def _too_many(allowed_at: float, header: str) -> Response:
        headers: dict[str, str] = {}
        if header in ("X-RateLimit-Reset", "both"):
            # A moment on the server's own clock, which may differ from the tap's.
            headers["X-RateLimit-Reset"] = str(math.ceil(allowed_at + server_time() - time.time()))
        if header in ("Retry-After", "both"):
            headers["Retry-After"] = str(max(1, math.ceil(allowed_at - time.time())))
        return message("Too many requests", 429, headers)

    def _retry_headers(status: int) -> dict[str, str]:
        return {"Retry-After": "1"} if status == 429 else {}

    def _drop_connection() -> None:
        sock = request.environ.get("werkzeug.socket")
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
        raise ConnectionAbortedError("injected drop")

    def _drop_midbody(response: Response) -> Response:
        """Headers with the full Content-Length, half the body, then the socket closes."""
        data = response.get_data()
        sock = request.environ.get("werkzeug.socket")

        def half_then_close() -> Iterator[bytes]:
            yield data[: len(data) // 2]
            if isinstance(sock, socket.socket):
                sock.shutdown(socket.SHUT_RDWR)
            raise ConnectionAbortedError("injected mid-body drop")

        response.response = half_then_close()
        response.headers["Content-Length"] = str(len(data))
        return response

    def _drip(response: Response, every_ms: float) -> Response:
        """Headers with the full Content-Length, then the body one byte every every_ms."""
        data = response.get_data()

        def byte_by_byte() -> Iterator[bytes]:
            sent = 0
            try:
                while sent < len(data):
                    time.sleep(every_ms / 1000)
                    yield data[sent : sent + 1]
                    sent += 1
            finally:  # also when the client hangs up: the server stops writing
                faults.dripped.append(sent == len(data))

        response.response = byte_by_byte()
        response.headers["Content-Length"] = str(len(data))
        return response

    @app.after_request
    def stamp(response: Response) -> Response:
        response.headers["Date"] = formatdate(server_time(), usegmt=True)
        if rate_limit_headers and (key := request.environ.get("sandbox.key")):
            for header, value in limiter.headers(key, server_time()).items():
                if header in rate_limit_headers:
                    response.headers.setdefault(header, value)
        if request.method == "GET" and response.status_code == 200:
            if faults.roll(faults.midbody_drop_rate):
                response = _drop_midbody(response)
            elif every_ms := faults.forced_drip():
                response = _drip(response, every_ms)
        requests_log.append(
            RequestRecord(
                method=request.method,
                path=request.path,
                query_string=request.query_string.decode(),
                status=response.status_code,
                time=time.time(),
                headers_seen={k: request.headers.get(k, "") for k in ("User-Agent", "Accept")},
                started=request.environ.get("sandbox.started", 0.0),
            )
        )
        return response

    nested_routes: dict[str, Nested] = {}  # Flask rule -> the nested route it serves

    def list_page(name: str, variant: str = "", parent_id: int | None = None) -> Response:
        """Any list route: filters, sort, page, per_page, links keeping the q[] filters."""
        if variant in LEGACY_VARIANTS and not variant_routes:
            return message("Not found", 404)
        if parent_id is None and request.path.removeprefix("/v1") in missing_routes:
            return message("Not found", 404)
        # A test's hook sees the request first; a status it returns is the answer.
        if (before := hook()) is not None and (status := before(request.path, request.args)):
            return message("Injected failure.", status, _retry_headers(status))
        try:
            page = int(request.args.get("page", "1"))
            per_page = int(request.args.get("per_page", "50"))
        except ValueError:
            return message("page and per_page must be integers.", 400)
        if page < 1 or not 1 <= per_page <= 100:
            return message("per_page must be between 1 and 100; page at least 1.", 400)
        filters = [f for f in request.args.getlist("q[]") if faults.honours(request.path, f)]
        if any(faults.refuses(request.path, f) for f in filters):
            return message("This column is not searchable.", 400)
        nested = None
        if parent_id is not None:
            route = nested_routes[request.url_rule.rule if request.url_rule else ""]
            if store.get_live(parent_id, route.parent) is None:
                return message("Not found", 404)
            nested = (route, parent_id)
        try:
            rows, total = store.page(
                variant,
                filters,
                request.args.get("sort"),
                page,
                per_page,
                resource=name,
                nested=nested,
            )
        except QueryError as exc:
            return message(str(exc), 400)
        base = base_url()
        params = [(k, v) for k, v in request.args.items(multi=True) if k != "page"]
        link_base = f"{base}{request.path.removeprefix('/v1')}?"
        links = {"self": link_base + urlencode([*params, ("page", page)])}
        if page > 1:
            links["previous"] = link_base + urlencode([*params, ("page", page - 1)])
        if page * per_page < total:
            links["next"] = link_base + urlencode([*params, ("page", page + 1)])
        glitch = faults.page_glitch(request.path)
        if glitch == "empty":
            rows = []
        elif glitch == "no_next":
            links.pop("next", None)
        elif glitch == "loop":
            links["next"] = link_base + urlencode([*params, ("page", 1)])
        answer = {
            name: [store.render(r, base, listing=variant, name=name) for r in rows],
            "total_entries": total,
            "links": links,
        }
        response = json_response(answer)
        if faults.roll(faults.truncate_rate):
            data = response.get_data()
            response.set_data(data[: len(data) // 2])
        return response

    def get_one(name: str, record_id: int) -> Response:
        # 'legacy' still answers for a deleted row, as the older page's accounts did.
        record = store.get(record_id, name) if store.behaviour == "legacy" else None
        record = record or store.get_live(record_id, name)
        if record is None:
            return message("Not found", 404)
        return json_response(store.render(record, base_url(), name=name))

    def body() -> dict[str, Any]:
        data = request.get_json(silent=True)
        return data if isinstance(data, dict) else {}

    def write(action: Callable[[], Any], name: str, record_id: int | None = None) -> Response:
        """Run one write; answer the row, or 204 when record_id is None, 201 when it is 0 (new).

        422 with the errors of a refused write, 404 for an unknown or deleted row.
        """
        try:
            result = action()
        except ValidationFailed as exc:
            return json_response({"message": "Validation Failed", "errors": exc.errors}, 422)
        except KeyError:
            return message("Not found", 404)
        if record_id is None:
            return Response(status=204)
        created = record_id == 0
        row_id = int(result["id"]) if created else record_id
        response = json_response(
            store.render(store.get(row_id, name) or {}, base_url(), name=name),
            201 if created else 200,
        )
        if created:
            response.headers["Location"] = f"{base_url()}/{name}/{row_id}"
        return response

    def create(name: str) -> Response:
        return write(lambda: store.create(name, body()), name, 0)

    def update(name: str, record_id: int) -> Response:
        return write(lambda: store.update(name, record_id, body()), name, record_id)

    def delete(name: str, record_id: int) -> Response:
        return write(lambda: store.delete(name, record_id), name)

    def archive(name: str, record_id: int) -> Response:
        return write(lambda: store.archive(name, record_id), name)

    def unarchive(name: str, record_id: int) -> Response:
        return write(lambda: store.unarchive(name, record_id), name, record_id)

    def cancel(name: str, record_id: int) -> Response:
        return write(lambda: store.cancel(name, record_id, body()), name, record_id)

    for resource in RESOURCES:
        name = resource.name
        view = {"name": name}
        app.add_url_rule(f"/v1/{name}", f"list_{name}", list_page, defaults=view)
        for variant in resource.variants:
            app.add_url_rule(
                f"/v1/{name}/{variant}",
                f"list_{name}_{variant}",
                list_page,
                defaults={**view, "variant": variant},
            )
        if resource.computed:
            continue
        app.add_url_rule(f"/v1/{name}/<int:record_id>", f"get_{name}", get_one, defaults=view)
        if resource.union:
            continue
        app.add_url_rule(f"/v1/{name}", f"create_{name}", create, defaults=view, methods=["POST"])
        one = f"/v1/{name}/<int:record_id>"
        app.add_url_rule(one, f"update_{name}", update, defaults=view, methods=["PUT", "PATCH"])
        app.add_url_rule(one, f"delete_{name}", delete, defaults=view, methods=["DELETE"])
        app.add_url_rule(
            f"{one}/archive", f"archive_{name}", archive, defaults=view, methods=["POST"]
        )
        app.add_url_rule(
            f"{one}/unarchive", f"unarchive_{name}", unarchive, defaults=view, methods=["POST"]
        )
        if "cancelled_at" in resource.markers:
            app.add_url_rule(
                f"{one}/cancel", f"cancel_{name}", cancel, defaults=view, methods=["PATCH", "POST"]
            )
    for nested in NESTED:
        rule = f"/v1{nested.path}"
        nested_routes[rule] = nested
        app.add_url_rule(
            rule,
            f"nested_{nested.parent}_{nested.child}_{nested.variant}",
            list_page,
            defaults={"name": nested.child, "variant": nested.variant},
        )

    @app.errorhandler(404)
    def not_found(_: Exception) -> Response:
        return message("Not found", 404)

    @app.errorhandler(405)
    def not_allowed(_: Exception) -> Response:
        return message("Method not allowed", 405)

    return app
