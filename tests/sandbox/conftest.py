"""A local Cliniko per test, and a requests client that speaks to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tap_cliniko.sandbox import SandboxConfig, SandboxServer

KEY = "sandbox0api0test-au1"
HEADERS = {"User-Agent": "sandbox tests (tests@example.com)", "Accept": "application/json"}


class Client:
    """A requests session speaking to one local Cliniko."""

    def __init__(self, server: SandboxServer, key: str = KEY) -> None:
        self.server = server
        self.session = requests.Session()
        self.session.auth = (key, "")
        self.session.headers.update(HEADERS)

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.session.get(f"{self.server.base_url}{path}", params=params, timeout=30)

    def send(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.session.request(method, f"{self.server.base_url}{path}", json=body, timeout=30)


@pytest.fixture
def start(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start servers: `server, client = start(patients=50)`; a module's COLLECTIONS = 0 means
    patients only by default (its tests then seed in a fraction of the time)."""
    servers: list[SandboxServer] = []

    def make(**settings: Any) -> tuple[SandboxServer, Client]:
        settings.setdefault("api_key", KEY)
        settings.setdefault("collections", request.module.__dict__.get("COLLECTIONS", 1.0))
        settings.setdefault("data_dir", tmp_path / f"db{len(servers)}")
        server = SandboxServer(SandboxConfig(**settings)).start()
        servers.append(server)
        return server, Client(server)

    yield make
    for server in servers:
        server.stop()
