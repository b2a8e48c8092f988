"""A bare Cliniko look-alike over real HTTP, for wire shapes the local Cliniko never makes."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def serve_json(host: str, answer: Callable[[BaseHTTPRequestHandler], Any]) -> ThreadingHTTPServer:
    """Serve every GET with 200 and answer(request) as JSON, on a free port, until shutdown()."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(answer(self)).encode()  # Python writes big ints digit for digit
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
